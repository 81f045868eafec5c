"""Figure 3 of the paper: the distribution of source MPP over all extracted patches.

Reads tiling manifests (``manifest.csv`` written by ``exaonepath-lab tile``) and
weights each slide's exact MPP by its patch count; rows with status ``failed`` are
left out (they yielded no patch). Bins are narrow (0.01 µm/px by default, centred on
multiples of it) so that 0.243 and 0.25 µm/px, which some tools snap to the same "40x", stay apart.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from ..io import atomic_path

ManifestLike = Union[str, os.PathLike, pd.DataFrame]
REFERENCE_MPP = {0.25: "0.25 µm/px (40x)", 0.5: "0.5 µm/px (20x)"}
TITLE = "Figure 3: MPP distribution of extracted patches"


def _load(src: ManifestLike) -> pd.DataFrame:
    if isinstance(src, pd.DataFrame):
        df = src
    else:
        p = Path(src)
        if p.is_dir():
            p = p / "manifest.csv"
        if not p.exists():
            raise FileNotFoundError(f"tiling manifest not found: {p}; run `exaonepath-lab tile ... --out DIR` first "
                                    "(and `--merge` for sharded runs)")
        df = pd.read_csv(p)
    missing = {"mpp", "n_patches", "status"} - set(df.columns)
    if missing:
        raise ValueError(f"tiling manifest {src if not isinstance(src, pd.DataFrame) else '(DataFrame)'} lacks "
                         f"columns {sorted(missing)}; expected the manifest written by `exaonepath-lab tile`")
    return df


def _groups(manifests: ManifestLike | Sequence[ManifestLike] | Mapping[str, ManifestLike]) -> dict[str, pd.DataFrame]:
    """Named manifest tables: a Mapping keeps its names (stacked bars), anything else is one group."""
    if isinstance(manifests, Mapping):
        return {str(k): _load(v) for k, v in manifests.items()}
    items = [manifests] if isinstance(manifests, (str, os.PathLike, pd.DataFrame)) else list(manifests)
    if not items:
        raise ValueError("figure 3 needs at least one tiling manifest")
    return {"patches": pd.concat([_load(m) for m in items], ignore_index=True)}


def mpp_histogram(
    manifests: ManifestLike | Sequence[ManifestLike] | Mapping[str, ManifestLike],
    *,
    bin_width: float = 0.01,
) -> pd.DataFrame:
    """Patch counts per MPP bin: one row per (group, bin) with ``group``, ``mpp_lo``,
    ``mpp_hi`` (µm/px), ``n_patches`` and ``n_slides``; empty bins omitted."""
    rows = []
    for name, df in _groups(manifests).items():
        ok = df[(df["status"] != "failed") & (df["n_patches"] > 0) & df["mpp"].notna()]
        # bins centred on multiples of bin_width, so 0.25 and 0.5 sit mid-bar
        bins = np.floor(ok["mpp"].to_numpy(float) / bin_width + 0.5).astype(np.int64)
        g = pd.DataFrame({"bin": bins, "n": ok["n_patches"].to_numpy(np.int64)}).groupby("bin")["n"].agg(["sum", "size"])
        for b, r in g.iterrows():
            rows.append({"group": name, "mpp_lo": (b - 0.5) * bin_width, "mpp_hi": (b + 0.5) * bin_width,
                         "n_patches": int(r["sum"]), "n_slides": int(r["size"])})
    return pd.DataFrame(rows, columns=["group", "mpp_lo", "mpp_hi", "n_patches", "n_slides"])


def _x_range(h: pd.DataFrame, bin_width: float) -> tuple[float, float]:
    lo = min([0.2] + h["mpp_lo"].tolist()) - bin_width
    hi = max([0.55] + h["mpp_hi"].tolist()) + bin_width
    return max(0.0, lo), hi


def figure3_plotly(
    manifests: ManifestLike | Sequence[ManifestLike] | Mapping[str, ManifestLike],
    *,
    bin_width: float = 0.01,
    title: str = TITLE,
) -> Any:
    """Interactive histogram (plotly ``Figure``) of source MPP over extracted patches.

    ``manifests``: a manifest path, tiling output folder, DataFrame, a list of them, or a
    ``{name: manifest}`` mapping (stacked bars, e.g. one colour per cohort).
    """
    import plotly.graph_objects as go

    h = mpp_histogram(manifests, bin_width=bin_width)
    fig = go.Figure()
    for name, g in h.groupby("group", sort=False):
        fig.add_trace(go.Bar(
            x=(g["mpp_lo"] + bin_width / 2).round(6), y=g["n_patches"], width=bin_width, name=name,
            customdata=np.stack([g["mpp_lo"], g["mpp_hi"], g["n_slides"]], axis=1),
            hovertemplate="MPP %{customdata[0]:.3f}–%{customdata[1]:.3f} µm/px<br>%{y:,} patches"
                          "<br>%{customdata[2]} slides<extra>%{fullData.name}</extra>",
        ))
    for x, label in REFERENCE_MPP.items():
        fig.add_vline(x=x, line_dash="dash", line_color="gray", annotation_text=label, annotation_position="top")
    if h.empty:
        fig.add_annotation(text="no extracted patches (every slide failed or had no tissue)", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, barmode="stack", bargap=0, template="plotly_white",
                      xaxis_title="source MPP (µm/px)", yaxis_title="number of patches",
                      xaxis_range=list(_x_range(h, bin_width)), showlegend=h["group"].nunique() > 1)
    return fig


def figure3_png(
    manifests: ManifestLike | Sequence[ManifestLike] | Mapping[str, ManifestLike],
    path: str | os.PathLike,
    *,
    bin_width: float = 0.01,
    title: str = TITLE,
    dpi: int = 150,
) -> Path:
    """Static PNG of the same histogram (matplotlib), written atomically; returns ``path``."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    h = mpp_histogram(manifests, bin_width=bin_width)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    bottom: dict[float, float] = {}
    for name, g in h.groupby("group", sort=False):
        base = np.array([bottom.get(x, 0.0) for x in g["mpp_lo"]])
        ax.bar(g["mpp_lo"], g["n_patches"], width=bin_width, align="edge", bottom=base, label=name, edgecolor="none")
        for x, v, b in zip(g["mpp_lo"], g["n_patches"], base):
            bottom[x] = b + v
    for x, label in REFERENCE_MPP.items():
        ax.axvline(x, ls="--", color="gray", lw=1)
        ax.text(x, 1.0, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8, color="gray")
    if h.empty:
        ax.text(0.5, 0.5, "no extracted patches", transform=ax.transAxes, ha="center")
    ax.set_xlim(*_x_range(h, bin_width))
    ax.set_xlabel("source MPP (µm/px)")
    ax.set_ylabel("number of patches")
    ax.set_title(title, pad=18)
    if h["group"].nunique() > 1:
        ax.legend(frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)
