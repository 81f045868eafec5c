"""CLAM-style tissue segmentation of a slide thumbnail.

Pipeline (Lu et al. 2021, CLAM ``segmentTissue``, with ink handling added):
HSV saturation → median blur → ink/dark pixels removed → Otsu threshold (never
below a saturation floor) → morphological closing → small islands dropped, small
holes filled. All sizes are in µm / mm² and converted with the thumbnail's µm/px,
so one setting works for 0.25 and 0.5 µm/px scans alike.
"""
from __future__ import annotations

import numpy as np

from .config import TileConfig


def _odd(n: float) -> int:
    """Nearest odd integer ≥ 1 (kernel sizes of median blur must be odd)."""
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def pen_mask(rgb: np.ndarray, *, dark_value: int = 50, split: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Pixels that are ink or debris rather than H&E: bool (h, w).

    H&E lives in the pink-purple hues (OpenCV hue ≈ 125-180 and 0-8). Excluded:
    green/cyan ink (hue 35-110, saturation ≥ 60), strongly saturated blue ink (hue
    110-125, saturation ≥ 150: hematoxylin can look blue but is never that vivid),
    saturated red ink (hue < 8 or ≥ 172 with saturation ≥ 170; eosin is a paler
    pink, but fresh blood may be caught too), and very dark pixels (value <
    ``dark_value``: black marker, labels, folds). With ``split=True`` returns
    ``(coloured_ink, dark)`` separately.
    """
    import cv2

    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    green = (h >= 35) & (h < 110) & (s >= 60)
    blue = (h >= 110) & (h < 125) & (s >= 150)
    red = ((h < 8) | (h >= 172)) & (s >= 170)
    dark = v < dark_value
    coloured = green | blue | red
    return (coloured, dark) if split else coloured | dark


def tissue_mask(rgb: np.ndarray, *, mpp: float, config: TileConfig | None = None) -> np.ndarray:
    """Tissue mask of a thumbnail: bool (h, w), True on tissue.

    ``rgb``: uint8 (h, w, 3) thumbnail; ``mpp``: its µm/px (sets the kernel sizes).
    Returns an all-False mask for a blank slide (no error: an empty slide is a result).
    """
    import cv2

    cfg = config or TileConfig()
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"tissue_mask expects uint8 (h, w, 3) RGB, got {rgb.dtype} {rgb.shape}")
    rgb = np.ascontiguousarray(rgb[..., :3])
    px_area_mm2 = (mpp * 1e-3) ** 2

    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    sat = cv2.medianBlur(sat, min(_odd(cfg.median_um / mpp), 255))
    if cfg.exclude_pen:
        # Coloured ink blends into tissue over its edges: grow it. Dark pixels are not grown,
        # since dense nuclei sit right next to them in real tissue.
        coloured, dark = pen_mask(rgb, dark_value=cfg.dark_value, split=True)
        m = max(1, int(round(cfg.ink_margin_um / mpp)))
        se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1, 2 * m + 1))
        ink = cv2.dilate(coloured.astype(np.uint8), se).astype(bool) | dark
    else:
        ink = np.zeros(sat.shape, bool)
    valid = sat[~ink]
    if valid.size == 0:
        return np.zeros(sat.shape, bool)
    otsu, _ = cv2.threshold(valid.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu assumes glass vs tissue; on a thumbnail that is nearly all tissue it splits pale
    # from dark tissue instead, so the threshold is kept inside [sat_floor, sat_ceiling].
    thr = min(max(float(otsu), float(cfg.sat_floor)), float(cfg.sat_ceiling))
    mask = ((sat > thr) & ~ink).astype(np.uint8)

    r = max(1, int(round(cfg.close_um / mpp)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)
    mask = fill_small_holes(mask, cfg.max_hole_mm2 / px_area_mm2)
    mask &= ~ink  # closing and hole filling must not bring tissue back over ink
    return remove_small_objects(mask, cfg.min_object_mm2 / px_area_mm2)


def remove_small_objects(mask: np.ndarray, min_px: float) -> np.ndarray:
    """Drop 8-connected True components with fewer than ``min_px`` pixels."""
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False  # label 0 is the background
    return keep[lab]


def fill_small_holes(mask: np.ndarray, max_px: float) -> np.ndarray:
    """Set to True the 4-connected False regions smaller than ``max_px`` not touching the border."""
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    x, y, w, h = (stats[:, i] for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    H, W = mask.shape
    inner = (x > 0) & (y > 0) & (x + w < W) & (y + h < H)
    fill = inner & (stats[:, cv2.CC_STAT_AREA] < max_px)
    fill[0] = False  # label 0 is the tissue itself here
    return mask | fill[lab]
