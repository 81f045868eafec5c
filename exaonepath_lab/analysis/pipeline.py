"""One call from a patch dataset and encoders to Figure 2 and its metrics table.

``collapse_report(dataset, {"(a) raw/raw": (enc_raw, None), "(b) raw/norm": (enc_raw, macenko),
"(c) norm/norm": (enc_norm, macenko)}, out_dir=...)`` samples K slides × M patches, extracts
(and caches) features per panel, adds the reference rows on the same patches (colour
statistics, and a random-init encoder of the same architecture, each on the panel's input),
computes metrics with bootstrap CIs, embeds, and writes ``metrics.csv``, ``figure2.html``,
``figure2.png``, ``sample.csv``, ``embeddings.npz`` and ``collapse_report.json``.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..io import atomic_path, write_json_atomic
from .collapse import collapse_metrics
from .colour_features import colour_features_dataset
from .figure2 import Figure2, figure2, thumbnail_uri
from .sampling import sample_patches


class SubsetDataset:
    """Rows ``indices`` of an item dataset, with its ``meta`` re-indexed 0..n-1."""

    def __init__(self, dataset: Any, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.meta = dataset.meta.iloc[self.indices].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[int(self.indices[i])])
        item["index"] = int(i)
        return item


@dataclasses.dataclass
class CollapseReport:
    """What :func:`collapse_report` produced: tidy metrics, the figure, files, feature sets."""

    metrics: pd.DataFrame
    figure: Figure2
    paths: dict[str, Path]
    features: dict[str, Any]  # name -> FeatureSet (panels) or (N, D) array (references)
    sample: pd.DataFrame


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower() or "panel"


def _norm_label(normalizer: Any) -> str:
    return "raw" if normalizer is None else type(normalizer).__name__.replace("Normalizer", "").lower() or "normalized"


def collapse_report(
    dataset: Any,
    panels: Mapping[str, tuple[Any, Any]],
    *,
    out_dir: str | Path,
    n_slides: int | None = 10,
    per_slide: int | None = 1000,
    seed: int = 0,
    method: str = "tsne",
    perplexity: float = 30.0,
    k: int = 15,
    n_boot: int = 200,
    references: bool = True,
    batch_size: int = 64,
    resize: bool = True,
    crop: bool = True,
    thumbnails: bool = True,
    progress: bool = True,
    include_plotlyjs: bool | str = True,
    n_jobs: int = 2,
) -> CollapseReport:
    """Sampling -> extraction -> metrics (+ reference rows) -> embedding -> figure and CSV files.

    Args:
        dataset: item dataset (uint8 patches + ``meta`` with ``slide_id``; ``label`` enables RI).
        panels: title -> (encoder or encoder name, stain normalizer or None).
        out_dir: where files go; features are cached in ``out_dir/features/<panel>.h5`` so a rerun
            (e.g. with another embedding) does not extract again.
        references: add "colour stats (<input>)" and "random-init <arch> (<input>)" rows for each
            distinct (architecture, normalizer) of the panels.
    """
    from ..encoders import create_encoder, random_like
    from ..features import extract_features

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = sample_patches(dataset.meta, n_slides=n_slides, per_slide=per_slide, seed=seed)
    sub = SubsetDataset(dataset, idx)
    meta = sub.meta
    with atomic_path(out / "sample.csv") as tmp:
        meta.assign(dataset_index=idx).to_csv(tmp, index=False)

    feats: dict[str, Any] = {}
    tables = []
    fig_panels: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
    refs_done: set[tuple[str, int]] = set()
    for title, (enc, normalizer) in panels.items():
        enc = create_encoder(enc) if isinstance(enc, str) else enc
        fs = extract_features(enc, sub, normalizer=normalizer, batch_size=batch_size, resize=resize, crop=crop,
                              cache_path=out / "features" / f"{_slug(title)}.h5", progress=progress)
        feats[title] = fs
        fig_panels[title] = (fs.features, meta)
        tables.append(collapse_metrics(fs.features, meta, name=title, k=k, perplexity=perplexity,
                                       n_boot=n_boot, seed=seed))
        if not references:
            continue
        label = _norm_label(normalizer)
        if ("colour", id(normalizer)) not in refs_done:
            refs_done.add(("colour", id(normalizer)))
            cf, _ = colour_features_dataset(sub, normalizer=normalizer, batch_size=batch_size)
            name = f"colour stats ({label})"
            feats[name] = cf
            tables.append(collapse_metrics(cf, meta, name=name, k=k, perplexity=perplexity, n_boot=n_boot, seed=seed))
        arch = json.dumps(enc.spec.describe(), sort_keys=True)
        if (arch, id(normalizer)) not in refs_done:
            refs_done.add((arch, id(normalizer)))
            rnd = random_like(enc, seed=seed)
            name = f"random-init {enc.spec.timm_name} ({label})"
            rfs = extract_features(rnd, sub, normalizer=normalizer, batch_size=batch_size, resize=resize, crop=crop,
                                   cache_path=out / "features" / f"{_slug(name)}.h5", progress=progress)
            feats[name] = rfs
            tables.append(collapse_metrics(rfs.features, meta, name=name, k=k, perplexity=perplexity,
                                           n_boot=n_boot, seed=seed))
    metrics = pd.concat(tables, ignore_index=True)
    with atomic_path(out / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)

    thumbs = None
    if thumbnails:
        thumbs = [thumbnail_uri(sub[i]["image"]) for i in range(len(sub))]
    fig = figure2(fig_panels, metrics=metrics, method=method, perplexity=perplexity, seed=seed, thumbnails=thumbs,
                  n_jobs=n_jobs)
    paths = fig.save(out, include_plotlyjs=include_plotlyjs)
    with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{_slug(t): c for t, c in fig.embeddings.items()})
    paths.update(metrics=out / "metrics.csv", sample=out / "sample.csv", embeddings=out / "embeddings.npz")
    write_json_atomic(out / "collapse_report.json", {
        "panels": {t: {"encoder": feats[t].key["encoder"], "normalizer": feats[t].key["normalizer"],
                       "norm_status": feats[t].status_counts()} for t in panels},
        "n_slides": n_slides, "per_slide": per_slide, "seed": seed, "method": method, "perplexity": perplexity,
        "k": k, "n_boot": n_boot, "n_sampled": int(len(idx)), "files": {k_: str(v) for k_, v in paths.items()},
    })
    paths["json"] = out / "collapse_report.json"
    return CollapseReport(metrics, fig, paths, feats, meta)
