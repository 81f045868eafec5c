"""Named configurations: ``paper`` (EXAONEPath §4.2 on DINO ViT-B/16) and ``cpu-demo`` (2 CPU cores, minutes).

``get_preset(name, **overrides) -> PretrainConfig``. Each preset documents why its
values were chosen; ``PretrainConfig``'s docstring explains the open choices
(peak-lr semantics, global crop size, last-layer freezing).
"""
from __future__ import annotations

from typing import Any

from .config import PretrainConfig

PAPER: dict[str, Any] = dict(
    # ViT-B/16 as DINO's vit_base (qkv bias, LN eps 1e-6), ImageNet init from a local file.
    timm_name="vit_base_patch16_224",
    drop_path_rate=0.1,
    out_dim=65536,
    norm_last_layer=True,
    global_crop_size=224,  # DINO; the paper's text says 256 (see PretrainConfig)
    local_crop_size=96,
    n_local_crops=8,  # paper §4.2
    global_crop_scale=(0.4, 1.0),  # DINO default (its original ViT-B/16 run used 0.25)
    local_crop_scale=(0.05, 0.4),
    batch_size=64,  # per GPU; × 80 GPUs = 5,120 (paper)
    epochs=10,  # paper
    lr=0.005,  # paper; the peak after warm-up (lr_scaling="none")
    lr_scaling="none",
    min_lr=1e-6,
    warmup_iters=1000,  # paper: iterations, not epochs
    weight_decay=0.04,
    weight_decay_end=0.4,
    momentum_teacher=0.996,
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_iters=-1,  # DINO: 30 epochs -> longer than the 10-epoch run, so it ends at 0.07 + clip
    clip_grad=3.0,
    freeze_last_layer_epochs=1.0,
    precision="bf16",  # paper
    normalize=True,  # EXAONEPath = DINO on Macenko-normalised patches
    num_workers=10,
    checkpoint_every=1000,
    preset="paper",
)

# Found by measurement on 2 CPU cores (see benchmarks/dino_learning.md): the settings that
# learn in ~3 minutes without collapsing, raw and normalised. Why each differs from DINO:
CPU_DEMO: dict[str, Any] = dict(
    timm_name="vit_tiny_patch16_224",
    # 4 blocks of width 128 (4 heads) with 8 px patches: 36 tokens at 48 px, 9 at 24 px;
    # ~3x cheaper than 192-wide blocks on 64/32 px crops, and still a ViT with a CLS token.
    timm_kwargs={"img_size": 48, "patch_size": 8, "depth": 4, "embed_dim": 128, "num_heads": 4},
    drop_path_rate=0.0,  # a short run under-fits; stochastic depth only slows it
    out_dim=1024,  # 65,536 prototypes cannot be organised in a few hundred steps; 1,024 can
    head_hidden_dim=512,
    head_bottleneck_dim=128,
    global_crop_size=48,
    local_crop_size=24,
    n_local_crops=4,
    global_crop_scale=(0.4, 1.0),
    local_crop_scale=(0.1, 0.4),
    blur_sigma=(0.1, 0.5),  # DINO's 0.1-2 px is meant for 224 px crops; scaled to 48 px
    batch_size=64,
    epochs=100,
    max_iters=200,
    lr=1e-3,
    warmup_iters=20,
    weight_decay=0.04,
    weight_decay_end=0.1,
    momentum_teacher=0.99,  # 0.996 leaves the teacher ~50 % random after 200 steps
    warmup_teacher_temp=0.04,
    teacher_temp=0.06,
    warmup_teacher_temp_iters=100,
    clip_grad=3.0,
    freeze_last_layer_epochs=0.0,
    precision="fp32",  # CPU bf16 autocast is slower than fp32 on most CPUs
    normalize=True,
    num_workers=0,
    num_threads=2,
    checkpoint_every=100,
    preset="cpu-demo",
)

PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER, "cpu-demo": CPU_DEMO}


def get_preset(name: str, **overrides: Any) -> PretrainConfig:
    """``PretrainConfig`` of preset ``name`` with ``overrides`` applied (unknown keys are an error)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    d = {**PRESETS[name], **overrides}
    return PretrainConfig.from_dict(d)
