"""Colour statistics alone as a reference "encoder" (how much slide signal is just colour).

Per image: per-channel mean and standard deviation of RGB in [0, 1] and a normalized
``bins``-bin histogram per channel: ``6 + 3·bins`` numbers. If these cluster by slide as much
as a model's features, the model's clustering says little beyond the input's colour.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def colour_features(images: np.ndarray | Sequence[np.ndarray], bins: int = 8) -> np.ndarray:
    """uint8 images (N, H, W, 3) or a list of (H, W, 3) -> (N, 6 + 3·bins) float32."""
    feats = []
    for im in images:
        im = np.asarray(im)
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"colour_features: expected uint8 (H, W, 3) images, got {im.dtype} {im.shape}")
        px = im.reshape(-1, 3).astype(np.float32) / 255.0
        hist = [np.histogram(px[:, c], bins=bins, range=(0.0, 1.0))[0] / len(px) for c in range(3)]
        feats.append(np.concatenate([px.mean(0), px.std(0), *hist]).astype(np.float32))
    return np.stack(feats)


def colour_features_dataset(dataset: Any, indices: Sequence[int] | None = None, *, normalizer: Any = None,
                            bins: int = 8, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Colour features of ``dataset`` items (after ``normalizer`` if given) and their norm status."""
    from ..features.preprocess import check_image, normalize_stain

    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    out, status = [], []
    for lo in range(0, len(idx), batch_size):
        imgs = [check_image(dataset[i]["image"], f"{type(dataset).__name__}[{i}]") for i in idx[lo:lo + batch_size]]
        st = ["none"] * len(imgs)
        if normalizer is not None:
            imgs, st = normalize_stain(normalizer, imgs)
        out.append(colour_features(imgs, bins=bins))
        status.extend(st)
    return np.concatenate(out), np.array(status, dtype=str)
