"""open_slide: MPP resolution, errors that name the file and the fix, region reading (real OpenSlide)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from exaonepath_lab.slides.wsi import MissingMPPError, SlideReadError, open_slide


def write_tiff(path: Path, rgb: np.ndarray, *, mpp: float | None, unit: str = "CENTIMETER",
               aperio_mpp: float | None = None, downsamples: tuple[int, ...] = (4,)) -> Path:
    """Tiled JPEG pyramidal TIFF OpenSlide opens: level 0 + sub-resolution pages (subfiletype=1)."""
    import tifffile

    per_unit = {"CENTIMETER": 1e4, "INCH": 25400.0}
    kw: dict = {}
    if mpp is not None:
        kw = dict(resolution=(per_unit[unit] / mpp, per_unit[unit] / mpp), resolutionunit=unit)
    desc = None
    if aperio_mpp is not None:
        h, w = rgb.shape[:2]
        desc = f"Aperio Image Library v12.0.0\n{w}x{h} (256x256) JPEG/RGB Q=90|AppMag = 20|MPP = {aperio_mpp}"
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(256, 256), photometric="rgb", compression="jpeg", description=desc, metadata=None, **kw)
        for d in downsamples:
            lvl = rgb[::d, ::d]
            lkw = {} if mpp is None else dict(resolution=(kw["resolution"][0] / d, kw["resolution"][1] / d),
                                              resolutionunit=unit)
            tw.write(np.ascontiguousarray(lvl), tile=(256, 256), photometric="rgb", compression="jpeg",
                     subfiletype=1, metadata=None, **lkw)
    return path


def _image(h: int = 1024, w: int = 1536) -> np.ndarray:
    img = np.full((h, w, 3), 235, np.uint8)
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (190, 110, 170)
    return img


def test_cmu_real_svs_mpp_and_regions(cmu_svs):
    with open_slide(cmu_svs) as s:
        assert s.slide_id == "cmu-small-region"
        assert s.mpp == pytest.approx(0.499)
        assert s.mpp_source == "openslide.mpp"
        assert s.dimensions == (2220, 2967) and s.level_count == 1
        reg = s.read_region((100, 200), 0, (64, 32))
        assert reg.shape == (32, 64, 3) and reg.dtype == np.uint8
        # outside the scanned area OpenSlide returns transparent pixels: composited on white glass
        out = s.read_region((5000, 5000), 0, (16, 16))
        assert (out == 255).all()
        th = s.get_thumbnail(200)
        assert th.shape[2] == 3 and max(th.shape[:2]) == 200
        assert s.get_best_level_for_downsample(8) == 0
        with pytest.raises(TypeError, match="reopen"):
            pickle.dumps(s)


def test_tcga_without_mpp_names_file_and_override(tcga_no_mpp_svs):
    with pytest.raises(MissingMPPError) as e:
        open_slide(tcga_no_mpp_svs)
    msg = str(e.value)
    assert "tcga-cr-7395-01a-01-ts1.svs" in msg and "mpp_override" in msg and "--mpp-override" in msg
    with open_slide(tcga_no_mpp_svs, mpp_override=0.25) as s:
        assert s.mpp == 0.25 and s.mpp_source == "override"
        assert s.level_count == 2


@pytest.mark.parametrize("mpp,unit", [(0.25, "CENTIMETER"), (0.5, "CENTIMETER"), (0.5, "INCH")])
def test_mpp_from_tiff_resolution_tags(tmp_path, mpp, unit):
    p = write_tiff(tmp_path / "s.tiff", _image(), mpp=mpp, unit=unit)
    with open_slide(p) as s:
        assert s.mpp == pytest.approx(mpp, rel=1e-6)
        assert s.level_count == 2 and s.level_downsamples[1] == pytest.approx(4)


def test_mpp_from_aperio_description_and_override_wins(tmp_path):
    p = write_tiff(tmp_path / "a.tiff", _image(), mpp=None, aperio_mpp=0.2635)
    with open_slide(p) as s:
        assert s.mpp == pytest.approx(0.2635)
    with open_slide(p, mpp_override=0.3) as s:
        assert s.mpp == 0.3 and s.mpp_source == "override"


def test_implausible_resolution_tags_are_not_trusted(tmp_path):
    # 72 dpi is an image-editor default (352.8 µm/px), not a measurement
    p = write_tiff(tmp_path / "dpi72.tiff", _image(), mpp=25400 / 72, unit="INCH")
    with pytest.raises(MissingMPPError, match="dpi72.tiff"):
        open_slide(p)


def test_missing_corrupt_and_plain_files(tmp_path, cmu_svs, sample_he):
    with pytest.raises(SlideReadError, match="not found: .*nope.svs"):
        open_slide(tmp_path / "nope.svs")
    bad = tmp_path / "garbage.svs"
    bad.write_bytes(b"this is not a slide" * 100)
    with pytest.raises(SlideReadError, match="garbage.svs"):
        open_slide(bad)
    good = write_tiff(tmp_path / "trunc.tiff", _image(2048, 2048), mpp=0.5)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])  # a copy interrupted mid-way
    with pytest.raises(SlideReadError, match="trunc.tiff"):
        with open_slide(good) as s:
            s.read_region((0, 0), 0, s.dimensions)
    png = sample_he["tiatoolbox-target.png"]
    with pytest.raises(SlideReadError, match="allow_plain_images"):
        open_slide(png)
    with open_slide(png, allow_plain_images=True, mpp_override=0.5) as s:
        assert s.read_region((0, 0), 0, (8, 8)).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="positive"):
        open_slide(cmu_svs, mpp_override=-1)
