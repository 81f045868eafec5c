"""Nearest-neighbour patch gallery: the same query patches, their nearest neighbours under each feature set.

Under collapse, a patch's neighbours come from its own slide whatever the tissue; after
normalization (panel (c)) they should come from other slides with similar tissue. Compute with
:func:`neighbour_gallery` (a tidy table), draw with :func:`gallery_html` (thumbnails in a grid,
the neighbour's border coloured by same slide / other slide).
"""
from __future__ import annotations

import html
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..probing.knn import nearest_neighbours


def neighbour_gallery(
    features: Mapping[str, np.ndarray],
    meta: pd.DataFrame,
    *,
    queries: Sequence[int] | None = None,
    n_queries: int = 6,
    k: int = 8,
    seed: int = 0,
    slide_col: str = "slide_id",
) -> pd.DataFrame:
    """For each feature set (same rows as ``meta``) and query row: its ``k`` nearest other patches.

    Queries default to ``n_queries`` rows drawn from different slides (seeded). Columns:
    ``features, query, query_slide, rank, neighbour, neighbour_slide, same_slide, similarity``.
    """
    slides = meta[slide_col].astype(str).to_numpy()
    if queries is None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(np.unique(slides))
        queries = [int(rng.choice(np.flatnonzero(slides == s))) for s in order[:n_queries]]
    q = np.asarray(queries, dtype=np.int64)
    rows = []
    for name, x in features.items():
        x = np.asarray(x, dtype=np.float32)
        if len(x) != len(meta):
            raise ValueError(f"neighbour_gallery: {name!r} has {len(x)} rows but meta has {len(meta)}")
        idx, sim = nearest_neighbours(x, k + 1, queries=x[q])
        for qi, (nb, s) in zip(q, zip(idx, sim)):
            keep = nb != qi  # the query itself (similarity 1) is not its own neighbour
            for rank, (j, sj) in enumerate(zip(nb[keep][:k], s[keep][:k]), start=1):
                rows.append({"features": name, "query": int(qi), "query_slide": slides[qi], "rank": rank,
                             "neighbour": int(j), "neighbour_slide": slides[j], "same_slide": bool(slides[j] == slides[qi]),
                             "similarity": float(sj)})
    return pd.DataFrame(rows)


def gallery_html(gallery: pd.DataFrame, thumbnails: Sequence[str], *, px: int = 72) -> str:
    """An HTML grid per feature set: a row per query (query first, then its neighbours).

    ``thumbnails``: data-URIs indexed like ``meta`` (e.g. :func:`~.figure2.thumbnail_uri` of each patch).
    Neighbours from the query's own slide get a red border, from another slide a green one.
    """
    parts = ['<div class="gallery">']
    for name, g in gallery.groupby("features", sort=False):
        share = g["same_slide"].mean()
        parts.append(f"<h4>{html.escape(str(name))} — {100 * share:.0f}% of neighbours from the query's slide</h4>")
        parts.append("<table>")
        for qi, h in g.groupby("query", sort=False):
            cells = [f'<td><img src="{thumbnails[qi]}" width="{px}" style="border:3px solid #333" '
                     f'title="query, slide {html.escape(str(h.iloc[0]["query_slide"]))}"></td>']
            for r in h.itertuples():
                colour = "#d93025" if r.same_slide else "#188038"
                cells.append(f'<td><img src="{thumbnails[r.neighbour]}" width="{px}" style="border:3px solid {colour}" '
                             f'title="rank {r.rank}, slide {html.escape(str(r.neighbour_slide))}, '
                             f'cos {r.similarity:.2f}"></td>')
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("</div>")
    return "\n".join(parts)
