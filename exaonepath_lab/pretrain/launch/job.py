"""The submitit job: one rank of DINO pretraining that checkpoints and requeues itself on pre-emption."""
from __future__ import annotations

import signal
from typing import Any

from ..config import PretrainConfig

try:  # submitit is optional for the sbatch/torchrun engines; only the submitit engine needs it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only where submitit is not installed
    _Checkpointable = object  # type: ignore[assignment,misc]


class DinoTrainJob(_Checkpointable):
    """A submitit job training ``config`` as one rank of a torchrun-like world.

    Submitit pickles this object (the :class:`PretrainConfig` travels with it);
    :meth:`checkpoint` (called by submitit on the pre-emption signal, after the trainer
    has written its checkpoint) resubmits the same job with ``resume=True``. A first run
    (``resume=False``) refuses an output folder that already holds a checkpoint, as
    ``exaonepath-lab train`` without ``--resume`` does.
    """

    def __init__(self, config: PretrainConfig, *, resume: bool = False) -> None:
        self.config = config
        self.resume = resume

    def __call__(self) -> str:
        import submitit

        from ..checkpoint import refuse_existing_checkpoint
        from ..data import record_stain_target
        from ..trainer import train

        # Same environment torchrun gives its workers; each task sees all the node's GPUs
        # and picks cuda:LOCAL_RANK, as under torchrun.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        if not self.resume:
            refuse_existing_checkpoint(self.config.out_dir)
        config = record_stain_target(self.config, self.config.out_dir) if self.config.normalize else self.config
        # submitit's pre-emption handler (checkpoint() + requeue). The trainer replaces it
        # while it runs (same signal: checkpoint at the next iteration, then return), so a
        # pre-empted run hands the signal back here once its state is safely on disk.
        sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG.removeprefix("SIG"))
        requeue_handler = signal.getsignal(sig)
        res = train(config, resume=self.resume, progress=False)
        print(res.summary(), flush=True)
        if res.stain_counts:
            print(f"Macenko statuses: {res.stain_counts}", flush=True)
        if res.status == "preempted" and callable(requeue_handler):
            requeue_handler(sig, None)  # rank 0: self.checkpoint(), requeue, exit; other ranks: return
        return res.status

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Resubmit the same training with ``resume=True`` (the trainer has checkpointed)."""
        import submitit

        return submitit.helpers.DelayedSubmission(type(self)(self.config, resume=True))

