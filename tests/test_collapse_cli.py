"""`exaonepath-lab extract` and `exaonepath-lab collapse` end to end on real H&E patches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from exaonepath_lab.cli import main
from exaonepath_lab.features import load_features
from exaonepath_lab.features.patch_grid import GridPatchDataset

ENC = ["--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=64", "patch_size=16", "depth=2", "seed=3"]


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
               "--method", "pca", "--n-boot", "20", "--per-slide", "8", "--include-plotlyjs", "false", "--k", "5",
               "--baselines", "colour,random", "--report"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "k-NN slide purity" in printed and "(b) macenko" in printed and "paired differences" in printed
    # no class labels: the SO share is n/a with its reason, never 0.000 [0.000, 0.000]
    assert "SO share" in printed and "n/a — no class labels" in printed and "0.000 [0.000, 0.000]" not in printed
    m = pd.read_csv(out / "metrics.csv")
    twin = "random-init vit_tiny_patch16_224"
    assert set(m["features"]) == {"(a) raw", "(b) macenko", "colour stats (raw)", "colour stats (macenko)",
                                  f"{twin} (raw)", f"{twin} (macenko)"}
    so = m[m["metric"] == "so_share"]
    assert len(so) == 6 and so["value"].isna().all() and so["note"].str.startswith("no class labels").all()
    # Reference rows on the same patches as the panels: the twin's features of the sampled patches (read again from
    # the files) equal a fresh extraction by the kit's twin builder (encoders.random_like) of the panel's encoder.
    from exaonepath_lab.datasets import ImageFolderDataset
    from exaonepath_lab.encoders import create_encoder, random_like
    from exaonepath_lab.features import extract_features

    ref = load_features(out / "features" / "random_init_vit_tiny_patch16_224_raw.h5")
    sample = pd.read_csv(out / "sample.csv")
    assert list(ref.meta["path"]) == list(sample["path"]) and len(ref) == 24
    panel_encoder = create_encoder("random:vit_tiny_patch16_224", seed=3, img_size=64, patch_size=16, depth=2)
    own = extract_features(random_like(panel_encoder, seed=0),
                           ImageFolderDataset(image_folder, labels_from_dirs=False, paths=sample["path"]),
                           resize=False, crop=False, progress=False)
    np.testing.assert_allclose(ref.features, own.features, atol=1e-5)
    d = pd.read_csv(out / "differences.csv")
    assert ("(a) raw", "(b) macenko") in set(zip(d["a"], d["b"])) and ("(a) raw", f"{twin} (raw)") in set(zip(d["a"], d["b"]))
    assert (out / "figure2.png").stat().st_size > 10_000
    assert (out / "figure2.html").read_text().count("data:image/jpeg;base64,") == 24  # hover thumbnails, once
    index = (out / "index.html").read_text()
    assert "paired differences" in index and "<th>setting</th>" in index and "{'" not in index


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
               "--include-plotlyjs", "false", "--min-per-slide", "4"])
    assert rc == 0
    m = pd.read_csv(tmp_path / "c" / "metrics.csv")
    assert m.loc[m["metric"] == "so_share", "value"].notna().all()  # tissue labels from the class map: SO share
    assert (tmp_path / "c" / "figure2.html").read_text().count("data:image/jpeg;base64,") == len(fs)  # via OpenSlide


def test_extract_follows_symlinked_slide_folders(tmp_path: Path, image_folder: Path, capsys) -> None:
    """A cohort assembled from symbolic links to slide folders (and a link cycle, visited once)."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for d in sorted(image_folder.iterdir()):
        (cohort / f"link_{d.name}").symlink_to(d, target_is_directory=True)
    (cohort / "loop").symlink_to(cohort, target_is_directory=True)  # a cycle must not hang or duplicate
    out = tmp_path / "f.h5"
    assert main(["extract", *ENC, "--images", str(cohort), "--no-resize", "--quiet", "--out", str(out)]) == 0
    fs = load_features(out)
    assert len(fs) == 24 and set(fs.meta["slide_id"]) == {"link_tia", "link_cmu", "link_stardist"}


def test_collapse_reports_small_slides_before_any_compute(tmp_path: Path, image_folder: Path, capsys) -> None:
    """The failure of issue 16 ("a slide has 1 patch(es)" after minutes): now decided up front."""
    lopsided = tmp_path / "imgs"
    for d in sorted(image_folder.iterdir()):
        (lopsided / d.name).mkdir(parents=True)
        files = sorted(d.iterdir())[: 1 if d.name == "tia" else 8]
        for f in files:
            (lopsided / d.name / f.name).symlink_to(f)
    feats = tmp_path / "f.h5"
    assert main(["extract", *ENC, "--images", str(lopsided), "--no-resize", "--quiet", "--out", str(feats)]) == 0
    capsys.readouterr()
    rc = main(["collapse", str(feats), "--out", str(tmp_path / "c"), "--method", "pca", "--n-boot", "10", "--k", "3",
               "--include-plotlyjs", "false", "--no-thumbnails"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "dropped tia: 1 patch(es) < min_per_slide 4" in err
    assert err.index("dropped tia") < err.index("metrics:")  # said before any metric is computed
    m = pd.read_csv(tmp_path / "c" / "metrics.csv")
    assert m.loc[m["metric"] == "slide_probe_bacc", "value"].notna().all()
    rc = main(["collapse", str(feats), "--out", str(tmp_path / "c2"), "--k", "8", "--no-thumbnails"])
    assert rc == 1 and "lower --min-per-slide" in capsys.readouterr().err  # 8 patches each < k + 1: nothing computed
    assert not (tmp_path / "c2").exists()


def test_every_command_help_renders_percent_signs_once() -> None:
    """argparse %-formats `help=` strings but not a `description` (without %(prog)): a '%%' written in a
    description reaches the user literally ("95%% bootstrap CI")."""
    import argparse

    from exaonepath_lab.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "audit" in subs.choices and "collapse" in subs.choices
    for name, sub in subs.choices.items():
        text = sub.format_help()
        assert "%%" not in text, f"`exaonepath-lab {name} --help` shows a literal '%%'"
