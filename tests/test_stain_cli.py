"""``exaonepath-lab normalize``: image folders, tiling runs (real SVS via OpenSlide), targets."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from exaonepath_lab.cli import main
from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.stain import MacenkoNormalizer, StainConfig, StainParams, StainTarget

# level-0 (x, y) of 256-px patches: five on tissue, the last on the glass
COORDS = np.array([[1024, 768], [768, 768], [1024, 1024], [768, 1792], [1280, 1792], [0, 1280]], np.int64)


@pytest.fixture()
def image_folder(tmp_path: Path, sample_he: dict[str, Path]) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    src = read_rgb(sample_he["tiatoolbox-target.png"])
    Image.fromarray(src[:160, :200]).save(d / "a.png")
    Image.fromarray(src[100:260, 100:260]).save(d / "sub" / "b.jpg", quality=95)
    glass = read_rgb(sample_he["cmu-small-region.svs"])[:128, 224:352]  # blank glass of CMU-1
    Image.fromarray(glass).save(d / "white.png")
    (d / "broken.png").write_bytes(b"not an image")
    return d


def test_folder_normalization_statuses_outputs_and_resume(image_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["normalize", str(image_folder), "--out", str(out), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["folder"]["counts"] == {"ok": 2, "too_few_tissue_pixels": 1, "unreadable": 1, "total": 4}
    table = pd.read_csv(out / "stain_status.csv", keep_default_na=False).set_index("path")
    assert table.loc["broken.png", "status"] == "unreadable" and "broken.png" in table.loc["broken.png", "error"]
    assert table.loc["sub/b.jpg", "out_path"] == "sub/b.png"
    # the written image is the normalized one, lossless
    expected = MacenkoNormalizer().normalize(read_rgb(image_folder / "a.png")).images
    np.testing.assert_array_equal(read_rgb(out / "a.png"), expected)
    # a failed image is written unchanged, its status says why
    np.testing.assert_array_equal(read_rgb(out / "white.png"), read_rgb(image_folder / "white.png"))
    assert table.loc["white.png", "status"] == "too_few_tissue_pixels"
    assert table.loc["a.png", "h_r"] > table.loc["a.png", "e_r"]  # hematoxylin first
    report = json.loads((out / "normalize_report.json").read_text())
    assert report["counts"]["total"] == 4 and report["normalizer"]["alpha"] == 1.0
    # the job's config is saved beside its outputs and rebuilds the normalizer that made them
    cfg = StainConfig.load(out / "stain_config.json")
    assert cfg == StainConfig() and cfg.normalizer().config() == report["normalizer"]

    # resume: finished images are skipped and kept; a deleted output is redone
    mtime = (out / "a.png").stat().st_mtime_ns
    (out / "sub" / "b.png").unlink()
    assert main(["normalize", str(image_folder), "--out", str(out), "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)["folder"]
    assert again["n_skipped_done"] == 2 and again["counts"]["total"] == 4  # a.png, white.png
    assert (out / "a.png").stat().st_mtime_ns == mtime and (out / "sub" / "b.png").exists()


def test_cli_errors_name_the_fix(image_folder: Path, capsys) -> None:
    assert main(["normalize", str(image_folder)]) == 1
    assert "--out is required" in capsys.readouterr().err
    assert main(["normalize"]) == 1
    assert "nothing to do" in capsys.readouterr().err
    assert main(["normalize", "--tiles", str(image_folder)]) == 1
    assert "manifest.csv not found" in capsys.readouterr().err
    assert main(["normalize", str(image_folder), "--out", str(image_folder / "x"), "--policy", "raise", "--quiet"]) == 1
    assert "StainNormalizationError" not in (err := capsys.readouterr().err) and "too_few_tissue_pixels" in err


def _tiling_run(root: Path, svs: Path) -> Path:
    """A tiling output as ARCHITECTURE.md specifies it (one real slide, one failed, one missing file)."""
    (root / "patches").mkdir(parents=True)
    for sid, slide in (("cmu1", svs), ("gone", root / "gone.svs")):
        with h5py.File(root / "patches" / f"{sid}.h5", "w") as f:
            f.create_dataset("coords", data=COORDS)
            f.attrs.update({"patch_size": 256, "patch_level": 0, "slide_path": str(slide), "slide_id": sid,
                            "slide_mpp": 0.499})
    pd.DataFrame([
        {"slide_id": "cmu1", "path": str(svs), "mpp": 0.499, "n_patches": 6, "patch_size": 256, "status": "ok",
         "error": "", "h5_path": str(root / "patches" / "cmu1.h5")},
        {"slide_id": "gone", "path": str(root / "gone.svs"), "mpp": 0.5, "n_patches": 6, "patch_size": 256,
         "status": "ok", "error": "", "h5_path": "patches/gone.h5"},
        {"slide_id": "bad", "path": "x.svs", "mpp": "", "n_patches": 0, "patch_size": 0, "status": "failed",
         "error": "no MPP", "h5_path": ""},
    ]).to_csv(root / "manifest.csv", index=False)
    return root


def test_tiles_sidecars_are_correct_resumable_and_applicable(tmp_path: Path, capsys, cmu_svs: Path) -> None:
    import openslide

    svs = cmu_svs
    tiles = _tiling_run(tmp_path / "tiles", svs)
    rc = main(["normalize", "--tiles", str(tiles), "--batch-size", "4", "--quiet"])
    assert rc == 1  # one slide failed (its file is missing): counted and reported, others done
    printed = json.loads(capsys.readouterr().out)["tiles"]
    assert printed["slides"] == {"ok": 1, "failed": 1, "skipped_not_tiled": 1, "total": 3}
    assert printed["patches"] == {"ok": 5, "too_few_tissue_pixels": 1, "total": 6}
    report = pd.read_csv(tiles / "stain" / "stain_report.csv", keep_default_na=False).set_index("slide_id")
    assert "gone.svs" in report.loc["gone", "error"] and report.loc["cmu1", "n_ok"] == 5

    side = tiles / "stain" / "cmu1.h5"
    with h5py.File(side, "r") as f:
        assert f["stain_matrix"].shape == (6, 3, 2) and f["max_conc"].shape == (6, 2)
        assert [s.decode() for s in f["status"][()]][-1] == "too_few_tissue_pixels"
        assert f.attrs["patch_size"] == 256 and f.attrs["slide_id"] == "cmu1"
    params = StainParams.load(side)
    slide = openslide.OpenSlide(str(svs))
    patches = np.stack([np.asarray(slide.read_region((int(x), int(y)), 0, (256, 256)).convert("RGB")) for x, y in COORDS])
    direct = MacenkoNormalizer().fit_stains(patches)
    np.testing.assert_array_equal(params.stain_matrix, direct.stain_matrix)
    # fit once at tiling time, apply later: the same as normalizing from scratch
    norm = MacenkoNormalizer()
    np.testing.assert_array_equal(norm.apply(patches, params).images, norm.normalize(patches).images)

    mtime = side.stat().st_mtime_ns
    main(["normalize", "--tiles", str(tiles), "--quiet"])
    again = json.loads(capsys.readouterr().out)["tiles"]
    assert again["slides"]["skipped_done"] == 1 and again["patches"]["ok"] == 5
    assert side.stat().st_mtime_ns == mtime


def test_fit_save_and_use_a_target(image_folder: Path, tmp_path: Path, capsys, sample_he: dict[str, Path]) -> None:
    ref = sample_he["stardist-histo.jpg"]
    tpath = tmp_path / "target.json"
    assert main(["normalize", "--fit-target", str(ref), "--save-target", str(tpath)]) == 0
    target = StainTarget.load(tpath)
    assert target.source == "stardist-histo.jpg"
    out = tmp_path / "out_t"
    assert main(["normalize", str(image_folder), "--out", str(out), "--target", str(tpath), "--quiet"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(read_rgb(out / "a.png"), MacenkoNormalizer(target).normalize(read_rgb(image_folder / "a.png")).images)
    assert main(["normalize", "--save-target", str(tpath)]) == 1
    assert "--fit-target" in capsys.readouterr().err


def test_stain_config_round_trips_and_rejects_contradictions(tmp_path: Path) -> None:
    cfg = StainConfig(fit_target=("a.png", "b.png"), save_target="t.json", alpha=2.0, policy="flag")
    assert StainConfig.load(cfg.save(tmp_path / "stain_config.json")) == cfg
    with pytest.raises(ValueError, match="policy"):
        StainConfig(policy="drop")
    with pytest.raises(ValueError, match="not both"):
        StainConfig(target="t.json", fit_target=("a.png",))
    with pytest.raises(ValueError, match="save_target needs fit_target"):
        StainConfig(save_target="t.json")
