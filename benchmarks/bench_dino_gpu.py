"""DINO ``paper`` preset on one GPU: images/s per GPU and model FLOP utilisation (MFU), one JSON line.

The paper's per-GPU work (§4.2): ViT-B/16, bf16 autocast, 2 × 224 px global + 8 × 96 px
local crops, 64 images per GPU (5,120 over 80 GPUs). Our trainer runs it for
``--iters`` iterations on a single GPU (no process group; the per-GPU work of the
80-GPU run minus the DDP all-reduce) from uint8 256 px patches; the rate comes from
its ``log.jsonl`` (data + step time, warm-up left out).

FLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
training step (student forward + backward on all crops, teacher forward on the global
crops, loss) and cross-checked with the analytic ViT count; MFU = achieved FLOP/s /
the GPU's dense bf16 peak (datasheet table below, or ``--peak-tflops``).

Baseline in the same run: lightly's DINO blocks (``DINOProjectionHead``, ``DINOLoss``,
``update_momentum``, the per-view loop of lightly's example) on the same backbone, crops
and batch, fed crops made once on the GPU, so its rate excludes augmentation and data
(a conservative ratio). Run on a GPU machine::

    python benchmarks/bench_dino_gpu.py [--iters 30] [--batch 64]

Without CUDA it exits with status 2 and says so.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s.
PEAK_BF16_TFLOPS = {
    "H200": 989.4,  # SXM; same tensor cores as H100 SXM
    "GH200": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.4,  # SXM (the name nvidia-smi prints for SXM parts)
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
}
WARMUP = 5  # iterations left out of the rate (cuDNN/cuBLAS autotuning, allocator)


def peak_tflops(name: str) -> float | None:
    """Datasheet bf16 peak of the GPU called ``name`` (longest matching key), None if unknown."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def vit_forward_flops(img: int, patch: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """Analytic forward FLOPs of one image through a ViT (multiply-add = 2 FLOPs)."""
    n = (img // patch) ** 2 + 1
    per_block = 2 * n * (4 * dim * dim + 2 * dim * int(dim * mlp_ratio)) + 2 * 2 * n * n * dim
    embed = 2 * (img // patch) ** 2 * (3 * patch * patch) * dim
    return depth * per_block + embed


def analytic_flops_per_image(cfg) -> float:
    """FLOPs one image costs a training step, in closed form.

    Student: forward + backward (= 3 × forward) on all crops, less the patch embedding's
    input gradient, which autograd never computes (the image needs no gradient); teacher:
    forward on the 2 global crops; heads included. ViT sizes come from
    ``cfg.timm_kwargs``, with ViT-B/16's as defaults (the paper preset).
    """
    kw = cfg.timm_kwargs
    dim, depth, patch = kw.get("embed_dim", 768), kw.get("depth", 12), kw.get("patch_size", 16)
    head = 2 * (dim * cfg.head_hidden_dim + cfg.head_hidden_dim ** 2 + cfg.head_hidden_dim * cfg.head_bottleneck_dim
                + cfg.head_bottleneck_dim * cfg.out_dim)

    def crop(size: int) -> tuple[float, float]:  # (forward, patch-embedding forward)
        return vit_forward_flops(size, patch, dim, depth) + head, 2 * (size // patch) ** 2 * 3 * patch * patch * dim

    (g, g_emb), (loc, l_emb) = crop(cfg.global_crop_size), crop(cfg.local_crop_size)
    student = 2 * (3 * g - g_emb) + cfg.n_local_crops * (3 * loc - l_emb)
    teacher = 2 * g
    return float(student + teacher)


def counted_flops_per_image(cfg, images, device) -> float:
    """FLOPs of one training step counted by ``FlopCounterMode``, per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from exaonepath_lab.pretrain.loss import DINOLoss
    from exaonepath_lab.pretrain.trainer import build_augment, build_models

    student, teacher, _, _ = build_models(cfg)
    student.to(device).train()
    teacher.to(device)
    for model in (student, teacher):  # same FLOPs; explicit matmuls are counted on every device and torch
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    loss_fn = DINOLoss(cfg.out_dim, n_crops=cfg.n_crops, student_temp=cfg.student_temp).to(device)
    crops = build_augment(cfg)(images.to(device), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16):
        with torch.no_grad():
            t_out = teacher(crops[:2])
        s_out = student(crops)
        loss = loss_fn(s_out, t_out, cfg.teacher_temp)
        loss.backward()
    return counter.get_total_flops() / images.shape[0]


def run_ours(cfg, ds, iters: int) -> dict:
    from exaonepath_lab.pretrain.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        c = cfg.replace(out_dir=tmp, max_iters=iters, checkpoint_every=0, normalize=False)
        res = train(c, dataset=ds, resume=False, progress=False)
        rows = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_s" in r and r["it"] >= WARMUP]
    secs = sum(r["data_s"] + r["step_s"] for r in rows)
    return {"img_per_s": len(rows) * cfg.batch_size / secs, "step_ms": 1000 * secs / len(rows),
            "aug_ms": 1000 * sum(r["aug_s"] for r in rows) / len(rows), "final_loss": res.final.get("loss")}


def run_lightly(cfg, images, iters: int, device) -> float | None:
    """images/s of lightly's DINO blocks, crops precomputed on the GPU (augmentation excluded)."""
    import torch

    try:
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum
    except ImportError:
        return None
    from exaonepath_lab.models import build_backbone, embed_dim_of
    from exaonepath_lab.pretrain.trainer import build_augment

    kw = {**cfg.timm_kwargs, "dynamic_img_size": True}
    s_bb = build_backbone(cfg.timm_name, drop_path_rate=cfg.drop_path_rate, **kw).to(device)
    dim = embed_dim_of(s_bb)

    def head():
        return DINOProjectionHead(dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim, cfg.out_dim).to(device)

    s_head, t_head = head(), head()
    t_head.load_state_dict(s_head.state_dict())
    t_bb = copy.deepcopy(s_bb)
    deactivate_requires_grad(t_bb)
    deactivate_requires_grad(t_head)
    crit = DINOLoss(output_dim=cfg.out_dim, teacher_temp=cfg.teacher_temp).to(device)
    params = list(s_bb.parameters()) + list(s_head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    views = build_augment(cfg)(images.to(device), generator=torch.Generator().manual_seed(0))
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for it in range(iters):
        sync()
        t0 = time.perf_counter()
        update_momentum(s_bb, t_bb, m=0.996)
        update_momentum(s_head, t_head, m=0.996)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            t_out = [t_head(t_bb(v)) for v in views[:2]]
            s_out = [s_head(s_bb(v)) for v in views]
            loss = crit(t_out, s_out, teacher_temp=cfg.teacher_temp)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
    measured = times[WARMUP:]
    return len(measured) * images.shape[0] / sum(measured)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=30, help=f"iterations (the first {WARMUP} are warm-up)")
    ap.add_argument("--batch", type=int, default=64, help="images per GPU (paper: 64)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the datasheet bf16 peak")
    ap.add_argument("--no-lightly", action="store_true", help="skip the lightly baseline")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_dino_gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False here. Run it on a GPU "
              "machine (e.g. `srun --gpus=1 python benchmarks/bench_dino_gpu.py`); for CPUs use "
              "benchmarks/bench_dino.py.", file=sys.stderr)
        return 2
    if args.iters <= WARMUP:
        ap.error(f"--iters must exceed the {WARMUP} warm-up iterations")
    from exaonepath_lab.pretrain.presets import get_preset

    device = torch.device("cuda:0")
    cfg = get_preset("paper", batch_size=args.batch, device="cuda", num_workers=4)
    try:
        from bench_dino import RealPatches  # real H&E: the wider set if configured, else the sample data

        ds = RealPatches(args.batch * (args.iters + 1))
        source = ds.data_set
    except (FileNotFoundError, ImportError, IndexError, ZeroDivisionError, RuntimeError):  # e.g. offline
        ds = SyntheticPatches(args.batch * (args.iters + 1))
        source = "synthetic"
    images = torch.stack([torch.from_numpy(ds[i]["image"]).permute(2, 0, 1) for i in range(args.batch)])

    ours = run_ours(cfg, ds, args.iters)
    lightly_rate = None if args.no_lightly else run_lightly(cfg, images, max(args.iters // 2, WARMUP + 5), device)
    counted = counted_flops_per_image(cfg, images, device)
    analytic = analytic_flops_per_image(cfg)
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(name)
    achieved = ours["img_per_s"] * counted / 1e12
    print(json.dumps({
        "bench": "dino_gpu_paper",
        "gpu": name,
        "batch_per_gpu": args.batch,
        "crops": f"2x{cfg.global_crop_size}+{cfg.n_local_crops}x{cfg.local_crop_size}",
        "precision": cfg.precision,
        "data": source,
        "img_per_s_per_gpu": round(ours["img_per_s"], 1),
        "step_ms": round(ours["step_ms"], 1),
        "augment_ms": round(ours["aug_ms"], 1),
        "gflops_per_img_counted": round(counted / 1e9, 1),
        "gflops_per_img_analytic": round(analytic / 1e9, 1),
        "achieved_tflops": round(achieved, 1),
        "peak_bf16_tflops": peak,
        "mfu": round(achieved / peak, 4) if peak else None,
        "lightly_img_per_s_no_aug": round(lightly_rate, 1) if lightly_rate else None,
        "ratio_vs_lightly": round(ours["img_per_s"] / lightly_rate, 3) if lightly_rate else None,
        "paper_80gpu_img_per_s_upper_bound": round(80 * ours["img_per_s"]),
        "torch": torch.__version__,
    }))
    return 0


class SyntheticPatches:
    """Random uint8 256 px patches (item protocol) when the real H&E folder is not reachable."""

    def __init__(self, n: int, size: int = 256) -> None:
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        self.meta = pd.DataFrame({"index": np.arange(n), "label": -1})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": int(i)}


if __name__ == "__main__":
    sys.exit(main())
