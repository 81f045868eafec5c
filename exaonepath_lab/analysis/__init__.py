"""Sampling, 2-D embeddings, collapse metrics and Figure 2 (WSI-specific feature collapse).

Typical use::

    from exaonepath_lab.analysis import sample_patches, embed, collapse_metrics
    idx = sample_patches(fs.meta, n_slides=10, per_slide=1000, seed=0)
    table = collapse_metrics(fs.features[idx], fs.meta.iloc[idx], name="raw")
    xy = embed(fs.features[idx], method="tsne").coords
"""
from __future__ import annotations

from .collapse import collapse_metrics, format_metrics, knn, metrics_wide
from .colour_features import colour_features, colour_features_dataset
from .embeddings import Embedding, embed
from .figure2 import Figure2, figure2, thumbnail_uri
from .pipeline import CollapseReport, SubsetDataset, collapse_report
from .sampling import sample_patches

__all__ = [
    "CollapseReport",
    "Figure2",
    "SubsetDataset",
    "collapse_report",
    "figure2",
    "thumbnail_uri",
    "Embedding",
    "collapse_metrics",
    "colour_features",
    "colour_features_dataset",
    "embed",
    "format_metrics",
    "knn",
    "metrics_wide",
    "sample_patches",
]
