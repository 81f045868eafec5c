"""Tiling building blocks against plain reference loops and real H&E images (ink, glass)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.report.figure3 import figure3_plotly, figure3_png, mpp_histogram
from exaonepath_lab.tiling import (
    TileConfig,
    grid_coords,
    majority_labels,
    patch_size_px,
    pen_mask,
    read_patch_h5,
    tissue_fraction,
    tissue_mask,
    tissue_patches,
    write_patch_h5,
)



@pytest.fixture(scope="module")
def histolab_tiles(real_he: Path) -> Path:
    """histolab's TCGA test tiles (glass, near-white, pen marks, markers): the wider real H&E set."""
    return real_he / "multi_source" / "histolab_tiles"


@pytest.mark.parametrize("mpp,expected", [(0.25, 512), (0.5, 256), (0.499, 257), (0.243, 527), (1.0, 128)])
def test_patch_size_follows_protocol_formula(mpp, expected):
    assert patch_size_px(mpp) == expected == round(256 * 0.5 / mpp)
    assert patch_size_px(mpp, target_mpp=1.0, target_px=224) == round(224 / mpp)
    with pytest.raises(ValueError, match="positive"):
        patch_size_px(0)


def test_grid_is_full_non_overlapping_and_inside():
    c = grid_coords(1000, 700, 256)
    assert c.shape == (3 * 2, 2) and c.dtype == np.int64
    assert (c % 256 == 0).all() and (c[:, 0] + 256 <= 1000).all() and (c[:, 1] + 256 <= 700).all()
    assert len({tuple(r) for r in c}) == len(c)
    assert grid_coords(100, 100, 256).shape == (0, 2)


def test_tissue_fraction_and_labels_match_reference_loops():
    rng = np.random.default_rng(0)
    W, H, ps = 2000, 1500, 200
    mask = rng.random((150, 200)) < 0.4  # 10 level-0 px per mask px
    coords = grid_coords(W, H, ps)
    frac = tissue_fraction(mask, coords, patch_size=ps, scale=(0.1, 0.1))
    ref = np.array([mask[y // 10:(y + ps) // 10, x // 10:(x + ps) // 10].mean() for x, y in coords])
    np.testing.assert_allclose(frac, ref, rtol=1e-6)

    cmap = rng.integers(0, 4, (75, 100)).astype(np.uint8)  # downsample 20
    lab = majority_labels(cmap, coords, downsample=20.0, patch_size=ps)
    ref_lab = [np.bincount(cmap[y // 20:(y + ps) // 20, x // 20:(x + ps) // 20].ravel(), minlength=4).argmax()
               for x, y in coords]
    np.testing.assert_array_equal(lab, ref_lab)
    assert lab.dtype == np.int16

    kept, kfrac = tissue_patches(mask, scale=(0.1, 0.1), level0_size=(W, H), patch_size=ps, min_tissue=0.45)
    assert (kfrac >= 0.45).all() and len(kept) == int((ref >= 0.45).sum())


def test_mask_finds_no_tissue_on_glass(histolab_tiles):
    assert not tissue_mask(read_rgb(histolab_tiles / "no-tissue.png"), mpp=2.0).any()
    # tinted glass (saturation up to ~30) with a little tissue in the top-right corner only
    m = tissue_mask(read_rgb(histolab_tiles / "almost-white-2.png"), mpp=4.0)
    ys, xs = np.nonzero(m)
    assert 0.005 < m.mean() < 0.05 and ys.max() < 160 and xs.min() > 280


def test_mask_on_the_real_cmu_slide_finds_tissue_not_glass(sample_he):
    import cv2

    cmu = read_rgb(sample_he["cmu-small-region.svs"])  # 0.499 µm/px
    assert not tissue_mask(cmu[0:448, 224:2016], mpp=0.499).any()  # a band of blank glass along the top
    thumb = cv2.resize(cmu, (cmu.shape[1] // 8, cmu.shape[0] // 8), interpolation=cv2.INTER_AREA)  # ~4 µm/px
    m = tissue_mask(thumb, mpp=4.0)
    stained = (-np.log((thumb.astype(np.float32) + 1) / 240) >= 0.15).all(-1)  # Macenko's tissue-pixel rule
    assert 0.2 < m.mean() < 0.4  # the section covers about a third of this region
    assert m[stained].mean() > 0.7 and stained[m].mean() > 0.7  # and the mask agrees with the stain rule


def test_mask_keeps_an_all_tissue_image(histolab_tiles):
    import cv2

    rgb = read_rgb(histolab_tiles / "high-nuclei-score-level0.png")  # 0.5 µm/px, tissue edge to edge
    thumb = cv2.resize(rgb, (rgb.shape[1] // 8, rgb.shape[0] // 8), interpolation=cv2.INTER_AREA)  # 4 µm/px
    m = tissue_mask(thumb, mpp=4.0)
    # Otsu alone splits pale from dark tissue here; the saturation ceiling keeps both
    no_ceiling = tissue_mask(thumb, mpp=4.0, config=TileConfig(sat_ceiling=255))
    assert m.mean() > 0.85 and no_ceiling.mean() < m.mean() - 0.2


def test_red_pen_is_excluded(histolab_tiles):
    rgb = read_rgb(histolab_tiles / "tcga-red-pen.png")
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    ink = ((hsv[..., 0] < 8) | (hsv[..., 0] >= 172)) & (hsv[..., 1] > 200)  # the solid red blot
    assert ink.mean() > 0.1
    with_filter = tissue_mask(rgb, mpp=2.0)
    without = tissue_mask(rgb, mpp=2.0, config=TileConfig(exclude_pen=False))
    assert with_filter[ink].mean() < 0.05
    assert without[ink].mean() > 0.8  # proves the blot would otherwise pass as tissue
    assert with_filter[~ink].mean() > 0.4  # the real tissue stays


def test_green_and_black_marker_on_a_slide_thumbnail(histolab_tiles):
    rgb = read_rgb(histolab_tiles / "diagnostic-slide-thumb-rgb.png")
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    green = (hsv[..., 0] >= 35) & (hsv[..., 0] < 110) & (hsv[..., 1] > 80)
    black = hsv[..., 2] < 40
    m = tissue_mask(rgb, mpp=32.0)
    raw = tissue_mask(rgb, mpp=32.0, config=TileConfig(exclude_pen=False))
    assert green.mean() > 0.03 and black.mean() > 0.01
    assert m[green].mean() < 0.02 and raw[green].mean() > 0.5
    assert m[black].mean() < 0.02
    assert 0.3 < m.mean() < raw.mean()
    assert pen_mask(rgb)[green].mean() > 0.95


def test_h5_roundtrip_and_clam_layout(tmp_path):
    coords = np.array([[0, 0], [512, 0]], np.int64)
    attrs = dict(patch_size=512, patch_level=0, slide_mpp=0.25, mpp_source="x", target_mpp=0.5, target_px=256,
                 slide_path="/s.svs", slide_id="s", width=2000, height=1000, config_sha256="abc")
    p = write_patch_h5(tmp_path / "s.h5", coords, tissue_fraction=np.array([1.0, 0.6], np.float32),
                       labels=np.array([-1, -1], np.int16), attrs=attrs)
    with h5py.File(p) as f:  # what CLAM's create_patches / TRIDENT read
        assert f["coords"].dtype == np.int64 and f["coords"].shape == (2, 2)
        assert f["coords"].attrs["patch_size"] == 512 and f["coords"].attrs["patch_level"] == 0
        assert list(f["coords"].attrs["level_dim"]) == [2000, 1000]
        assert f["coords"].attrs["patch_size_level0"] == 512 and f["coords"].attrs["level0_magnification"] == 40
    d = read_patch_h5(p)
    assert d["attrs"]["slide_mpp"] == 0.25 and d["labels"].tolist() == [-1, -1]
    with pytest.raises(ValueError, match="missing attributes"):
        write_patch_h5(tmp_path / "t.h5", coords, tissue_fraction=np.zeros(2, np.float32), labels=np.zeros(2, np.int16),
                       attrs={"patch_size": 1})
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(ValueError, match="s.h5.*rerun"):
        read_patch_h5(p)
    assert not list(tmp_path.glob(".*part*"))  # the failed write left no temp file


def test_figure3_histogram_weights_patches_by_exact_mpp(tmp_path):
    m = pd.DataFrame({"slide_id": list("abcde"), "mpp": [0.25, 0.2499, 0.243, 0.499, np.nan],
                      "n_patches": [100, 50, 30, 20, 0], "status": ["ok", "skipped_done", "ok", "ok", "failed"]})
    h = mpp_histogram(m)
    got = dict(zip(h["mpp_lo"].round(3), h["n_patches"]))
    assert got == {0.245: 150, 0.235: 30, 0.495: 20}  # 0.243 is not snapped to 0.25
    assert h["n_patches"].sum() == 200
    fig = figure3_plotly({"A": m, "B": m.assign(mpp=0.5)})
    assert len(fig.data) == 2 and sum(fig.data[1].y) == 200
    png = figure3_png(m, tmp_path / "fig3.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="manifest"):
        figure3_plotly(tmp_path / "nowhere")


def test_strip_thumbnail_matches_whole_image_resize(monkeypatch, sample_he):
    import cv2

    from exaonepath_lab.slides.wsi import open_slide
    from exaonepath_lab.tiling import read_at_mpp, thumbnail

    cmu = sample_he["cmu-small-region.svs"]
    with open_slide(cmu) as s:
        full = s.read_region((0, 0), 0, s.dimensions)
        monkeypatch.setattr(thumbnail, "STRIP_PIXELS", 1 << 16)  # force ~100 strips
        th, (sx, sy) = read_at_mpp(s, 4.0)
    ref = cv2.resize(full, (th.shape[1], th.shape[0]), interpolation=cv2.INTER_AREA)
    assert th.shape[:2] == (round(2967 * 0.499 / 4), round(2220 * 0.499 / 4))
    assert sx == pytest.approx(th.shape[1] / 2220) and sy == pytest.approx(th.shape[0] / 2967)
    assert np.abs(th.astype(int) - ref).mean() < 2.0
