"""Cluster launch of DINO pretraining: SLURM via submitit, a generated ``sbatch`` script, or torchrun.

One :class:`LaunchConfig` describes *where* a run goes (nodes × GPUs, partition, time);
the *what* is the ordinary ``exaonepath-lab train`` command line (preset, data, out,
``--set`` overrides). Every engine runs that same command line, so a job launched here
behaves exactly like ``exaonepath-lab train`` under ``torchrun``:

- ``submitit``: one SLURM task per GPU (``tasks_per_node = gpus_per_node``); each task
  exports the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``) and calls the CLI in-process. On pre-emption or
  time-out the trainer checkpoints (it handles the signal itself) and
  :meth:`DinoTrainJob.checkpoint` resubmits the same command with ``--resume``.
- ``sbatch``: a generated script, for clusters without submitit, that runs
  ``srun torchrun --nnodes $SLURM_NNODES --nproc_per_node G --rdzv_backend c10d ...``,
  with ``--signal=B:USR1@<delay>`` and ``--requeue``: the batch shell forwards USR1 to
  torchrun (which passes it to its workers: the trainer checkpoints and exits), then
  requeues the job; the requeued script resumes from the checkpoint.
- ``torchrun``: a plain ``torchrun`` command for one machine (``--standalone``) or, for
  several nodes without SLURM, the command to start on every node.

The paper's run (§4.2) is 10 nodes × 8 A100 = 80 GPUs, global batch 5,120 = 64 per GPU.
:func:`render_launch` (the dry run, used by notebook 05) writes all three renderings
into a folder without submitting anything; :func:`submit` submits one of them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ..config import JobConfig
from ..io import write_json_atomic, write_text_atomic

try:  # submitit is optional for the sbatch/torchrun engines; only the submitit engine needs it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only where submitit is not installed
    _Checkpointable = object  # type: ignore[assignment,misc]

ENGINES = ("submitit", "sbatch", "torchrun")
#: Signals torchrun must forward to its workers: its defaults plus SLURM's pre-emption signal,
#: which torchrun would otherwise not catch (USR1's default action would kill the agent).
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
#: SLURM's warning signal before the time limit; the trainer checkpoints and returns on it.
PREEMPT_SIGNAL = "USR1"
#: The paper's global batch (§4.2: 5,120 = 64 per GPU × 80 GPUs), kept when the GPU count changes.
PAPER_GLOBAL_BATCH = 5120


@dataclasses.dataclass(frozen=True)
class LaunchConfig(JobConfig):
    """Where and how a DINO pretraining run is launched (the training recipe is the preset's).

    Sizes: ``time_min`` in minutes, ``mem_gb`` in GiB per node, ``signal_delay_s`` in s.
    """

    preset: str = "paper"  # pretraining preset, as in ``exaonepath-lab train --preset``
    data: str = ""  # tiling output dir or image folder, as seen from the compute nodes
    out: str = ""  # training output dir (checkpoints, config.json, logs)
    overrides: tuple[str, ...] = ()  # ``key=value`` passed to ``train --set``
    engine: str = "submitit"
    nodes: int = 10  # paper §4.2: 10 machines ...
    gpus_per_node: int = 8  # ... each with 8 A100
    global_batch: int | None = None  # None: paper preset 5,120; others: the preset's per-GPU batch × GPUs
    batch_per_gpu: int | None = None  # alternative to global_batch; sets it to this × GPUs
    cpus_per_task: int = 10  # per GPU: data-loader workers decode, Macenko-normalize and crop
    mem_gb: int | None = None  # per node; None = the partition's default
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # e.g. "a100" to pin the GPU type of the paper
    time_min: int = 48 * 60  # a common partition limit; requeues continue the run
    signal_delay_s: int = 120  # warning before the time limit: time to write a ViT-B checkpoint
    max_requeues: int = 20  # time-outs survived; 557k iterations (paper) span several 48 h slots
    job_name: str = "exaonepath-dino"
    rdzv_port: int = 29500  # torchrun's conventional rendezvous port on the first node
    setup: tuple[str, ...] = ()  # shell lines run before training, e.g. "source .venv/bin/activate"
    launch_dir: str | None = None  # where renderings and SLURM logs go; None = ``<out>/launch``

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"LaunchConfig: {msg}")

        if self.engine not in ENGINES:
            bad(f"engine={self.engine!r}; use one of {', '.join(ENGINES)}")
        if self.nodes < 1 or self.gpus_per_node < 1:
            bad(f"nodes={self.nodes} and gpus_per_node={self.gpus_per_node} must be >= 1")
        if self.cpus_per_task < 1:
            bad(f"cpus_per_task={self.cpus_per_task} must be >= 1")
        if self.time_min < 1:
            bad(f"time_min={self.time_min} must be >= 1 minute")
        if not 0 <= self.signal_delay_s < self.time_min * 60:
            bad(f"signal_delay_s={self.signal_delay_s} must be within the time limit ({self.time_min} min)")
        for k in ("global_batch", "batch_per_gpu"):
            v = getattr(self, k)
            if v is not None and v < 1:
                bad(f"{k}={v} must be >= 1")
        for o in self.overrides:
            if "=" not in o:
                bad(f"override {o!r} is not key=value (e.g. epochs=5)")
            if o.split("=", 1)[0].strip() in ("data", "out_dir"):
                bad(f"override {o!r}: give the data and output folders as LaunchConfig.data/out")

    @property
    def world_size(self) -> int:
        """Number of training processes, one per GPU."""
        return self.nodes * self.gpus_per_node

    @property
    def folder(self) -> Path:
        """Folder for renderings and SLURM logs."""
        return Path(self.launch_dir) if self.launch_dir else Path(self.out) / "launch"


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs, resolved: batch split, train command line, job texts."""

    config: LaunchConfig
    batch_per_gpu: int
    global_batch: int
    train_argv: tuple[str, ...]  # arguments of ``exaonepath-lab`` (starting with "train")
    sbatch: str  # the sbatch script (engine "sbatch")
    torchrun: str  # shell script with the plain torchrun command (engine "torchrun")
    submitit: dict[str, Any]  # executor parameters (engine "submitit")


# --------------------------------------------------------------------------- batch arithmetic
def split_batch(
    world_size: int, *, global_batch: int | None, batch_per_gpu: int | None, preset_batch_per_gpu: int
) -> tuple[int, int]:
    """``(batch_per_gpu, global_batch)`` with ``batch_per_gpu × world_size == global_batch``.

    ``global_batch`` wins when given (the paper fixes 5,120); it must divide evenly among
    the GPUs. Otherwise ``batch_per_gpu`` (or the preset's) times the GPUs is the global batch.
    """
    if global_batch is not None and batch_per_gpu is not None:
        if batch_per_gpu * world_size != global_batch:
            raise ValueError(
                f"batch per GPU {batch_per_gpu} × {world_size} GPUs = {batch_per_gpu * world_size}, "
                f"not the global batch {global_batch}; give only one of the two"
            )
        return batch_per_gpu, global_batch
    if global_batch is not None:
        if global_batch % world_size:
            divisors = [g for g in range(1, min(global_batch, 4096) + 1) if global_batch % g == 0]
            near = sorted(divisors, key=lambda g: abs(g - world_size))[:4]
            raise ValueError(
                f"global batch {global_batch} does not split evenly over {world_size} GPUs "
                f"({global_batch} / {world_size} = {global_batch / world_size:.2f} per GPU); use a GPU count "
                f"that divides it (e.g. {', '.join(map(str, sorted(near)))}), or change the global batch "
                f"(--global-batch) or give --batch-per-gpu instead"
            )
        return global_batch // world_size, global_batch
    per = batch_per_gpu if batch_per_gpu is not None else preset_batch_per_gpu
    return per, per * world_size


def _preset_config(preset: str, overrides: Sequence[str]) -> Any:
    """The preset's ``PretrainConfig`` with ``key=value`` overrides (JSON values, else strings).

    Run here, before anything is submitted, so that a typo in a key or value fails in
    seconds rather than after hours in a queue.
    """
    from .presets import get_preset

    kw: dict[str, Any] = {}
    for o in overrides:
        key, _, raw = o.partition("=")
        try:
            kw[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kw[key.strip()] = raw
    return get_preset(preset, **kw)


# --------------------------------------------------------------------------- rendering
def plan_launch(config: LaunchConfig) -> LaunchPlan:
    """Resolve the batch split and render every engine's job text (nothing is written)."""
    if not config.data or not config.out:
        raise ValueError("launch needs the training data folder and an output folder (--data, --out)")
    pcfg = _preset_config(config.preset, config.overrides)
    per_gpu = config.batch_per_gpu
    if per_gpu is None and any(o.split("=", 1)[0].strip() == "batch_size" for o in config.overrides):
        per_gpu = int(pcfg.batch_size)  # `--set batch_size=N` is the per-process batch, as in `train`
    target = config.global_batch
    if target is None and per_gpu is None and config.preset == "paper":
        target = PAPER_GLOBAL_BATCH  # the recipe fixes the global batch, not the per-GPU one
    per, glob = split_batch(
        config.world_size,
        global_batch=target,
        batch_per_gpu=per_gpu,
        preset_batch_per_gpu=int(pcfg.batch_size),
    )
    # Absolute paths: jobs start in another working directory on other machines.
    data, out = str(Path(config.data).absolute()), str(Path(config.out).absolute())
    argv = ["train", "--preset", config.preset, "--data", data, "--out", out]
    for o in config.overrides:
        if o.split("=", 1)[0].strip() != "batch_size":
            argv += ["--set", o]
    argv += ["--set", f"batch_size={per}"]  # per process; always explicit so the log shows it
    return LaunchPlan(
        config=config,
        batch_per_gpu=per,
        global_batch=glob,
        train_argv=tuple(argv),
        sbatch=render_sbatch(config, argv, batch_per_gpu=per, global_batch=glob),
        torchrun=render_torchrun(config, argv, batch_per_gpu=per, global_batch=glob),
        submitit=submitit_parameters(config),
    )


def format_slurm_time(minutes: int) -> str:
    """SLURM ``D-HH:MM:SS`` for a duration in minutes."""
    d, rem = divmod(int(minutes), 24 * 60)
    h, m = divmod(rem, 60)
    return f"{d}-{h:02d}:{m:02d}:00"


def parse_slurm_time(text: str) -> int:
    """Minutes from a SLURM time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"time {text!r} is not a SLURM time; use e.g. 2880, 48:00:00 or 2-00:00:00")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        secs = int(a) * 60 + int(b)
    else:  # M
        secs = int(a) * 60
    return max(1, -(-secs // 60))


def _q(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def _header(config: LaunchConfig, per: int, glob: int, engine: str) -> list[str]:
    return [
        f"# Generated by `exaonepath-lab launch --engine {engine}` (exaonepath_lab.pretrain.launch).",
        f"# DINO pretraining, preset {config.preset!r}: {config.nodes} node(s) x {config.gpus_per_node} GPU(s) "
        f"= {config.world_size} processes, {per} images per GPU = global batch {glob}.",
    ]


def torchrun_args(config: LaunchConfig, *, standalone: bool) -> list[str]:
    """The ``torchrun`` launcher options (before ``-m exaonepath_lab.cli``).

    ``--shutdown-timeout`` gives workers most of the signal delay to write their checkpoint
    before torchrun kills them.
    """
    common = [
        "--nproc_per_node", str(config.gpus_per_node),
        "--signals-to-handle", TORCHRUN_SIGNALS,
        "--shutdown-timeout", str(max(10, config.signal_delay_s - 20)),
    ]  # fmt: skip
    if standalone:
        return ["--standalone", "--nnodes", "1", *common]
    return [
        "--nnodes", "$SLURM_NNODES", *common,
        "--rdzv_id", "$SLURM_JOB_ID", "--rdzv_backend", "c10d", "--rdzv_endpoint", "$MASTER_ADDR:$PORT",
    ]  # fmt: skip


def render_sbatch(config: LaunchConfig, train_argv: Sequence[str], *, batch_per_gpu: int, global_batch: int) -> str:
    """The ``sbatch`` script: ``srun torchrun`` on every node, pre-emption → checkpoint → requeue."""
    logs = (config.folder / "slurm").absolute()
    directives = {
        "job-name": config.job_name,
        "nodes": config.nodes,
        "ntasks-per-node": 1,  # one torchrun agent per node; it starts one worker per GPU
        "gpus-per-node": config.gpus_per_node,
        "cpus-per-task": config.cpus_per_task * config.gpus_per_node,
        "time": format_slurm_time(config.time_min),
        # B: signals only this shell, which forwards it to torchrun and then requeues the job.
        "signal": f"B:USR1@{config.signal_delay_s}",
        "requeue": None,
        "open-mode": "append",  # a requeued job appends to the same log
        "output": f"{logs}/%x-%j.out",
        "error": f"{logs}/%x-%j.err",
    }
    for key, val in (("mem", f"{config.mem_gb}G" if config.mem_gb else None), ("partition", config.partition),
                     ("account", config.account), ("qos", config.qos), ("constraint", config.constraint)):
        if val:
            directives[key] = val
    lines = ["#!/bin/bash", *_header(config, batch_per_gpu, global_batch, "sbatch")]
    lines += [f"#SBATCH --{k}" if v is None else f"#SBATCH --{k}={v}" for k, v in directives.items()]
    train = list(train_argv)
    lines += [
        "",
        "set -uo pipefail",
        f"mkdir -p {shlex.quote(str(logs))}",
        *config.setup,
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"PORT={config.rdzv_port}",
        f"export OMP_NUM_THREADS={config.cpus_per_task}",
        "# A requeued job (SLURM_RESTART_COUNT > 0) continues from its last checkpoint.",
        'RESUME=""',
        'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then RESUME="--resume"; fi',
        "",
        "PREEMPTED=0",
        "on_preempt() {",
        '  PREEMPTED=1',
        '  echo "$(date): time limit or pre-emption near: asking the workers to checkpoint" >&2',
        '  kill -USR1 "$SRUN_PID" 2>/dev/null  # srun -> torchrun -> workers',
        "}",
        "trap on_preempt USR1",
        "",
        "srun --kill-on-bad-exit=1 torchrun "
        + " ".join(a if a.startswith("$") else shlex.quote(a) for a in torchrun_args(config, standalone=False))
        + f" -m exaonepath_lab.cli {_q(train)} --no-progress $RESUME &",
        "SRUN_PID=$!",
        "# `wait` returns early when the trap fires; keep waiting until the step has exited.",
        'wait "$SRUN_PID"; STATUS=$?',
        'while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID"; STATUS=$?; done',
        'if [ "$PREEMPTED" = 1 ]; then',
        '  echo "$(date): requeueing job $SLURM_JOB_ID; it resumes from the last checkpoint" >&2',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "  exit 0",
        "fi",
        'exit "$STATUS"',
        "",
    ]
    return "\n".join(lines)


def render_torchrun(config: LaunchConfig, train_argv: Sequence[str], *, batch_per_gpu: int, global_batch: int) -> str:
    """A shell script with the plain ``torchrun`` command (no SLURM).

    One node: ``--standalone``. Several nodes: run the script on every node with
    ``NODE_RANK`` (0 … nodes−1) and ``MASTER_ADDR`` (node 0's address) set. Extra
    arguments go to ``train`` (e.g. ``--resume``). The script ``exec``s torchrun, so a
    SIGUSR1/SIGTERM sent to it reaches torchrun, which forwards it to the workers:
    they checkpoint and exit.
    """
    lines = ["#!/bin/bash", *_header(config, batch_per_gpu, global_batch, "torchrun"), "set -euo pipefail", *config.setup]
    if config.nodes == 1:
        launcher = ["torchrun", *torchrun_args(config, standalone=True)]
        lines.append(f"exec {_q(launcher)} -m exaonepath_lab.cli {_q(train_argv)} \"$@\"")
    else:
        lines += [
            f"# Run on each of the {config.nodes} nodes: NODE_RANK=<0..{config.nodes - 1}> MASTER_ADDR=<node 0> $0",
            ': "${NODE_RANK:?set NODE_RANK}" "${MASTER_ADDR:?set MASTER_ADDR to node 0}"',
            f"exec torchrun --nnodes {config.nodes} --node_rank \"$NODE_RANK\" --nproc_per_node {config.gpus_per_node} "
            f"--signals-to-handle {TORCHRUN_SIGNALS} --rdzv_backend c10d "
            f"--rdzv_endpoint \"$MASTER_ADDR:{config.rdzv_port}\" -m exaonepath_lab.cli {_q(train_argv)} \"$@\"",
        ]
    lines.append("")
    return "\n".join(lines)


def submitit_parameters(config: LaunchConfig) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords: one task per GPU, SLURM's signal for pre-emption."""
    params: dict[str, Any] = {
        "name": config.job_name,
        "nodes": config.nodes,
        "tasks_per_node": config.gpus_per_node,  # one process per GPU, like torchrun's workers
        "gpus_per_node": config.gpus_per_node,
        "cpus_per_task": config.cpus_per_task,
        "timeout_min": config.time_min,
        "slurm_signal_delay_s": config.signal_delay_s,
        # USR1 (not submitit's default USR2): the signal the trainer turns into "checkpoint now".
        "slurm_additional_parameters": {"requeue": True, "signal": f"{PREEMPT_SIGNAL}@{config.signal_delay_s}"},
        # ... and submitit's own handler in the job listens to the same signal.
        "slurm_setup": [f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}", *config.setup],
    }
    if config.mem_gb:
        params["mem_gb"] = config.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(config, key):
            params[f"slurm_{key}"] = getattr(config, key)
    return params


def render_launch(config: LaunchConfig, folder: str | os.PathLike | None = None) -> dict[str, Path]:
    """Dry run: write the job renderings into ``folder`` (default ``config.folder``), submit nothing.

    Files: ``launch_config.json`` (this config), ``train_config.json`` (the resolved
    preset with the per-GPU batch), ``job.sbatch``, ``torchrun.sh``, ``submitit.json``
    (executor parameters and the command each task runs). Returns ``{name: path}``.
    """
    return write_plan(plan_launch(config), folder)


def write_plan(plan: LaunchPlan, folder: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write a resolved :class:`LaunchPlan` (see :func:`render_launch`); returns ``{name: path}``."""
    config = plan.config
    folder = Path(folder) if folder is not None else config.folder
    pcfg = _preset_config(config.preset, [*config.overrides, f"batch_size={plan.batch_per_gpu}"])
    pcfg = pcfg.replace(data=str(Path(config.data).absolute()), out_dir=str(Path(config.out).absolute()),
                        world_batch_size=plan.global_batch)
    paths = {
        "launch_config": config.save(folder / "launch_config.json"),
        "train_config": pcfg.save(folder / "train_config.json"),
        "sbatch": write_text_atomic(folder / "job.sbatch", plan.sbatch),
        "torchrun": write_text_atomic(folder / "torchrun.sh", plan.torchrun),
        "submitit": write_json_atomic(folder / "submitit.json", {
            "executor": "submitit.AutoExecutor",
            "folder": str((folder / "submitit" / "%j").absolute()),
            "parameters": plan.submitit,
            "max_num_timeout": config.max_requeues,
            "function": f"{DinoTrainJob.__module__}.{DinoTrainJob.__qualname__}",
            "command": ["exaonepath-lab", *plan.train_argv, "--no-progress"],
            "world_size": config.world_size,
            "batch_per_gpu": plan.batch_per_gpu,
            "global_batch": plan.global_batch,
        }),
    }
    for key in ("sbatch", "torchrun"):
        paths[key].chmod(0o755)
    return paths


# --------------------------------------------------------------------------- submitit job
class DinoTrainJob(_Checkpointable):
    """A submitit job running ``exaonepath-lab <train_argv>`` as one rank of a torchrun-like world.

    Submitit pickles this object; :meth:`checkpoint` (called by submitit on the
    pre-emption signal) resubmits the same command with ``--resume``.
    """

    def __init__(self, train_argv: Sequence[str]) -> None:
        self.train_argv = list(train_argv)

    def __call__(self) -> int:
        import submitit

        # Same environment torchrun gives its workers; each task sees all the node's GPUs
        # and picks cuda:LOCAL_RANK, as under torchrun.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        from ..cli import main

        # submitit's pre-emption handler (checkpoint() + requeue). The trainer replaces it
        # while it runs (same signal: checkpoint at the next iteration, then return), so a
        # pre-empted run hands the signal back here once its state is safely on disk.
        sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG.removeprefix("SIG"))
        requeue_handler = signal.getsignal(sig)
        rc = main(self.train_argv)
        if rc == 0 and run_status(self.train_argv) == "preempted" and callable(requeue_handler):
            requeue_handler(sig, None)  # rank 0: self.checkpoint(), requeue, exit; other ranks: return
        if rc:
            raise RuntimeError(f"exaonepath-lab {' '.join(self.train_argv)} exited with status {rc}")
        return rc

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Resubmit the same training command with ``--resume`` (the trainer has checkpointed)."""
        import submitit

        argv = self.train_argv if "--resume" in self.train_argv else [*self.train_argv, "--resume"]
        return submitit.helpers.DelayedSubmission(type(self)(argv))


def run_status(train_argv: Sequence[str]) -> str | None:
    """``status`` of ``<out>/run_report.json`` (completed | stopped | preempted), None if absent."""
    argv = list(train_argv)
    if "--out" not in argv:
        return None
    report = Path(argv[argv.index("--out") + 1]) / "run_report.json"
    try:
        return json.loads(report.read_text()).get("status")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------- submission
def submit(config: LaunchConfig, *, cluster: str | None = None) -> str:
    """Render the job (as :func:`render_launch`) and submit it with ``config.engine``.

    Returns the SLURM job id (``submitit``/``sbatch``) or ``"exit <code>"`` for a
    torchrun run in the foreground. ``cluster`` forces submitit's executor (``"slurm"``,
    ``"local"`` or ``"debug"``; the last two run here, for testing).
    """
    plan = plan_launch(config)
    paths = write_plan(plan)
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
    job = executor.submit(DinoTrainJob([*plan.train_argv, "--no-progress"]))
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
        if not torch_cuda_available():
            params["gpus_per_node"] = 0
        # The local executor's time-out warning must be the signal the trainer checkpoints on.
        os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", PREEMPT_SIGNAL)
    executor.update_parameters(**params)
    return executor


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
