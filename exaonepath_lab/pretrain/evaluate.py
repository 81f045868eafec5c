"""Quick checks that a DINO run learned something: embed patches, k-NN accuracy, random-init twin.

DINO monitors training with a weighted k-NN classifier on frozen features (Caron et
al. 2021, §4.1). Here it answers one question for the ``cpu-demo`` preset: does the
trained teacher separate tissue classes better than the same architecture with
random weights? (A random ViT already separates colours, so only a margin over that
twin shows learning.) Full probing lives in :mod:`exaonepath_lab.probing`.
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


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, groups: np.ndarray | None = None, k: int = 10,
                 n_splits: int = 5, seed: int = 0) -> float:
    """Mean balanced accuracy of a cosine k-NN (distance-weighted) over ``n_splits`` folds.

    With ``groups`` (slide ids) the folds never split a slide (``GroupKFold``): a
    neighbour from the same slide cannot help, which is the honest test for a
    cohort whose slides differ in staining. Items with label < 0 are left out.
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    keep = labels >= 0
    x = features[keep] / (np.linalg.norm(features[keep], axis=1, keepdims=True) + 1e-12)
    y = labels[keep]
    if groups is not None:
        g = groups[keep]
        splitter = GroupKFold(n_splits=min(n_splits, len(np.unique(g))))
        splits = splitter.split(x, y, g)
    else:
        splits = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y)
    scores = []
    for tr, te in splits:
        clf = KNeighborsClassifier(n_neighbors=min(k, len(tr)), weights="distance", metric="euclidean")
        clf.fit(x[tr], y[tr])
        scores.append(balanced_accuracy_score(y[te], clf.predict(x[te])))
    return float(np.mean(scores))


def teacher_and_random_twin(checkpoint: str, *, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """The trained teacher backbone of a kit checkpoint and a random-init backbone of the same spec."""
    from ..models import build_backbone, load_kit_checkpoint

    ck = load_kit_checkpoint(checkpoint)
    spec = ck["model"]
    teacher = build_backbone(spec["timm_name"], **spec["timm_kwargs"])
    teacher.load_state_dict(ck["teacher_backbone"], strict=True)
    torch.manual_seed(seed)
    twin = build_backbone(spec["timm_name"], **spec["timm_kwargs"])
    return teacher.eval(), twin.eval()


def learning_check(
    config: Any,
    dataset: Any,
    *,
    eval_images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    k: int = 10,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config`` on ``dataset``, then k-NN the trained teacher against its random-init twin.

    ``eval_images`` ``(N, H, W, 3)`` uint8 are embedded raw, or Macenko-normalised when
    ``config.normalize`` (the same input the model was trained on, as the paper does
    at feature-extraction time). Returns accuracies, the margin, the final teacher
    entropy, ``ln(out_dim)``, collapse warnings and the training time (s).
    """
    import math
    import time

    from .trainer import train

    t0 = time.perf_counter()
    res = train(config, dataset, resume=False, progress=progress)
    seconds = time.perf_counter() - t0
    imgs = eval_images
    if config.normalize:
        from ..stain import MacenkoNormalizer

        norm = MacenkoNormalizer()
        imgs = np.concatenate([np.asarray(norm.normalize(eval_images[i:i + 256]).images)
                               for i in range(0, len(eval_images), 256)])
    teacher, twin = teacher_and_random_twin(str(res.checkpoint), seed=config.seed)
    acc = {}
    for name, model in (("trained", teacher), ("random", twin)):
        feats = embed_images(model, imgs, size=config.global_crop_size)
        acc[name] = knn_accuracy(feats, labels, groups=groups, k=k)
    return {
        "knn_trained": acc["trained"], "knn_random": acc["random"], "margin": acc["trained"] - acc["random"],
        "teacher_entropy": res.final.get("teacher_entropy"), "batch_entropy": res.final.get("batch_entropy"),
        "final_loss": res.final.get("loss"), "ln_out_dim": math.log(config.out_dim),
        "collapse_warnings": res.collapse_warnings, "iterations": res.iteration, "train_seconds": seconds,
    }
