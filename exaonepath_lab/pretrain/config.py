"""``PretrainConfig``: every knob of a DINO pretraining run, frozen and saved as JSON.

The field defaults are DINO's ``main_dino.py`` argparse defaults (Caron et al. 2021).
The paper asks for DINO's *published ViT-B/16 run* ("other hyperparameters follow the
settings from the original DINO paper for training the ViT-B model", EXAONEPath §4.2),
whose arguments differ from those defaults (clip 0.3, crop scales (0.25, 1) and
(0.05, 0.25), min lr 2e-6, teacher temperature 0.07 warmed over 50 epochs): the
``paper`` preset (:mod:`.presets`) holds those values, each with its source. Where the
paper is silent or ambiguous the choice is a named field, documented below:

- ``lr`` is the **peak** learning rate reached after warm-up. The paper's 0.005 at
  batch 5,120 is read as that peak (``lr_scaling="none"``). DINO's code instead
  multiplies by ``batch / 256`` (``lr_scaling="linear"``), which would give 0.1 — an
  implausible value for ViT-B with AdamW, hence not the default.
- ``global_crop_size``: the paper writes "256² global views" (§3.3) while DINO uses
  224. The ``paper`` preset keeps DINO's 224 (the ViT-B/16 ImageNet position
  embedding is 14×14 at 224, and the text describes DINO's recipe, which is 224);
  set 256 to follow the text literally.
- ``warmup_iters`` is counted in iterations (paper: 1,000), never in epochs, and is
  clipped to the run length by the schedules.
- ``freeze_last_layer_epochs``: DINO freezes the head's output layer during the first
  epoch(s) (its ViT-B/16 run: 3). The paper says "the output layer is not fixed;
  instead, it is trained from scratch", so the ``paper`` preset sets 0 (never frozen).
- ``teacher_temp_warmup`` says what a teacher-temperature warm-up longer than the run
  means: ``"dino"`` keeps DINO's per-epoch ramp (``warmup_teacher_temp_epochs`` long)
  and cuts it where the run ends; ``"fit"`` shortens the ramp to the run so that it ends
  at ``teacher_temp``. See the ``paper`` preset for the choice and its reason.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..config import JobConfig


@dataclasses.dataclass(frozen=True)
class PretrainConfig(JobConfig):
    """Resolved DINO pretraining configuration (all sizes in px, lr per iteration schedule)."""

    # --- data -------------------------------------------------------------
    data: str = ""  # tiling output dir (manifest.csv) or image folder
    out_dir: str = "runs/dino"
    normalize: bool = True  # Macenko once per image before cropping, p = 1 (paper §3.3)
    stain_target: str | None = None  # fitted Macenko target (JSON/.npz); None = torchstain defaults
    stain_policy: str = "passthrough"  # Macenko failures: passthrough | flag | raise (stain.policy); counted in the log
    num_workers: int = 0  # DataLoader workers (0 = main process; tiles are read there)
    # Patch size the augmentation crops from: every patch is area-resized to load_px x load_px before
    # cropping; None keeps the native size (paper: patches are never resized). In-memory/image-folder
    # patches are Macenko-normalised at their native size first; a tiling output is *read* at load_px
    # (from a coarser pyramid level when one covers it) and normalised there - what makes small-crop
    # CPU runs cheap.
    load_px: int | None = None
    # --- model ------------------------------------------------------------
    timm_name: str = "vit_base_patch16_224"
    timm_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    drop_path_rate: float = 0.1  # student only (DINO ViT-B)
    init_checkpoint: str | None = None  # local ImageNet weights (timm/safetensors/torch); never downloaded
    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False
    # --- multi-crop -------------------------------------------------------
    global_crop_size: int = 224
    local_crop_size: int = 96
    n_local_crops: int = 8  # paper §4.2
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)  # global-1, global-2, local
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # px at crop resolution (DINO: PIL radius 0.1-2 at 224 px)
    solarize_p: float = 0.2  # global-2 only
    flip_p: float = 0.5
    # --- loss -------------------------------------------------------------
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07  # > 0.07 is unstable for ViT-B (DINO)
    warmup_teacher_temp_epochs: float = 30.0  # ramp length in epochs (DINO ViT-B/16 run: 50)
    warmup_teacher_temp_iters: int = -1  # >= 0: ramp length in iterations instead of epochs
    teacher_temp_warmup: str = "fit"  # ramp longer than the run: "dino" cuts it, "fit" shortens it (see module doc)
    center_momentum: float = 0.9
    centering: str = "ema"  # "ema": DINO's centre + sharpen; "sinkhorn": DINOv2's Sinkhorn-Knopp teacher
    # --- optimisation -----------------------------------------------------
    batch_size: int = 64  # per process
    world_batch_size: int | None = None  # informational: batch × world size (filled at run time)
    epochs: int = 10
    max_iters: int | None = None  # stop early (also defines the schedules' length when set)
    lr: float = 0.005  # peak lr, see ``lr_scaling``
    lr_scaling: str = "none"  # "none": lr is the peak; "linear": lr × world_batch / 256 (DINO code)
    min_lr: float = 1e-6
    warmup_iters: int = 1000  # paper: lr warm-up over the first 1,000 iterations
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    clip_grad: float = 3.0  # 0 disables
    freeze_last_layer_epochs: float = 1.0
    precision: str = "bf16"  # "fp32" | "bf16" (autocast; bf16 needs no grad scaler)
    # --- run --------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto" = cuda if available else cpu
    num_threads: int = 0  # torch intra-op threads on CPU; 0 = torch default
    checkpoint_every: int = 500  # iterations between checkpoints (and at epoch ends)
    log_every: int = 1
    tensorboard: bool = False
    collapse_window: int = 20  # iterations the collapse monitor averages over
    preset: str = "custom"

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"PretrainConfig: {msg}")

        if self.lr_scaling not in ("none", "linear"):
            bad(f"lr_scaling={self.lr_scaling!r}; use 'none' (lr is the peak) or 'linear' (× batch/256)")
        if self.precision not in ("fp32", "bf16"):
            bad(f"precision={self.precision!r}; use 'fp32' or 'bf16' (fp16 is not offered: it NaNs with DINO)")
        if self.batch_size < 1 or self.epochs < 1:
            bad("batch_size and epochs must be >= 1")
        if self.n_local_crops < 0:
            bad("n_local_crops must be >= 0")
        if not (0 < self.student_temp and 0 < self.warmup_teacher_temp and 0 < self.teacher_temp):
            bad("temperatures must be > 0")
        if self.out_dim < 2:
            bad("out_dim must be >= 2")
        for name in ("global_crop_scale", "local_crop_scale"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi <= 1):
                bad(f"{name}={getattr(self, name)} must satisfy 0 < lo <= hi <= 1")
        if self.load_px is not None and int(self.load_px) < max(self.global_crop_size, self.local_crop_size):
            bad(f"load_px={self.load_px} is smaller than the crops ({self.global_crop_size}/{self.local_crop_size} px); "
                "use at least the global crop size, or None to keep native patches")
        if self.centering not in ("ema", "sinkhorn"):
            bad(f"centering={self.centering!r}; use 'ema' (DINO) or 'sinkhorn' (DINOv2 Sinkhorn-Knopp)")
        if self.teacher_temp_warmup not in ("dino", "fit"):
            bad(f"teacher_temp_warmup={self.teacher_temp_warmup!r}; use 'dino' (DINO's per-epoch ramp, cut where "
                "the run ends) or 'fit' (ramp shortened to the run)")
        if self.warmup_teacher_temp_epochs < 0:
            bad("warmup_teacher_temp_epochs must be >= 0")
        if self.stain_policy not in ("passthrough", "flag", "raise"):
            bad(f"stain_policy={self.stain_policy!r}; use passthrough | flag | raise")

    @property
    def n_crops(self) -> int:
        return 2 + self.n_local_crops

    def peak_lr(self, world_size: int = 1) -> float:
        """Peak lr after warm-up: ``lr`` as is, or × (global batch / 256) with ``lr_scaling='linear'``."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size * world_size / 256.0
        return self.lr

    def teacher_temp_warmup_iters(self, iters_per_epoch: int) -> int:
        """Length of the teacher-temperature ramp in iterations (``warmup_teacher_temp_iters`` when >= 0)."""
        if self.warmup_teacher_temp_iters >= 0:
            return int(self.warmup_teacher_temp_iters)
        return int(round(self.warmup_teacher_temp_epochs * iters_per_epoch))

    def collapse_threshold(self) -> float:
        """ln(out_dim): the DINO loss of a uniform (collapsed) teacher and student."""
        return math.log(self.out_dim)
