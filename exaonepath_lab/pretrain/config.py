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
from typing import Any

from ..config import JobConfig, option


@dataclasses.dataclass(frozen=True)
class PretrainConfig(JobConfig):
    """Resolved DINO pretraining configuration (all sizes in px, lr per iteration schedule)."""

    # --- data -------------------------------------------------------------
    data: str = option("", help="Tiling output folder (with manifest.csv) or a folder of images: the patches to train on.")
    out_dir: str = option("runs/dino", help="Run folder: config.json, checkpoint.pt, log.jsonl, curves, run_report.json.")
    normalize: bool = option(True, help="Macenko-normalise every image once, before cropping, with probability 1 "
                             "(paper §3.3): the paper's whole intervention. False trains the raw-colour baseline.")
    stain_target: str | None = option(None, help="Macenko target: a fitted target JSON, or a target image (e.g. the "
                                      "authors' TCGA PNG) fitted once and cached as OUT/stain_target.json; None: "
                                      "torchstain's reference HERef/maxCRef.")
    stain_policy: str = option("passthrough", help="Patches Macenko cannot normalise: passthrough | flag | raise "
                               "(stain.policy). passthrough keeps them raw and counts them in the log, so a long run "
                               "neither stops nor silently drops data.")
    num_workers: int = option(0, help="DataLoader worker processes (0 = main process, where the tiles are read); "
                              "raise on GPU nodes so reading keeps up.")
    load_px: int | None = option(None, help="Patch size the augmentation crops from: every patch is area-resized to "
                                 "load_px x load_px before cropping; None keeps the native size (paper: patches are "
                                 "never resized). In-memory/image-folder patches are Macenko-normalised at their native "
                                 "size first; a tiling output is *read* at load_px (from a coarser pyramid level when "
                                 "one covers it) and normalised there - what makes small-crop CPU runs cheap.")
    # --- model ------------------------------------------------------------
    timm_name: str = option("vit_base_patch16_224", help="Backbone (timm name). The paper trains DINO ViT-B/16.")
    timm_kwargs: dict[str, Any] = option(default_factory=dict, help="Extra timm.create_model keywords (e.g. img_size, "
                                         "depth, embed_dim for the small cpu-demo ViT).")
    drop_path_rate: float = option(0.1, help="Stochastic depth rate of the student only (DINO ViT-B: 0.1); the teacher "
                                   "runs without it.")
    init_checkpoint: str | None = option(None, help="Local ImageNet weights for the backbone (timm/safetensors/torch), "
                                         "loaded strictly with a report; the paper starts from ImageNet. Never downloaded.")
    out_dim: int = option(65536, help="Dimensionality of the DINO head output (DINO: 65,536). For complex and large "
                          "datasets large values work well; the entropy bound of a collapsed teacher is ln(out_dim).")
    head_hidden_dim: int = option(2048, help="Hidden width of the DINO projection head's MLP (DINO: 2048).")
    head_bottleneck_dim: int = option(256, help="Bottleneck width before the weight-normalised last layer (DINO: 256).")
    head_nlayers: int = option(3, help="Layers of the head's MLP (DINO: 3).")
    norm_last_layer: bool = option(True, help="Weight-normalise the head's last layer. Not normalising can do better but "
                                   "makes training unstable; DINO uses True with ViT-B.")
    use_bn_in_head: bool = option(False, help="Batch norm in the projection head (DINO: False for ViTs).")
    # --- multi-crop -------------------------------------------------------
    global_crop_size: int = option(224, help="Side of the two global views in px. The paper writes 256 (§3.3), DINO "
                                   "uses 224 (ViT-B/16's 14x14 position embedding); set 256 to follow the text literally.")
    local_crop_size: int = option(96, help="Side of the local views in px (DINO: 96).")
    n_local_crops: int = option(8, help="Number of small local views (paper §4.2: 8). 0 disables multi-crop; then use a "
                                "wider global_crop_scale, e.g. (0.14, 1), as DINO recommends.")
    global_crop_scale: tuple[float, float] = option((0.4, 1.0), help="Area range of a global crop relative to the "
                                                    "patch, before resizing (main_dino.py default; see the paper preset).")
    local_crop_scale: tuple[float, float] = option((0.05, 0.4), help="Area range of a local crop relative to the "
                                                   "patch, before resizing (main_dino.py default; see the paper preset).")
    color_jitter: tuple[float, float, float, float] = option((0.4, 0.4, 0.2, 0.1), help="Brightness, contrast, "
                                                             "saturation, hue of DINO's colour jitter.")
    color_jitter_p: float = option(0.8, help="Probability of the colour jitter per view (DINO: 0.8).")
    grayscale_p: float = option(0.2, help="Probability of converting a view to grey (DINO: 0.2).")
    blur_p: tuple[float, float, float] = option((1.0, 0.1, 0.5), help="Gaussian-blur probability of global view 1, "
                                                "global view 2 and the local views (DINO: 1.0, 0.1, 0.5): the two "
                                                "global views differ on purpose.")
    blur_sigma: tuple[float, float] = option((0.1, 2.0), help="Blur sigma range in px at crop resolution (DINO: PIL "
                                             "radius 0.1-2 at 224 px).")
    solarize_p: float = option(0.2, help="Solarisation probability of global view 2 only (DINO: 0.2).")
    flip_p: float = option(0.5, help="Horizontal flip probability per view.")
    # --- loss -------------------------------------------------------------
    student_temp: float = option(0.1, help="Temperature of the student softmax (DINO: 0.1).")
    warmup_teacher_temp: float = option(0.04, help="Initial teacher temperature: 0.04 works well in most cases; try "
                                        "lowering it if the loss does not decrease (DINO).")
    teacher_temp: float = option(0.07, help="Teacher temperature after the warm-up. Above 0.07 is unstable for ViT-B "
                                 "(DINO).")
    warmup_teacher_temp_epochs: float = option(30.0, help="Length of the teacher-temperature warm-up in epochs "
                                               "(main_dino.py default 30; DINO's ViT-B/16 run: 50).")
    warmup_teacher_temp_iters: int = option(-1, help=">= 0: the warm-up length in iterations instead of epochs "
                                            "(short test runs); -1: use warmup_teacher_temp_epochs.")
    teacher_temp_warmup: str = option("fit", help="What a warm-up longer than the run means: 'dino' keeps DINO's "
                                      "per-epoch ramp and cuts it where the run ends; 'fit' shortens the ramp to the "
                                      "run so it ends at teacher_temp (see the module doc and the paper preset).")
    center_momentum: float = option(0.9, help="EMA momentum of the teacher-output centre (DINO: 0.9).")
    centering: str = option("ema", help="'ema': DINO's centre + sharpen (the paper's); 'sinkhorn': DINOv2's "
                            "Sinkhorn-Knopp teacher, offered for comparison.")
    # --- optimisation -----------------------------------------------------
    batch_size: int = option(64, help="Images per process and step (paper: 64 per GPU x 80 GPUs = 5,120).")
    world_batch_size: int | None = option(None, help="Informational: batch_size x world size, filled in at run time.")
    epochs: int = option(10, help="Passes over the data (paper: 10).")
    max_iters: int | None = option(None, help="Stop after this many iterations; when set it also defines the "
                                   "schedules' length (short CPU runs).")
    lr: float = option(0.005, help="Peak learning rate reached after warm-up. The paper's 0.005 at batch 5,120 is read "
                       "as that peak (lr_scaling='none'); DINO's linear scaling would give 0.1, implausible for ViT-B "
                       "with AdamW.")
    lr_scaling: str = option("none", help="'none': lr is the peak; 'linear': lr x world batch / 256 (DINO's code).")
    min_lr: float = option(1e-6, help="Learning rate at the end of the cosine schedule (main_dino.py default; see the "
                           "paper preset).")
    warmup_iters: int = option(1000, help="Linear lr warm-up over the first iterations (paper: 1,000), counted in "
                               "iterations, never epochs, and clipped to the run length.")
    weight_decay: float = option(0.04, help="Initial weight decay; with ViTs a small value early in training works "
                                 "well (DINO: 0.04).")
    weight_decay_end: float = option(0.4, help="Final weight decay of the cosine schedule; a larger decay at the end "
                                     "improves ViTs (DINO: 0.4).")
    momentum_teacher: float = option(0.996, help="Base EMA momentum of the teacher, raised to momentum_teacher_end by "
                                     "a cosine schedule. Use a higher value with small batches (DINO: 0.9995 at 256).")
    momentum_teacher_end: float = option(1.0, help="Teacher EMA momentum at the end of training (DINO: 1).")
    clip_grad: float = option(3.0, help="Maximal gradient norm per parameter (main_dino.py default 3.0; 0.3-1.0 helps "
                              "larger ViTs; see the paper preset). 0 disables clipping.")
    freeze_last_layer_epochs: float = option(1.0, help="Epochs during which the head's output layer stays fixed "
                                             "(main_dino.py default 1; DINO's ViT-B/16 run: 3). The paper trains it "
                                             "from scratch, never fixed: its preset sets 0.")
    precision: str = option("bf16", help="'fp32' or 'bf16' autocast (bf16 needs no grad scaler; fp16 is not offered: "
                            "it NaNs with DINO).")
    # --- run --------------------------------------------------------------
    seed: int = option(0, help="Seed of weights, crops and data order: a rerun with the same config repeats the run.")
    device: str = option("auto", help="'auto' = CUDA when present, else CPU; or 'cpu', 'cuda', 'cuda:N'.")
    num_threads: int = option(0, help="torch intra-op threads on CPU; 0 = torch's default (keep small on shared machines).")
    checkpoint_every: int = option(500, help="Iterations between checkpoints (also at epoch ends): what a pre-empted "
                                   "job loses at most.")
    log_every: int = option(1, help="Iterations between lines of log.jsonl.")
    tensorboard: bool = option(False, help="Also write TensorBoard events (needs the tensorboard extra).")
    collapse_window: int = option(20, help="Iterations the collapse monitor averages teacher entropy over before "
                                  "warning.")
    preset: str = option("custom", help="Name of the preset the config started from (recorded, not used).")

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
