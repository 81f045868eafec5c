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
    """
    cfg = config
    device = D.resolve_device(cfg.device)
    if cfg.num_threads > 0 and device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    import torch.distributed as dist

    owns_group = not (dist.is_available() and dist.is_initialized())
    info = D.init_distributed(device)
    out = Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    cfg = cfg.replace(world_batch_size=cfg.batch_size * info.world_size)

    if dataset is None:
        if not cfg.data:
            raise ValueError("no training data: set config.data (tiling output or image folder) or pass dataset=")
        dataset = open_pretrain_dataset(cfg.data, out_px=cfg.load_px)
    sampler = EpochSampler(len(dataset), batch_size=cfg.batch_size, seed=cfg.seed, rank=info.rank,
                           world_size=info.world_size)
    iters_per_epoch = sampler.num_batches
    total_iters = int(cfg.max_iters) if cfg.max_iters else cfg.epochs * iters_per_epoch
    stop_it = min(total_iters, int(stop_at)) if stop_at is not None else total_iters
    tt_warm = cfg.teacher_temp_warmup_iters(iters_per_epoch)
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
    loss_fn = DINOLoss(cfg.out_dim, n_crops=cfg.n_crops, student_temp=cfg.student_temp,
                       center_momentum=cfg.center_momentum, centering=cfg.centering).to(device)
    optimizer = build_optimizer(student, lr=float(sched["lr"][0]), weight_decay=float(sched["wd"][0]))
    augment = build_augment(cfg)
    collate = PretrainCollate(cfg.normalize, stain_target=cfg.stain_target, stain_policy=cfg.stain_policy,
                              load_px=cfg.load_px)

    it, epoch, batch_in_epoch = 0, 0, 0
    stain_counts: Counter[str] = Counter()
    ckpt_path = out / CHECKPOINT_NAME
    if resume and (prev := latest_checkpoint(out)) is not None:
        ck = load_checkpoint(prev, map_location="cpu")
        _check_resume_config(ck.get("config", {}), cfg, prev)
        student.load_state_dict(ck["student"])
        teacher.load_state_dict(ck["teacher"])
        optimizer.load_state_dict(ck["optimizer"])
        loss_fn.center.copy_(ck["center"].to(device))
        it, epoch, batch_in_epoch = int(ck["iteration"]), int(ck["epoch"]), int(ck["batch_in_epoch"])
        stain_counts.update(ck.get("stain_counts", {}))
        rng = ck["rng"]
        set_rng_state(rng[info.rank] if isinstance(rng, list) and len(rng) > info.rank else rng)
    else:
        torch.manual_seed(cfg.seed + info.rank)  # drop path differs per rank, as data does

    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if cfg.use_bn_in_head and device.type == "cuda":
            # DINO: a BN head normalises over the global batch (SyncBatchNorm needs CUDA; on CPU
            # each rank uses its own batch statistics).
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
            optimizer = build_optimizer(student, lr=float(sched["lr"][0]), weight_decay=float(sched["wd"][0]))
            if it > 0:
                optimizer.load_state_dict(ck["optimizer"])

        ddp_student: nn.Module = DDP(student, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_student = student

    log_path = out / "log.jsonl"
    writer = None
    if info.is_main:
        cfg.save(out / "config.json")
        _truncate_log(log_path, it)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("tensorboard=True needs the tensorboard package: pip install tensorboard") from e
            writer = SummaryWriter(str(out / "tb"))
        if init_report is not None:
            _append_log(log_path, {"event": "init", "report": init_report.summary()})
    monitor = CollapseMonitor(cfg.out_dim, window=cfg.collapse_window, grace=max(cfg.collapse_window, total_iters // 10))
    last_layer = student.head.last_layer_parameters()
    status = "completed"
    losses: list[float] = []
    last_good: Path | None = ckpt_path if ckpt_path.is_file() else None
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())

    def save(position: tuple[int, int, int]) -> Path:
        nonlocal last_good
        rng_all = [rng_state()]
        if info.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, rng_state())
            rng_all = gathered
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "model": model_spec, "teacher_backbone": teacher.backbone.state_dict(),
                "student": student.state_dict(), "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(), "center": loss_fn.center.detach().cpu(),
                "iteration": position[0], "epoch": position[1], "batch_in_epoch": position[2],
                "rng": rng_all if info.distributed else rng_all[0], "config": cfg.to_dict(),
                "stain_counts": dict(stain_counts), "total_iters": total_iters,
            })
        D.barrier()
        last_good = ckpt_path
        return ckpt_path

    pbar = None
    if info.is_main and progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=stop_it, initial=it, desc="DINO", unit="it", dynamic_ncols=True)
    loader_gen = torch.Generator().manual_seed(cfg.seed)  # keeps DataLoader off the global RNG
    last_row: dict[str, Any] = {}
    try:
        with _StopFlag() as stop:
            while it < stop_it:
                if batch_in_epoch >= iters_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                sampler.set_epoch(epoch, batch_in_epoch)
                loader = torch.utils.data.DataLoader(
                    dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                    num_workers=cfg.num_workers, generator=loader_gen, persistent_workers=False,
                    pin_memory=device.type == "cuda",
                )
                t_prev = time.perf_counter()
                for batch in loader:
                    t_data = time.perf_counter()
                    row = _step(
                        it=it, epoch=epoch, batch=batch, cfg=cfg, device=device, info=info, sched=sched,
                        student=student, ddp_student=ddp_student, teacher=teacher, loss_fn=loss_fn,
                        optimizer=optimizer, augment=augment, last_layer=last_layer,
                        iters_per_epoch=iters_per_epoch, autocast=autocast,
                    )
                    bad = [s for s in batch["stain_status"] if s not in ("ok", "off")]
                    stain_counts.update(batch["stain_status"])
                    t_end = time.perf_counter()
                    row.update(stain_failed=len(bad), data_s=t_data - t_prev, step_s=t_end - t_data,
                               img_per_s=cfg.batch_size * info.world_size / max(t_end - t_prev, 1e-9))
                    t_prev = t_end
                    if not math.isfinite(row["loss"]) or D.broadcast_flag(not math.isfinite(row["loss"]), device):
                        if info.is_main:
                            _append_log(log_path, {**row, "event": "non_finite_loss"})
                        kept = f"the last good checkpoint is kept: {last_good}" if last_good else \
                            "no checkpoint had been written yet (checkpoint_every=" f"{cfg.checkpoint_every})"
                        raise NonFiniteLossError(
                            f"DINO loss became non-finite ({row['loss']}) at iteration {it} (lr {row['lr']:.3g}, "
                            f"precision {cfg.precision}); {kept}. Lower lr, raise warmup_iters, keep clip_grad, "
                            "or use bf16 instead of fp16; then rerun with --resume."
                        )
                    losses.append(row["loss"])
                    it += 1
                    batch_in_epoch += 1
                    warn = monitor.update(it, row["loss"], row["teacher_entropy"], row["batch_entropy"])
                    if info.is_main:
                        if warn:
                            row["collapse_warning"] = warn
                            warnings.warn(warn, RuntimeWarning, stacklevel=2)
                        if it % max(cfg.log_every, 1) == 0 or it == stop_it:
                            _append_log(log_path, row)
                        if writer is not None:
                            for k, v in row.items():
                                if isinstance(v, (int, float)) and k != "it":
                                    writer.add_scalar(k, v, it)
                        if pbar is not None:
                            pbar.update(1)
                            pbar.set_postfix(loss=f"{row['loss']:.3f}", H=f"{row['teacher_entropy']:.2f}",
                                             ips=f"{row['img_per_s']:.0f}")
                    last_row = row
                    pos = (it, epoch, batch_in_epoch) if batch_in_epoch < iters_per_epoch else (it, epoch + 1, 0)
                    stop_now = D.broadcast_flag(stop.signum is not None, device)
                    if stop_now:
                        status = "preempted"
                        save(pos)
                        if info.is_main:
                            _append_log(log_path, {"event": "preempted", "it": it, "signal": stop.signum})
                        break
                    if it >= stop_it or (cfg.checkpoint_every > 0 and it % cfg.checkpoint_every == 0) \
                            or batch_in_epoch >= iters_per_epoch:
                        save(pos)
                    if it >= stop_it:
                        break
                if status == "preempted":
                    break
    finally:
        if pbar is not None:
            pbar.close()
        if writer is not None:
            writer.close()
    if status == "completed" and it < total_iters:
        status = "stopped"
    counts = _reduce_counts(stain_counts, device)
    if info.is_main:
        summary = {"event": "end", "status": status, "it": it, "stain_counts": counts,
                   "collapse_warnings": monitor.warnings}
        _append_log(log_path, summary)
        write_json_atomic(out / "run_report.json", {
            "status": status, "iteration": it, "total_iters": total_iters, "world_size": info.world_size,
            "final": {k: v for k, v in last_row.items() if isinstance(v, (int, float))},
            "collapse_warnings": monitor.warnings, "stain_counts": counts,
            "checkpoint": str(ckpt_path) if ckpt_path.is_file() else None,
        })
        try:
            from .curves import read_log, save_curves

            save_curves(log_path, out, out_dim=cfg.out_dim)
            import pandas as pd

            with atomic_path(out / "log.csv") as tmp:  # the same metrics as a table, for spreadsheets
                pd.DataFrame(read_log(log_path)).to_csv(tmp, index=False)
        except ValueError:
            pass  # nothing logged yet (e.g. stop_at == resumed iteration)
    D.barrier()
    if owns_group and info.distributed:
        D.cleanup()  # a group train() created is train()'s to close
    return TrainResult(
        out_dir=out, status=status, iteration=it, total_iters=total_iters,
        checkpoint=ckpt_path if ckpt_path.is_file() else None,
        final={k: v for k, v in last_row.items() if isinstance(v, (int, float))},
        collapse_warnings=list(monitor.warnings), stain_counts=counts, log_path=log_path, losses=losses,
        student=student, teacher=teacher,
    )


def _step(*, it: int, epoch: int, batch: dict[str, Any], cfg: PretrainConfig, device: torch.device,
          info: D.DistInfo, sched: dict[str, np.ndarray], student: MultiCropWrapper, ddp_student: nn.Module,
          teacher: MultiCropWrapper, loss_fn: DINOLoss, optimizer: torch.optim.Optimizer,
          augment: MultiCropAugment, last_layer: list[nn.Parameter], iters_per_epoch: int,
          autocast: Any) -> dict[str, Any]:
    """One DINO iteration; returns the metrics row."""
    lr, wd = float(sched["lr"][it]), float(sched["wd"][it])
    m, t_temp = float(sched["momentum"][it]), float(sched["teacher_temp"][it])
    apply_schedules(optimizer, lr, wd)
    gen = torch.Generator().manual_seed(_seed_for(cfg.seed, it, info.rank))  # crops reproducible on resume
    images = batch["images"].to(device, non_blocking=True)
    t0 = time.perf_counter()
    crops = augment(images, batch["sizes"], generator=gen)
    t_aug = time.perf_counter() - t0
    with autocast:
        with torch.no_grad():
            t_out = teacher(crops[:2])
        s_out = ddp_student(crops)
    loss = loss_fn(s_out, t_out, t_temp)
    stats = loss_fn.last_stats
    row: dict[str, Any] = {"it": it, "epoch": epoch, "loss": float(loss.detach()), "lr": lr, "wd": wd, "momentum": m,
                           "teacher_temp": t_temp, "teacher_entropy": stats.teacher_entropy,
                           "batch_entropy": stats.batch_entropy, "kl": stats.kl, "aug_s": t_aug}
    if not math.isfinite(row["loss"]):
        return row
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad > 0:
        norms = clip_gradients(student.parameters(), cfg.clip_grad)
        row["grad_norm"] = float(np.sqrt(np.sum(np.square(norms)))) if norms else 0.0
    cancel_last_layer_gradients(last_layer, it / iters_per_epoch, cfg.freeze_last_layer_epochs)
    optimizer.step()
    ema_update(teacher, student, m)
    return row


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def _truncate_log(path: Path, it: int) -> None:
    """Drop log rows at or after iteration ``it`` (a resumed run rewrites them)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if r.get("it", -1) < it and r.get("event") not in ("end",):
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
