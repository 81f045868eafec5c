"""Weighted k-NN evaluation on frozen features (DINO's ``eval_knn``), the quick alternative to the probe.

Formula (Caron et al. 2021, Wu et al. 2018): features are L2-normalized; for a query, take the
``k`` train items of highest cosine similarity ``s_j``; class ``c`` receives the vote
``sum_j exp(s_j / T) * [y_j == c]``; the prediction is the class with the largest vote. Defaults
k = 20, T = 0.07 as in DINO. Votes normalized to sum to 1 serve as scores for AUROC.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .metrics import classification_metrics


def knn_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    *,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> np.ndarray:
    """Normalized class votes (M, C) for queries (M, D) from train features (N, D) and labels (N,)."""
    train_x = np.asarray(train_x, dtype=np.float32)
    query_x = np.asarray(query_x, dtype=np.float32)
    train_y = np.asarray(train_y, dtype=np.int64)
    if train_x.ndim != 2 or query_x.ndim != 2 or train_x.shape[1] != query_x.shape[1]:
        raise ValueError(f"train {train_x.shape} and query {query_x.shape} must be (N, D) and (M, D) with equal D")
    if len(train_x) != len(train_y):
        raise ValueError(f"{len(train_x)} train rows but {len(train_y)} labels")
    if len(train_y) and (train_y.min() < 0 or train_y.max() >= n_classes):
        raise ValueError(f"train labels must lie in [0, {n_classes}); got [{train_y.min()}, {train_y.max()}]")
    k = min(int(k), len(train_x))
    if k < 1:
        raise ValueError("k-NN needs at least one train item")
    tr = torch.nn.functional.normalize(torch.from_numpy(train_x), dim=1)
    ty = torch.from_numpy(train_y)
    out = np.empty((len(query_x), n_classes), dtype=np.float64)
    for s in range(0, len(query_x), chunk):
        q = torch.nn.functional.normalize(torch.from_numpy(query_x[s : s + chunk]), dim=1)
        sim, idx = (q @ tr.T).topk(k, dim=1)
        w = (sim.double() / temperature).exp()
        votes = torch.zeros(len(q), n_classes, dtype=torch.float64)
        votes.scatter_add_(1, ty[idx], w)
        out[s : s + chunk] = (votes / votes.sum(1, keepdim=True)).numpy()
    return out


def run_knn(
    features: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray,
    *,
    n_classes: int | None = None,
    k: int = 20,
    temperature: float = 0.07,
    train_splits: tuple[str, ...] = ("train",),
) -> dict[str, Any]:
    """k-NN with the ``train_splits`` items as the memory bank, scored on ``split == "test"``."""
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.asarray(splits).astype(str)
    bank = np.isin(splits, train_splits)
    test = splits == "test"
    if not bank.any() or not test.any():
        raise ValueError(f"k-NN needs {train_splits} and 'test' items; got {sorted(set(splits))}")
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    scores = knn_scores(features[bank], labels[bank], features[test], n_classes=n_classes, k=k, temperature=temperature)
    return {
        "method": "knn",
        "protocol": {"k": k, "temperature": temperature, "metric": "cosine", "train_splits": list(train_splits)},
        "n_classes": n_classes,
        "n": {"bank": int(bank.sum()), "test": int(test.sum())},
        "test": classification_metrics(labels[test], scores),
    }
