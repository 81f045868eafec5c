"""An ipywidgets explorer of feature collapse: switch encoder, normalization, embedding
method, perplexity and colouring (slide vs biological class); hover shows the patch.

>>> ex = CollapseExplorer({("exaonepath", "raw"): fs_raw, ("exaonepath", "macenko"): fs_norm},
...                       thumbnails=uris)                                      # doctest: +SKIP
>>> ex.widget                                                                   # doctest: +SKIP

Embeddings and metrics are cached per choice, so switching back is instant. The plot is
rendered as plotly HTML (with the hover-thumbnail script) into an ``Output`` widget, which
works without ``anywidget``; ``include_plotlyjs`` is passed through (True embeds plotly.js
for offline use, ``"cdn"`` keeps notebooks small when online).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .collapse import collapse_metrics, format_metrics
from .embeddings import METHODS, embed
from .figure2 import figure2, hover_script


def _as_pair(v: Any) -> tuple[np.ndarray, pd.DataFrame]:
    if hasattr(v, "features") and hasattr(v, "meta"):
        return np.asarray(v.features), v.meta.reset_index(drop=True)
    feats, meta = v
    return np.asarray(feats), meta.reset_index(drop=True)


class CollapseExplorer:
    """Interactive view over feature sets keyed by ``(encoder, normalization)``.

    Args:
        feature_sets: ``(encoder, normalization)`` -> FeatureSet or (features, meta).
        thumbnails: data-URIs per row (same rows in every set) or per key.
        n_boot: bootstrap replicates for the metric caption (small: it is recomputed per set).
    """

    def __init__(self, feature_sets: Mapping[tuple[str, str], Any], *,
                 thumbnails: Sequence[str] | Mapping[tuple[str, str], Sequence[str]] | None = None,
                 seed: int = 0, n_boot: int = 50, include_plotlyjs: bool | str = True, method: str = "tsne",
                 n_jobs: int = 2) -> None:
        import ipywidgets as w

        if not feature_sets:
            raise ValueError("CollapseExplorer: no feature sets given")
        self.sets = {tuple(k): _as_pair(v) for k, v in feature_sets.items()}
        self.thumbnails = thumbnails
        self.seed, self.n_boot, self.include_plotlyjs, self.n_jobs = seed, n_boot, include_plotlyjs, n_jobs
        self._emb: dict[tuple, np.ndarray] = {}
        self._met: dict[tuple, pd.DataFrame] = {}
        encs = sorted({k[0] for k in self.sets})
        norms = sorted({k[1] for k in self.sets})
        meta0 = next(iter(self.sets.values()))[1]
        colour_opts = [c for c in ("slide_id", "class_name", "label") if c in meta0.columns]
        self.encoder = w.Dropdown(options=encs, value=encs[0], description="encoder")
        self.normalization = w.Dropdown(options=norms, value=norms[0], description="input")
        self.method = w.ToggleButtons(options=list(METHODS), value=method, description="method")
        self.perplexity = w.IntSlider(value=30, min=5, max=100, step=5, description="perplexity")
        self.colour = w.Dropdown(options=colour_opts, value=colour_opts[0], description="colour by")
        self.caption = w.HTML()
        # An HTML widget holding an iframe (not an Output widget): headless runners (nbclient/papermill)
        # can hang on Output-widget capture (jupyter/nbclient#312), and the iframe runs plotly's script.
        self.output = w.HTML()
        for c in (self.encoder, self.normalization, self.method, self.perplexity, self.colour):
            c.observe(lambda _change: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.encoder, self.normalization, self.colour]),
                              w.HBox([self.method, self.perplexity]), self.caption, self.output])
        self.figure: Any = None
        self.html = ""  # the last rendered plot (also shown in ``output`` inside a notebook)
        self.update()

    @property
    def key(self) -> tuple[str, str]:
        return (self.encoder.value, self.normalization.value)

    def embedding(self) -> np.ndarray:
        """(N, 2) coordinates for the current choice (cached)."""
        ck = (*self.key, self.method.value, self.perplexity.value if self.method.value == "tsne" else None)
        if ck not in self._emb:
            feats, _ = self.sets[self.key]
            self._emb[ck] = embed(feats, method=self.method.value, seed=self.seed,
                                  perplexity=float(self.perplexity.value), n_jobs=self.n_jobs).coords
        return self._emb[ck]

    def metrics(self) -> pd.DataFrame:
        if self.key not in self._met:
            feats, meta = self.sets[self.key]
            self._met[self.key] = collapse_metrics(feats, meta, name=" / ".join(self.key), n_boot=self.n_boot,
                                                   seed=self.seed)
        return self._met[self.key]

    def update(self) -> None:
        """Redraw for the current widget values."""
        if self.key not in self.sets:
            self.caption.value = f"<b>no features for {self.key}</b> (available: {sorted(self.sets)})"
            self.output.value = ""
            self.figure, self.html = None, ""
            return
        feats, meta = self.sets[self.key]
        title = " / ".join(self.key)
        thumbs = self.thumbnails.get(self.key) if isinstance(self.thumbnails, Mapping) else self.thumbnails
        met = self.metrics()
        fig = figure2({title: self.embedding()}, meta, metrics=met, method=self.method.value,
                      perplexity=float(self.perplexity.value), seed=self.seed, color_by=self.colour.value,
                      thumbnails=thumbs)
        import matplotlib.pyplot as plt

        plt.close(fig.matplotlib)  # the widget shows the interactive version only
        self.figure = fig.plotly
        self.caption.value = format_metrics(met, title)
        self.html = fig.plotly.to_html(full_html=False, include_plotlyjs=self.include_plotlyjs,
                                       post_script=hover_script(fig.thumbnails))
        import html as _html

        page = f"<html><head><meta charset='utf-8'></head><body style='margin:0'>{self.html}</body></html>"
        self.output.value = (f'<iframe srcdoc="{_html.escape(page, quote=True)}" '
                             'style="width:100%;height:560px;border:0"></iframe>')
