"""Which real H&E a benchmark reads: the wider set when ``$EXAONEPATH_LAB_REAL_HE`` names it, else the
kit's fetched sample data (``exaonepath-lab sample-data``: CMU-1 small region, StarDist's and TIAToolbox's
H&E images). Every benchmark says in its JSON line which set it used (``data_set``), since rates and
ratios on different images are not comparable."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

REAL_HE_ENV = "EXAONEPATH_LAB_REAL_HE"


def real_he_dir() -> Path | None:
    """The wider real H&E folder from ``$EXAONEPATH_LAB_REAL_HE``, or None when unset."""
    value = os.environ.get(REAL_HE_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{REAL_HE_ENV}={value} is not a folder; unset it to use the fetched sample data")
    return path


def he_images(wider: Sequence[str], *, sample: Sequence[str] | None = None) -> tuple[list[Path], str]:
    """(image paths, set label): ``wider`` (paths relative to the wider set) when it is configured, else
    the sample data named in ``sample`` (default: all three), fetched into the cache on first use."""
    root = real_he_dir()
    if root is not None:
        return [root / rel for rel in wider], f"real_he ({REAL_HE_ENV})"
    from exaonepath_lab.sample_data import fetch_sample_data

    return list(fetch_sample_data(sample).values()), "sample-data"
