"""Training curves of a DINO run from its ``log.jsonl``: plotly (interactive) and matplotlib (PNG).

Panels: loss with the collapse level ``ln(out_dim)``, teacher entropies (per sample
and of the batch mean), KL(teacher || student), lr, weight decay, teacher momentum,
teacher temperature, throughput (images/s).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..io import atomic_path

PANELS: list[tuple[str, list[str]]] = [
    ("loss", ["loss"]),
    ("teacher entropy (nats)", ["teacher_entropy", "batch_entropy"]),
    ("KL(teacher||student)", ["kl"]),
    ("learning rate", ["lr"]),
    ("weight decay", ["wd"]),
    ("teacher momentum", ["momentum"]),
    ("teacher temperature", ["teacher_temp"]),
    ("images / s", ["img_per_s"]),
]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``log.jsonl`` (one JSON object per iteration; non-metric lines skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if "it" in r:
                rows.append(r)
    return rows


def plot_curves_plotly(rows: list[dict[str, Any]], *, out_dim: int | None = None, title: str = "DINO training"):
    """A plotly figure with one subplot per panel."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    fig = make_subplots(rows=2, cols=4, subplot_titles=[p[0] for p in PANELS])
    it = [r["it"] for r in rows]
    for i, (_, keys) in enumerate(PANELS):
        rr, cc = divmod(i, 4)
        for k in keys:
            fig.add_trace(go.Scatter(x=it, y=[r.get(k) for r in rows], name=k, mode="lines"), row=rr + 1, col=cc + 1)
        if keys == ["loss"] and out_dim:
            fig.add_hline(y=math.log(out_dim), line_dash="dot", line_color="red", row=rr + 1, col=cc + 1,
                          annotation_text="ln(out_dim): collapse")
        fig.update_yaxes(title_text=PANELS[i][0], row=rr + 1, col=cc + 1)
    fig.update_layout(title=title, height=600, showlegend=True)
    fig.update_xaxes(title_text="iteration")
    return fig


def plot_curves_matplotlib(rows: list[dict[str, Any]], *, out_dim: int | None = None, title: str = "DINO training"):
    """The same panels as a matplotlib figure (for PNG export).

    Built with ``matplotlib.figure.Figure`` (no pyplot), so training inside a notebook
    neither switches its backend nor leaks open figures.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 7))
    axes = fig.subplots(2, 4)
    it = [r["it"] for r in rows]
    for ax, (name, keys) in zip(axes.ravel(), PANELS):
        for k in keys:
            ax.plot(it, [r.get(k, float("nan")) for r in rows], label=k)
        if keys == ["loss"] and out_dim:
            ax.axhline(math.log(out_dim), ls=":", color="red", label="ln(out_dim)")
        ax.set_title(name)
        ax.set_xlabel("iteration")
        if len(keys) > 1 or keys == ["loss"]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_curves(log_path: str | Path, out_dir: str | Path, *, out_dim: int | None = None,
                include_plotlyjs: bool | str = True) -> dict[str, Path]:
    """Write ``curves.png`` and ``curves.html`` into ``out_dir`` atomically."""
    rows = read_log(log_path)
    if not rows:
        raise ValueError(f"{log_path} has no iteration rows to plot")
    out = Path(out_dir)
    png, html = out / "curves.png", out / "curves.html"
    fig = plot_curves_matplotlib(rows, out_dim=out_dim)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    pfig = plot_curves_plotly(rows, out_dim=out_dim)
    with atomic_path(html) as tmp:
        pfig.write_html(str(tmp), include_plotlyjs=include_plotlyjs)
    return {"png": png, "html": html}
