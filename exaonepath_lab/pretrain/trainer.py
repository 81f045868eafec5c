"""The DINO training loop: :func:`train` (Caron et al. 2021, Algorithm 1; EXAONEPath §3.3, §4.2).

One call trains from scratch or resumes from ``out_dir/checkpoint.pt``; it works in a
single CPU process (no process group) and under ``torchrun`` (DDP, NCCL/gloo).
Per iteration it logs loss, lr, weight decay, teacher momentum and temperature,
teacher entropies, KL and throughput to ``log.jsonl``; it watches for collapse;
it stops with a clear error on a non-finite loss (keeping the last good checkpoint);
and on SIGTERM/SIGUSR1 (SLURM pre-emption) it checkpoints and returns cleanly so the
job can be requeued with ``--resume``.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import atomic_path, write_json_atomic
from . import distributed as D
from .checkpoint import CHECKPOINT_NAME, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import PretrainConfig
from .data import EpochSampler, PretrainCollate, open_pretrain_dataset
from .head import DINOHead, MultiCropWrapper
from .loss import DINOLoss
from .monitor import CollapseMonitor
from .multicrop import MultiCropAugment
from .optim import apply_schedules, build_optimizer, cancel_last_layer_gradients, clip_gradients
from .schedules import build_schedules
from .teacher import ema_update, make_teacher

# Keys that may change between a run and its resumption (they do not change the maths).
RESUME_FREE_KEYS = {"out_dir", "num_workers", "device", "num_threads", "checkpoint_every", "log_every",
                    "tensorboard", "world_batch_size", "data", "preset", "collapse_window"}


#: Log events that stay when a resumed run rewrites the rows after its checkpoint: they record
#: what happened to the run (a pre-emption, a non-finite loss), not an iteration's metrics.
HISTORY_EVENTS = ("preempted", "non_finite_loss")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``status``: ``completed`` | ``stopped`` (``stop_at``) | ``preempted`` (signal)."""

    out_dir: Path
    status: str
    iteration: int
    total_iters: int
    checkpoint: Path | None
    final: dict[str, float] = field(default_factory=dict)
    collapse_warnings: list[str] = field(default_factory=list)
    stain_counts: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None
    losses: list[float] = field(default_factory=list)  # losses of the iterations run in this call
    student: nn.Module | None = field(default=None, repr=False)  # backbone + head, for notebooks and tests
    teacher: nn.Module | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One line: status, iteration, final loss and teacher entropy, checkpoint (what ``train`` prints)."""
        f = self.final
        return (f"{self.status} at iteration {self.iteration}/{self.total_iters}: loss "
                f"{f.get('loss', float('nan')):.4f}, teacher entropy {f.get('teacher_entropy', float('nan')):.3f}; "
                f"checkpoint {self.checkpoint}")


def build_models(cfg: PretrainConfig) -> tuple[MultiCropWrapper, MultiCropWrapper, dict[str, Any], Any]:
    """Student (with drop path) and teacher (without) = backbone + DINO head; returns model spec and init report."""
    from ..models import build_backbone, embed_dim_of

    kw = dict(cfg.timm_kwargs)
    if cfg.timm_name.startswith(("vit", "deit")) and "dynamic_img_size" not in kw:
        # Global and local crops have different sizes; timm interpolates the position embedding.
        kw["dynamic_img_size"] = True
    s_bb = build_backbone(cfg.timm_name, drop_path_rate=cfg.drop_path_rate, **kw)
    t_bb = build_backbone(cfg.timm_name, **kw)
    report = None
    if cfg.init_checkpoint:
        from .init import load_init_weights

        report = load_init_weights(s_bb, cfg.init_checkpoint)
    dim = embed_dim_of(s_bb)

    def head() -> DINOHead:
        return DINOHead(dim, cfg.out_dim, hidden_dim=cfg.head_hidden_dim, bottleneck_dim=cfg.head_bottleneck_dim,
                        nlayers=cfg.head_nlayers, use_bn=cfg.use_bn_in_head, norm_last_layer=cfg.norm_last_layer)

    student = MultiCropWrapper(s_bb, head())
    teacher = make_teacher(student, MultiCropWrapper(t_bb, head()))
    return student, teacher, {"timm_name": cfg.timm_name, "timm_kwargs": kw}, report


def build_augment(cfg: PretrainConfig) -> MultiCropAugment:
    """The multi-crop transform of a config."""
    return MultiCropAugment(
        global_size=cfg.global_crop_size, local_size=cfg.local_crop_size, n_local=cfg.n_local_crops,
        global_scale=tuple(cfg.global_crop_scale), local_scale=tuple(cfg.local_crop_scale),
        color_jitter=tuple(cfg.color_jitter), color_jitter_p=cfg.color_jitter_p, grayscale_p=cfg.grayscale_p,
        blur_p=tuple(cfg.blur_p), blur_sigma=tuple(cfg.blur_sigma), solarize_p=cfg.solarize_p, flip_p=cfg.flip_p,
    )


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class _StopFlag:
    """SIGTERM/SIGUSR1 -> request a checkpoint and a clean exit at the next iteration boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
                if s is not None:
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _check_resume_config(saved: dict[str, Any], cfg: PretrainConfig, ckpt_path: Path) -> None:
    now = cfg.to_dict()
    # A key added to PretrainConfig after the checkpoint was written compares as its default.
    saved = {**PretrainConfig().to_dict(), **saved}
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
        raise ValueError(
            f"{ckpt_path} was written with a different configuration ({shown}). Resume with the same "
            "settings, or choose a new --out directory for a new run."
        )


@dataclass
class _Run:
    """Everything one call of :func:`train` builds, and where the run stands (``it``, ``epoch``, ...)."""

    cfg: PretrainConfig
    info: D.DistInfo
    device: torch.device
    out: Path
    dataset: torch.utils.data.Dataset
    sampler: EpochSampler
    total_iters: int
    stop_it: int
    sched: dict[str, np.ndarray]
    student: MultiCropWrapper
    teacher: MultiCropWrapper
    loss_fn: DINOLoss
    optimizer: torch.optim.Optimizer
    augment: MultiCropAugment
    collate: PretrainCollate
    model_spec: dict[str, Any]
    init_report: Any
    monitor: CollapseMonitor
    ddp_student: nn.Module | None = None
    it: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    status: str = "completed"
    stain_counts: Counter = field(default_factory=Counter)
    losses: list[float] = field(default_factory=list)
    last_row: dict[str, Any] = field(default_factory=dict)
    last_good: Path | None = None
    writer: Any = None
    pbar: Any = None

    @property
    def iters_per_epoch(self) -> int:
        return self.sampler.num_batches

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"

    def position(self) -> tuple[int, int, int]:
        """``(iteration, epoch, batch_in_epoch)`` of the next iteration, as a checkpoint stores it."""
        if self.batch_in_epoch < self.iters_per_epoch:
            return self.it, self.epoch, self.batch_in_epoch
        return self.it, self.epoch + 1, 0


def train(
    config: PretrainConfig,
    dataset: torch.utils.data.Dataset | None = None,
    *,
    resume: bool = True,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train DINO as ``config`` says; resume from ``out_dir/checkpoint.pt`` when ``resume``.

    ``dataset``: any item-protocol dataset (else opened from ``config.data``).
    ``stop_at``: stop (with a checkpoint) after this global iteration without
    changing the schedules — how a job is split into pieces and how tests interrupt.

    The steps, in order: :func:`_build` (process, data, schedules, models),
    :func:`_resume` (checkpoint → weights, optimizer, position, RNG), :func:`_wrap_for_ranks`
    (DDP), :func:`_open_logs`, :func:`_loop` (:func:`_iteration` → :func:`_log_row`,
    :func:`_save` on schedule or signal), :func:`_finish` (report, curves).
    """
    import torch.distributed as dist

    owns_group = not (dist.is_available() and dist.is_initialized())
    run = _build(config, dataset, stop_at=stop_at)
    try:
        ck = _resume(run) if resume else None
        if ck is None:
            torch.manual_seed(run.cfg.seed + run.info.rank)  # drop path differs per rank, as data does
        _wrap_for_ranks(run, ck)
        _open_logs(run, progress=progress)
        _loop(run)
    finally:
        if run.pbar is not None:
            run.pbar.close()
        if run.writer is not None:
            run.writer.close()
    result = _finish(run)
    if owns_group and run.info.distributed:
        D.cleanup()  # a group train() created is train()'s to close
    return result


def _build(config: PretrainConfig, dataset: torch.utils.data.Dataset | None, *, stop_at: int | None) -> _Run:
    """Join the process group, open the data, lay out the schedules, build student/teacher/loss/optimizer."""
    device = D.resolve_device(config.device)
    if config.num_threads > 0 and device.type == "cpu":
        torch.set_num_threads(config.num_threads)
    info = D.init_distributed(device)
    out = Path(config.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    cfg = config.replace(world_batch_size=config.batch_size * info.world_size)
    if dataset is None:
        if not cfg.data:
            raise ValueError("no training data: set config.data (tiling output or image folder) or pass dataset=")
        dataset = open_pretrain_dataset(cfg.data, out_px=cfg.load_px)
    sampler = EpochSampler(len(dataset), batch_size=cfg.batch_size, seed=cfg.seed, rank=info.rank,
                           world_size=info.world_size)
    total_iters = int(cfg.max_iters) if cfg.max_iters else cfg.epochs * sampler.num_batches
    tt_warm = cfg.teacher_temp_warmup_iters(sampler.num_batches)
    sched = build_schedules(
        total_iters=total_iters, peak_lr=cfg.peak_lr(info.world_size), min_lr=cfg.min_lr,
        warmup_iters=cfg.warmup_iters, weight_decay=cfg.weight_decay, weight_decay_end=cfg.weight_decay_end,
        momentum=cfg.momentum_teacher, momentum_end=cfg.momentum_teacher_end,
        warmup_teacher_temp=cfg.warmup_teacher_temp, teacher_temp=cfg.teacher_temp,
        warmup_teacher_temp_iters=tt_warm, teacher_temp_warmup=cfg.teacher_temp_warmup,
    )
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    student, teacher, model_spec, init_report = build_models(cfg)
    student.to(device)
    teacher.to(device)
    return _Run(
        cfg=cfg, info=info, device=device, out=out, dataset=dataset, sampler=sampler, total_iters=total_iters,
        stop_it=min(total_iters, int(stop_at)) if stop_at is not None else total_iters, sched=sched,
        student=student, teacher=teacher,
        loss_fn=DINOLoss(cfg.out_dim, n_crops=cfg.n_crops, student_temp=cfg.student_temp,
                         center_momentum=cfg.center_momentum, centering=cfg.centering).to(device),
        optimizer=build_optimizer(student, lr=float(sched["lr"][0]), weight_decay=float(sched["wd"][0])),
        augment=build_augment(cfg),
        collate=PretrainCollate(cfg.normalize, stain_target=cfg.stain_target, stain_policy=cfg.stain_policy,
                                load_px=cfg.load_px),
        model_spec=model_spec, init_report=init_report,
        last_good=out / CHECKPOINT_NAME if (out / CHECKPOINT_NAME).is_file() else None,
        monitor=CollapseMonitor(cfg.out_dim, window=cfg.collapse_window,
                                grace=max(cfg.collapse_window, total_iters // 10)),
    )


def _checkpoint_world_size(ck: dict[str, Any]) -> int:
    """Processes that wrote a checkpoint (older checkpoints: one RNG state per rank, or a single one)."""
    if "world_size" in ck:
        return int(ck["world_size"])
    return len(ck["rng"]) if isinstance(ck["rng"], list) else 1


def _resume(run: _Run) -> dict[str, Any] | None:
    """Restore weights, optimizer, centre, data position and RNG from ``out/checkpoint.pt``; None if absent.

    Refused, before anything trains, when the configuration differs (:func:`_check_resume_config`)
    or when the checkpoint was written by another number of processes: the sampler's shards
    and the per-rank RNG streams are per process, so such a run could not continue the same way.
    """
    prev = latest_checkpoint(run.out)
    if prev is None:
        return None
    ck = load_checkpoint(prev, map_location="cpu")
    _check_resume_config(ck.get("config", {}), run.cfg, prev)
    saved_ws = _checkpoint_world_size(ck)
    if saved_ws != run.info.world_size:
        raise ValueError(
            f"{prev} was written by a run of {saved_ws} process(es); this run has {run.info.world_size}. "
            f"Each process's data shard and random state are in the checkpoint, so it resumes only with the "
            f"same number of processes: relaunch with {saved_ws} (torchrun --nproc_per_node / launch --nodes x "
            f"--gpus-per-node = {saved_ws}), or start a new run in another --out."
        )
    run.student.load_state_dict(ck["student"])
    run.teacher.load_state_dict(ck["teacher"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.loss_fn.center.copy_(ck["center"].to(run.device))
    run.it, run.epoch, run.batch_in_epoch = int(ck["iteration"]), int(ck["epoch"]), int(ck["batch_in_epoch"])
    run.stain_counts.update(ck.get("stain_counts", {}))
    run.last_good = prev
    rng = ck["rng"]
    set_rng_state(rng[run.info.rank] if isinstance(rng, list) else rng)
    return ck


def _wrap_for_ranks(run: _Run, ck: dict[str, Any] | None) -> None:
    """DDP around the student when there are several processes (else the student itself)."""
    if not run.info.distributed:
        run.ddp_student = run.student
        return
    from torch.nn.parallel import DistributedDataParallel as DDP

    if run.cfg.use_bn_in_head and run.device.type == "cuda":
        # DINO: a BN head normalises over the global batch (SyncBatchNorm needs CUDA; on CPU
        # each rank uses its own batch statistics).
        run.student = nn.SyncBatchNorm.convert_sync_batchnorm(run.student)
        run.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(run.teacher)
        run.optimizer = build_optimizer(run.student, lr=float(run.sched["lr"][0]),
                                        weight_decay=float(run.sched["wd"][0]))
        if ck is not None and run.it > 0:
            run.optimizer.load_state_dict(ck["optimizer"])
    run.ddp_student = DDP(run.student, device_ids=[run.device.index] if run.device.type == "cuda" else None)


def _open_logs(run: _Run, *, progress: bool) -> None:
    """Rank 0: ``config.json``, the log cut back to the checkpoint, TensorBoard and the progress bar."""
    if not run.info.is_main:
        return
    run.cfg.save(run.out / "config.json")
    _truncate_log(run.log_path, run.it)
    if run.cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise RuntimeError("tensorboard=True needs the tensorboard package: pip install tensorboard") from e
        run.writer = SummaryWriter(str(run.out / "tb"))
    if run.init_report is not None:
        _append_log(run.log_path, {"event": "init", "report": run.init_report.summary()})
    if progress:
        from tqdm.auto import tqdm

        run.pbar = tqdm(total=run.stop_it, initial=run.it, desc="DINO", unit="it", dynamic_ncols=True)


def _loop(run: _Run) -> None:
    """Iterate to ``stop_it``, checkpointing on schedule; on SIGTERM/SIGUSR1 checkpoint and return."""
    cfg = run.cfg
    loader_gen = torch.Generator().manual_seed(cfg.seed)  # keeps DataLoader off the global RNG
    with _StopFlag() as stop:
        while run.it < run.stop_it:
            if run.batch_in_epoch >= run.iters_per_epoch:
                run.epoch, run.batch_in_epoch = run.epoch + 1, 0
            run.sampler.set_epoch(run.epoch, run.batch_in_epoch)
            loader = torch.utils.data.DataLoader(
                run.dataset, batch_size=cfg.batch_size, sampler=run.sampler, collate_fn=run.collate,
                drop_last=True, num_workers=cfg.num_workers, generator=loader_gen, persistent_workers=False,
                pin_memory=run.device.type == "cuda",
            )
            t_prev = time.perf_counter()
            for batch in loader:
                t_prev = _iteration(run, batch, t_prev)
                if D.broadcast_flag(stop.signum is not None, run.device):
                    run.status = "preempted"
                    _save(run)
                    if run.info.is_main:
                        _append_log(run.log_path, {"event": "preempted", "it": run.it, "signal": stop.signum})
                    return
                if run.it >= run.stop_it or run.batch_in_epoch >= run.iters_per_epoch or (
                        cfg.checkpoint_every > 0 and run.it % cfg.checkpoint_every == 0):
                    _save(run)
                if run.it >= run.stop_it:
                    return


def _iteration(run: _Run, batch: dict[str, Any], t_prev: float) -> float:
    """One DINO iteration on ``batch``: step, count stain statuses, advance, log. Returns its end time."""
    t_data = time.perf_counter()
    row = _step(run, batch)
    run.stain_counts.update(batch["stain_status"])
    t_end = time.perf_counter()
    row.update(stain_failed=sum(s not in ("ok", "off") for s in batch["stain_status"]), data_s=t_data - t_prev,
               step_s=t_end - t_data,
               img_per_s=run.cfg.batch_size * run.info.world_size / max(t_end - t_prev, 1e-9))
    run.losses.append(row["loss"])
    run.it += 1
    run.batch_in_epoch += 1
    warn = run.monitor.update(run.it, loss=row["loss"], teacher_entropy=row["teacher_entropy"],
                              batch_entropy=row["batch_entropy"])
    _log_row(run, row, warn)
    run.last_row = row
    return t_end


def _step(run: _Run, batch: dict[str, Any]) -> dict[str, Any]:
    """Forward, the cross-rank finiteness check, backward, clipping, optimizer and EMA updates; the metrics row.

    Every rank learns every rank's loss before any ``backward`` (one all-reduce), so a
    non-finite loss on one rank stops all of them at the same point with the same message,
    instead of leaving the others blocked in DDP's gradient all-reduce.
    """
    cfg, it = run.cfg, run.it
    lr, wd = float(run.sched["lr"][it]), float(run.sched["wd"][it])
    m, t_temp = float(run.sched["momentum"][it]), float(run.sched["teacher_temp"][it])
    apply_schedules(run.optimizer, lr, wd)
    gen = torch.Generator().manual_seed(_seed_for(cfg.seed, it, run.info.rank))  # crops reproducible on resume
    images = batch["images"].to(run.device, non_blocking=True)
    t0 = time.perf_counter()
    crops = run.augment(images, batch["sizes"], generator=gen)
    t_aug = time.perf_counter() - t0
    autocast = (torch.autocast(device_type=run.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())
    with autocast:
        with torch.no_grad():
            t_out = run.teacher(crops[:2])
        s_out = run.ddp_student(crops)
    loss = run.loss_fn(s_out, t_out, t_temp)
    stats = run.loss_fn.last_stats
    row: dict[str, Any] = {"it": it, "epoch": run.epoch, "loss": float(loss.detach()), "lr": lr, "wd": wd,
                           "momentum": m, "teacher_temp": t_temp, "teacher_entropy": stats.teacher_entropy,
                           "batch_entropy": stats.batch_entropy, "kl": stats.kl, "aug_s": t_aug}
    rank_losses = D.gather_floats(row["loss"], run.device)
    if not all(math.isfinite(v) for v in rank_losses):
        _stop_non_finite(run, row, rank_losses)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad > 0:
        norms = clip_gradients(run.student.parameters(), cfg.clip_grad)
        row["grad_norm"] = float(np.sqrt(np.sum(np.square(norms)))) if norms else 0.0
    cancel_last_layer_gradients(run.student.head.last_layer_parameters(), it / run.iters_per_epoch,
                                cfg.freeze_last_layer_epochs)
    run.optimizer.step()
    ema_update(run.teacher, run.student, m)
    return row


def _stop_non_finite(run: _Run, row: dict[str, Any], rank_losses: list[float]) -> None:
    """Log the event (rank 0) and raise the same :class:`NonFiniteLossError` on every rank."""
    bad = [r for r, v in enumerate(rank_losses) if not math.isfinite(v)]
    if run.info.is_main:
        _append_log(run.log_path, {**row, "event": "non_finite_loss", "rank_losses": rank_losses, "ranks": bad})
    where = "" if run.info.world_size == 1 else \
        f" on rank(s) {', '.join(map(str, bad))} of {run.info.world_size} (losses by rank: {rank_losses})"
    kept = (f"the last good checkpoint is kept: {run.last_good}" if run.last_good else
            f"no checkpoint had been written yet (checkpoint_every={run.cfg.checkpoint_every})")
    value = rank_losses[bad[0]]
    raise NonFiniteLossError(
        f"DINO loss became non-finite ({value}) at iteration {run.it}{where} (lr {row['lr']:.3g}, "
        f"precision {run.cfg.precision}); {kept}. Lower lr, raise warmup_iters, keep clip_grad, "
        "or use bf16 instead of fp16; then rerun with --resume."
    )


def _log_row(run: _Run, row: dict[str, Any], warn: str | None) -> None:
    """Rank 0: collapse warning, ``log.jsonl`` every ``log_every`` iterations, TensorBoard, progress bar."""
    if not run.info.is_main:
        return
    if warn:
        row["collapse_warning"] = warn
        warnings.warn(warn, RuntimeWarning, stacklevel=4)
    if run.it % max(run.cfg.log_every, 1) == 0 or run.it == run.stop_it:
        _append_log(run.log_path, row)
    if run.writer is not None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "it":
                run.writer.add_scalar(k, v, run.it)
    if run.pbar is not None:
        run.pbar.update(1)
        run.pbar.set_postfix(loss=f"{row['loss']:.3f}", H=f"{row['teacher_entropy']:.2f}",
                             ips=f"{row['img_per_s']:.0f}")


def _save(run: _Run) -> Path:
    """Checkpoint the run at its current position (all ranks' RNG states; rank 0 writes)."""
    rng_all = D.gather_objects(rng_state())
    if run.info.is_main:
        it, epoch, batch_in_epoch = run.position()
        save_checkpoint(run.ckpt_path, {
            "model": run.model_spec, "teacher_backbone": run.teacher.backbone.state_dict(),
            "student": run.student.state_dict(), "teacher": run.teacher.state_dict(),
            "optimizer": run.optimizer.state_dict(), "center": run.loss_fn.center.detach().cpu(),
            "iteration": it, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "rng": rng_all if run.info.distributed else rng_all[0], "world_size": run.info.world_size,
            "config": run.cfg.to_dict(), "stain_counts": dict(run.stain_counts), "total_iters": run.total_iters,
        })
    D.barrier()
    run.last_good = run.ckpt_path
    return run.ckpt_path


def _finish(run: _Run) -> TrainResult:
    """Sum the stain counts over ranks; rank 0 writes the end event, ``run_report.json``, curves and CSV."""
    if run.status == "completed" and run.it < run.total_iters:
        run.status = "stopped"
    counts = _reduce_counts(run.stain_counts, run.device)
    final = {k: v for k, v in run.last_row.items() if isinstance(v, (int, float))}
    checkpoint = run.ckpt_path if run.ckpt_path.is_file() else None
    if run.info.is_main:
        _append_log(run.log_path, {"event": "end", "status": run.status, "it": run.it, "stain_counts": counts,
                                   "collapse_warnings": run.monitor.warnings})
        write_json_atomic(run.out / "run_report.json", {
            "status": run.status, "iteration": run.it, "total_iters": run.total_iters,
            "world_size": run.info.world_size, "final": final, "collapse_warnings": run.monitor.warnings,
            "stain_counts": counts, "checkpoint": str(checkpoint) if checkpoint else None,
        })
        _write_curves(run.log_path, run.out, out_dim=run.cfg.out_dim)
    D.barrier()
    return TrainResult(
        out_dir=run.out, status=run.status, iteration=run.it, total_iters=run.total_iters, checkpoint=checkpoint,
        final=final, collapse_warnings=list(run.monitor.warnings), stain_counts=counts, log_path=run.log_path,
        losses=run.losses, student=run.student, teacher=run.teacher,
    )


def _write_curves(log_path: Path, out: Path, *, out_dim: int) -> None:
    """``curves.png/.html`` and ``log.csv`` from the log; nothing when no iteration was logged yet."""
    from .curves import read_log, save_curves

    rows = read_log(log_path)
    if not any("loss" in r for r in rows):
        return  # e.g. stop_at == the resumed iteration: nothing to draw
    save_curves(log_path, out, out_dim=out_dim)
    import pandas as pd

    with atomic_path(out / "log.csv") as tmp:  # the same metrics as a table, for spreadsheets
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def _truncate_log(path: Path, it: int) -> None:
    """Drop log rows at or after iteration ``it`` (a resumed run rewrites them); keep :data:`HISTORY_EVENTS`."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if r.get("event") in HISTORY_EVENTS or (r.get("it", -1) < it and r.get("event") != "end"):
            keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))


def _reduce_counts(counts: Counter[str], device: torch.device) -> dict[str, int]:
    """Sum Macenko status counts over ranks."""
    keys = ["ok", "off", "too_few_tissue_pixels", "degenerate", "nonfinite"]
    # A fixed key list keeps the all-reduced tensor the same size on every rank.
    other = sum(v for k, v in counts.items() if k not in keys)
    t = torch.tensor([float(counts.get(k, 0)) for k in keys] + [float(other)], device=device)
    keys = keys + ["other"]
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return {k: int(v) for k, v in zip(keys, t.tolist()) if v > 0}
