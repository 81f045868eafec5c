"""Grid patches cut from plain images, one group of images per "slide".

For small real cohorts without WSIs (e.g. a folder of real H&E images from several labs: each
source image or tile folder is one "slide"), and for tests. Slide-backed tiling lives in
:mod:`exaonepath_lab.tiling` / :mod:`exaonepath_lab.slides`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..datasets import ItemDataset, read_rgb


def tissue_fraction(patch: np.ndarray, od_threshold: float = 0.15, io: float = 240.0) -> float:
    """Share of pixels with optical density ≥ ``od_threshold`` in every channel.

    The same criterion Macenko uses to select stained pixels (PROTOCOL §2, beta = 0.15), so a
    patch that passes has enough stain for normalization to work.
    """
    od = -np.log((patch.astype(np.float32) + 1.0) / io)
    return float((od >= od_threshold).all(axis=-1).mean())


class GridPatchDataset(ItemDataset):
    """Non-overlapping ``patch_px`` patches with tissue, from images grouped by slide id.

    Args:
        sources: slide id -> image paths (each image read once, RGB; alpha dropped).
        patch_px: patch side (px, source resolution; nothing is resized).
        min_tissue: minimum :func:`tissue_fraction` for a patch to be kept.
        max_per_slide: keep at most this many per slide (seeded draw), None = all.

    ``meta``: ``slide_id``, ``path``, ``x``, ``y`` (top-left, px), ``patch_size``,
    ``tissue_fraction``, ``label`` (-1), ``class_name`` ("").
    ``empty``: slide ids that gave no patch (image smaller than ``patch_px`` or too little tissue), so a
    caller can say which sources were left out instead of dropping them silently.
    """

    def __init__(self, sources: Mapping[str, Sequence[str | Path]], *, patch_px: int = 64, min_tissue: float = 0.5,
                 max_per_slide: int | None = None, seed: int = 0) -> None:
        self.images: dict[str, np.ndarray] = {}
        rows = []
        rng = np.random.default_rng(seed)
        self.empty: list[str] = []
        for sid, paths in sources.items():
            cand = []
            for p in paths:
                img = read_rgb(p)
                self.images[str(p)] = img
                h, w = img.shape[:2]
                for y in range(0, h - patch_px + 1, patch_px):
                    for x in range(0, w - patch_px + 1, patch_px):
                        tf = tissue_fraction(img[y:y + patch_px, x:x + patch_px])
                        if tf >= min_tissue:
                            cand.append((str(sid), str(p), x, y, patch_px, tf, -1, ""))
            if max_per_slide is not None and len(cand) > max_per_slide:
                keep = np.sort(rng.choice(len(cand), size=max_per_slide, replace=False))
                cand = [cand[i] for i in keep]
            if not cand:
                self.empty.append(str(sid))
            rows.extend(cand)
        if not rows:
            raise ValueError(f"GridPatchDataset: no {patch_px} px patch with tissue ≥ {min_tissue} in {list(sources)}")
        self.meta = pd.DataFrame(rows, columns=["slide_id", "path", "x", "y", "patch_size", "tissue_fraction",
                                                "label", "class_name"])
        self.transform = None

    def load_image(self, i: int) -> np.ndarray:
        r = self.meta.iloc[i]
        img = self.images[r["path"]]
        s = int(r["patch_size"])
        return np.ascontiguousarray(img[int(r["y"]):int(r["y"]) + s, int(r["x"]):int(r["x"]) + s])
