"""Read a whole slide at a coarse, exact µm/px (the segmentation thumbnail).

OpenSlide's ``get_thumbnail`` reads a whole pyramid level into one image before
shrinking it; for a slide without a coarse level that is gigabytes. Here the best
level is read in horizontal strips of bounded size and each strip is area-averaged
to its share of the output rows, so memory stays at ~64 MB whatever the slide.
"""
from __future__ import annotations

import math

import numpy as np

from ..slides.wsi import Slide

STRIP_PIXELS = 1 << 24  # level pixels read per strip (~64 MB as RGBA)


def read_at_mpp(slide: Slide, mpp: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Whole slide as RGB uint8 (h, w, 3) at about ``mpp`` µm/px.

    Returns ``(image, (sx, sy))`` where ``sx = w / level0_width`` (and ``sy`` likewise)
    is the exact scale that maps level-0 px to thumbnail px. When ``mpp`` is finer
    than the slide's own, the slide is read at level 0 (never upsampled).
    """
    import cv2

    W, H = slide.dimensions
    ds = max(1.0, mpp / slide.mpp)
    out_w, out_h = max(1, round(W / ds)), max(1, round(H / ds))
    level = slide.get_best_level_for_downsample(ds)
    lw, lh = slide.level_dimensions[level]
    lds = slide.level_downsamples[level]
    rows_per_out = lh / out_h
    block = max(1, int(STRIP_PIXELS // max(1, lw * math.ceil(rows_per_out))))
    out = np.empty((out_h, out_w, 3), np.uint8)
    for r0 in range(0, out_h, block):
        r1 = min(out_h, r0 + block)
        y0 = int(round(r0 * rows_per_out))
        y1 = max(y0 + 1, min(lh, int(round(r1 * rows_per_out))))
        strip = slide.read_region((0, int(round(y0 * lds))), level, (lw, y1 - y0))
        interp = cv2.INTER_AREA if (lw > out_w or y1 - y0 > r1 - r0) else cv2.INTER_LINEAR
        out[r0:r1] = cv2.resize(strip, (out_w, r1 - r0), interpolation=interp)
    return out, (out_w / W, out_h / H)
