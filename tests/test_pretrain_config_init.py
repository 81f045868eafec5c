"""PretrainConfig/presets, strict ImageNet initialisation, collapse monitor, curves, train CLI parsing."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from exaonepath_lab.models import build_backbone
from exaonepath_lab.pretrain.config import PretrainConfig
from exaonepath_lab.pretrain.init import load_init_weights, read_state_dict
from exaonepath_lab.pretrain.monitor import CollapseMonitor
from exaonepath_lab.pretrain.presets import get_preset

VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)


def test_paper_preset_holds_the_paper_numbers(tmp_path: Path) -> None:
    c = get_preset("paper")
    assert (c.timm_name, c.batch_size, c.lr, c.epochs, c.warmup_iters, c.n_local_crops, c.precision) == (
        "vit_base_patch16_224", 64, 0.005, 10, 1000, 8, "bf16")
    assert (c.out_dim, c.student_temp, c.teacher_temp, c.center_momentum, c.momentum_teacher) == (
        65536, 0.1, 0.07, 0.9, 0.996)
    assert c.normalize and c.lr_scaling == "none" and c.global_crop_size == 224
    assert c.peak_lr(world_size=80) == 0.005
    assert c.replace(lr_scaling="linear").peak_lr(world_size=80) == pytest.approx(0.005 * 5120 / 256)
    p = c.save(tmp_path / "config.json")
    assert PretrainConfig.load(p) == c


def test_config_errors_name_the_field_and_the_fix() -> None:
    with pytest.raises(ValueError, match="lr_scaling='sqrt'.*'none'"):
        PretrainConfig(lr_scaling="sqrt")
    with pytest.raises(ValueError, match="fp16"):
        PretrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="global_crop_scale"):
        PretrainConfig(global_crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown config keys"):
        get_preset("cpu-demo", learning_rate=1.0)


def test_init_loads_strictly_ignores_classifier_and_reports(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = build_backbone("vit_tiny_patch16_224", num_classes=10, **VIT)  # an "ImageNet" model with a classifier
    sd = {f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    dst = build_backbone("vit_tiny_patch16_224", **VIT)
    rep = load_init_weights(dst, tmp_path / "w.safetensors")
    assert rep.ok and sorted(rep.ignored_classifier) == ["head.bias", "head.weight"]
    for k, v in dst.state_dict().items():
        torch.testing.assert_close(v, src.state_dict()[k])
    assert "tensors loaded" in rep.summary()
    # a deeper model: missing keys are an error that lists them
    deeper = build_backbone("vit_tiny_patch16_224", **{**VIT, "depth": 3})
    with pytest.raises(ValueError, match=r"missing \(\d+\): blocks\.2\."):
        load_init_weights(deeper, tmp_path / "w.safetensors")
    # another input size: the position embedding is resampled and reported
    bigger = build_backbone("vit_tiny_patch16_224", **{**VIT, "img_size": 48})
    rep2 = load_init_weights(bigger, tmp_path / "w.safetensors")
    assert rep2.ok and rep2.resampled and "pos_embed" in rep2.resampled[0]
    # nested PyTorch checkpoints (DINO style) unwrap
    torch.save({"teacher": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "d.pth")
    assert set(read_state_dict(tmp_path / "d.pth")) == set(src.state_dict())
    with pytest.raises(FileNotFoundError, match="pass the local path"):
        load_init_weights(dst, tmp_path / "nope.safetensors")


def test_collapse_monitor_flags_uniform_and_one_prototype_only() -> None:
    k = 1024
    ln = math.log(k)
    m = CollapseMonitor(k, window=5, grace=10)
    # grace period
    assert all(m.update(i, loss=ln * 0.999, teacher_entropy=ln * 0.99, batch_entropy=ln) is None for i in range(10))
    msgs = [m.update(i, loss=ln * 0.999, teacher_entropy=ln * 0.99, batch_entropy=ln) for i in range(10, 20)]
    assert sum(x is not None for x in msgs) == 1 and "uniform" in next(x for x in msgs if x)
    healthy = CollapseMonitor(k, window=5, grace=0)
    assert all(healthy.update(i, loss=4.0, teacher_entropy=2.5, batch_entropy=6.0) is None for i in range(50))
    onehot = CollapseMonitor(k, window=5, grace=0)
    out = [onehot.update(i, loss=0.1, teacher_entropy=0.01, batch_entropy=0.05) for i in range(10)]
    assert any(o and "one prototype" in o for o in out)


def test_curves_write_png_and_html(tmp_path: Path) -> None:
    from exaonepath_lab.pretrain.curves import save_curves

    log = tmp_path / "log.jsonl"
    rows = [{"it": i, "loss": 6 - i * 0.1, "lr": 1e-3, "wd": 0.04, "momentum": 0.99, "teacher_temp": 0.04,
             "teacher_entropy": 3.0, "batch_entropy": 5.0, "kl": 1.0, "img_per_s": 100.0} for i in range(5)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"event": "end"}) + "\n")
    out = save_curves(log, tmp_path, out_dim=1024, include_plotlyjs=False)
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in out["html"].read_text().lower()


def test_train_cli_resolves_preset_overrides_and_flags(capsys: pytest.CaptureFixture) -> None:
    from exaonepath_lab.cli import main

    rc = main(["train", "--preset", "paper", "--data", "tiles", "--out", "run", "--no-normalize",
               "--set", "lr=0.001", "--set", "global_crop_scale=[0.25, 1]", "--show-config"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["lr"] == 0.001 and d["global_crop_scale"] == [0.25, 1] and d["normalize"] is False
    assert d["timm_name"] == "vit_base_patch16_224" and d["data"] == "tiles"
    assert main(["train", "--data", "x", "--out", "y", "--set", "nope=1"]) == 1
    assert "unknown keys ['nope']" in capsys.readouterr().err
