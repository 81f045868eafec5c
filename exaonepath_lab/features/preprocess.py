"""The feature-extraction side of preprocessing: input checks, batched stain normalization, cache identity.

The resize/crop/mean-std step belongs to the encoder (:class:`exaonepath_lab.encoders.Preprocessing`);
here is what comes before it — the stain step (uint8 in, uint8 out, per-item status, batched over
same-sized images) — and the JSON identity of a normalizer for feature-cache keys.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch

from ..encoders.preprocess import group_by_shape
from ..io import sha256_json


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
    for _, idx in group_by_shape(images).items():
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
