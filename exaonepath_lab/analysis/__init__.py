"""Sampling, 2-D embeddings, collapse metrics, Figure 2 and the one collapse pipeline.

Typical use::

    from exaonepath_lab.analysis import collapse_report, metrics_table, collapse_reading
    rep = collapse_report(dataset, {"(a) raw": (enc, None), "(c) macenko": (enc_norm, macenko)},
                          out_dir="out", n_slides=10, per_slide=1000)
    metrics_table(rep.metrics); rep.differences; collapse_reading(rep.metrics, rep.differences, ...)

Lower level: ``collapse_metrics`` (one feature set), ``collapse_scores`` + ``paired_differences``
(the same slides drawn for two feature sets), ``embed_panels`` (compute) and ``figure2`` (draw).
"""
from __future__ import annotations

from .collapse import (
    METRICS,
    CollapseScores,
    collapse_metrics,
    collapse_scores,
    format_metrics,
    knn,
    metrics_from_scores,
    metrics_wide,
    paired_differences,
)
from .colour_features import colour_features, colour_features_dataset
from .embeddings import Embedding, embed
from .figure2 import Figure2, embed_panels, figure2, thumbnail_uri
from .gallery import gallery_html, neighbour_gallery
from .inputs import open_patches
from .pipeline import (
    CollapseReport,
    SamplePlan,
    SubsetDataset,
    collapse_from_features,
    collapse_report,
    plan_sample,
)
from .sampling import sample_patches
from .summary import FIGURE2_PANELS, collapse_reading, differences_table, metrics_table

__all__ = [
    "FIGURE2_PANELS",
    "METRICS",
    "CollapseReport",
    "CollapseScores",
    "Embedding",
    "Figure2",
    "SamplePlan",
    "SubsetDataset",
    "collapse_from_features",
    "collapse_metrics",
    "collapse_reading",
    "collapse_report",
    "collapse_scores",
    "colour_features",
    "colour_features_dataset",
    "differences_table",
    "embed",
    "embed_panels",
    "figure2",
    "format_metrics",
    "gallery_html",
    "knn",
    "metrics_from_scores",
    "metrics_table",
    "metrics_wide",
    "neighbour_gallery",
    "open_patches",
    "paired_differences",
    "plan_sample",
    "sample_patches",
    "thumbnail_uri",
]
