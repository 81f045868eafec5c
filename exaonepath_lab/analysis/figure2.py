"""Figure 2: 2-D embeddings side by side, coloured by slide, metrics under each panel.

The paper's panels: (a) model trained on raw patches, raw input; (b) the same model on
Macenko-normalized input; (c) model trained on normalized patches, normalized input. Any
number of panels works. Output is both interactive (plotly; hovering a point shows its
patch thumbnail in the saved HTML) and static (matplotlib PNG, because plotly's PNG export
needs a browser binary).

Compute, then draw (scanpy's ``tl``/``pl`` split): :func:`embed_panels` computes the 2-D
coordinates, :func:`~exaonepath_lab.analysis.collapse.collapse_metrics` the numbers, and
:func:`figure2` only draws what it is given.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path
from .collapse import format_metrics
from .embeddings import embed

#: How each embedding method is spelled in titles.
METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
#: Hover thumbnail side (px): nuclei stay visible (a patch read at ~1 µm/px, shown without upscaling).
THUMB_PX = 112

#: Shows the hovered point's thumbnail beside the cursor: customdata[-1] indexes ``THUMBS``, one
#: shared array of data: URIs (a patch shown in three panels is stored once).
HOVER_THUMBNAIL_JS = """
(function(){var gd=document.getElementById('{plot_id}');if(!gd)return;
var T=(typeof THUMBS!=='undefined')?THUMBS:[];
var img=document.createElement('img');img.style.cssText='position:fixed;pointer-events:none;display:none;'+
'width:%dpx;height:auto;border:2px solid #333;z-index:1000;background:#fff';
document.body.appendChild(img);
gd.on('plotly_hover',function(d){var p=d.points[0];var c=p.customdata;if(!c)return;var k=+c[c.length-1];
if(!(k>=0&&k<T.length))return;img.src=T[k];var e=d.event;img.style.left=(e.clientX+18)+'px';
img.style.top=(e.clientY+18)+'px';img.style.display='block';});
gd.on('plotly_unhover',function(){img.style.display='none';});})();
"""


def hover_script(thumbnails: Sequence[str] | None) -> str:
    """The post_script for plotly's ``to_html``/``write_html``: the thumbnail array + hover handler."""
    return f"var THUMBS={json.dumps(list(thumbnails or []))};\n" + HOVER_THUMBNAIL_JS.replace("%dpx", f"{2 * THUMB_PX}px")


@dataclasses.dataclass
class Figure2:
    """The figure in both forms plus what it was made from."""

    plotly: Any  # plotly.graph_objects.Figure
    matplotlib: Any  # matplotlib.figure.Figure
    embeddings: dict[str, np.ndarray]
    metrics: pd.DataFrame | None
    params: dict[str, Any]
    thumbnails: list[str] = dataclasses.field(default_factory=list)  # indexed by customdata[-1]

    def save(self, out_dir: str | Path, *, stem: str = "figure2", include_plotlyjs: bool | str = True,
             dpi: int = 150) -> dict[str, Path]:
        """Write ``stem.html`` (with hover thumbnails) and ``stem.png`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # write_html (not to_html) so include_plotlyjs="directory" also writes plotly.min.js beside it.
        with atomic_path(out / f"{stem}.html") as tmp:
            self.plotly.write_html(str(tmp), include_plotlyjs=include_plotlyjs, full_html=True,
                                   post_script=hover_script(self.thumbnails))
        paths = {"html": out / f"{stem}.html"}
        with atomic_path(out / f"{stem}.png") as tmp:
            self.matplotlib.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        paths["png"] = out / f"{stem}.png"
        return paths


def thumbnail_uri(image: np.ndarray, size: int = THUMB_PX, quality: int = 75) -> str:
    """uint8 (H, W, 3) -> JPEG ``data:image/jpeg;base64,...`` URI (at most ``size`` px) for hover previews.

    Pass the patch as read (its read resolution); it is only ever shrunk. At 112 px a JPEG is
    ~3-4 kB, so 2,500 patches add ~10 MB to the HTML, stored once however many panels show them.
    """
    from PIL import Image

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def slide_colours(slides: Sequence[str]) -> dict[str, str]:
    """Stable slide -> hex colour (tab10, then tab20, then hsv), same in every panel."""
    import matplotlib

    uniq = sorted(set(map(str, slides)))
    cmap = matplotlib.colormaps["tab10" if len(uniq) <= 10 else "tab20" if len(uniq) <= 20 else "hsv"]
    n = max(len(uniq), 1)
    return {s: matplotlib.colors.to_hex(cmap(i if len(uniq) <= 20 else i / n)) for i, s in enumerate(uniq)}


def embed_panels(
    features: Mapping[str, np.ndarray],
    *,
    method: str = "tsne",
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int = 2,
) -> dict[str, np.ndarray]:
    """(N, 2) coordinates per panel (the compute step of Figure 2); see :func:`~.embeddings.embed`."""
    return {t: embed(np.asarray(f), method=method, seed=seed, perplexity=perplexity, n_jobs=n_jobs).coords
            for t, f in features.items()}


def _shared_thumbnails(titles: list[str], metas: Mapping[str, pd.DataFrame],
                       thumbnails: Mapping[str, Sequence[str]] | Sequence[str] | None) -> tuple[list[str], dict[str, int]]:
    """One shared thumbnail array; per panel an offset (panels showing the same list share it)."""
    all_thumbs: list[str] = []
    offsets: dict[str, int] = {}
    seen: dict[int, int] = {}
    for t in titles:
        th = thumbnails.get(t) if isinstance(thumbnails, Mapping) else thumbnails
        if th is None:
            continue
        if len(th) != len(metas[t]):
            raise ValueError(f"figure2: panel {t!r} has {len(metas[t])} points but {len(th)} thumbnails")
        if id(th) not in seen:
            seen[id(th)] = len(all_thumbs)
            all_thumbs.extend(th)
        offsets[t] = seen[id(th)]
    return all_thumbs, offsets


def figure2(
    embeddings: Mapping[str, np.ndarray],
    meta: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    metrics: pd.DataFrame | None = None,
    method: str = "tsne",
    perplexity: float | None = None,
    seed: int | None = None,
    color_by: str = "slide_id",
    thumbnails: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    marker_size: float = 4.0,
) -> Figure2:
    """Draw precomputed 2-D ``embeddings`` (title -> (N, 2)) side by side, coloured by ``color_by``.

    Args:
        meta: the points' table (one for all panels, or one per title) with ``color_by`` [and
            ``slide_id``/``class_name`` for the hover text].
        metrics: ``collapse_metrics`` rows whose ``features`` equals a title: the caption under it.
        method, perplexity, seed: how the coordinates were made (titles and ``params`` only).
        thumbnails: data-URIs per point (one list for all panels, or per title) shown on hover.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not embeddings:
        raise ValueError("figure2: no panels given")
    titles = list(embeddings)
    metas = {t: (meta[t] if isinstance(meta, Mapping) else meta).reset_index(drop=True) for t in titles}
    coords = {t: np.asarray(embeddings[t]) for t in titles}
    for t in titles:
        if color_by not in metas[t].columns:
            raise ValueError(f"figure2: panel {t!r} meta lacks {color_by!r} (columns: {list(metas[t].columns)})")
        if len(coords[t]) != len(metas[t]):
            raise ValueError(f"figure2: panel {t!r} has {len(coords[t])} points but {len(metas[t])} meta rows")
    all_groups = sorted({str(v) for t in titles for v in metas[t][color_by]})
    colours = slide_colours(all_groups)
    captions = {t: (format_metrics(metrics, t) if metrics is not None else "") for t in titles}
    all_thumbs, offsets = _shared_thumbnails(titles, metas, thumbnails)
    label = METHOD_LABELS.get(method, method)

    # Long titles wrap at their commas, and a part still too long at its spaces (an encoder name such as
    # 'timm:vit_tiny_patch16_224 (tiny1)'), so neighbouring panels' titles do not overlap.
    shown = [_wrap_title(t) for t in titles] if any(len(t) > TITLE_WIDTH for t in titles) else titles
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=shown, horizontal_spacing=0.04)
    for j, t in enumerate(titles, start=1):
        m = metas[t]
        groups = m[color_by].astype(str).to_numpy()
        for g in all_groups:
            ix = np.flatnonzero(groups == g)
            if not len(ix):
                continue
            custom = np.column_stack([
                groups[ix],
                m["class_name"].astype(str).to_numpy()[ix] if "class_name" in m else np.full(len(ix), ""),
                m["slide_id"].astype(str).to_numpy()[ix] if "slide_id" in m else np.full(len(ix), ""),
                (ix + offsets[t]) if t in offsets else np.full(len(ix), -1),
            ]).astype(object)
            fig.add_trace(go.Scattergl(
                x=coords[t][ix, 0], y=coords[t][ix, 1], mode="markers", name=g, legendgroup=g,
                showlegend=(j == 1), marker={"size": marker_size, "color": colours[g], "opacity": 0.8},
                customdata=custom, hovertemplate=f"{color_by}: %{{customdata[0]}}<br>slide: %{{customdata[2]}}"
                "<br>class: %{customdata[1]}<extra></extra>",
            ), row=1, col=j)
        fig.update_xaxes(showticklabels=False, title_text=captions[t].replace(" · ", "<br>"), title_font_size=10,
                         row=1, col=j)
        fig.update_yaxes(showticklabels=False, row=1, col=j)
    # Tall enough that a legend of ≤ 20 entries (~20 px each) is shown whole, without scrolling.
    height = max(480, 200 + 21 * min(len(all_groups), 20))
    # No fixed width: the figure fills its page or iframe, so the legend is never cut off or scrolled to.
    fig.update_layout(height=height, autosize=True, template="plotly_white",
                      legend_title_text=color_by, legend={"font": {"size": 11}, "tracegroupgap": 0},
                      margin={"b": 140, "t": 110 + 20 * max(0, max(s.count("<br>") for s in shown) - 1)},
                      title_text=f"{label} of features coloured by {color_by}")
    mfig = _figure2_png(titles, coords, metas, captions, all_groups, colours, color_by)
    params = {"method": method, "perplexity": perplexity, "seed": seed, "color_by": color_by, "panels": titles}
    return Figure2(fig, mfig, coords, metrics, params, all_thumbs)


TITLE_WIDTH = 28
"""Characters per line of a panel title in the interactive figure (~ a quarter of a 1,400 px page)."""


def _wrap_title(title: str) -> str:
    """'a, b' -> 'a,<br>b', each part also wrapped at spaces to :data:`TITLE_WIDTH` characters."""
    import textwrap

    parts = [textwrap.wrap(p, TITLE_WIDTH, break_long_words=False) or [p] for p in title.split(", ")]
    return ",<br>".join("<br>".join(lines) for lines in parts)


def _figure2_png(titles: list[str], coords: Mapping[str, np.ndarray], metas: Mapping[str, pd.DataFrame],
                 captions: Mapping[str, str], all_groups: list[str], colours: Mapping[str, str], color_by: str) -> Any:
    import matplotlib.pyplot as plt

    mfig, axes = plt.subplots(1, len(titles), figsize=(4.4 * len(titles), 5.0), squeeze=False)
    for ax, t in zip(axes[0], titles):
        groups = metas[t][color_by].astype(str).to_numpy()
        dot = float(np.clip(3000.0 / max(len(groups), 1), 1.5, 25.0))  # pt²: readable at 30 and 10,000 points
        for g in all_groups:
            ix = groups == g
            if ix.any():
                ax.scatter(coords[t][ix, 0], coords[t][ix, 1], s=dot, c=colours[g], label=g,
                           alpha=0.8, linewidths=0, rasterized=True)
        ax.set_title(t, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(captions[t].replace(" · ", "\n"), fontsize=9)
    if len(all_groups) <= 20:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, markerscale=4, title=color_by,
                           frameon=False)
    mfig.tight_layout()
    return mfig
