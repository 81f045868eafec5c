"""Downstream evaluation: the six datasets of Table 1 with the paper's splits, the paper's linear
probe, weighted k-NN, manifests and the download validator.

>>> from exaonepath_lab.probing import load_dataset, run_linear_probe, ProbeConfig   # doctest: +SKIP
"""
from __future__ import annotations

from .check import CheckReport, check_all, check_dataset
from .datasets import DATASETS, DatasetSpec, dataset_spec, load_dataset, resolve_dataset_root
from .evaluate import evaluate_features, write_result
from .knn import knn_scores, run_knn
from .config import ProbeConfig
from .linear import LinearProbe, run_linear_probe, train_linear_probe
from .metrics import classification_metrics

__all__ = [
    "DATASETS", "CheckReport", "DatasetSpec", "LinearProbe", "ProbeConfig", "check_all", "check_dataset",
    "classification_metrics", "dataset_spec", "evaluate_features", "knn_scores", "load_dataset", "resolve_dataset_root",
    "run_knn", "run_linear_probe", "train_linear_probe", "write_result",
]
