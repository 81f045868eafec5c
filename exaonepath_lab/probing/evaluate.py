"""From a :class:`~exaonepath_lab.features.FeatureSet` to a probe result JSON (what Table 1 reads).

The FeatureSet's ``meta`` must carry ``label`` and ``split`` (the downstream loaders put them
there). Stain-normalization statuses are counted per split and written into the result: failed
items are *kept* (the normalizer's policy decided their pixels) and counted, never dropped.
"""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..io import sha256_json, write_json_atomic
from .knn import run_knn
from .config import ProbeConfig
from .linear import run_linear_probe

RESULT_KIND = "exaonepath-lab/probe-result"


def status_counts_by_split(meta_split: np.ndarray, status: np.ndarray) -> dict[str, dict[str, int]]:
    """``{split: {status: count}}`` for every split present."""
    out: dict[str, dict[str, int]] = {}
    for s in sorted(set(meta_split.tolist())):
        st, c = np.unique(status[meta_split == s], return_counts=True)
        out[str(s)] = {str(a): int(b) for a, b in zip(st, c)}
    return out


def evaluate_features(
    fs: Any,
    *,
    dataset: str,
    model: str,
    method: str = "linear",
    config: ProbeConfig = ProbeConfig(),
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    classes: list[str] | None = None,
    model_info: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the linear probe (``method="linear"``) or k-NN (``"knn"``) on a FeatureSet; JSON-ready result."""
    meta = fs.meta
    for col in ("label", "split"):
        if col not in meta.columns:
            raise ValueError(f"feature set meta lacks {col!r}; extract features from a downstream dataset "
                             "(exaonepath_lab.probing.load_dataset), which sets label and split")
    labels = meta["label"].to_numpy(np.int64)
    splits = meta["split"].astype(str).to_numpy()
    n_classes = len(classes) if classes else int(labels.max()) + 1
    if method == "linear":
        res = run_linear_probe(fs.features, labels, splits, n_classes=n_classes, config=config, progress=progress)
    elif method == "knn":
        res = run_knn(fs.features, labels, splits, n_classes=n_classes, k=knn_k, temperature=knn_temperature)
        res["test"] = {k: {"mean": res["test"][k], "std": 0.0, "values": [res["test"][k]]}
                       for k in ("top1", "balanced_accuracy", "auroc")} | {"n": res["test"]["n"]}
    else:
        raise ValueError(f"method={method!r}: use 'linear' or 'knn'")
    from .datasets import DATASETS

    key = dict(getattr(fs, "key", {}) or {})
    return {
        "kind": RESULT_KIND,
        "version": 1,
        "model": model,
        "dataset": dataset,
        "table_column": DATASETS[dataset].table_column if dataset in DATASETS else dataset,
        "classes": classes,
        "model_info": model_info or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "encoder": key.get("encoder"),
        "preprocessing": key.get("preprocessing"),
        "normalizer": key.get("normalizer"),
        "feature_key_sha256": sha256_json(key) if key else None,
        "normalization": status_counts_by_split(splits, np.asarray(fs.norm_status).astype(str)),
        **res,
    }


def result_path(out_dir: str | Path, result: dict[str, Any]) -> Path:
    """``<out>/<model>__<dataset>__<method>.json`` with unsafe characters replaced."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", str(s))  # noqa: E731
    return Path(out_dir) / f"{safe(result['model'])}__{safe(result['dataset'])}__{safe(result['method'])}.json"


def write_result(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write the result JSON atomically; returns its path."""
    return write_json_atomic(result_path(out_dir, result), result)
