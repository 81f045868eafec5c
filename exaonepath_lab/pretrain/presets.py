"""Named configurations: ``paper`` (EXAONEPath §4.2 on DINO ViT-B/16) and ``cpu-demo`` (2 CPU cores, minutes).

``get_preset(name, **overrides) -> PretrainConfig``. Each preset documents why its
values were chosen; ``PretrainConfig``'s docstring explains the open choices
(peak-lr semantics, global crop size, last-layer freezing).
"""
from __future__ import annotations

from typing import Any

from .config import PretrainConfig

# Every value below is checked against its published source, row by row, in
# tests/test_pretrain_presets.py. "DINO ViT-B/16" = the arguments of DINO's published
# ViT-B/16 run (its args.txt), which the paper follows (§4.2), not main_dino.py's defaults.
PAPER: dict[str, Any] = dict(
    # ViT-B/16 as DINO's vit_base (qkv bias, LN eps 1e-6), ImageNet init from a local file
    # (train refuses to start without one unless `--init none` is given: see check_init).
    timm_name="vit_base_patch16_224",
    drop_path_rate=0.1,
    out_dim=65536,
    norm_last_layer=True,
    global_crop_size=224,  # DINO; the paper's text says 256 (see PretrainConfig)
    local_crop_size=96,
    n_local_crops=8,  # paper §4.2
    global_crop_scale=(0.25, 1.0),  # DINO ViT-B/16 (argparse default 0.4)
    local_crop_scale=(0.05, 0.25),  # DINO ViT-B/16 (argparse default 0.4)
    batch_size=64,  # per GPU; × 80 GPUs = 5,120 (paper)
    epochs=10,  # paper
    lr=0.005,  # paper; the peak after warm-up (lr_scaling="none")
    lr_scaling="none",
    min_lr=2e-6,  # DINO ViT-B/16 (argparse default 1e-6)
    warmup_iters=1000,  # paper: iterations, not epochs
    weight_decay=0.04,
    weight_decay_end=0.4,
    momentum_teacher=0.996,
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,  # DINO ViT-B/16
    warmup_teacher_temp_epochs=50,  # DINO ViT-B/16
    warmup_teacher_temp_iters=-1,  # counted in epochs, as DINO does
    teacher_temp_warmup="dino",  # the ramp is cut where the 10-epoch run ends (~0.046): see PAPER_TEACHER_TEMP_NOTE
    clip_grad=0.3,  # DINO ViT-B/16 (argparse default 3.0)
    freeze_last_layer_epochs=0.0,  # paper §4.2: "the output layer is not fixed" (DINO ViT-B/16 froze it 3 epochs)
    precision="bf16",  # paper
    normalize=True,  # EXAONEPath = DINO on Macenko-normalised patches
    num_workers=10,
    checkpoint_every=1000,
    preset="paper",
)

PAPER_TEACHER_TEMP_NOTE = (
    "Teacher temperature: DINO's ViT-B/16 run warms it 0.04 -> 0.07 over 50 epochs, counted per epoch. The paper "
    "trains 10 epochs and does not say how it adapted this (DINO's own code refuses a warm-up longer than the run). "
    "The paper preset keeps DINO's per-epoch numbers (teacher_temp_warmup='dino'): epoch e uses what DINO's ViT-B/16 "
    "run used at epoch e, so the run stays in the warm-up and ends near 0.046 (0.04 + 0.03 x 10/50). The "
    "alternative, squeezing the ramp into the run so that it reaches 0.07 at the end, is a 5x faster ramp that no "
    "published run used; a sharper teacher is the conservative side against collapse (DINO: above 0.07 is unstable). "
    "`--set teacher_temp_warmup=fit` gives the squeezed ramp, `--set warmup_teacher_temp_iters=N` any explicit length."
)

PRESET_HELP: dict[str, str] = {
    "cpu-demo": "a 4-block, 128-wide ViT on 32/16 px crops of patches read at 64 px, 1,200 iterations of batch 32, "
    "~4 min on 2 CPU cores",
    "paper": "DINO's published ViT-B/16 recipe with the paper's overrides (§4.2): batch 64 per GPU x 80, lr 0.005 as "
    "the peak, 10 epochs, 1,000 warm-up iterations, bf16, 8 local crops, head never frozen; clip 0.3, crop scales "
    "(0.25, 1) / (0.05, 0.25), min lr 2e-6 from DINO ViT-B/16. Needs --init IMAGENET_WEIGHTS (the paper starts "
    "from ImageNet) or an explicit --init none. " + PAPER_TEACHER_TEMP_NOTE,
}

# Found by measurement on 2 CPU cores (benchmarks/dino_learning.md). DINO's ViT-B
# recipe, shrunk naively (CLS token, 0.04 -> 0.07 teacher, lr 1e-3, 1,024-65,536 prototypes),
# drifts to the uniform output within ~50 iterations: random ViT features of all patches are
# nearly the same, so once the centre catches up the teacher has nothing sharp to teach.
# Why each value differs from DINO:
CPU_DEMO: dict[str, Any] = dict(
    timm_name="vit_tiny_patch16_224",
    # 4 blocks of width 128 (4 heads), 8 px patches: 16 tokens at 32 px, 4 at 16 px. Mean-pooled
    # patch tokens instead of the CLS token: at random init the CLS output is almost identical for
    # every image, the token mean is not, so the teacher's targets differ between images at step 0.
    timm_kwargs={"img_size": 32, "patch_size": 8, "depth": 4, "embed_dim": 128, "num_heads": 4,
                 "global_pool": "avg"},
    drop_path_rate=0.0,  # a short run under-fits; stochastic depth only slows it
    out_dim=512,  # 65,536 prototypes cannot be organised in a few hundred steps; 512 can
    head_hidden_dim=512,
    head_bottleneck_dim=128,
    use_bn_in_head=True,  # BN in the head (DINO's option for small batches/ResNets) spreads the batch
    norm_last_layer=False,  # a learnable gain lets the student sharpen as fast as the teacher asks
    global_crop_size=32,  # a 256 px patch (0.5 um/px) seen at ~4-8 um/px: tissue texture, cheap
    local_crop_size=16,
    n_local_crops=4,
    global_crop_scale=(0.4, 1.0),
    local_crop_scale=(0.1, 0.4),
    # Patches are read at 64 px (a 4x coarser pyramid level) and Macenko-normalised there: the crops
    # are 32/16 px anyway, and reading + normalising 256 px patches was half of every iteration.
    load_px=64,
    # DINO's colour jitter (0.4, 0.4, 0.2, 0.1) halved, with a 5x smaller hue shift: at full strength
    # the teacher entropy drifts to ln(out_dim) within ~300 iterations (measured,
    # benchmarks/dino_learning.md), and H&E classes differ mostly in how much of each stain a region
    # holds, which a 0.1 hue rotation scrambles. DINO's 20 % grayscale views are kept: they are what
    # teaches the raw-patch run to look past each slide's colours (5 % gave the raw run half the margin).
    color_jitter=(0.2, 0.2, 0.1, 0.02),
    grayscale_p=0.2,
    blur_sigma=(0.1, 0.4),  # DINO's 0.1-2 px is meant for 224 px crops; scaled to 32 px
    batch_size=32,
    epochs=100,
    # 1,200 iterations x 32 patches (~25 epochs of a 10-slide cohort), ~4 min on 2 idle cores:
    # 150 iterations left the features no better than the random-init twin's (k-NN margin +0.00-0.03);
    # 1,200 beat it clearly with and without normalisation (benchmarks/dino_learning.md).
    max_iters=1200,
    lr=5e-4,
    warmup_iters=60,  # iterations (5 % of the run)
    weight_decay=0.04,
    weight_decay_end=0.1,
    momentum_teacher=0.99,  # DINO's 0.996 moves the teacher too slowly for a run of ~1,000 steps (cosine to 1)
    # A sharper teacher than DINO's 0.04-0.07: at 0.04 the run drifts to the uniform output
    # within ~100 steps (measured); 0.02 keeps the teacher entropy near 2 nats out of ln 512 = 6.2.
    warmup_teacher_temp=0.02,
    teacher_temp=0.02,
    warmup_teacher_temp_iters=0,
    clip_grad=3.0,
    freeze_last_layer_epochs=0.0,  # the head starts from scratch and the run is short
    precision="fp32",  # CPU bf16 autocast is slower than fp32 on most CPUs
    normalize=True,
    num_workers=0,
    num_threads=2,
    checkpoint_every=200,
    collapse_window=20,
    preset="cpu-demo",
)

PRESETS: dict[str, dict[str, Any]] = {"paper": PAPER, "cpu-demo": CPU_DEMO}


def check_init(cfg: PretrainConfig, *, explicit_none: bool = False) -> None:
    """Refuse a ``paper`` run without ImageNet weights unless random init was asked for explicitly.

    The paper initialises ViT-B/16 from ImageNet (§4.2); without ``init_checkpoint`` the
    backbone would silently start from random weights.
    """
    if cfg.preset == "paper" and not cfg.init_checkpoint and not explicit_none:
        raise ValueError(
            "the paper preset starts from ImageNet weights (EXAONEPath §4.2) but no init checkpoint was given: pass "
            "--init /path/to/vit_base_patch16_224.safetensors (local timm/torch weights; nothing is downloaded), "
            "or --init none to train ViT-B/16 from random weights on purpose"
        )


def get_preset(name: str, **overrides: Any) -> PretrainConfig:
    """``PretrainConfig`` of preset ``name`` with ``overrides`` applied (unknown keys are an error)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    d = {**PRESETS[name], **overrides}
    return PretrainConfig.from_dict(d)
