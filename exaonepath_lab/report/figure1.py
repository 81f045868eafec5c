"""Figure 1 of the paper: average top-1 over the six tasks (a) against parameters, (b) against
training WSIs; top-left is better.

Drawn from :func:`exaonepath_lab.report.table1.build_table1`. As published: y axis "Average Top1
Accuracy (%)" from 75 to 90 (widened if a point falls outside), EXAONEPath red, the other published
models blue, every point labelled; ResNet50 ImageNet at 25M parameters in (a) although the table
leaves its size blank; the ImageNet models are absent from (b) (no WSIs); Virchow is absent from
both (incomplete row, no average). User models are overlaid as orange diamonds with error bars:
the standard deviation of their six-task average over probe seeds (``avg_std_pct``, from the
per-task ± std, seeds taken as independent between tasks). Published rows have no error bars
because the papers report none.

Deliberate difference from the paper: both x axes are **logarithmic** (the issue asks for it).
The paper uses a broken linear axis in (a) (0–400M, then 1000–1200M for GigaPath) and a linear
axis in thousands in (b); a log axis shows the 22M–1.1B and 6k–171k ranges without a break and
keeps the "top-left is better" reading.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_path

OURS = "EXAONEPath"
COLORS = {"ours": "#d62728", "published": "#1f77b4", "user": "#ff7f0e"}
Y_LABEL = "Average Top1 Accuracy (%)"
PANELS = [("params_m", "(a) Number of parameters (M, log scale)"), ("wsis_k", "(b) Number of WSIs (thousands, log scale)")]


def _avg_std_pct(r: pd.Series) -> float:
    """Std (percentage points) of a user row's six-task average: sqrt(sum of per-task variances) / 6."""
    from .table1 import TASKS

    stds = [r.get(f"{c}_std", math.nan) for c, _ in TASKS]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in stds):
        return math.nan
    return 100 * math.sqrt(sum(v * v for v in stds)) / len(stds)


def figure1_points(table: pd.DataFrame) -> pd.DataFrame:
    """Plottable rows: ``model, avg_pct, avg_std_pct, params_m, wsis_k, kind`` (ours | published | user); rows
    without an average (incomplete) are left out. Published rows use the printed average, as the paper
    plots, and have no std (NaN)."""
    rows = []
    for _, r in table.iterrows():
        avg = r["avg_published"] if r["group"] == "published" else r["avg"]
        if not (isinstance(avg, float) and math.isfinite(avg)):
            continue
        kind = "user" if r["group"] == "user" else ("ours" if r["model"] == OURS else "published")
        rows.append({"model": r["model"], "avg_pct": 100 * avg, "params_m": r["params_m"], "wsis_k": r["wsis_k"],
                     "kind": kind, "avg_std_pct": _avg_std_pct(r) if kind == "user" else math.nan})
    return pd.DataFrame(rows, columns=["model", "avg_pct", "avg_std_pct", "params_m", "wsis_k", "kind"])


def _y_range(p: pd.DataFrame) -> tuple[float, float]:
    lo, hi = 75.0, 90.0
    if len(p):
        lo, hi = min(lo, math.floor(p.avg_pct.min() - 1)), max(hi, math.ceil(p.avg_pct.max() + 1))
    return lo, hi


def _panel(p: pd.DataFrame, x: str) -> pd.DataFrame:
    q = p[np.isfinite(p[x].astype(float)) & (p[x].astype(float) > 0)]
    return q


def figure1_plotly(table: pd.DataFrame, *, title: str = "Figure 1: efficiency of pathology foundation models") -> Any:
    """Interactive two-panel figure (plotly ``Figure``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    p = figure1_points(table)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in PANELS], horizontal_spacing=0.1)
    for col, (x, xtitle) in enumerate(PANELS, start=1):
        q = _panel(p, x)
        for kind, g in q.groupby("kind", sort=False):
            fig.add_trace(go.Scatter(
                x=g[x], y=g["avg_pct"], mode="markers+text", text=g["model"], textposition="top center",
                marker=dict(color=COLORS[kind], size=11, symbol="diamond" if kind == "user" else "circle"),
                error_y=dict(type="data", array=g["avg_std_pct"].fillna(0), visible=kind == "user"),
                name={"ours": OURS, "published": "published (Table 1)", "user": "your models"}[kind],
                legendgroup=kind, showlegend=col == 1,
                hovertemplate="%{text}<br>%{y:.1f}%<br>" + ("%{x:.0f}M params" if x == "params_m" else "%{x:.0f}k WSIs")
                              + "<extra></extra>"), row=1, col=col)
        fig.update_xaxes(type="log", title_text=xtitle, row=1, col=col)
        fig.update_yaxes(range=list(_y_range(p)), title_text=Y_LABEL if col == 1 else None, row=1, col=col)
    fig.update_layout(title=title, template="plotly_white", height=480, width=1100)
    return fig


def figure1_png(table: pd.DataFrame, path: str | os.PathLike, *, dpi: int = 150,
                title: str = "Figure 1: efficiency of pathology foundation models") -> Path:
    """Static PNG of the same figure (matplotlib), written atomically; returns ``path``."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone
    from matplotlib.ticker import FuncFormatter

    p = figure1_points(table)
    fig = Figure(figsize=(12, 5))
    axes = fig.subplots(1, 2)
    for ax, (x, xtitle) in zip(axes, PANELS):
        q = _panel(p, x)
        for kind, g in q.groupby("kind", sort=False):
            ax.scatter(g[x], g["avg_pct"], c=COLORS[kind], s=50, marker="D" if kind == "user" else "o",
                       label={"ours": OURS, "published": "published", "user": "your models (± std over seeds)"}[kind],
                       zorder=3)
            if kind == "user":
                ax.errorbar(g[x], g["avg_pct"], yerr=g["avg_std_pct"].fillna(0), fmt="none", ecolor=COLORS[kind],
                            capsize=4, zorder=2)
            for _, r in g.iterrows():
                ax.annotate(r["model"], (r[x], r["avg_pct"]), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=9, color=COLORS[kind])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 100, not 10^2
        ax.margins(x=0.15)  # room for the labels of the outermost points
        ax.set_ylim(*_y_range(p))
        ax.set_xlabel(xtitle)
        ax.set_ylabel(Y_LABEL)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(frameon=False, loc="lower right", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)
