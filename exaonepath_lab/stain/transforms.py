"""A transform that drops into torchvision pipelines.

:class:`MacenkoTransform`: uint8 H×W×3 → normalized uint8 H×W×3, for the training
pipeline "with probability 1 before the DINO augmentation" (paper §3.3: once per
image, not per view). Keeps per-status counts.

The evaluation chain (Macenko → Resize(256, bicubic) → CenterCrop(224) → mean/std) is
``exaonepath_lab.features.extract_features(encoder, dataset, normalizer=...)``: the stain
step here, the rest owned by the encoder (:class:`exaonepath_lab.encoders.Preprocessing`).

With a DataLoader, each worker process holds its own copy of a transform, so
``MacenkoTransform.counts`` in the main process only sees main-process calls; collect
statuses from the dataset output (or run :meth:`MacenkoNormalizer.fit_stains` over the
dataset) when a run report needs exact totals.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from .macenko import MacenkoNormalizer


def _as_hwc_uint8(img: Any) -> np.ndarray | torch.Tensor:
    if isinstance(img, (np.ndarray, torch.Tensor)):
        return img
    from PIL import Image

    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    raise TypeError(f"expected a uint8 H×W×3 array/tensor or a PIL image, got {type(img).__name__}")


class MacenkoTransform:
    """Callable: one uint8 H×W×3 image (ndarray, torch, or PIL) → normalized uint8 H×W×3 ndarray.

    Failed images follow the normalizer's policy (``passthrough``/``flag``: returned
    unchanged; ``raise``: :class:`StainNormalizationError`). ``counts`` tallies statuses.
    """

    def __init__(self, normalizer: MacenkoNormalizer | None = None) -> None:
        self.normalizer = normalizer if normalizer is not None else MacenkoNormalizer()
        self.counts: Counter[str] = Counter()

    def __call__(self, img: Any) -> np.ndarray:
        x = _as_hwc_uint8(img)
        if isinstance(x, torch.Tensor):
            x = x.cpu().numpy()
        res = self.normalizer.normalize(x)
        self.counts[res.status[0]] += 1
        return res.images

    def __repr__(self) -> str:
        return f"MacenkoTransform({self.normalizer!r})"
