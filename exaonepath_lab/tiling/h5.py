"""The per-slide patch-coordinate file (CLAM convention) and its validity check.

Layout of ``patches/<slide_id>.h5``:

- ``coords``: int64 (N, 2), level-0 top-left (x, y) px;
- ``tissue_fraction``: float32 (N,), tissue share of each patch footprint;
- ``labels``: int16 (N,), majority class from the synthetic class map, -1 if none;
- attributes (on the file *and* on ``coords``, where CLAM/TRIDENT read them):
  ``patch_size`` (level-0 px), ``patch_level`` (0), ``downsample``, ``level_dim``,
  ``slide_mpp``, ``mpp_source``, ``target_mpp``, ``target_px``, ``slide_path``,
  ``slide_id``, ``width``, ``height``, ``name``, ``config_sha256``, and TRIDENT's
  ``patch_size_level0``, ``overlap``, ``level0_magnification``, ``target_magnification``.

The file is written under a temporary name and renamed, so a killed job leaves
either nothing or a complete file; :func:`read_patch_h5` still checks every part,
because a file copied by hand or from an older run can be truncated or stale.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path

REQUIRED_ATTRS = (
    "patch_size", "patch_level", "slide_mpp", "target_mpp", "target_px", "slide_path",
    "slide_id", "width", "height", "config_sha256",
)


def write_patch_h5(
    path: str | os.PathLike,
    coords: np.ndarray,
    *,
    tissue_fraction: np.ndarray,
    labels: np.ndarray,
    attrs: dict[str, Any],
) -> Path:
    """Write one slide's patches atomically; ``attrs`` must hold :data:`REQUIRED_ATTRS`."""
    import h5py

    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"patch file {path}: missing attributes {missing}")
    n = len(coords)
    if tissue_fraction.shape != (n,) or labels.shape != (n,):
        raise ValueError(f"patch file {path}: coords {coords.shape}, tissue_fraction {tissue_fraction.shape}, "
                         f"labels {labels.shape} disagree")
    all_attrs = {
        **attrs,
        # CLAM's names
        "downsample": np.array([1.0, 1.0]),
        "level_dim": np.array([attrs["width"], attrs["height"]], np.int64),
        "name": str(attrs["slide_id"]),
        # TRIDENT's names; magnifications are the usual 10 / MPP, informational only
        # (the exact MPP is ``slide_mpp``)
        "patch_size_level0": int(attrs["patch_size"]),
        "overlap": 0,
        "level0_magnification": int(round(10.0 / float(attrs["slide_mpp"]))),
        "target_magnification": int(round(10.0 / float(attrs["target_mpp"]))),
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            # maxshape=(None, 2) + chunks: CLAM's own files are resizable, some readers append to them.
            d = f.create_dataset("coords", data=np.asarray(coords, np.int64).reshape(n, 2),
                                 maxshape=(None, 2), chunks=(max(1, min(n, 4096)), 2))
            f.create_dataset("tissue_fraction", data=np.asarray(tissue_fraction, np.float32))
            f.create_dataset("labels", data=np.asarray(labels, np.int16))
            for k, v in all_attrs.items():
                v = "" if v is None else v
                f.attrs[k] = v
                d.attrs[k] = v
    return Path(path)


def read_patch_h5(path: str | os.PathLike) -> dict[str, Any]:
    """Read a patch file: ``{"coords", "tissue_fraction", "labels", "attrs"}``.

    Raises ``ValueError`` naming the file when it is unreadable, truncated or
    inconsistent (the caller then re-tiles the slide).
    """
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            for key in ("coords", "tissue_fraction", "labels"):
                if key not in f:
                    raise ValueError(f"dataset {key!r} missing")
            coords = f["coords"][()]
            frac = f["tissue_fraction"][()]
            labels = f["labels"][()]
            attrs = {k: _py(v) for k, v in f.attrs.items()}
    except ValueError as e:
        raise ValueError(f"invalid patch file {p}: {e}; delete it or rerun tiling to rebuild it") from e
    except OSError as e:  # h5py raises OSError for truncated / non-HDF5 files
        raise ValueError(f"unreadable patch file {p} ({e}); rerun tiling to rebuild it") from e
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"invalid patch file {p}: attributes {missing} missing; rerun tiling to rebuild it")
    n = coords.shape[0]
    if coords.ndim != 2 or coords.shape[1] != 2 or frac.shape != (n,) or labels.shape != (n,):
        raise ValueError(f"invalid patch file {p}: coords {coords.shape}, tissue_fraction {frac.shape}, "
                         f"labels {labels.shape}; rerun tiling to rebuild it")
    return {"coords": coords.astype(np.int64), "tissue_fraction": frac, "labels": labels, "attrs": attrs}


def _py(v: Any) -> Any:
    """h5py attribute value → plain Python (bytes → str, 0-d arrays → scalars)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
