"""Non-overlapping patch grid over a tissue mask, per-patch tissue fraction and label.

One global grid anchored at the slide origin (0, 0), stepping by the patch size:
patches never overlap, even across separate tissue pieces (CLAM's per-contour
grids can), and the same slide always yields the same coordinates. Only patches
that lie fully inside the slide are considered.
"""
from __future__ import annotations

import numpy as np


def patch_size_px(slide_mpp: float, *, target_mpp: float = 0.5, target_px: int = 256) -> int:
    """Level-0 patch side (px) covering ``target_px`` px at ``target_mpp`` µm/px.

    PROTOCOL.md §1: ``round(256 * 0.5 / slide_mpp)`` with the exact MPP (0.25 → 512,
    0.5 → 256, 0.499 → 257, 0.243 → 527); halves round up.
    """
    if not slide_mpp > 0:
        raise ValueError(f"slide MPP must be positive µm/px, got {slide_mpp}")
    return max(1, int(np.floor(target_px * target_mpp / slide_mpp + 0.5)))


def grid_coords(width: int, height: int, patch_size: int) -> np.ndarray:
    """Top-left (x, y) of every full patch of the grid: int64 (N, 2), row-major order."""
    xs = np.arange(0, width - patch_size + 1, patch_size, dtype=np.int64)
    ys = np.arange(0, height - patch_size + 1, patch_size, dtype=np.int64)
    if xs.size == 0 or ys.size == 0:
        return np.zeros((0, 2), np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _footprints(coords: np.ndarray, patch_size: int, scale: tuple[float, float], shape: tuple[int, int]):
    """Level-0 patches → half-open index ranges (r0, r1, c0, c1) in a low-res map, each ≥ 1 px."""
    sx, sy = scale
    h, w = shape
    c0 = np.clip(np.round(coords[:, 0] * sx).astype(np.int64), 0, w - 1)
    r0 = np.clip(np.round(coords[:, 1] * sy).astype(np.int64), 0, h - 1)
    c1 = np.clip(np.round((coords[:, 0] + patch_size) * sx).astype(np.int64), c0 + 1, w)
    r1 = np.clip(np.round((coords[:, 1] + patch_size) * sy).astype(np.int64), r0 + 1, h)
    return r0, r1, c0, c1


def _box_sums(values: np.ndarray, r0, r1, c0, c1) -> np.ndarray:
    """Sum of ``values`` (h, w) over each box, via one summed-area table."""
    sat = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.int64)
    sat[1:, 1:] = values.astype(np.int64).cumsum(0).cumsum(1)
    return sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]


def tissue_fraction(mask: np.ndarray, coords: np.ndarray, *, patch_size: int, scale: tuple[float, float]) -> np.ndarray:
    """Share of each patch's footprint that is tissue: float32 (N,) in [0, 1].

    ``mask``: bool (h, w) at ``scale`` = (mask px per level-0 px in x, in y).
    """
    if len(coords) == 0:
        return np.zeros(0, np.float32)
    r0, r1, c0, c1 = _footprints(coords, patch_size, scale, mask.shape)
    return (_box_sums(mask, r0, r1, c0, c1) / ((r1 - r0) * (c1 - c0))).astype(np.float32)


def tissue_patches(
    mask: np.ndarray,
    *,
    scale: tuple[float, float],
    level0_size: tuple[int, int],
    patch_size: int,
    min_tissue: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid patches whose tissue fraction is ≥ ``min_tissue`` (and > 0).

    Returns ``coords`` int64 (N, 2) level-0 top-left x, y and ``fraction`` float32 (N,).
    """
    coords = grid_coords(level0_size[0], level0_size[1], patch_size)
    frac = tissue_fraction(mask, coords, patch_size=patch_size, scale=scale)
    keep = (frac >= min_tissue) & (frac > 0)  # min_tissue=0 must still mean "touches tissue"
    return coords[keep], frac[keep]


def majority_labels(classmap: np.ndarray, coords: np.ndarray, *, downsample: float, patch_size: int) -> np.ndarray:
    """Most frequent class of each patch's footprint in a class map: int16 (N,).

    ``classmap``: integer (h, w), one class index per cell of ``downsample`` level-0 px.
    Background (class 0) counts like any class; ties go to the lower class index.
    """
    if len(coords) == 0:
        return np.zeros(0, np.int16)
    if classmap.ndim != 2:
        raise ValueError(f"class map must be 2-D (h, w) class indices, got shape {classmap.shape}")
    r0, r1, c0, c1 = _footprints(coords, patch_size, (1.0 / downsample, 1.0 / downsample), classmap.shape)
    n_classes = int(classmap.max()) + 1
    counts = np.stack([_box_sums(classmap == k, r0, r1, c0, c1) for k in range(n_classes)], axis=1)
    return counts.argmax(axis=1).astype(np.int16)
