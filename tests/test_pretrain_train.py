"""DINO training mechanics on real H&E tiles: resume, pre-emption, non-finite loss, torchrun, checkpoints."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.models import build_backbone, load_kit_checkpoint
from exaonepath_lab.pretrain.data import ArrayDataset, EpochSampler, PretrainCollate
from exaonepath_lab.pretrain.presets import get_preset
from exaonepath_lab.pretrain.trainer import NonFiniteLossError, train

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

TINY = dict(
    timm_kwargs={"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
    global_crop_size=16, local_crop_size=8, n_local_crops=2, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
    batch_size=8, max_iters=6, warmup_iters=2, warmup_teacher_temp_iters=3, checkpoint_every=100, num_threads=1,
    drop_path_rate=0.1, freeze_last_layer_epochs=0.5, normalize=False, collapse_window=2,
)


def real_tiles(he: dict[str, Path], n: int = 32, size: int = 32) -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` real H&E tiles cut from two images of the fetched sample data ``he`` (two 'slides')."""
    out, rows = [], []
    for name in ("stardist-histo.jpg", "tiatoolbox-target.png"):
        im = read_rgb(he[name])
        k = 0
        for y in range(0, im.shape[0] - size, size):
            for x in range(0, im.shape[1] - size, size):
                if k >= n // 2:
                    break
                out.append(im[y:y + size, x:x + size])
                rows.append({"slide_id": name, "label": -1})
                k += 1
    return np.stack(out), pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiles(sample_he: dict[str, Path]) -> ArrayDataset:
    imgs, meta = real_tiles(sample_he)
    return ArrayDataset(imgs, meta)


@pytest.fixture(scope="module")
def tile_folder(tmp_path_factory: pytest.TempPathFactory, sample_he: dict[str, Path]) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("tiles")
    imgs, meta = real_tiles(sample_he)
    for i, (im, sid) in enumerate(zip(imgs, meta.slide_id)):
        d = root / Path(sid).stem
        d.mkdir(exist_ok=True)
        Image.fromarray(im).save(d / f"{i:03d}.png")
    return root


def cfg(tmp: Path, **kw):
    return get_preset("cpu-demo", out_dir=str(tmp), **{**TINY, **kw})


def test_resume_reproduces_the_uninterrupted_run(tiles: ArrayDataset, tmp_path: Path) -> None:
    # 32 tiles / batch 8 = 4 iterations per epoch: 6 iterations cross an epoch, the stop at 3 is mid-epoch.
    full = train(cfg(tmp_path / "full"), tiles, progress=False)
    assert full.status == "completed" and full.iteration == 6 and len(full.losses) == 6
    part = train(cfg(tmp_path / "split"), tiles, progress=False, stop_at=3)
    assert part.status == "stopped" and part.iteration == 3
    ck = load_kit_checkpoint(str(part.checkpoint))
    assert (ck["iteration"], ck["epoch"], ck["batch_in_epoch"]) == (3, 0, 3)
    rest = train(cfg(tmp_path / "split"), tiles, progress=False)
    assert rest.status == "completed" and len(rest.losses) == 3
    np.testing.assert_allclose(part.losses + rest.losses, full.losses, rtol=1e-5, atol=1e-6)
    a = load_kit_checkpoint(str(full.checkpoint))["teacher_backbone"]
    b = load_kit_checkpoint(str(rest.checkpoint))["teacher_backbone"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # the log of the resumed run has each iteration once, and the artefacts exist
    rows = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["it"] for r in rows if "loss" in r] == list(range(6))
    for name in ("config.json", "curves.png", "curves.html", "run_report.json", "log.csv"):
        assert (tmp_path / "split" / name).is_file(), name
    assert json.loads((tmp_path / "split" / "config.json").read_text())["out_dim"] == 64
    # resuming with different maths is refused, naming the key
    with pytest.raises(ValueError, match="out_dim"):
        train(cfg(tmp_path / "split", out_dim=128), tiles, progress=False)


def test_checkpoint_rebuilds_the_teacher_backbone_strictly(tiles: ArrayDataset, tmp_path: Path) -> None:
    res = train(cfg(tmp_path, max_iters=2), tiles, progress=False)
    ck = load_kit_checkpoint(str(res.checkpoint))
    assert ck["format"] == "exaonepath-lab/dino-v1"
    spec = ck["model"]
    assert "drop_path_rate" not in spec["timm_kwargs"]  # the teacher has no stochastic depth
    bb = build_backbone(spec["timm_name"], **spec["timm_kwargs"])
    bb.load_state_dict(ck["teacher_backbone"], strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(bb.eval()(x), res.teacher.backbone(x))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not an exaonepath-lab DINO checkpoint"):
        load_kit_checkpoint(str(foreign))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiles: ArrayDataset, tmp_path: Path) -> None:
    c = cfg(tmp_path, lr=1e30, warmup_iters=0, checkpoint_every=1, max_iters=10, clip_grad=0.0)
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* last good checkpoint is kept"):
        train(c, tiles, progress=False)
    ck = load_kit_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert 1 <= ck["iteration"] < 10
    assert all(torch.isfinite(v).all() for v in ck["teacher_backbone"].values())
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "non_finite_loss"


def test_sigterm_checkpoints_and_exits_cleanly(tile_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = [f"{k}={json.dumps(v)}" for k, v in {**TINY, "max_iters": 100000, "checkpoint_every": 0}.items()]
    cmd = [sys.executable, "-m", "exaonepath_lab", "train", "--data", str(tile_folder), "--out", str(out),
           "--no-progress"] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120:
        if log.is_file() and sum(1 for line in log.read_text().splitlines() if '"loss"' in line) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.communicate()}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "--resume" in stderr
    report = json.loads((out / "run_report.json").read_text())
    assert report["status"] == "preempted"
    ck = load_kit_checkpoint(str(out / "checkpoint.pt"))
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert ck["iteration"] == max(r["it"] for r in logged if "loss" in r) + 1 >= 2
    assert any(r.get("event") == "preempted" for r in logged)
    # rerunning without --resume must not silently continue or overwrite
    again = subprocess.run(cmd[:-2 * len(sets)] + [a for s in sets for a in ("--set", s)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "pass --resume" in again.stderr


def test_normalized_run_counts_macenko_failures(tmp_path: Path, sample_he: dict[str, Path]) -> None:
    imgs, meta = real_tiles(sample_he, 16)
    white = read_rgb(sample_he["cmu-small-region.svs"])[:32, 224:256]  # blank glass of CMU-1
    imgs[0] = white  # a background patch Macenko cannot fit: counted, passed through, never dropped
    res = train(cfg(tmp_path, normalize=True, batch_size=4, max_iters=4), ArrayDataset(imgs, meta), progress=False)
    counts = res.stain_counts
    # every patch is counted once, with the status Macenko gives it outside training (at 32 px some
    # real tiles have too few tissue pixels too, not only the white one)
    from collections import Counter

    from exaonepath_lab.stain import MacenkoNormalizer

    status = MacenkoNormalizer().normalize(imgs).status
    assert dict(counts) == dict(Counter(status)) and sum(counts.values()) == 16
    assert status[0] == "too_few_tissue_pixels" and counts["ok"] >= 1
    report = json.loads((tmp_path / "run_report.json").read_text())
    assert report["stain_counts"] == counts


def test_collate_pads_mixed_sizes_and_normalizes_once(sample_he: dict[str, Path]) -> None:
    imgs, _ = real_tiles(sample_he, 4, size=32)
    items = [{"image": imgs[0], "index": 0}, {"image": imgs[1][:24, :20], "index": 1}]
    b = PretrainCollate(normalize=False)(items)
    assert b["images"].shape == (2, 3, 32, 32) and b["sizes"].tolist() == [[32, 32], [24, 20]]
    assert int(b["images"][1, :, 24:, :].max()) == 0 and b["stain_status"] == ["off", "off"]
    from exaonepath_lab.stain import MacenkoNormalizer

    n = PretrainCollate(normalize=True)(items[:1])
    want = MacenkoNormalizer().normalize(imgs[:1]).images[0]
    np.testing.assert_array_equal(n["images"][0].permute(1, 2, 0).numpy(), np.asarray(want))
    with pytest.raises(ValueError, match="uint8"):
        PretrainCollate()([{"image": imgs[0].astype(np.float32), "index": 0}])


def test_collate_load_px_normalizes_at_native_size_then_area_resizes(sample_he: dict[str, Path]) -> None:
    from PIL import Image

    from exaonepath_lab.stain import MacenkoNormalizer

    imgs, _ = real_tiles(sample_he, 2, size=64)
    items = [{"image": im, "index": i} for i, im in enumerate(imgs)]
    b = PretrainCollate(normalize=True, load_px=16)(items)
    assert b["images"].shape == (2, 3, 16, 16) and b["sizes"].tolist() == [[16, 16], [16, 16]]
    native = np.asarray(MacenkoNormalizer().normalize(imgs).images)
    want = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.BOX)) for im in native])
    np.testing.assert_array_equal(b["images"].permute(0, 2, 3, 1).numpy(), want)
    # box filter = mean of each 4x4 block (independent check of "area resize")
    blocks = native.astype(np.float64).reshape(2, 16, 4, 16, 4, 3).mean(axis=(2, 4))
    assert np.abs(want.astype(np.float64) - blocks).max() <= 1.0
    with pytest.raises(ValueError, match="load_px"):
        cfg(Path("unused"), load_px=8)  # smaller than the 16 px global crops


def test_resume_accepts_checkpoints_written_before_a_config_key_existed(tmp_path: Path) -> None:
    from exaonepath_lab.pretrain.trainer import _check_resume_config

    c = cfg(tmp_path)
    saved = c.to_dict()
    del saved["centering"]  # a checkpoint from before the option was added
    _check_resume_config(saved, c, tmp_path / "checkpoint.pt")  # default value: same run
    with pytest.raises(ValueError, match="centering"):
        _check_resume_config(saved, cfg(tmp_path, centering="sinkhorn"), tmp_path / "checkpoint.pt")


def test_epoch_sampler_is_deterministic_sharded_and_resumable() -> None:
    s0 = EpochSampler(50, batch_size=4, seed=3, rank=0, world_size=2)
    s1 = EpochSampler(50, batch_size=4, seed=3, rank=1, world_size=2)
    assert s0.num_batches == 6
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == 24 and not set(a) & set(b)
    assert list(EpochSampler(50, batch_size=4, seed=3, rank=0, world_size=2)) == a
    s0.set_epoch(1)
    assert list(s0) != a
    e1 = list(s0)
    s0.set_epoch(1, start_batch=2)
    assert list(s0) == e1[8:] and len(s0) == 16
    with pytest.raises(ValueError, match="lower batch_size"):
        EpochSampler(5, batch_size=4, world_size=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_stay_identical(tmp_path: Path, sample_he: dict[str, Path]) -> None:
    he = {k: str(v) for k, v in sample_he.items()}
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_pretrain_train import TINY, real_tiles
        from exaonepath_lab.pretrain.data import ArrayDataset
        from exaonepath_lab.pretrain.presets import get_preset
        from exaonepath_lab.pretrain.trainer import train
        torch.set_num_threads(1)
        imgs, meta = real_tiles({he!r})
        cfg = get_preset("cpu-demo", out_dir=sys.argv[1], **{{**TINY, "max_iters": 3}})
        res = train(cfg, ArrayDataset(imgs, meta), progress=False)
        rank = int(os.environ["RANK"])
        torch.save({{"student": res.student.state_dict(), "teacher": res.teacher.state_dict(),
                    "losses": res.losses}}, os.path.join(sys.argv[1], f"rank{{rank}}.pt"))
    """))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(worker), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    s0, s1 = (torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    for part in ("student", "teacher"):
        for k in s0[part]:
            if "running_" in k or "num_batches_tracked" in k:
                continue  # BN statistics of the head are per rank on CPU (no SyncBatchNorm without CUDA)
            assert torch.equal(s0[part][k], s1[part][k]), f"{part}.{k} differs between ranks"
    assert s0["losses"] != s1["losses"]  # each rank saw its own shard of the data
    conf = json.loads((out / "config.json").read_text())
    assert conf["world_batch_size"] == 16
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [r["it"] for r in rows] == [0, 1, 2]  # rank 0 logs alone
