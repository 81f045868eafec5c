"""Cluster launch of DINO pretraining: SLURM via submitit, a generated ``sbatch`` script, or torchrun.

One :class:`LaunchConfig` describes *where* a run goes (nodes × GPUs, partition, time);
the *what* is the preset plus ``key=value`` overrides, resolved once into a
:class:`~exaonepath_lab.pretrain.config.PretrainConfig` (:attr:`LaunchPlan.train_config`).
Every engine runs that same configuration:

- ``submitit``: one SLURM task per GPU (``tasks_per_node = gpus_per_node``); each task
  exports the torchrun environment and calls the trainer with the plan's
  ``PretrainConfig`` (:class:`DinoTrainJob`). On pre-emption or time-out the trainer
  checkpoints (it handles the signal itself) and :meth:`DinoTrainJob.checkpoint`
  resubmits the same job with ``resume=True``.
- ``sbatch``: a generated script, for clusters without submitit, that runs
  ``srun torchrun ... -m exaonepath_lab.cli train ...`` with ``--signal=B:USR1@<delay>``
  and ``--requeue``: the batch shell forwards USR1 to torchrun (which passes it to its
  workers: the trainer checkpoints and exits), then requeues the job; the requeued
  script resumes from the checkpoint.
- ``torchrun``: a plain ``torchrun`` command for one machine (``--standalone``) or, for
  several nodes without SLURM, the command to start on every node.

The paper's run (§4.2) is 10 nodes × 8 A100 = 80 GPUs, global batch 5,120 = 64 per GPU.
:func:`render_launch` (the dry run, used by notebook 05) writes all three renderings
into a folder without submitting anything; :func:`submit` submits one of them.

Modules, one concern each: :mod:`.config` (the launch config), :mod:`.batch` (batch
arithmetic, preset resolution), :mod:`.slurm_time`, :mod:`.slurm` (asking the scheduler), :mod:`.render` (the plan and the three
renderings), :mod:`.job` (the submitit job), :mod:`.submit` (submission).
"""
from __future__ import annotations

from .batch import resolve_train_config, split_batch
from .config import ENGINES, PAPER_GLOBAL_BATCH, PREEMPT_SIGNAL, TORCHRUN_SIGNALS, LaunchConfig
from .job import DinoTrainJob
from .render import (
    LaunchPlan,
    plan_launch,
    render_launch,
    render_sbatch,
    render_torchrun,
    submitit_parameters,
    torchrun_args,
    write_plan,
)
from .slurm import FINAL_STATES, job_records, scheduler_unavailable, squeue, wait_for_job
from .slurm_time import format_slurm_time, parse_slurm_time
from .submit import make_executor, submit

__all__ = [
    "ENGINES", "PAPER_GLOBAL_BATCH", "PREEMPT_SIGNAL", "TORCHRUN_SIGNALS", "DinoTrainJob", "LaunchConfig",
    "LaunchPlan", "format_slurm_time", "make_executor", "parse_slurm_time", "plan_launch", "render_launch",
    "render_sbatch", "render_torchrun", "resolve_train_config", "split_batch", "submit", "submitit_parameters",
    "torchrun_args", "write_plan", "FINAL_STATES", "job_records", "scheduler_unavailable", "squeue", "wait_for_job",
]
