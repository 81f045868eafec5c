"""Tables and plain-words reading of collapse results, shared by the demo report, ``audit`` and notebook 03.

* :func:`metrics_table` — one row per feature set, ``value [95 % CI]`` per metric, each column
  header with the direction that means *less* slide clustering (↓ / ↑), ``n/a`` where a metric
  cannot be computed, and a ``chance level`` row.
* :func:`differences_table` — the paired differences (a − b) with their 95 % CI.
* :func:`collapse_reading` — what the numbers say, in sentences, from the **paired** differences
  (never from whether two marginal intervals overlap).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .collapse import METRICS, format_value
from .pipeline import twin_of

#: The paper's Figure 2 panels, as the demo names them.
PANEL_A = "(a) raw-trained model, raw input"
PANEL_B = "(b) raw-trained model, Macenko input"
PANEL_C = "(c) Macenko-trained model, Macenko input"
FIGURE2_PANELS = (PANEL_A, PANEL_B, PANEL_C)

PURITY = "knn_slide_purity"
CLEAR_MARGIN = 0.05
#: Below this many slides the bootstrap over slides has too few distinct resamples for its interval to
#: carry a finding: the reading then states its comparisons as hints, never as "good" results.
MIN_SLIDES_FOR_A_FINDING = 5
"""k-NN balanced-accuracy margin over the random-init twin that counts as "clearly learned" (the
same bar as tests/test_dino_learning.py); smaller margins are within the k-NN's noise here."""


def metric_header(metric: str) -> str:
    """'k-NN slide purity ↓' (arrow: the direction of less slide clustering)."""
    label, arrow = METRICS.get(metric, (metric, ""))
    return f"{label} {arrow}".strip()


def metrics_table(metrics: pd.DataFrame, *, chance: bool = True) -> pd.DataFrame:
    """Wide table: one row per feature set, 'value [ci]' (or 'n/a') per metric, plus a chance-level row."""
    rows = []
    for name, g in metrics.groupby("features", sort=False):
        row = {"features": name}
        for r in g.itertuples():
            row[metric_header(r.metric)] = format_value(r.value, r.ci_low, r.ci_high)
        rows.append(row)
    if chance:
        row = {"features": "chance level"}
        for m, g in metrics.groupby("metric", sort=False):
            c = g["chance"].dropna()
            row[metric_header(m)] = f"{c.iloc[0]:.2f}" if len(c) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def metric_notes(metrics: pd.DataFrame) -> list[str]:
    """'metric: reason' for every metric reported as n/a (once per metric and reason)."""
    if "note" not in metrics.columns:
        return []
    notes = metrics[metrics["note"].map(lambda v: isinstance(v, str) and v != "")]
    return [f"{metric_header(m)}: n/a — {n}" for (m, n), _ in notes.groupby(["metric", "note"], sort=False)]


def differences_table(differences: pd.DataFrame) -> pd.DataFrame:
    """Wide table of paired differences: one row per pair 'a − b', 'd [ci]' per metric."""
    rows = []
    for (a, b), g in differences.groupby(["a", "b"], sort=False):
        row = {"difference": f"{a} − {b}"}
        for r in g.itertuples():
            row[metric_header(r.metric)] = (f"{r.difference:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
                                            if np.isfinite(r.difference) else "n/a")
        rows.append(row)
    return pd.DataFrame(rows)


def _diff(differences: pd.DataFrame, a: str, b: str, metric: str) -> pd.Series | None:
    d = differences[(differences["a"] == a) & (differences["b"] == b) & (differences["metric"] == metric)]
    return d.iloc[0] if len(d) and np.isfinite(d.iloc[0]["difference"]) else None


def _fd(d: pd.Series) -> str:
    return f"{d['difference']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def differences_reading(differences: pd.DataFrame, *, metric: str = PURITY) -> list[tuple[str, str]]:
    """One sentence per pair for ``metric``: is a − b clearly above / below 0 (paired 95 % CI)?"""
    out = []
    label = METRICS.get(metric, (metric, ""))[0]
    for r in differences[differences["metric"] == metric].itertuples():
        if not np.isfinite(r.difference):
            out.append((f"{label}, {r.a} − {r.b}: n/a ({r.note}).", "note"))
            continue
        d = f"{r.difference:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        if r.ci_low > 0:
            out.append((f"{label} of {r.a} is clearly above {r.b}: paired difference {d} (95% CI over slides "
                        "excludes 0).", ""))
        elif r.ci_high < 0:
            out.append((f"{label} of {r.a} is clearly below {r.b}: paired difference {d} (95% CI excludes 0).", ""))
        else:
            out.append((f"{label} of {r.a} and {r.b} cannot be told apart at this sample size: paired difference "
                        f"{d} (95% CI includes 0).", "note"))
    return out


def collapse_reading(
    metrics: pd.DataFrame,
    differences: pd.DataFrame,
    *,
    knn: pd.DataFrame | None = None,
    panels: Sequence[str] = FIGURE2_PANELS,
    input_labels: Sequence[str] = ("raw", "macenko", "macenko"),
) -> list[tuple[str, str]]:
    """Plain-words reading of slide purity (a) vs (b) vs (c), the references and (optionally) tissue k-NN.

    Returns (text, css class) pairs; the class is ``good`` / ``note`` / ``bad`` / ''. Every comparison
    uses the paired bootstrap difference of :func:`~.collapse.paired_differences`. When ``panels`` are
    not three panels of the table, the generic :func:`differences_reading` is returned.
    """
    pur = metrics[metrics["metric"] == PURITY].set_index("features")
    if len(panels) != 3 or not set(panels) <= set(pur.index):
        return differences_reading(differences)
    a_name, b_name, c_name = panels
    a, b, c = (pur.loc[n] for n in panels)
    fa, fb, fc = (format_value(x["value"], x["ci_low"], x["ci_high"]) for x in (a, b, c))
    out: list[tuple[str, str]] = []
    ac, bc = _diff(differences, a_name, c_name, PURITY), _diff(differences, b_name, c_name, PURITY)
    if ac is None or bc is None:
        return [("The paired differences (a) − (c) and (b) − (c) are missing; the reading cannot be made.", "bad")]
    if ac["ci_low"] > 0:
        out.append((f"The paper's effect is reproduced at this scale: normalized k-NN slide purity of (a) {fa} is "
                    f"clearly above (c) {fc}: paired difference {_fd(ac)} (95% bootstrap interval over slides, the "
                    "same slides for both panels, excludes 0).", "good"))
    elif ac["difference"] > 0:
        out.append((f"Slide purity of (a) {fa} is above (c) {fc}, but the paired difference {_fd(ac)} includes 0: "
                    "the reduction is not clear at this sample size.", "note"))
    else:
        out.append((f"The effect is NOT reproduced in this run: (a) {fa} is not above (c) {fc} "
                    f"(paired difference {_fd(ac)}).", "bad"))
    drop = a["value"] - c["value"]
    if drop > 0 and ac["ci_low"] > 0:  # a share of a reduction that may be 0 would be noise read as a finding
        share = float(np.clip((a["value"] - b["value"]) / drop, 0.0, 1.0))
        out.append((f"Normalizing only at inference (b) {fb} already gives {100 * share:.0f}% of the reduction "
                    f"from (a) to (c); training on normalized patches gives the remaining {100 * (1 - share):.0f}%.", ""))
    if bc["ci_low"] > 0:
        out.append((f"Training on normalized patches added to the reduction beyond inference-time normalization "
                    f"((b) − (c) = {_fd(bc)}, interval excludes 0) — the paper's point that normalizing at inference "
                    "is not enough.", "good"))
    else:
        out.append((f"Training on normalized patches did not clearly add to what inference-time normalization gives "
                    f"((b) − (c) = {_fd(bc)}, interval includes 0 or is negative): here most of the effect is the "
                    "colour of the input.", "note"))
    twin = twin_of(list(pur.index), input_labels[0])
    d = _diff(differences, a_name, twin, PURITY) if twin else None
    if d is not None:
        r = pur.loc[twin]
        fr = format_value(r["value"], r["ci_low"], r["ci_high"])
        if d["ci_low"] > 0:
            out.append((f"Training on raw patches made slide clustering stronger than in the untrained network of the "
                        f"same architecture ((a) {fa} vs {fr}; paired difference {_fd(d)}): the model learned "
                        "slide-specific features — the WSI-specific feature collapse the paper describes, produced "
                        "by training.", "good"))
        elif d["difference"] <= 0:
            out.append((f"(a) {fa} is not above the untrained network on the same raw input ({fr}; paired "
                        f"difference {_fd(d)}): here the slide clustering of (a) is the input colour's, not "
                        "something training added.", "note"))
        else:
            out.append((f"(a) {fa} is above the untrained network on the same raw input ({fr}) but the paired "
                        f"difference {_fd(d)} includes 0.", "note"))
    refs = [n for n in pur.index if n.startswith("colour stats") or n.startswith("random-init")]
    if refs:
        txt = "; ".join(f"{n}: {format_value(pur.loc[n, 'value'], pur.loc[n, 'ci_low'], pur.loc[n, 'ci_high'])}"
                        for n in refs)
        out.append(("Reference rows on the same patches — how much slide clustering is already in the input colour "
                    f"(colour statistics) or in an untrained network of the same architecture: {txt}. Where a trained "
                    "panel sits at or below its references, its slide clustering is what the input colour carries, "
                    "not something training added.", ""))
    if knn is not None and len(knn):
        out.append(tissue_knn_reading(knn, a_name, c_name, input_labels=input_labels))
    return _hedged_for_few_slides(out, differences)


def _hedged_for_few_slides(lines: list[tuple[str, str]], differences: pd.DataFrame) -> list[tuple[str, str]]:
    """With fewer than :data:`MIN_SLIDES_FOR_A_FINDING` slides, "good" verdicts become notes that say why."""
    n = pd.to_numeric(differences.get("n_slides", pd.Series(dtype=float)), errors="coerce").min()
    if not np.isfinite(n) or n >= MIN_SLIDES_FOR_A_FINDING:
        return lines
    hedge = (f" (Only {int(n)} slides: an interval that resamples slides is crude with so few, so read this as "
             "a hint to check on more slides, not as a finding.)")
    return [(text + hedge, "note") if kind == "good" else (text, kind) for text, kind in lines]


def tissue_knn(features: Mapping[str, Any], meta: pd.DataFrame, *, k: int = 10) -> pd.DataFrame:
    """Tissue-class k-NN balanced accuracy of each feature set (``features`` name -> array or features file).

    The kit's one k-NN (:func:`exaonepath_lab.probing.knn.knn_accuracy`, DINO's weighted vote) with folds
    that never split a slide; labels below 1 (background, unknown) are not tissue classes. Without any
    tissue label the table is empty: the reading then says nothing about tissue.
    """
    from ..probing.knn import knn_accuracy

    labels = meta["label"].to_numpy(np.int64) if "label" in meta else np.full(len(meta), -1)
    labels = np.where(labels >= 1, labels, -1)
    rows = []
    if (labels >= 1).any():
        groups = meta["slide_id"].astype(str).to_numpy()
        for name, f in features.items():
            x = np.asarray(f.features if hasattr(f, "features") else f, dtype=np.float32)
            rows.append({"features": name, "tissue_knn_bacc": knn_accuracy(x, labels, groups=groups, k=k)})
    return pd.DataFrame(rows, columns=["features", "tissue_knn_bacc"])


def tissue_knn_reading(knn: pd.DataFrame, a_name: str, c_name: str, *,
                       input_labels: Sequence[str] = ("raw", "macenko", "macenko")) -> tuple[str, str]:
    """Do the trained encoders (a) and (c) beat their random-init twins on tissue-class k-NN?"""
    k = knn.set_index("features")["tissue_knn_bacc"]
    parts = [f"{n}: {v:.2f}" for n, v in k.items()]
    pairs = [(n, float(k[n]), float(k[t])) for n, t in ((a_name, twin_of(list(k.index), input_labels[0])),
                                                         (c_name, twin_of(list(k.index), input_labels[2])))
             if n in k and t is not None]
    margins = [t - r for _, t, r in pairs]
    clear = len(pairs) == 2 and min(margins) >= CLEAR_MARGIN
    some = len(pairs) == 2 and min(margins) > 0
    detail = "; ".join(f"{n}: {t:.2f} vs twin {r:.2f} ({t - r:+.2f})" for n, t, r in pairs)
    if len(pairs) < 2:
        verdict = ("The random-init twin rows for (a) and (c) are not both in the table, so whether training "
                   "beat them cannot be said here.")
    elif clear:
        verdict = (f"Both trained encoders beat their random-init twin by at least {CLEAR_MARGIN:.2f} ({detail}): "
                   "they learned tissue morphology, so the lower slide purity is not bought by a collapsed "
                   "(uninformative) model.")
    elif some:
        verdict = (f"Both trained encoders beat their random-init twin, but not both by {CLEAR_MARGIN:.2f} or more "
                   f"({detail}): within what k-NN on a few hundred patches per class can resolve.")
    else:
        verdict = (f"A trained encoder does NOT beat its random-init twin here ({detail}): read the purity "
                   "numbers with care.")
    return ("Tissue classes (DINO's weighted k-NN, balanced accuracy, folds never split a slide): " + "; ".join(parts)
            + ". " + verdict, "good" if clear else ("note" if some or len(pairs) < 2 else "bad"))
