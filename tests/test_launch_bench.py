"""The DINO benchmarks' own logic: the GPU script's exit without CUDA, its FLOP count and peak table."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_dino_gpu import peak_tflops, vit_forward_flops  # noqa: E402


def test_gpu_bench_exits_clearly_without_cuda(capsys):
    if torch.cuda.is_available():  # hide the GPU from a fresh process
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        res = subprocess.run([sys.executable, str(BENCH / "bench_dino_gpu.py")], capture_output=True, text=True,
                             env=env, timeout=120)
        rc, out, err = res.returncode, res.stdout, res.stderr
    else:
        import bench_dino_gpu

        rc = bench_dino_gpu.main([])
        out, err = capsys.readouterr()
    assert rc == 2
    assert "needs a CUDA GPU" in err and "bench_dino.py" in err
    assert out == ""  # no half-made JSON line for an aggregator to pick up


@pytest.mark.parametrize("size", [64, 32])
def test_analytic_vit_flops_match_flop_counter(size):
    """The MFU numerator: our closed form against torch's FlopCounterMode on a real timm ViT."""
    from torch.utils.flop_counter import FlopCounterMode

    from exaonepath_lab.models import build_backbone

    vit = build_backbone("vit_tiny_patch16_224", img_size=64, patch_size=8, depth=2, dynamic_img_size=True).eval()
    for blk in vit.blocks:  # explicit q@k and attn@v matmuls: counted on CPU, as fused kernels are on GPU
        blk.attn.fused_attn = False
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vit(torch.randn(2, 3, size, size))
    assert counter.get_total_flops() / 2 == vit_forward_flops(size, 8, 192, 2)


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce GTX 1080", None)])
def test_peak_table(name, peak):
    assert peak_tflops(name) == peak


def test_gpu_bench_pieces_run_on_cpu_with_a_tiny_model():
    """The GPU script's measuring code, exercised here so a GPU hour is not lost to a typo."""
    import math

    import bench_dino_gpu as B

    from exaonepath_lab.pretrain.presets import get_preset

    cfg = get_preset("paper", batch_size=2, n_local_crops=2, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
                     timm_kwargs={"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
                     global_crop_size=32, local_crop_size=16, device="cpu", num_workers=0, num_threads=1,
                     warmup_iters=2)
    ds = B.SyntheticPatches(2 * (B.WARMUP + 2), size=64)
    images = torch.stack([torch.from_numpy(ds[i]["image"]).permute(2, 0, 1) for i in range(2)])
    # Counted FLOPs of a real training step equal the closed form exactly (MFU's numerator).
    assert B.counted_flops_per_image(cfg, images, torch.device("cpu")) == B.analytic_flops_per_image(cfg)
    ours = B.run_ours(cfg, ds, B.WARMUP + 1)
    # Throughput and step time come from the same logged seconds; augmentation is a part of the step.
    assert ours["img_per_s"] == pytest.approx(1000 * cfg.batch_size / ours["step_ms"])
    assert 0 < ours["aug_ms"] < ours["step_ms"]
    # It measured the kit's own training: the same run, trained directly, ends on the same loss.
    import tempfile

    from exaonepath_lab.pretrain.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        direct = train(cfg.replace(out_dir=tmp, max_iters=B.WARMUP + 1, checkpoint_every=0, normalize=False),
                       dataset=ds, resume=False, progress=False)
    assert math.isfinite(ours["final_loss"]) and ours["final_loss"] == direct.final["loss"]
    # The lightly side of the comparison needs the benchmark-only extra (`pip install -e '.[bench]'`).
    _lightly()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        lightly_img_s = B.run_lightly(cfg, images, B.WARMUP + 1, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert isinstance(lightly_img_s, float) and math.isfinite(lightly_img_s)  # None would mean lightly is missing


def _lightly():
    """lightly, or a skip; under CI=true its absence is a failure (.ci/run installs the bench extra)."""
    if os.environ.get("CI") == "true":
        import lightly  # noqa: F401  (an ImportError here fails the test)

        return lightly
    return pytest.importorskip("lightly", reason="lightly is a benchmark-only dependency (extra `bench`)")


def test_kit_dino_loss_equals_lightlys_over_steps():
    """The comparison the benchmark makes assumes both sides compute DINO's loss: the kit's centring
    and sharpening against lightly's DINOLoss, step by step (centre EMA included)."""
    _lightly()
    from lightly.loss import DINOLoss as LightlyDINOLoss

    from exaonepath_lab.pretrain.loss import DINOLoss

    gen = torch.Generator().manual_seed(0)
    b, k, n_crops = 5, 17, 4
    ours, theirs = DINOLoss(k, n_crops=n_crops), LightlyDINOLoss(output_dim=k, teacher_temp=0.04)
    for _ in range(3):
        s, t = torch.randn(n_crops * b, k, generator=gen), torch.randn(2 * b, k, generator=gen)
        want = theirs(list(t.chunk(2)), list(s.chunk(n_crops)), teacher_temp=0.04)
        assert float(ours(s, t, 0.04)) == pytest.approx(float(want), rel=1e-6)
        torch.testing.assert_close(ours.center, theirs.center.reshape(1, k))
