"""Multi-slide tiling runs on real SVS files and small generated pyramidal TIFFs.

Covers: real slides (patch size from MPP, no patch on glass, missing MPP), a blank
slide, corrupt and missing files next to good ones, parallel workers, rerun after a
killed run, class-map labels, CSV manifests, SLURM sharding + merge, and the CLI.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import openslide
import pandas as pd
import pytest

from exaonepath_lab.cli import main
from exaonepath_lab.tiling import (
    MANIFEST_COLUMNS,
    TileConfig,
    merge_manifests,
    read_patch_h5,
    resolve_inputs,
    run_tiling,
    shard_from_env,
)


def _write_tiff(path: Path, rgb: np.ndarray, mpp: float) -> Path:
    """Tiled JPEG pyramid (level 0 + 4x as a subfiletype=1 page), MPP in resolution tags (cm)."""
    import tifffile

    res = (1e4 / mpp, 1e4 / mpp)
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(256, 256), photometric="rgb", compression="jpeg", resolution=res,
                 resolutionunit="CENTIMETER", metadata=None)
        tw.write(np.ascontiguousarray(rgb[::4, ::4]), tile=(256, 256), photometric="rgb", compression="jpeg",
                 subfiletype=1, resolution=(res[0] / 4, res[1] / 4), resolutionunit="CENTIMETER", metadata=None)
    return path


def _tissue_image(size_um: float, mpp: float, seed: int = 0) -> np.ndarray:
    """Glass with a textured pink-purple disc of tissue (radius 0.3 of the field).

    Drawn at 8 µm/px and enlarged (nearest), with a 256 px noise tile repeated: cheap
    to make at any resolution, and the same tissue in µm whatever ``mpp``.
    """
    import cv2

    n, small = int(round(size_um / mpp)), int(round(size_um / 8))
    yy, xx = np.mgrid[0:small, 0:small]
    disc = ((xx + 0.5 - small / 2) ** 2 + (yy + 0.5 - small / 2) ** 2 < (0.3 * small) ** 2).astype(np.uint8)
    disc = cv2.resize(disc, (n, n), interpolation=cv2.INTER_NEAREST).astype(bool)
    noise = np.random.default_rng(seed).normal(0, 12, (256, 256, 1))
    tex = np.clip(np.array([200, 120, 175]) + noise, 0, 255).astype(np.uint8)
    tex = np.tile(tex, (n // 256 + 1, n // 256 + 1, 1))[:n, :n]
    return np.where(disc[..., None], tex, np.uint8(238))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """slide_a/slide_b: the same 1.5 x 1.5 mm tissue at 0.5 and 0.25 µm/px; blank: glass only."""
    d = tmp_path_factory.mktemp("cohort")
    _write_tiff(d / "slide_a.tiff", _tissue_image(1536, 0.5), 0.5)
    _write_tiff(d / "slide_b.tiff", _tissue_image(1536, 0.25), 0.25)
    blank = np.full((1024, 1024, 3), 238, np.uint8) + np.random.default_rng(1).integers(0, 4, (1024, 1024, 3), dtype=np.uint8)
    _write_tiff(d / "blank.tiff", blank, 0.5)
    return d


def test_real_cmu_patches_are_tissue_not_glass(tmp_path, cmu_svs):
    res = run_tiling([cmu_svs], tmp_path, workers=1, progress=False)
    row = res.manifest.iloc[0]
    assert list(res.manifest.columns) == MANIFEST_COLUMNS
    assert row.status == "ok" and row.mpp == pytest.approx(0.499)
    assert row.patch_size == round(256 * 0.5 / 0.499) == 257  # exact MPP, not snapped to 256
    d = read_patch_h5(row.h5_path)
    assert len(d["coords"]) == row.n_patches > 10
    assert (d["tissue_fraction"] >= 0.5).all() and (d["labels"] == -1).all()
    with openslide.OpenSlide(str(cmu_svs)) as s:
        glass = np.asarray(s.read_region((0, 0), 0, (200, 200)).convert("RGB")).mean()  # top-left corner is glass
        assert glass > 225
        means = [np.asarray(s.read_region((int(x), int(y)), 0, (257, 257)).convert("RGB")).mean()
                 for x, y in d["coords"]]
    assert max(means) < glass - 15, "a patch looks like blank glass"
    c = d["coords"]
    assert (c % 257 == 0).all() and (c[:, 0] + 257 <= 2220).all() and (c[:, 1] + 257 <= 2967).all()
    assert (tmp_path / "masks" / "cmu-small-region.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "tile_config.json").read_text())["target_px"] == 256


def test_real_tcga_missing_mpp_then_override(tmp_path, tcga_no_mpp_svs):
    res = run_tiling([tcga_no_mpp_svs], tmp_path / "a", progress=False)
    row = res.manifest.iloc[0]
    assert row.status == "failed" and row.n_patches == 0
    assert "tcga-cr-7395-01a-01-ts1.svs" in row.error and "mpp_override" in row.error
    assert res.report["counts"] == {"ok": 0, "failed": 1, "skipped_done": 0}
    res = run_tiling([tcga_no_mpp_svs], tmp_path / "b", TileConfig(mpp_override=0.25), progress=False)
    row = res.manifest.iloc[0]
    assert row.status == "ok" and row.patch_size == 512 and row.n_patches > 10
    with h5py.File(row.h5_path) as f:
        assert f.attrs["mpp_source"] == "override" and f["coords"].attrs["patch_size"] == 512


def test_parallel_run_with_bad_inputs_and_resume(cohort, tmp_path):
    bad = tmp_path / "corrupt.svs"
    bad.write_bytes(b"\x00garbage" * 1000)
    out = tmp_path / "out"
    inputs = [cohort, bad, tmp_path / "does_not_exist.svs"]
    res = run_tiling(inputs, out, workers=2, progress=False)
    m = res.manifest.set_index("slide_id")
    assert m.loc["slide_a", "status"] == m.loc["slide_b", "status"] == "ok"
    # same tissue at 0.5 and 0.25 µm/px: 256 vs 512 px patches covering the same µm
    assert (m.loc["slide_a", "patch_size"], m.loc["slide_b", "patch_size"]) == (256, 512)
    assert m.loc["slide_a", "n_patches"] == m.loc["slide_b", "n_patches"] > 5
    assert m.loc["blank", "status"] == "ok" and m.loc["blank", "n_patches"] == 0
    assert read_patch_h5(m.loc["blank", "h5_path"])["coords"].shape == (0, 2)
    assert m.loc["corrupt", "status"] == "failed" and "corrupt.svs" in m.loc["corrupt", "error"]
    assert m.loc["does_not_exist", "status"] == "failed" and "not found" in m.loc["does_not_exist", "error"]
    report = json.loads((out / "tile_report.json").read_text())
    assert report["counts"] == {"ok": 3, "failed": 2, "skipped_done": 0}
    on_disk = pd.read_csv(out / "manifest.csv")
    assert len(on_disk) == 5 and set(on_disk.status) == {"ok", "failed"}

    # Simulate a killed run: slide_a's file truncated, a stale temp file left for slide_b.
    a_h5 = out / "patches" / "slide_a.h5"
    a_h5.write_bytes(a_h5.read_bytes()[:200])
    stale = out / "patches" / ".slide_b.deadbeef.part.h5"
    stale.write_bytes(b"partial")
    res2 = run_tiling([cohort], out, workers=1, progress=False)
    m2 = res2.manifest.set_index("slide_id")
    assert m2.loc["slide_a", "status"] == "ok"  # redone
    assert m2.loc["slide_b", "status"] == m2.loc["blank", "status"] == "skipped_done"
    assert m2.loc["slide_b", "n_patches"] == m.loc["slide_b", "n_patches"]
    assert read_patch_h5(a_h5)["coords"].shape[0] == m.loc["slide_a", "n_patches"]
    # a changed setting invalidates earlier results instead of silently reusing them
    res3 = run_tiling([cohort / "slide_a.tiff"], out, TileConfig(min_tissue=0.9), progress=False)
    assert res3.manifest.status.tolist() == ["ok"] and res3.manifest.n_patches[0] <= m.loc["slide_a", "n_patches"]


def test_classmap_labels_and_csv_manifest(cohort, tmp_path):
    d = tmp_path / "syn"
    d.mkdir()
    img = _tissue_image(1536, 0.5)  # 3072 px
    _write_tiff(d / "s1.tiff", img, 0.5)
    cmap = np.zeros((96, 96), np.uint8)  # downsample 32: class 1 on the left half, 3 on the right
    cmap[:, :48], cmap[:, 48:] = 1, 3
    from PIL import Image

    Image.fromarray(cmap).save(d / "s1_classmap.png")
    (d / "s1.json").write_text(json.dumps({"classmap_downsample": 32}))
    csv = d / "list.csv"
    pd.DataFrame({"path": ["s1.tiff", str(cohort / "slide_b.tiff")], "slide_id": ["S1", "B"],
                  "mpp": [None, 0.3]}).to_csv(csv, index=False)
    Image.fromarray(img[::16, ::16]).save(d / "s1_thumb.png")
    assert [j.slide_id for j in resolve_inputs(d)] == ["s1"]  # the class map PNG is not a slide
    assert [j.slide_id for j in resolve_inputs(d, allow_plain_images=True)] == ["s1"]  # nor its thumbnail
    res = run_tiling(csv, tmp_path / "out", progress=False)
    m = res.manifest.set_index("slide_id")
    d1 = read_patch_h5(m.loc["S1", "h5_path"])
    centre_x = d1["coords"][:, 0] + 128
    assert set(d1["labels"].tolist()) == {1, 3}
    np.testing.assert_array_equal(d1["labels"], np.where(centre_x < 1536, 1, 3))
    assert m.loc["B", "mpp"] == 0.3 and m.loc["B", "patch_size"] == round(128 / 0.3)  # per-row MPP wins
    (d / "s1.json").write_text("{}")
    res = run_tiling(csv, tmp_path / "out2", progress=False)
    err = res.manifest.set_index("slide_id").loc["S1", "error"]
    assert "classmap_downsample" in err and "s1.json" in err


def test_resolve_inputs_errors(tmp_path):
    with pytest.raises(ValueError, match="no slide files"):
        resolve_inputs(tmp_path)
    (tmp_path / "m.csv").write_text("file\nx.svs\n")
    with pytest.raises(ValueError, match="`path` column"):
        resolve_inputs(tmp_path / "m.csv")
    with pytest.raises(ValueError, match="duplicate slide id 'x'"):
        resolve_inputs([tmp_path / "a" / "x.svs", tmp_path / "b" / "x.svs"])


def test_slurm_shards_and_merge(cohort, tmp_path, monkeypatch):
    assert shard_from_env({}) == (0, 1)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}) == (2, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    r1 = run_tiling(cohort, tmp_path, progress=False)  # shard taken from the environment
    assert r1.manifest_path.name == "manifest.shard-0001-of-0002.csv" and r1.manifest.slide_id.tolist() == ["slide_a"]
    with pytest.raises(ValueError, match=r"shards \[0\] of 2"):
        merge_manifests(tmp_path)
    r0 = run_tiling(cohort, tmp_path, shard_index=0, num_shards=2, progress=False)
    assert r0.manifest.slide_id.tolist() == ["blank", "slide_b"]
    merged = merge_manifests(tmp_path)
    assert merged.manifest.slide_id.tolist() == ["blank", "slide_a", "slide_b"]
    assert merged.report["counts"]["ok"] == 3 and (tmp_path / "manifest.csv").exists()


def test_cli_tile_and_merge(cohort, tmp_path, capsys, cmu_svs):
    rc = main(["tile", str(cohort / "slide_a.tiff"), str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o"),
               "--workers", "1", "--no-progress", "--min-tissue", "0.8"])
    out = capsys.readouterr().out
    assert rc == 3 and "1 ok" in out and "1 failed" in out and "missing.svs" in out
    cfg = json.loads((tmp_path / "o" / "tile_config.json").read_text())
    assert cfg["min_tissue"] == 0.8
    # the override wins over the slide's own 0.499 µm/px (which would give 257 px)
    rc = main(["tile", str(cmu_svs), "--out", str(tmp_path / "t"), "--mpp-override", "0.25", "--no-progress"])
    assert rc == 0 and pd.read_csv(tmp_path / "t" / "manifest.csv").patch_size[0] == 512
    assert main(["tile", "--merge", "--out", str(tmp_path / "t")]) == 1  # nothing to merge: clear error
    assert "no shard manifests" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tile", "--help"])
    helptext = capsys.readouterr().out
    for opt in ("--workers", "--mpp-override", "--target-mpp", "--target-px", "--min-tissue", "--shard-index",
                "--num-shards", "--merge", "default"):
        assert opt in helptext


def test_cli_tile_slide_without_mpp(tcga_no_mpp_svs, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["tile", str(tcga_no_mpp_svs), "--out", str(out), "--no-progress"]) == 3  # failed: named, with the fix
    assert "tcga-cr-7395-01a-01-ts1.svs" in capsys.readouterr().out + pd.read_csv(out / "manifest.csv").error[0]
    rc = main(["tile", str(tcga_no_mpp_svs), "--out", str(tmp_path / "o"), "--mpp-override", "0.25",
               "--no-progress"])
    assert rc == 0 and pd.read_csv(tmp_path / "o" / "manifest.csv").patch_size[0] == 512
