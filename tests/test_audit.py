"""`exaonepath-lab audit` end to end on real H&E: one command from an image folder to the offline report.

The cohort is real: two TCGA slides' tile folders (linked, as a user assembles a cohort) and three
stain-reference images from different labs cut into 64 px patches, one folder per source. Two
kit-dino checkpoints (tiny ViTs in the kit's checkpoint format) play the raw-trained and the
Macenko-trained model, so the report reads the paper's (a), (b), (c).
"""
from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from exaonepath_lab.cli import main

ARGS = ["--k", "3", "--per-slide", "8", "--n-boot", "20", "--method", "pca", "--stain-backend", "torch",
        "--threads", "1", "--batch-size", "16"]


def _kit_checkpoint(path: Path, seed: int) -> Path:
    """A checkpoint in the format `exaonepath-lab train` writes (models.CHECKPOINT_FORMAT), tiny ViT weights."""
    from exaonepath_lab.models import CHECKPOINT_FORMAT, build_backbone

    kw = {"img_size": 64, "patch_size": 16, "depth": 2}
    torch.manual_seed(seed)
    net = build_backbone("vit_tiny_patch16_224", **kw)
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"timm_name": "vit_tiny_patch16_224", "timm_kwargs": kw},
                "teacher_backbone": net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, real_he: Path) -> dict[str, Path]:
    from exaonepath_lab.features.patch_grid import GridPatchDataset

    root = tmp_path_factory.mktemp("audit")
    imgs = root / "cohort"
    imgs.mkdir()
    for d in sorted((real_he / "multi_source" / "mopadi").iterdir()):
        if d.is_dir():  # 6 and 3 tiles: the 3-tile slide is too small for k = 3 and must be dropped up front
            (imgs / d.name).symlink_to(d, target_is_directory=True)
    refs = real_he / "stain_refs"
    ds = GridPatchDataset({"tiatoolbox": [refs / "tiatoolbox_target_image.png"],
                           "amida13": [refs / "henorm_amida13_example1.png"],
                           "stardist": [refs / "stardist_histo.jpg"]}, patch_px=64, max_per_slide=8, seed=0)
    for i in range(len(ds)):
        d = imgs / ds.meta.at[i, "slide_id"]
        d.mkdir(exist_ok=True)
        Image.fromarray(ds[i]["image"]).save(d / f"{i:03d}.png")
    return {"images": imgs, "raw": _kit_checkpoint(root / "raw.pt", 1), "norm": _kit_checkpoint(root / "norm.pt", 2),
            "out": root / "out"}


def test_audit_image_folder_end_to_end_and_resume(cohort: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = cohort["out"]
    cmd = ["audit", str(cohort["images"]), "--out", str(out), "--encoder", "kit-dino", "--checkpoint",
           str(cohort["raw"]), "--encoder", "kit-dino", "--checkpoint", str(cohort["norm"]), *ARGS]
    assert main(cmd) == 0
    cap = capsys.readouterr()
    dropped = "dropped TCGA-AD-6964-01Z-00-DX1: 3 patch(es) < min_per_slide 4"
    assert dropped in cap.err and cap.err.index(dropped) < cap.err.index("panel 1/4")  # said before any compute

    m = pd.read_csv(out / "metrics.csv")
    panels = ["kit-dino (raw), raw input", "kit-dino (raw), Macenko input", "kit-dino (norm), raw input",
              "kit-dino (norm), Macenko input"]
    refs = ["colour stats (raw)", "colour stats (macenko)", "random-init vit_tiny_patch16_224 (raw)",
            "random-init vit_tiny_patch16_224 (macenko)"]
    assert set(m["features"]) == set(panels + refs)
    pur = m[m["metric"] == "knn_slide_purity"].set_index("features")
    assert np.isfinite(pur[["value", "ci_low", "ci_high"]].to_numpy()).all()
    assert (pur["n_slides"] == 4).all() and (pur["n"] == 6 + 3 * 8).all()
    so = m[m["metric"] == "so_share"]
    assert so["value"].isna().all() and so["note"].str.startswith("no class labels").all()
    d = pd.read_csv(out / "differences.csv")
    pairs = set(zip(d["a"], d["b"]))
    assert {(panels[0], panels[3]), (panels[1], panels[3])} <= pairs  # the paper's (a) − (c), (b) − (c)
    assert (panels[0], refs[2]) in pairs  # (a) against its random-init twin on the same input

    html = (out / "index.html").read_text()
    assert "paired difference" in html and "slides dropped before any compute" in html
    assert "<th>setting</th>" in html and 'iframe src="figure2.html"' in html and (out / "plotly.min.js").exists()
    fig = (out / "figure2.html").read_text()
    thumbs = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", fig)
    assert len(thumbs) == 30
    sizes = {Image.open(io.BytesIO(base64.b64decode(t))).size for t in thumbs}
    assert (112, 112) in sizes and max(max(s) for s in sizes) == 112  # TCGA tiles shown at 112 px, never upscaled
    assert "PCA of features coloured by slide_id" in fig

    # Rerun: every feature set comes from its cache, the numbers are the same.
    assert main(cmd) == 0
    err = capsys.readouterr().err
    assert err.count("(key matches)") == 6  # 4 panels + 2 random-init twins
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), m)


def test_audit_checks_inputs_before_work(cohort: dict[str, Path], tmp_path: Path, capsys) -> None:
    from exaonepath_lab.analysis.inputs import input_kind

    assert input_kind(cohort["images"]) == "images"

    rc = main(["audit", str(cohort["images"]), "--out", str(tmp_path / "o"), "--encoder", "kit-dino", *ARGS,
               "--min-per-slide", "40"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "kit-dino' needs checkpoint" in err  # the encoder is checked first, before reading any image
    rc = main(["audit", str(cohort["images"]), "--out", str(tmp_path / "o"), "--encoder", "kit-dino", "--checkpoint",
               str(cohort["raw"]), *ARGS, "--min-per-slide", "40"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "only 0 slide(s) have ≥ 40 patches" in err and "lower --min-per-slide" in err
    assert not (tmp_path / "o" / "features").exists()  # nothing computed


def test_input_kinds_on_real_files(real_he: Path) -> None:
    """Real SVS files are WSIs; a folder of whole H&E images (incl. a single-level OME-TIFF) is images, each
    image one slide cut into tissue patches."""
    from exaonepath_lab.analysis.inputs import image_dataset, input_kind

    assert input_kind(real_he / "wsi") == "wsi"
    assert input_kind(real_he / "stain_refs") == "images"
    ds = image_dataset(real_he / "stain_refs", patch_px=128)
    assert "instanseg_HE_example.ome" in set(ds.meta["slide_id"]) and (ds.meta["patch_size"] == 128).all()
    assert ds[0]["image"].shape == (128, 128, 3)
    mixed = image_dataset(real_he / "multi_source" / "mopadi", patch_px=64)  # tile folders + one loose tile
    counts = mixed.meta["slide_id"].value_counts()
    assert counts["TCGA-3X-AAVA-01Z-00-DX1"] == 6 and counts["TCGA-AD-6964-01Z-00-DX1"] == 3
    assert mixed[len(mixed) - 1]["image"].shape == (64, 64, 3)


def test_collapse_cli_random_twin_of_a_kit_dino_checkpoint(cohort: dict[str, Path], tmp_path: Path, capsys) -> None:
    """`collapse --baselines colour,random` on features of a kit-dino checkpoint: the twin row is the kit's
    random_like of that encoder (same architecture and preprocessing), on the same patches."""
    from exaonepath_lab.encoders import create_encoder, random_like
    from exaonepath_lab.features import extract_features, load_features

    feats = tmp_path / "kit.h5"
    assert main(["extract", "--encoder", "kit-dino", "--checkpoint", str(cohort["raw"]), "--images",
                 str(cohort["images"]), "--quiet", "--out", str(feats)]) == 0
    out = tmp_path / "c"
    assert main(["collapse", str(feats), "--out", str(out), "--baselines", "colour,random", "--k", "3",
                 "--n-boot", "10", "--method", "pca", "--no-thumbnails", "--include-plotlyjs", "false"]) == 0
    err = capsys.readouterr().err
    assert "dropped TCGA-AD-6964-01Z-00-DX1" in err
    m = pd.read_csv(out / "metrics.csv")
    assert {"colour stats (raw)", "random-init vit_tiny_patch16_224 (raw)"} <= set(m["features"])
    twin = load_features(out / "features" / "random_init_vit_tiny_patch16_224_raw.h5")
    from exaonepath_lab.datasets import ImageFolderDataset

    sample = pd.read_csv(out / "sample.csv")
    ref = extract_features(random_like(create_encoder("kit-dino", checkpoint=str(cohort["raw"])), seed=0),
                           ImageFolderDataset(cohort["images"], labels_from_dirs=False, paths=sample["path"]),
                           progress=False)
    assert list(twin.meta["path"]) == list(sample["path"])
    np.testing.assert_allclose(twin.features, ref.features, atol=1e-5)


def test_image_without_tissue_patch_is_named_before_work(real_he: Path, tmp_path: Path, capsys) -> None:
    """A whole image that yields no tissue patch at --patch-px (here: one smaller than a patch) is not
    dropped silently: audit names it, with the fix, before any feature is computed. The tiler's flag
    name --mpp-override (which its MissingMPPError message names) is accepted by audit too."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "tia.png").symlink_to(real_he / "stain_refs" / "tiatoolbox_target_image.png")
    small = Image.open(real_he / "stain_refs" / "stardist_histo.jpg").convert("RGB").crop((0, 0, 60, 60))
    small.save(imgs / "tiny.png")
    rc = main(["audit", str(imgs), "--out", str(tmp_path / "o"), "--encoder", "random:vit_tiny_patch16_224",
               "--encoder-kw", "img_size=64", "depth=1", "--patch-px", "64", "--mpp-override", "0.5", *ARGS])
    assert rc == 1  # one usable slide: refused up front
    err = capsys.readouterr().err
    named = "images without a tissue patch (left out): tiny: no 64 px patch"
    assert named in err and "smaller --patch-px" in err
    assert err.index(named) < err.index("only 1 slide(s)")
    assert not (tmp_path / "o" / "features").exists()


def test_a_non_image_in_the_sample_is_named_before_any_feature(real_he: Path, tmp_path: Path, capsys) -> None:
    """A file with an image suffix that is not an image, among real tiles: audit names it with the fix after
    sampling and before the first panel's extraction (not when extraction meets it mid-way)."""
    imgs = tmp_path / "imgs"
    for name in ("s1", "s2"):
        shutil.copytree(real_he / "multi_source" / "mopadi" / "TCGA-3X-AAVA-01Z-00-DX1", imgs / name)
    (imgs / "s2" / "broken.png").write_text("not an image")
    rc = main(["audit", str(imgs), "--out", str(tmp_path / "o"), "--encoder", "random:vit_tiny_patch16_224",
               "--encoder-kw", "img_size=64", "depth=1", *ARGS])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"1 file(s) are not readable images: {imgs / 's2' / 'broken.png'}" in err and "re-export" in err
    assert "panel 1/" not in err and not (tmp_path / "o" / "features").exists()


def test_wsi_left_out_by_tiling_is_named_before_work(real_he: Path, tmp_path: Path, capsys) -> None:
    """Real SVS files, one without an MPP: audit says which slide tiling left out and why (naming the
    flag that fixes it) on the terminal before any feature is computed, not only in the final report."""
    rc = main(["audit", str(real_he / "wsi"), "--out", str(tmp_path / "o"), "--encoder", "random:vit_tiny_patch16_224",
               "--encoder-kw", "img_size=64", "depth=1", *ARGS, "--workers", "1"])
    assert rc == 1  # one usable slide left
    err = capsys.readouterr().err
    named = "slides excluded by tiling: tcga-cr-7395-01a-01-ts1: failed"
    assert named in err and "--mpp-override" in err and err.index(named) < err.index("only 1 slide(s)")
    assert not (tmp_path / "o" / "features").exists()


def test_notebook_03_reads_user_data_like_audit_and_names_the_so_share() -> None:
    """Issue 16: notebook 03 takes the user's data the way `audit` does (one `data` parameter, read by
    `open_patches`); issue 12: its text calls the kit's variant the SO share, never plainly PathoROB's
    robustness index."""
    import nbformat

    nb = nbformat.read(Path(__file__).parents[1] / "notebooks" / "03_wsi_collapse_tsne.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r"^data = None", params.source, re.M)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # the `data` parameter, resolved like every notebook path, is what open_patches reads
    assert re.search(r"^\s*src = nbp\.resolve_path\(data\)", code, re.M) and "open_patches(src" in code
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "SO share" in text
    assert all("not PathoROB's robustness index" in line for line in text.splitlines() if "robustness index" in line)


def test_audit_of_a_random_init_encoder_says_why_it_has_no_twin_row(cohort: dict[str, Path], tmp_path: Path) -> None:
    """A random-init encoder is its own twin: the report's baselines line says so, instead of promising a
    'random' reference row the tables do not have."""
    out = tmp_path / "o"
    assert main(["audit", str(cohort["images"]), "--out", str(out), "--encoder", "random:vit_tiny_patch16_224",
                 "--encoder-kw", "img_size=64", "depth=1", *ARGS, "--no-thumbnails", "--quiet"]) == 0
    assert not pd.read_csv(out / "metrics.csv")["features"].str.startswith("random-init").any()
    page = (out / "index.html").read_text()
    assert "no random-init twin of random:vit_tiny_patch16_224: it is random-init itself" in page
