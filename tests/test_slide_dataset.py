"""Patch datasets over real slides: the synthetic cohort tiled by the kit, and the real SVS files."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exaonepath_lab.slides.dataset import PatchListDataset, TiledPatchDataset
from exaonepath_lab.slides.synthetic import CLASS_NAMES, make_cohort, read_classmap


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    from exaonepath_lab.tiling import TileConfig, run_tiling

    root = tmp_path_factory.mktemp("ds")
    make_cohort(root / "cohort", n_slides=2, seed=21, workers=1, progress=False, size_um=(700.0, 800.0))
    run_tiling(root / "cohort", root / "tiles", TileConfig(), workers=1, progress=False)
    return root


def _read0(path: str, x: int, y: int, s: int) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(path) as sl:
        return np.asarray(sl.read_region((x, y), 0, (s, s)))[..., :3]


def test_meta_and_extracted_size(tiled):
    ds = TiledPatchDataset(tiled / "tiles")
    m = ds.meta
    assert list(m.columns[:9]) == ["slide_id", "x", "y", "patch_size", "mpp", "label", "class_name",
                                   "tissue_fraction", "slide_path"]
    assert sorted(m.slide_id.unique()) == ["synth00", "synth01"]
    # 256 px at 0.5 MPP, 512 px at 0.25 MPP (PROTOCOL §1), read at that size.
    assert m.groupby("slide_id").patch_size.first().to_dict() == {"synth00": 256, "synth01": 512}
    assert m.groupby("slide_id").mpp.first().to_dict() == {"synth00": 0.5, "synth01": 0.25}
    for i in (0, len(ds) - 1):
        item = ds[i]
        s = int(m.patch_size[i])
        assert item["index"] == i
        img = item["image"]
        assert img.dtype == np.uint8 and img.shape == (s, s, 3)
        assert np.array_equal(img, _read0(m.slide_path[i], int(m.x[i]), int(m.y[i]), s))
    assert ((m.label >= 1) & (m.label <= 5)).all()
    assert (m.class_name == [CLASS_NAMES[l] for l in m.label]).all()


def test_labels_match_classmap(tiled):
    """Independent majority vote over the class-map cells each patch covers."""
    ds = TiledPatchDataset(tiled / "tiles")
    for sid, g in ds.meta.groupby("slide_id"):
        cm, d = read_classmap(g.slide_path.iloc[0])
        for r in g.itertuples():
            block = cm[r.y // d: math.ceil((r.y + r.patch_size) / d), r.x // d: math.ceil((r.x + r.patch_size) / d)]
            counts = np.bincount(block.ravel(), minlength=len(CLASS_NAMES))
            assert counts[r.label] == counts.max(), (sid, r.x, r.y)


def test_resized_and_pyramid_level(tiled):
    import cv2

    ds64 = TiledPatchDataset(tiled / "tiles", out_px=64)
    for i in range(len(ds64)):
        assert ds64[i]["image"].shape == (64, 64, 3)
    # A 512 px patch at 0.25 MPP asked at 128 px is read from the 1/4 level: close to the
    # area-resized level-0 read, but not decoded from it.
    ds128 = TiledPatchDataset(tiled / "tiles", slide_ids=["synth01"], out_px=128)
    r = ds128.meta.iloc[0]
    img = ds128[0]["image"]
    ref = cv2.resize(_read0(r.slide_path, int(r.x), int(r.y), 512), (128, 128), interpolation=cv2.INTER_AREA)
    assert img.shape == (128, 128, 3)
    assert np.abs(img.astype(int) - ref).mean() < 10  # both JPEG-decoded, at different scales
    assert np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.9
    slide = ds128._slide(r.slide_path, r.slide_id, r.mpp)
    lvl1 = slide.read_region((int(r.x), int(r.y)), 1, (128, 128))
    assert np.array_equal(img, lvl1)


def test_dataloader_workers_fork_and_spawn(tiled):
    ds = TiledPatchDataset(tiled / "tiles", out_px=32, max_per_slide=4, seed=1)
    assert ds.meta.groupby("slide_id").size().max() <= 4
    ref = torch.stack([torch.from_numpy(ds[i]["image"]) for i in range(len(ds))])
    assert not ds._slides or ds._pid is not None
    for ctx, workers in (("fork", 2), ("spawn", 1)):
        dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, multiprocessing_context=ctx)
        imgs, idx = [], []
        for b in dl:
            imgs.append(b["image"])
            idx.append(b["index"])
        got = torch.cat(imgs)
        assert got.dtype == torch.uint8 and got.shape == (len(ds), 32, 32, 3)
        assert torch.equal(torch.cat(idx), torch.arange(len(ds)))
        assert torch.equal(got, ref)


def test_subsampling_filter_and_failed_slides(tiled, tmp_path, caplog):
    a = TiledPatchDataset(tiled / "tiles", max_per_slide=3, seed=5)
    b = TiledPatchDataset(tiled / "tiles", max_per_slide=3, seed=5)
    assert a.meta.equals(b.meta) and len(a) == 6
    with pytest.raises(ValueError, match="not in"):
        TiledPatchDataset(tiled / "tiles", slide_ids=["nope"])
    with pytest.raises(FileNotFoundError, match="manifest.csv"):
        TiledPatchDataset(tmp_path)
    # A failed slide is reported, not silently dropped.
    d = tmp_path / "tiles"
    shutil.copytree(tiled / "tiles", d)
    man = pd.read_csv(d / "manifest.csv", dtype={"error": str}, keep_default_na=False)
    man.loc[man.slide_id == "synth01", ["status", "error"]] = ["failed", "SlideReadError: corrupt"]
    man.to_csv(d / "manifest.csv", index=False)
    with caplog.at_level("WARNING"):
        ds = TiledPatchDataset(d)
    assert ds.excluded.slide_id.tolist() == ["synth01"] and "corrupt" in ds.excluded.error[0]
    assert "synth01" in caplog.text
    assert set(ds.meta.slide_id) == {"synth00"}


def test_patch_list_on_real_svs(cmu_svs):
    meta = pd.DataFrame({"slide_path": [str(cmu_svs)] * 2, "x": [512, 1024], "y": [512, 768], "patch_size": [256, 256]})
    ds = PatchListDataset(meta, out_px=96)
    assert ds.meta.slide_id.tolist() == ["cmu-small-region"] * 2 and (ds.meta.label == -1).all()
    assert ds[1]["image"].shape == (96, 96, 3)
    full = PatchListDataset(meta)
    assert np.array_equal(full[0]["image"], _read0(str(cmu_svs), 512, 512, 256))
    with pytest.raises(ValueError, match="patch_size"):
        PatchListDataset(meta.drop(columns="patch_size"))


def test_patch_list_slide_without_mpp_needs_override(tcga_no_mpp_svs):
    from exaonepath_lab.slides.wsi import MissingMPPError

    meta = pd.DataFrame({"slide_path": [str(tcga_no_mpp_svs)], "x": [1000], "y": [1000], "patch_size": [512]})
    with pytest.raises(MissingMPPError, match="mpp_override"):
        PatchListDataset(meta)[0]
    ds = PatchListDataset(meta, out_px=128, mpp_overrides={"tcga-cr-7395-01a-01-ts1": 0.25})
    img = ds[0]["image"]
    assert img.shape == (128, 128, 3) and img.std() > 5  # real tissue, not a blank
