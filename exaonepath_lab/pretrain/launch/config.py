"""Where a DINO pretraining run goes: :class:`LaunchConfig` (nodes × GPUs, SLURM options, engine)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...config import JobConfig, parse_key_values

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
    resume: bool = False  # continue the run in ``out`` from its checkpoint (a new job for an ended run)

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
        try:
            keys = parse_key_values(self.overrides, "override")
        except ValueError as e:
            bad(str(e))
        for key in ("data", "out_dir"):
            if key in keys:
                bad(f"override {key}=...: give the data and output folders as LaunchConfig.data/out")

    @property
    def world_size(self) -> int:
        """Number of training processes, one per GPU."""
        return self.nodes * self.gpus_per_node

    @property
    def folder(self) -> Path:
        """Folder for renderings and SLURM logs."""
        return Path(self.launch_dir) if self.launch_dir else Path(self.out) / "launch"

    @property
    def log_folder(self) -> Path:
        """Absolute folder of the sbatch job's stdout/stderr (``<folder>/slurm``); created before submission,
        since SLURM opens these files before the job script runs."""
        return (self.folder / "slurm").absolute()
