"""Patch arrays and their whole-patch embedding for the training-time learning check.

The check itself (k-NN of the trained teacher against its random-init twin) lives in
:mod:`exaonepath_lab.probing.learning`, beside the kit's one k-NN (a layer above pretraining).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import IMAGENET_MEAN, IMAGENET_STD


def dataset_arrays(dataset: Any, *, label_key: str = "label") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All images of an item-protocol dataset of equal-size patches: ``(N, H, W, 3)`` uint8, labels, slide ids."""
    imgs = np.stack([np.asarray(dataset[i]["image"]) for i in range(len(dataset))])
    meta = dataset.meta
    labels = meta[label_key].to_numpy() if label_key in meta else np.full(len(meta), -1)
    slides = meta["slide_id"].to_numpy(dtype=str) if "slide_id" in meta else np.zeros(len(meta), str)
    return imgs, labels.astype(int), slides


@torch.no_grad()
def embed_images(backbone: nn.Module, images: np.ndarray, *, size: int, batch_size: int = 128,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, D)`` float32 features of whole patches resized to ``size`` px.

    Bilinear (antialiased) resize of the full patch, ImageNet mean/std: the
    evaluation view of DINO's k-NN (no crop, so nothing is thrown away).
    """
    from ..encoders import Preprocessing

    backbone = backbone.eval().to(device)
    pre = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, resize_size=size, crop_size=None, interpolation="bilinear")
    out = []
    for i in range(0, len(images), batch_size):
        out.append(backbone(pre(images[i : i + batch_size], device=device)).float().cpu())
    return torch.cat(out).numpy()
