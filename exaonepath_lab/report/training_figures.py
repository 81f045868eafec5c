"""Training curves of several DINO runs side by side (notebook 04's live plot).

Reads the iteration rows of ``log.jsonl`` (:func:`exaonepath_lab.pretrain.curves.read_log`);
draws, per run, the loss, the per-sample teacher entropy, the entropy of the batch-mean
teacher output and the learning rate, with the two representation-collapse levels marked.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

PANELS = (("DINO loss", "loss", "loss (nats)"),
          ("teacher entropy, per sample", "teacher_entropy", "entropy (nats)"),
          ("batch entropy (of the mean output)", "batch_entropy", "entropy (nats)"),
          ("learning rate", "lr", "lr"))


def compare_runs(logs: Mapping[str, Sequence[Mapping[str, Any]]], *, out_dim: int, height: int = 420) -> Any:
    """A plotly figure, one panel per quantity of :data:`PANELS`, one line per run.

    ``ln(out_dim)`` is marked on the loss and entropy panels: a loss and per-sample entropy
    stuck there is the *uniform* collapse; a batch entropy falling towards 0 is the
    *one-prototype* collapse.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[0] for p in PANELS])
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    for j, (name, rows) in enumerate(logs.items()):
        rows = [r for r in rows if "loss" in r]  # iteration rows only (the log also records events)
        it = [r["it"] for r in rows]
        for col, (_, key, _) in enumerate(PANELS, start=1):
            fig.add_trace(go.Scatter(x=it, y=[r.get(key) for r in rows], name=name, legendgroup=name,
                                     showlegend=col == 1, line=dict(color=colours[j % len(colours)])), 1, col)
    ln_k = math.log(out_dim)
    for col in (1, 2, 3):
        fig.add_hline(y=ln_k, line_dash="dot", line_color="gray", row=1, col=col,
                      annotation_text=f"ln {out_dim} = {ln_k:.2f}" + (": uniform collapse" if col < 3 else ""),
                      annotation_font_size=11)
    fig.add_hline(y=0, line_dash="dot", line_color="red", row=1, col=3, annotation_text="0: one prototype",
                  annotation_font_size=11)
    for col, (_, _, ytitle) in enumerate(PANELS, start=1):
        fig.update_xaxes(title_text="iteration", row=1, col=col)
        fig.update_yaxes(title_text=ytitle, row=1, col=col)
    fig.update_layout(height=height, template="plotly_white", legend_title_text="run")
    return fig
