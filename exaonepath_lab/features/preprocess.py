"""Encoder-side preprocessing of uint8 patches: [Macenko] -> Resize -> CenterCrop -> mean/std.

Kept apart from the encoders so a cache key can record exactly what was done, and so the
stain step (uint8 in, uint8 out, per-item status) stays batched over same-sized images.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..io import sha256_json


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
        for shape, idx in _group_by_shape(images).items():
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
                x = _center_crop(x, self.crop_size)
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


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:
        # torchvision pads; padding a patch with black would change features, so refuse clearly.
        raise ValueError(f"image {h}×{w} px is smaller than the crop {size} px; enable resize or use crop=False")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def _group_by_shape(images: Sequence[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    return groups


def check_image(img: Any, where: str) -> np.ndarray:
    """Items must be uint8 RGB (H, W, 3): the kit does the preprocessing itself."""
    if isinstance(img, torch.Tensor):
        img = img.numpy()
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{type(img).__name__} {getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}"
        raise ValueError(f"{where}: expected a uint8 (H, W, 3) RGB image, got {desc}. Set dataset.transform=None: "
                         "extract_features applies normalization, resize, crop and mean/std itself.")
    return img


def normalize_stain(normalizer: Any, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Run a batched stain normalizer over same-shaped groups; return images and per-item status.

    The normalizer contract (``exaonepath_lab.stain``): ``normalizer.normalize(uint8 N×H×W×3)``
    returns a result with ``.images`` (uint8 N×H×W×3) and ``.status`` (N strings); what a failed
    item becomes (raw image, or an error) is the normalizer's ``policy``. A plain array result
    is accepted too (status ``ok``). Nothing is dropped: every item keeps its row and status.
    """
    out: list[np.ndarray | None] = [None] * len(images)
    status: list[str] = ["?"] * len(images)
    for _, idx in _group_by_shape(images).items():
        batch = np.stack([images[i] for i in idx])
        res = normalizer.normalize(batch)
        imgs = getattr(res, "images", res)
        sts = list(getattr(res, "status", ["ok"] * len(idx)))
        if isinstance(imgs, torch.Tensor):
            imgs = imgs.detach().cpu().numpy()
        imgs = np.asarray(imgs)
        if imgs.shape != batch.shape:
            raise ValueError(f"{type(normalizer).__name__}.normalize returned shape {imgs.shape} for input {batch.shape}; "
                             "expected uint8 N×H×W×3 of the same shape")
        if imgs.dtype != np.uint8:
            imgs = np.clip(np.rint(imgs), 0, 255).astype(np.uint8)
        for j, i in enumerate(idx):
            out[i] = imgs[j]
            status[i] = str(sts[j])
    return out, status  # type: ignore[return-value]


def normalizer_identity(normalizer: Any) -> dict[str, Any] | None:
    """JSON-able identity of a stain normalizer for cache keys (class, policy, target hash).

    Uses ``normalizer.identity()``, ``.config()`` (MacenkoNormalizer) or ``.to_dict()`` when the normalizer offers one; otherwise
    the public numeric attributes of its ``target`` (stain matrix, max concentrations) and its
    scalar settings, so a different fitted target gives a different key.
    """
    if normalizer is None:
        return None
    for meth in ("identity", "config", "to_dict"):
        f = getattr(normalizer, meth, None)
        if callable(f):
            try:
                return {"class": type(normalizer).__name__, meth: json.loads(json.dumps(f(), default=_arr))}
            except TypeError:
                pass
    return {"class": type(normalizer).__name__, "state_sha256": sha256_json(_public_state(normalizer)),
            "state": _public_state(normalizer)}


def _arr(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        o = o.detach().cpu().numpy()
    if isinstance(o, np.ndarray):
        return np.round(o.astype(np.float64), 6).tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if dataclasses.is_dataclass(o):
        return {k: _arr(v) for k, v in dataclasses.asdict(o).items()}
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _public_state(obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (np.ndarray, torch.Tensor, np.floating, np.integer)):
        return _arr(obj)
    if isinstance(obj, (list, tuple)):
        return [_public_state(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _public_state(v, depth + 1) for k, v in obj.items()}
    if depth >= 2 or not hasattr(obj, "__dict__"):
        return type(obj).__name__
    return {k: _public_state(v, depth + 1) for k, v in sorted(vars(obj).items()) if not k.startswith("_")}
