"""Seeded sampling of K slides × M patches (paper §3.1: 10 WSIs × 1,000 patches)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def sample_patches(
    meta: pd.DataFrame,
    n_slides: int | None = 10,
    per_slide: int | None = 1000,
    *,
    seed: int = 0,
    slide_col: str = "slide_id",
    slides: Sequence[str] | None = None,
    min_per_slide: int = 1,
) -> np.ndarray:
    """Row positions (int64, sorted by slide then position) of a K × M sample of ``meta``.

    Slides are drawn uniformly at random among those with at least ``min_per_slide`` rows
    (or taken from ``slides``); within each slide ``per_slide`` rows are drawn without
    replacement, or all rows when the slide has fewer (the shortfall is visible in
    ``meta.iloc[idx].groupby(slide_col).size()``; nothing is padded). ``None`` means "all".
    ``meta.iloc[idx]`` carries slide id, coordinates and label along.
    """
    if slide_col not in meta.columns:
        raise ValueError(f"sample_patches: meta has no {slide_col!r} column (columns: {list(meta.columns)})")
    rng = np.random.default_rng(seed)
    sid = meta[slide_col].astype(str).to_numpy()
    uniq, counts = np.unique(sid, return_counts=True)
    if slides is not None:
        missing = sorted(set(map(str, slides)) - set(uniq))
        if missing:
            raise ValueError(f"sample_patches: slides {missing} not in meta; available: {list(uniq)[:20]}")
        chosen = [str(s) for s in slides]
    else:
        eligible = uniq[counts >= min_per_slide]
        if len(eligible) == 0:
            raise ValueError(f"sample_patches: no slide has ≥ {min_per_slide} patches")
        k = len(eligible) if n_slides is None else min(int(n_slides), len(eligible))
        chosen = sorted(rng.choice(eligible, size=k, replace=False).tolist())
    out: list[np.ndarray] = []
    for s in chosen:
        rows = np.flatnonzero(sid == s)
        if per_slide is not None and len(rows) > per_slide:
            rows = np.sort(rng.choice(rows, size=int(per_slide), replace=False))
        out.append(rows)
    return np.concatenate(out).astype(np.int64)
