"""Did a DINO run learn something? k-NN of the trained teacher against its random-init twin.

DINO monitors training with a weighted k-NN classifier on frozen features (Caron et al. 2021,
§4.1). Here it answers one question for the ``cpu-demo`` preset: does the trained teacher separate
tissue classes better than the same architecture with random weights? (A random ViT already
separates colours, so only a margin over that twin shows learning.) The k-NN is the kit's one
(:func:`exaonepath_lab.probing.knn.knn_accuracy`, DINO's weighted vote), the twin the kit's one
(:func:`exaonepath_lab.encoders.random_like`, which never touches the caller's global RNG state).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from .knn import knn_accuracy


def teacher_and_random_twin(checkpoint: str, *, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """The trained teacher backbone of a kit checkpoint and a seeded random-init backbone of the same spec.

    Both come from :mod:`exaonepath_lab.encoders` (strict loading; the twin via ``random_like``, seeded
    in a forked RNG so the caller's ``torch`` random state is unchanged).
    """
    import torch

    from ..encoders import create_encoder, random_like

    with torch.random.fork_rng(devices=[]):  # building the teacher's module draws init weights before loading
        enc = create_encoder("kit-dino", checkpoint=str(checkpoint))
    return enc.model.eval(), random_like(enc, seed=seed).model.eval()


def eval_inputs(config: Any, images: np.ndarray) -> np.ndarray:
    """The evaluation images as the run saw them: Macenko-normalised to ``config.stain_target`` (the
    default target when None) with ``config.stain_policy`` when ``config.normalize``, else unchanged."""
    if not config.normalize:
        return images
    from ..stain import MacenkoNormalizer
    from ..stain.target import StainTarget

    target = StainTarget.load(config.stain_target) if config.stain_target else None
    norm = MacenkoNormalizer(target, policy=config.stain_policy)
    return np.concatenate([np.asarray(norm.normalize(images[i:i + 256]).images) for i in range(0, len(images), 256)])


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
    ``config.normalize`` with the target the run trained with (``config.stain_target``, default
    target when None) — the same input the model was trained on, as the paper does at
    feature-extraction time. Returns accuracies, the margin, the final teacher entropy,
    ``ln(out_dim)``, collapse warnings and the training time (s).
    """
    import math
    import time

    from ..pretrain.evaluate import embed_images
    from ..pretrain.trainer import train

    t0 = time.perf_counter()
    res = train(config, dataset, resume=False, progress=progress)
    seconds = time.perf_counter() - t0
    imgs = eval_inputs(config, eval_images)
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
