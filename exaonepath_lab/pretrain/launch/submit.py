"""Submission of a planned launch: ``sbatch``, submitit's executor, or torchrun in the foreground."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

from ..checkpoint import refuse_existing_checkpoint
from .config import PREEMPT_SIGNAL, LaunchConfig
from .job import DinoTrainJob
from .render import plan_launch, submitit_parameters, torchrun_args, write_plan


def submit(config: LaunchConfig, *, cluster: str | None = None) -> str:
    """Render the job (as :func:`render_launch`) and submit it with ``config.engine``.

    Returns the SLURM job id (``submitit``/``sbatch``) or ``"exit <code>"`` for a
    torchrun run in the foreground. ``cluster`` forces submitit's executor (``"slurm"``,
    ``"local"`` or ``"debug"``; the last two run here, for testing).
    """
    plan = plan_launch(config)
    if not config.resume:  # before queueing: the job would stop at its start (train refuses it too)
        refuse_existing_checkpoint(config.out)
    paths = write_plan(plan)  # also creates the folder SLURM writes the job's output into
    if config.engine == "sbatch":
        if shutil.which("sbatch") is None:
            raise RuntimeError(
                "`sbatch` is not on PATH: this machine is not a SLURM login node. Copy "
                f"{paths['sbatch']} to one and run `sbatch job.sbatch` there, or use --engine torchrun "
                "on a GPU machine"
            )
        res = subprocess.run(["sbatch", "--parsable", str(paths["sbatch"])], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"sbatch {paths['sbatch']} failed: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout.strip().split(";")[0]
    if config.engine == "torchrun":
        if config.nodes != 1:
            raise ValueError(
                f"--engine torchrun --submit runs on this machine only (nodes=1), not {config.nodes} nodes; "
                f"run {paths['torchrun']} on every node, or use --engine sbatch/submitit on SLURM"
            )
        cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(config, standalone=True),
               "-m", "exaonepath_lab.cli", *plan.train_argv]
        return f"exit {subprocess.call(cmd)}"
    executor = make_executor(config, cluster=cluster)
    job = executor.submit(DinoTrainJob(plan.train_config, resume=config.resume))
    return str(job.job_id)


def make_executor(config: LaunchConfig, *, cluster: str | None = None) -> Any:
    """A ``submitit.AutoExecutor`` with :func:`submitit_parameters` (SLURM unless ``cluster`` says)."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError(
            "the submitit engine needs submitit (`pip install submitit`); or use --engine sbatch, "
            "which needs only SLURM's sbatch"
        ) from None
    if cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise RuntimeError(
            "submitit found no SLURM here (`sbatch` is not on PATH); submit from a SLURM login node, "
            "or render the job with --dry-run and use --engine torchrun on a single GPU machine"
        )
    folder = (config.folder / "submitit" / "%j").absolute()
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster or "slurm", slurm_max_num_timeout=config.max_requeues)
    params = submitit_parameters(config)
    if executor.cluster != "slurm":  # local/debug executors, for trying a launch on one machine
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        params["nodes"] = 1
        import torch

        if not torch.cuda.is_available():
            params["gpus_per_node"] = 0
        # The local executor's time-out warning must be the signal the trainer checkpoints on.
        os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", PREEMPT_SIGNAL)
    executor.update_parameters(**params)
    return executor
