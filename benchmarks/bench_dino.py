"""DINO training throughput on CPU: our trainer vs lightly's DINO building blocks, one run, one JSON line.

Both sides train the ``cpu-demo`` preset's model (same timm backbone, crop sizes,
number of crops, head sizes, batch, threads) on the same real H&E patches, from
uint8 images in a ``DataLoader`` (``num_workers=0``) to an updated student and EMA
teacher, so images/s counts everything a training iteration costs:

- ours: :func:`exaonepath_lab.pretrain.trainer.train` itself (collate, batched
  tensor multi-crop, student/teacher forward grouped by resolution, DINO loss,
  backward, per-parameter clipping, AdamW, EMA) — rates from its ``log.jsonl``;
- lightly: ``DINOTransform`` per image (PIL) in the loader's collate,
  ``DINOProjectionHead``, ``DINOLoss``, ``update_momentum``, and the training loop
  of lightly's DINO example (one forward per view), plus gradient clipping and AdamW
  so the optimisation work matches.

Macenko is off on both sides (lightly has none); the rounds alternate to share the
machine's noise; the best round of each side is reported. Run::

    .venv/bin/python benchmarks/bench_dino.py [--iters 8] [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2  # iterations left out of the rates (first DataLoader, allocator warm-up)


class RealPatches(torch.utils.data.Dataset):
    """``n`` random ``size``-px patches cut from real H&E images (item protocol): the wider set's stain
    references and TCGA tiles when ``$EXAONEPATH_LAB_REAL_HE`` names it, else the fetched sample data
    (``self.data_set`` says which)."""

    def __init__(self, n: int, size: int = 256, seed: int = 0) -> None:
        import pandas as pd

        from _data import real_he_dir
        from exaonepath_lab.datasets import read_rgb
        from exaonepath_lab.sample_data import fetch_sample_data

        root = real_he_dir()
        if root is not None:
            files = sorted(p for p in (root / "stain_refs").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
            files += sorted((root / "multi_source" / "mopadi").rglob("*.png"))
            self.data_set = "real_he (EXAONEPATH_LAB_REAL_HE)"
        else:
            files = list(fetch_sample_data().values())
            self.data_set = "sample-data"
        if not files:
            raise FileNotFoundError(f"no real H&E images under {root}")
        images = []
        for f in files:
            try:
                im = read_rgb(f)
            except ValueError:
                continue  # e.g. an OME-TIFF PIL cannot decode; the others suffice
            if min(im.shape[:2]) >= size:
                images.append(im)
        rng = np.random.default_rng(seed)
        self.patches = []
        for i in range(n):
            im = images[i % len(images)]
            y = int(rng.integers(0, im.shape[0] - size + 1))
            x = int(rng.integers(0, im.shape[1] - size + 1))
            self.patches.append(np.ascontiguousarray(im[y : y + size, x : x + size]))
        self.meta = pd.DataFrame({"index": np.arange(n), "label": -1})

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.patches[i], "index": int(i)}


def run_ours(cfg, ds, iters: int) -> tuple[float, float]:
    """(images/s, augmentation s per batch) of our trainer over iterations WARMUP..iters-1."""
    from exaonepath_lab.pretrain.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        c = cfg.replace(out_dir=tmp, max_iters=iters, checkpoint_every=0, normalize=False)
        train(c, dataset=ds, resume=False, progress=False)
        rows = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_s" in r and r["it"] >= WARMUP]
    secs = sum(r["data_s"] + r["step_s"] for r in rows)
    return len(rows) * cfg.batch_size / secs, sum(r["aug_s"] for r in rows) / len(rows)


def run_lightly(cfg, ds, iters: int) -> tuple[float, float]:
    """(images/s, augmentation s per batch) of lightly's DINO blocks on the same model, crops and batch."""
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import DINOTransform
    from PIL import Image

    from exaonepath_lab.models import build_backbone, embed_dim_of

    torch.manual_seed(cfg.seed)
    kw = {**cfg.timm_kwargs, "dynamic_img_size": True}  # as our trainer: one backbone for 64 and 32 px crops
    s_bb = build_backbone(cfg.timm_name, drop_path_rate=cfg.drop_path_rate, **kw)
    dim = embed_dim_of(s_bb)
    s_head = DINOProjectionHead(dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim, cfg.out_dim,
                                norm_last_layer=cfg.norm_last_layer)
    t_bb = copy.deepcopy(s_bb)
    # lightly's head uses torch's old weight_norm, which deepcopy refuses; build a twin (lightly's example).
    t_head = DINOProjectionHead(dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim, cfg.out_dim,
                                norm_last_layer=cfg.norm_last_layer)
    t_head.load_state_dict(s_head.state_dict())
    deactivate_requires_grad(t_bb)
    deactivate_requires_grad(t_head)
    transform = DINOTransform(
        global_crop_size=cfg.global_crop_size, global_crop_scale=tuple(cfg.global_crop_scale),
        local_crop_size=cfg.local_crop_size, local_crop_scale=tuple(cfg.local_crop_scale),
        n_local_views=cfg.n_local_crops, hf_prob=cfg.flip_p, cj_prob=cfg.color_jitter_p, cj_strength=1.0,
        cj_bright=cfg.color_jitter[0], cj_contrast=cfg.color_jitter[1], cj_sat=cfg.color_jitter[2],
        cj_hue=cfg.color_jitter[3], random_gray_scale=cfg.grayscale_p, gaussian_blur=tuple(cfg.blur_p),
        sigmas=tuple(cfg.blur_sigma), solarization_prob=cfg.solarize_p,
    )

    def collate(items):
        views = [transform(Image.fromarray(it["image"])) for it in items]
        return [torch.stack([v[k] for v in views]) for k in range(len(views[0]))]

    criterion = DINOLoss(output_dim=cfg.out_dim, warmup_teacher_temp=cfg.warmup_teacher_temp,
                         teacher_temp=cfg.teacher_temp, student_temp=cfg.student_temp,
                         center_momentum=cfg.center_momentum)
    params = list(s_bb.parameters()) + list(s_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=0, collate_fn=collate)
    times, aug = [], []
    t_prev = time.perf_counter()
    for it, views in enumerate(loader):
        if it >= iters:
            break
        aug.append(time.perf_counter() - t_prev)  # the loader's collate ran DINOTransform on the batch
        update_momentum(s_bb, t_bb, m=cfg.momentum_teacher)
        update_momentum(s_head, t_head, m=cfg.momentum_teacher)
        teacher_out = [t_head(t_bb(v)) for v in views[:2]]
        student_out = [s_head(s_bb(v)) for v in views]
        loss = criterion(teacher_out, student_out, teacher_temp=cfg.warmup_teacher_temp)
        loss.backward()
        s_head.cancel_last_layer_gradients(current_epoch=1)
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t = time.perf_counter()
        times.append(t - t_prev)
        t_prev = t
    assert torch.isfinite(loss), "lightly baseline produced a non-finite loss"
    measured = times[WARMUP:]
    return len(measured) * cfg.batch_size / sum(measured), float(np.mean(aug[WARMUP:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=8, help="iterations per round (the first 2 are warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per side; the best is reported")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both sides (cpu-demo: 2)")
    ap.add_argument("--preset", default="cpu-demo")
    args = ap.parse_args(argv)
    if args.iters <= WARMUP:
        ap.error(f"--iters must exceed the {WARMUP} warm-up iterations")

    from exaonepath_lab.pretrain.presets import get_preset

    # load_px=None: both sides crop from the same 256 px patches (the preset's 64 px pre-read is a
    # data-loading choice lightly's side does not make; it would inflate our ratio).
    cfg = get_preset(args.preset, num_threads=args.threads, device="cpu", load_px=None)
    torch.set_num_threads(args.threads)
    ds = RealPatches(cfg.batch_size * (args.iters + 1))
    ours, theirs, ours_aug, theirs_aug = [], [], [], []
    for _ in range(args.rounds):
        rate, aug = run_ours(cfg, ds, args.iters)
        ours.append(rate)
        ours_aug.append(aug)
        rate, aug = run_lightly(cfg, ds, args.iters)
        theirs.append(rate)
        theirs_aug.append(aug)
    import lightly

    line = {
        "bench": "dino_cpu_train",
        "preset": args.preset,
        "backbone": f"{cfg.timm_name} {cfg.timm_kwargs}",
        "crops": f"2x{cfg.global_crop_size}+{cfg.n_local_crops}x{cfg.local_crop_size}",
        "batch": cfg.batch_size,
        "threads": args.threads,
        "data_set": ds.data_set,
        "ours_img_per_s": round(max(ours), 2),
        "lightly_img_per_s": round(max(theirs), 2),
        "ratio_vs_lightly": round(max(ours) / max(theirs), 3),
        "augment_s_per_batch_ours": round(min(ours_aug), 3),
        "augment_s_per_batch_lightly": round(min(theirs_aug), 3),
        "rounds_ours": [round(v, 2) for v in ours],
        "rounds_lightly": [round(v, 2) for v in theirs],
        "lightly_version": lightly.__version__,
        "torch": torch.__version__,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
