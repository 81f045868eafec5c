"""Classification metrics of the probes: top-1 (the paper's metric), balanced accuracy, AUROC.

All functions take integer labels ``y`` (N,) in ``[0, C)`` and class scores ``scores`` (N, C)
(probabilities or any monotone score per class).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def top1_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of items whose predicted class equals the label (the paper's Table 1 metric)."""
    y = np.asarray(y)
    return float(np.mean(np.asarray(pred) == y)) if len(y) else math.nan


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y`` (scikit-learn's definition)."""
    y, pred = np.asarray(y), np.asarray(pred)
    classes = np.unique(y)
    if len(classes) == 0:
        return math.nan
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def macro_auroc(y: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """AUROC: binary (score of class 1) or macro one-vs-rest over classes.

    Returns ``(auroc, n_classes_used)``. For C > 2 a class contributes only if it has both
    positives and negatives in ``y`` (scikit-learn refuses the whole computation otherwise;
    a test split missing a class should still report the other classes, and says how many
    were used). NaN when no class qualifies.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(y):
        raise ValueError(f"scores must be (N, C) with N={len(y)}, got {scores.shape}")
    n_classes = scores.shape[1]
    if n_classes == 2:
        if len(np.unique(y)) < 2:
            return math.nan, 0
        return float(roc_auc_score(y == 1, scores[:, 1])), 2
    aucs = []
    for c in range(n_classes):
        pos = y == c
        if pos.any() and (~pos).any():
            aucs.append(roc_auc_score(pos, scores[:, c]))
    return (float(np.mean(aucs)) if aucs else math.nan), len(aucs)


def classification_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Top-1, balanced accuracy and AUROC of scores (N, C) against labels (N,)."""
    scores = np.asarray(scores)
    pred = scores.argmax(axis=1)
    auroc, n_auc = macro_auroc(y, scores)
    return {
        "top1": top1_accuracy(y, pred),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "auroc": auroc,
        "auroc_classes": n_auc,
        "n": int(len(y)),
    }


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single seed) over seeds."""
    v = np.asarray([x for x in values], dtype=np.float64)
    if len(v) == 0:
        return {"mean": math.nan, "std": math.nan, "values": []}
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "values": [float(x) for x in v]}
