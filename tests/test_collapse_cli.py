"""`exaonepath-lab extract` and `exaonepath-lab collapse` end to end on real H&E patches."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from exaonepath_lab.cli import main
from exaonepath_lab.features import load_features
from exaonepath_lab.features.patch_grid import GridPatchDataset

ENC = ["--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=64", "patch_size=16", "depth=2"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory, sample_he: dict[str, Path]) -> Path:
    """FOLDER/<slide>/<i>.png: 8 real 64 px tissue patches from each of 3 sources (the fetched sample data)."""
    ds = GridPatchDataset({"tia": [sample_he["tiatoolbox-target.png"]], "cmu": [sample_he["cmu-small-region.svs"]],
                           "stardist": [sample_he["stardist-histo.jpg"]]}, patch_px=64, max_per_slide=8, seed=0)
    root = tmp_path_factory.mktemp("imgs")
    for i in range(len(ds)):
        d = root / ds.meta.at[i, "slide_id"]
        d.mkdir(exist_ok=True)
        Image.fromarray(ds[i]["image"]).save(d / f"{i:03d}.png")
    return root


def test_extract_then_collapse(tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture) -> None:
    raw, norm = tmp_path / "raw.h5", tmp_path / "norm.h5"
    base = ["extract", *ENC, "--images", str(image_folder), "--no-resize", "--quiet", "--batch-size", "8"]
    assert main([*base, "--out", str(raw)]) == 0
    assert "(computed)" in capsys.readouterr().out
    assert main([*base, "--out", str(raw)]) == 0
    assert "(reused)" in capsys.readouterr().out
    assert main([*base, "--out", str(norm), "--normalize", "--stain-backend", "torch"]) == 0
    fs = load_features(norm)
    assert fs.features.shape == (24, 192) and set(fs.meta["slide_id"]) == {"tia", "cmu", "stardist"}
    assert fs.key["normalizer"]["class"] == "MacenkoNormalizer" and (tmp_path / "norm.h5.config.json").exists()

    out = tmp_path / "collapse"
    rc = main(["collapse", str(raw), str(norm), "--names", "(a) raw", "(b) macenko", "--out", str(out),
               "--method", "pca", "--n-boot", "20", "--per-slide", "8", "--include-plotlyjs", "false", "--k", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "knn_slide_purity" in printed and "(b) macenko" in printed
    m = pd.read_csv(out / "metrics.csv")
    assert set(m["features"]) == {"(a) raw", "(b) macenko"} and len(m) == 8  # 4 metrics each, no labels -> no RI
    assert (out / "figure2.png").stat().st_size > 10_000
    assert (out / "figure2.html").read_text().count("data:image/jpeg;base64,") == 24  # hover thumbnails, once


def test_cli_errors_name_the_fix(tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["collapse", str(tmp_path / "missing.h5"), "--out", str(tmp_path)])
    assert rc == 1 and "exaonepath-lab extract" in capsys.readouterr().err
    rc = main(["extract", "--encoder", "exaonepath", "--images", str(image_folder), "--out", str(tmp_path / "x.h5")])
    assert rc == 1 and "random:exaonepath" in capsys.readouterr().err
    rc = main(["extract", *ENC, "--images", str(image_folder), "--out", str(tmp_path / "x.h5"), "--stain-target", "t.json"])
    assert rc == 1 and "--normalize" in capsys.readouterr().err


def test_extract_from_tiled_synthetic_cohort_carries_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from exaonepath_lab.slides.synthetic import make_cohort
    from exaonepath_lab.tiling.run import run_tiling

    make_cohort(tmp_path / "cohort", 2, 0, mpps=(0.5,), size_um=(600, 800), progress=False, workers=1)
    run_tiling(tmp_path / "cohort", tmp_path / "tiles", progress=False)
    out = tmp_path / "tiles.h5"
    assert main(["extract", *ENC, "--tiles", str(tmp_path / "tiles"), "--out-px", "64", "--max-per-slide", "12",
                 "--no-resize", "--quiet", "--out", str(out)]) == 0
    fs = load_features(out)
    assert fs.meta["slide_id"].nunique() == 2 and {"x", "y", "label", "slide_path"} <= set(fs.meta.columns)
    assert (fs.meta["label"] >= 0).any()
    capsys.readouterr()
    rc = main(["collapse", str(out), "--out", str(tmp_path / "c"), "--method", "pca", "--n-boot", "10", "--k", "3",
               "--include-plotlyjs", "false"])
    assert rc == 0
    m = pd.read_csv(tmp_path / "c" / "metrics.csv")
    assert "robustness_index" in set(m["metric"])  # tissue labels from the class map enable RI
    assert (tmp_path / "c" / "figure2.html").read_text().count("data:image/jpeg;base64,") == len(fs)  # via OpenSlide
