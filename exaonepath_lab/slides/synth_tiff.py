"""Write an RGB array as a pyramidal, tiled, JPEG-compressed TIFF that OpenSlide opens.

Layout (what OpenSlide's generic-tiff reader expects): one top-level page per level,
tiles of 256 px, level 0 first, each further level 4× smaller and marked
``subfiletype=1`` (reduced image); the pixel size goes into the resolution tags in
centimeters (``XResolution = 10^4 / mpp``), which OpenSlide reports as ``openslide.mpp-x``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_path


def pyramid_levels(rgb: np.ndarray, *, factor: int = 4, min_px: int = 128) -> list[np.ndarray]:
    """Level 0 and its ``factor``× area-averaged reductions while the short side stays ≥ ``min_px``."""
    import cv2

    levels = [rgb]
    while min(levels[-1].shape[:2]) // factor >= min_px:
        prev = levels[-1]
        h, w = prev.shape[0] // factor, prev.shape[1] // factor
        levels.append(cv2.resize(prev[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA))
    return levels


def write_pyramid_tiff(
    path: str | os.PathLike,
    rgb: np.ndarray,
    mpp: float,
    *,
    jpeg_quality: int = 85,
    tile: int = 256,
    factor: int = 4,
    description: str = "",
) -> Path:
    """Write ``rgb`` (H, W, 3) uint8 at ``mpp`` µm/px as a pyramidal TIFF, atomically.

    Returns the path. Bytes are a pure function of the inputs (no timestamps), so a
    cohort regenerated from the same seed has the same SHA-256.
    """
    import tifffile

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_pyramid_tiff needs an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape} for {path}")
    if not mpp > 0:
        raise ValueError(f"mpp must be > 0 µm/px, got {mpp} for {path}")
    path = Path(path)
    levels = pyramid_levels(rgb, factor=factor)
    with atomic_path(path) as tmp:
        # Classic TIFF holds 4 GiB; JPEG'd synthetic slides are far below, big ones switch to BigTIFF.
        big = rgb.nbytes > 2**31
        with tifffile.TiffWriter(tmp, bigtiff=big) as tw:
            for i, lv in enumerate(levels):
                ds = rgb.shape[1] / lv.shape[1]
                res = 1e4 / (mpp * ds)  # pixels per centimeter at this level
                tw.write(
                    lv,
                    tile=(tile, tile),
                    compression="jpeg",
                    compressionargs={"level": int(jpeg_quality)},
                    photometric="rgb",
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if i == 0 else 1,
                    description=description if i == 0 else None,
                    metadata=None,
                    software="exaonepath-lab",
                )
    return path
