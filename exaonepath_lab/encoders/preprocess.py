"""An encoder's evaluation preprocessing: uint8 patches -> Resize -> CenterCrop -> mean/std.

The one eval preprocessing of the kit (as in timm, the encoder owns it):
``Preprocessing.for_encoder(encoder)`` reads the encoder's mean/std and sizes, feature
extraction records ``describe()`` in its cache key, and the DINO learning check uses the same
class with ``crop_size=None`` to embed whole patches. Stain normalization, when wanted, happens
before (uint8 in, uint8 out; :mod:`exaonepath_lab.features.preprocess`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Resize (shorter side, bicubic, antialiased) -> center crop -> (x/255 - mean)/std.

    ``resize_size=None`` or ``crop_size=None`` switch that step off (small tiles such as 96 px
    PCam patches or 64 px test patches); then all images of a batch must share one size.
    Bicubic with antialias on tensors matches torchvision's ``Resize(256, BICUBIC)`` on tensors;
    PIL's bicubic differs by at most a few grey levels (documented, not hidden).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int | None = 256
    crop_size: int | None = 224
    interpolation: str = "bicubic"

    @classmethod
    def for_encoder(cls, encoder: Any, *, resize: bool = True, crop: bool = True) -> "Preprocessing":
        return cls(tuple(encoder.mean), tuple(encoder.std), encoder.resize_size if resize else None,
                   encoder.input_size if crop else None)

    def describe(self) -> dict[str, Any]:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "interpolation": self.interpolation,
                "mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std], "antialias": True}

    def __call__(self, images: Sequence[np.ndarray], device: str | torch.device | None = None) -> torch.Tensor:
        """List of uint8 (H, W, 3) -> float32 (N, 3, H', W') on ``device`` (default CPU).

        On a GPU the uint8 batch is copied first and resized there (4× less to transfer than float,
        and bicubic resizing is then no CPU bottleneck).
        """
        out: list[torch.Tensor | None] = [None] * len(images)
        for shape, idx in group_by_shape(images).items():
            x = torch.from_numpy(np.stack([images[i] for i in idx]))
            if device is not None:
                x = x.to(device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float()
            if self.resize_size is not None:
                h, w = shape[:2]
                s = self.resize_size / min(h, w)
                size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
                if size != (h, w):
                    x = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False,
                                      antialias=True).clamp_(0, 255)
            if self.crop_size is not None:
                x = center_crop(x, self.crop_size)
            for j, i in enumerate(idx):
                out[i] = x[j]
        shapes = {tuple(t.shape) for t in out}  # type: ignore[union-attr]
        if len(shapes) != 1:
            raise ValueError(f"images of different sizes {sorted(shapes)} in one batch with resize/crop switched off; "
                             "switch resize/crop on or tile at one size")
        x = torch.stack(out) / 255.0  # type: ignore[arg-type]
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size``×``size`` window of ``(..., H, W)``, placed as torchvision's ``center_crop`` places it."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        # torchvision pads; padding a patch with black would change features, so refuse clearly.
        raise ValueError(f"image {h}×{w} px is smaller than the crop {size} px; enable resize or use crop=False")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def group_by_shape(images: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    """Indices of ``images`` grouped by array shape, so each group can be stacked into one batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    return groups
