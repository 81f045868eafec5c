"""Transforms that drop into torchvision pipelines.

- :class:`MacenkoTransform`: uint8 H×W×3 → normalized uint8 H×W×3, for the training
  pipeline "with probability 1 before the DINO augmentation" (paper §3.3: once per
  image, not per view). Keeps per-status counts.
- :func:`eval_transform` → :class:`EvalTransform`: the evaluation chain of the paper
  and of EXAONEPath's release, Macenko → Resize(256, bicubic) → CenterCrop(224) →
  ImageNet mean/std, for one image (``t(img)`` → 3×224×224 float) or a batch on any
  device (``t.batch(imgs)`` → N×3×224×224), with identical numbers either way.

Resizing is torchvision's tensor bicubic with antialias on uint8 (rounded back to
uint8 like PIL does); PIL's own bicubic differs by at most a level or two on some
pixels, which is why single and batched paths both use the tensor one.

With a DataLoader, each worker process holds its own copy of a transform, so
``MacenkoTransform.counts`` in the main process only sees main-process calls; collect
statuses from the dataset output (or run :meth:`MacenkoNormalizer.fit_stains` over the
dataset) when a run report needs exact totals.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch

from .macenko import MacenkoNormalizer

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


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


class EvalTransform:
    """Macenko (optional) → Resize(resize, bicubic) → CenterCrop(crop) → float, mean/std.

    ``t(img)``: uint8 H×W×3 (ndarray/torch/PIL) → float32 (3, crop, crop).
    ``t.batch(imgs)``: uint8 (N, H, W, 3) ndarray/tensor or (N, 3, H, W) tensor → float32
    (N, 3, crop, crop) on the input's device (Macenko batched on that device).
    """

    def __init__(
        self,
        normalizer: MacenkoNormalizer | None,
        resize: int = 256,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        self.normalizer = normalizer
        self.resize, self.crop = int(resize), int(crop)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.counts: Counter[str] = Counter()

    def config(self) -> dict[str, Any]:
        """What changes the output (for feature-cache keys)."""
        return {
            "stain": None if self.normalizer is None else self.normalizer.config(),
            "resize": self.resize,
            "interpolation": "bicubic+antialias (torch, uint8)",
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) → float (N, 3, crop, crop)."""
        from torchvision.transforms.v2 import functional as F

        x = F.resize(x, [self.resize], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        x = F.center_crop(x, [self.crop, self.crop])
        x = x.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def batch(self, images: Any) -> torch.Tensor:
        if self.normalizer is not None:
            res = self.normalizer.normalize(images)
            self.counts.update(res.status)
            images = res.images
        x = torch.as_tensor(images) if isinstance(images, np.ndarray) else images
        if x.dtype != torch.uint8:
            raise ValueError(f"EvalTransform.batch expects uint8 images, got {x.dtype}")
        if x.ndim != 4:
            raise ValueError(f"EvalTransform.batch expects (N, H, W, 3) or (N, 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        return self._finish(x.contiguous())

    def __call__(self, img: Any) -> torch.Tensor:
        x = _as_hwc_uint8(img)
        x = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"EvalTransform expects one H×W×3 image, got shape {tuple(x.shape)}")
        return self.batch(x.unsqueeze(0))[0]

    def __repr__(self) -> str:
        return (
            f"EvalTransform(macenko={self.normalizer is not None}, resize={self.resize}, crop={self.crop}, "
            f"mean={self.mean}, std={self.std})"
        )


def eval_transform(
    normalizer: MacenkoNormalizer | None,
    resize: int = 256,
    crop: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> EvalTransform:
    """The paper's evaluation preprocessing; ``normalizer=None`` skips Macenko. See :class:`EvalTransform`."""
    return EvalTransform(normalizer, resize=resize, crop=crop, mean=mean, std=std)
