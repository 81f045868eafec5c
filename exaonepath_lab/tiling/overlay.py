"""The quality-control picture of a tiled slide: thumbnail + tissue outline + kept patches."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_path

TISSUE_RGB = (0, 170, 0)  # outline of the tissue mask
PATCH_RGB = (30, 80, 230)  # kept patches


def mask_overlay(
    thumb: np.ndarray,
    mask: np.ndarray,
    *,
    coords: np.ndarray,
    patch_size: int,
    scale: tuple[float, float],
) -> np.ndarray:
    """RGB uint8 (h, w, 3): ``thumb`` with glass dimmed, the mask outlined, patches boxed.

    ``mask`` may be at a lower resolution than ``thumb`` (it is resized, nearest);
    ``scale`` maps level-0 px to ``thumb`` px (x, y).
    """
    import cv2

    h, w = thumb.shape[:2]
    m = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    out = thumb.copy()
    out[m == 0] = (out[m == 0] * 0.55 + 255 * 0.45).astype(np.uint8)  # fade glass, keep it visible
    contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, TISSUE_RGB, 1)
    sx, sy = scale
    for x, y in np.asarray(coords):
        p0 = (int(round(x * sx)), int(round(y * sy)))
        p1 = (int(round((x + patch_size) * sx)) - 1, int(round((y + patch_size) * sy)) - 1)
        cv2.rectangle(out, p0, p1, PATCH_RGB, 1)
    return out


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return Path(path)
