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

from .metrics import balanced_accuracy, classification_metrics


def nearest_neighbours(
    features: np.ndarray,
    k: int,
    *,
    queries: np.ndarray | None = None,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN: (M, k) indices into ``features`` and their cosine similarities, best first.

    The kit's one neighbour search (brute force, torch matmul in chunks of ``chunk`` query rows; a
    chunk × N similarity block stays ≤ 400 MB; ~1 s for 10,000 × 768 on 2 cores). Rows are
    L2-normalised, so the ranking equals Euclidean ranking of normalised features. With ``queries``
    None the queries are ``features`` themselves and each point is excluded by index (exact duplicates
    still count as neighbours); ``k`` is then clipped to N − 1, else to N.
    """
    bank = torch.nn.functional.normalize(torch.from_numpy(np.asarray(features, dtype=np.float32)), dim=1)
    self_query = queries is None
    q_all = bank if self_query else torch.nn.functional.normalize(
        torch.from_numpy(np.asarray(queries, dtype=np.float32)), dim=1)
    if q_all.shape[1] != bank.shape[1]:
        raise ValueError(f"nearest_neighbours: bank {tuple(bank.shape)} and queries {tuple(q_all.shape)} differ in D")
    n, m = len(bank), len(q_all)
    k = int(min(k, n - 1 if self_query else n))
    if k < 1:
        raise ValueError(f"nearest_neighbours: need ≥ {2 if self_query else 1} bank rows, got {n}")
    chunk = max(64, min(chunk, 100_000_000 // max(n, 1)))
    idx = np.empty((m, k), dtype=np.int64)
    sims = np.empty((m, k), dtype=np.float32)
    for lo in range(0, m, chunk):
        sim = q_all[lo:lo + chunk] @ bank.T
        if self_query:
            r = torch.arange(sim.shape[0])
            sim[r, r + lo] = -float("inf")
        val, ind = sim.topk(k, dim=1)
        idx[lo:lo + chunk] = ind.numpy()
        sims[lo:lo + chunk] = val.numpy()
    return idx, sims


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
    if min(int(k), len(train_x)) < 1:
        raise ValueError("k-NN needs at least one train item")
    idx, sim = nearest_neighbours(train_x, k, queries=query_x, chunk=chunk)
    w = torch.from_numpy(sim).double().div(temperature).exp()
    votes = torch.zeros(len(query_x), n_classes, dtype=torch.float64)
    votes.scatter_add_(1, torch.from_numpy(train_y)[torch.from_numpy(idx)], w)
    return (votes / votes.sum(1, keepdim=True)).numpy()


def knn_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    k: int = 20,
    temperature: float = 0.07,
    n_splits: int = 5,
    seed: int = 0,
) -> float:
    """Mean balanced accuracy of DINO's weighted k-NN vote (:func:`knn_scores`) over ``n_splits`` folds.

    With ``groups`` (slide ids) the folds never split a slide (``GroupKFold``): a neighbour from the
    same slide cannot help, the honest test for a cohort whose slides differ in staining. Otherwise
    stratified, seeded folds. Items with label < 0 are left out.
    """
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    x, y = np.asarray(features, dtype=np.float32)[keep], labels[keep]
    if len(np.unique(y)) < 2:
        raise ValueError(f"knn_accuracy: need ≥ 2 classes with label ≥ 0, got {np.unique(y).tolist()}")
    if groups is not None:
        g = np.asarray(groups)[keep]
        splits = GroupKFold(n_splits=min(n_splits, len(np.unique(g)))).split(x, y, g)
    else:
        splits = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y)
    n_classes = int(y.max()) + 1
    scores = []
    for tr, te in splits:
        votes = knn_scores(x[tr], y[tr], x[te], n_classes=n_classes, k=k, temperature=temperature)
        scores.append(balanced_accuracy(y[te], votes.argmax(1)))
    return float(np.mean(scores))


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
