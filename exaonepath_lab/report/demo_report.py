"""``outputs/index.html`` of the demo: every figure and table with a short explanation.

Reads what the demo stages recorded (``stages/*.json``, CSVs, PNG/HTML figures); computes
nothing but the plain-words reading of the collapse numbers. Interactive figures are
shown in iframes of their own HTML files, each with ``plotly.min.js`` beside it, so the
folder works offline.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..analysis import summary
from ..analysis.summary import FIGURE2_PANELS
from .html import HtmlReport, write_plotlyjs

#: Kept for callers of the old names; the reading itself lives in the analysis layer.
CLEAR_MARGIN = summary.CLEAR_MARGIN
PURITY = summary.PURITY


def _iframe(report: HtmlReport, sec: Any, path: str | Path, out: Path, height: int = 560) -> None:
    p = Path(path)
    if not p.exists():
        return
    write_plotlyjs(p.parent)
    rel = os.path.relpath(p, out)
    sec.blocks.append(f'<div class="fig"><iframe src="{html.escape(rel)}" style="width:100%;height:{height}px;border:0"'
                      f' loading="lazy"></iframe><p><a href="{html.escape(rel)}">open interactive figure</a></p></div>')


def _uniform_note(run_dir: Path) -> str:
    import json
    import math

    cfg = run_dir / "config.json"
    if not cfg.exists():
        return ""
    out_dim = json.loads(cfg.read_text()).get("out_dim")
    return f" (a uniform, collapsed output would sit at ln({out_dim}) = {math.log(out_dim):.2f})" if out_dim else ""


TOY_CAVEAT = ("What this toy run does not show: it uses a synthetic cohort of 10 slides, a 4-block ViT trained for "
              "about a thousand steps on 2 CPU cores, and small crops; it demonstrates the measurement and the direction "
              "of the effect, not the size of the effect for a ViT-B/16 trained on 285M real patches.")


def reading(metrics: pd.DataFrame, differences: pd.DataFrame, knn: pd.DataFrame | None = None) -> list[tuple[str, str]]:
    """The demo's plain-words reading: :func:`exaonepath_lab.analysis.collapse_reading` on its three panels,
    from the paired differences, plus what a toy run cannot show."""
    return summary.collapse_reading(metrics, differences, knn=knn, panels=FIGURE2_PANELS) + [(TOY_CAVEAT, "note")]


def settings_table(settings: Mapping[str, Any]) -> pd.DataFrame:
    """Settings as a two-column table (setting, value) instead of a Python dict."""
    return pd.DataFrame({"setting": list(settings), "value": [", ".join(map(str, v)) if isinstance(v, (list, tuple))
                                                              else str(v) for v in settings.values()]})


def figure2_section(r: HtmlReport, s: Any, out: Path, *, metrics: pd.DataFrame, differences: pd.DataFrame,
                    lines: list[tuple[str, str]], paths: Mapping[str, Any]) -> None:
    """Reading, interactive and static Figure 2, metrics table with arrows and chance row, paired differences."""
    for text, kind in lines:
        r.text(s, html.escape(text), kind)
    if "html" in paths:
        _iframe(r, s, paths["html"], out, 680)
    if "png" in paths:
        r.image(s, paths["png"], "Figure 2 (static)", base=out)
    r.table(s, summary.metrics_table(metrics),
            caption="collapse metrics, value [95% bootstrap CI over slides]; the arrow gives the direction of less "
                    "slide clustering; n/a = cannot be computed on this input (reason below)")
    for note in summary.metric_notes(metrics):
        r.text(s, html.escape(note), "note")
    if len(differences):
        r.table(s, summary.differences_table(differences),
                caption="paired differences a − b [95% CI]: the same resampled slides for both feature sets")


def _data_sections(r: HtmlReport, out: Path, rec: dict[str, Any]) -> None:
    """Cohort, Figure 3 (tiling), stain normalization and DINO training sections."""
    s = r.section("Cohort")
    syn = rec["synth"]
    r.text(s, f"{syn['n_slides']} synthetic whole-slide images (pyramidal TIFF, MPP {', '.join(map(str, syn['mpps']))} "
              "µm/px). Each slide was 'stained and scanned' differently: its own hematoxylin and eosin optical-density "
              "vectors and stain amounts, mixed by Beer–Lambert, then its own white point, gamma, blur, noise and JPEG "
              "quality — the acquisition differences between labs that Macenko normalization targets. Tissue "
              "classes (tumour, stroma, lymphocytes, adipose, necrosis) differ by morphology; each slide's class map "
              "gives every patch a biological label.")
    r.image(s, syn["montage"], "Thumbnails of the cohort", base=out)
    cohort_csv = Path(syn["cohort_dir"]) / "cohort.csv"
    if cohort_csv.exists():
        c = pd.read_csv(cohort_csv)
        cols = [x for x in ("slide_id", "mpp", "width", "height", "status") if x in c.columns]
        r.table(s, c[cols])

    s = r.section("Figure 3: tiling and MPP")
    t = rec["tile"]
    r.text(s, f"CLAM-style tissue segmentation and a non-overlapping grid of 256 px at 0.5 µm/px (512 px at 0.25 µm/px), "
              f"patches not resized (paper §4.1). {t['n_patches']} patches; slide statuses {t['status_counts']}. "
              f"Real slide: {html.escape(str(t.get('cmu')))}.")
    _iframe(r, s, Path(t["figure3_png"]).with_suffix(".html"), out, 460)
    r.image(s, t["figure3_png"], "Figure 3 (static)", base=out)
    masks = sorted((Path(t["tile_dir"]) / "masks").glob("*.png"))[:2]
    for m in masks:
        r.image(s, m, f"tissue mask and patch grid: {m.stem}", base=out)

    s = r.section("Stain normalization")
    n = rec["normalize"]
    r.text(s, "Top row: one patch per slide as scanned; bottom row: the same patches after batched Macenko "
              "normalization to the reference target (Io=240, alpha=1, beta=0.15). Per-patch outcomes over "
              f"{n['n_patches']} patches: {n['status_counts']} (failures pass through unchanged and are counted, never dropped).")
    r.image(s, n["png"], "before (top) and after (bottom) Macenko", base=out)

    s = r.section("DINO pretraining (cpu-demo preset), raw vs Macenko-normalized patches")
    for key, label in (("train_raw", "raw patches"), ("train_macenko", "Macenko-normalized patches")):
        tr = rec[key]
        warn = tr.get("collapse_warnings") or []
        fin = tr.get("final") or {}
        shown = ("loss", "teacher_entropy", "kl", "img_per_s")
        r.text(s, f"<b>{label}</b>: {tr['iterations']} iterations; final "
                  + ", ".join(f"{k} {fin[k]:.4g}" for k in shown if isinstance(fin.get(k), (int, float)))
                  + _uniform_note(Path(tr["run_dir"]))
                  + (f". Collapse monitor: {len(warn)} warning(s): {html.escape('; '.join(warn[:3]))}" if warn
                     else ". Collapse monitor: silent (teacher entropy stayed away from uniform/one-hot)."),
               "bad" if warn else "")
        curves = Path(tr["run_dir"]) / "curves.png"
        if curves.exists():
            r.image(s, curves, f"training curves ({label})", base=out)


def write_demo_report(out: Path, rec: dict[str, Any], cfg: Any) -> Path:
    """Assemble ``out/index.html`` from the stage records ``rec`` (see :mod:`exaonepath_lab.demo`)."""
    r = HtmlReport("exaonepath-lab demo: WSI-specific feature collapse and stain normalization",
                   "EXAONEPath (LG AI Research, 2024) reproduced end to end on an embedded synthetic cohort "
                   "(settings at the end).")

    _data_sections(r, out, rec)

    s = r.section("Figure 2: WSI-specific feature collapse, measured")
    col = rec["collapse"]
    metrics = pd.read_csv(col["metrics_csv"], keep_default_na=False, na_values=[""])
    differences = pd.read_csv(col["differences_csv"], keep_default_na=False, na_values=[""])
    knn = pd.read_csv(Path(col["metrics_csv"]).parent / "tissue_knn.csv")
    r.text(s, "t-SNE of teacher features of the same patches, coloured by slide: (a) model trained on raw patches, raw "
              "input; (b) the same model, Macenko-normalized input; (c) model trained on Macenko-normalized patches, "
              "normalized input. Below the picture, the numbers: normalized k-NN slide purity (0 = chance mixing, 1 = "
              "every neighbour from the same slide), iLISI (1 = perfectly mixed), slide silhouette, balanced accuracy of "
              "a linear probe that predicts the slide, and the SO share (share of same-class neighbour pairs that come "
              "from other slides; a slide-level variant, not PathoROB's robustness index, which uses medical centres), "
              "each with a 95% bootstrap interval over slides. Comparisons between panels use paired differences "
              "(the same resampled slides for both panels).")
    figure2_section(r, s, out, metrics=metrics, differences=differences, lines=reading(metrics, differences, knn),
                    paths=col.get("paths", {}))
    r.table(s, knn, caption="tissue-class k-NN balanced accuracy (DINO's weighted vote, leave-slides-out folds)")

    s = r.section("Linear probe on the synthetic tissue task")
    pr = rec["probe"]
    rows = []
    for x in pr["results"]:
        rows.append({"model": x["model"], "top-1 (mean)": x["top1"]["mean"], "top-1 (std)": x["top1"].get("std", np.nan),
                     "balanced acc": x["balanced_accuracy"]["mean"],
                     "normalization (test)": str((x.get("normalization") or {}).get("test", ""))})
    r.text(s, "The paper's protocol on frozen features (SGD lr 0.1, momentum 0.9, no weight decay, batch 128, "
              f"{pr['probe_config'].get('iterations')} iterations, several seeds), on patches of slides held out by slide.")
    r.table(s, pd.DataFrame(rows))

    s = r.section("Table 1 and Figure 1")
    tb = rec["table"]
    tp = Path(tb["paths"]["html"])
    r.text(s, "Published rows exactly as printed (averages recomputed; a printed average that disagrees with its row "
              "is flagged; an incomplete row has no average) with the demo's rows merged in (their only column is the "
              "synthetic task, so they have no six-task average).")
    if tp.exists():
        r.text(s, tp.read_text())
    _iframe(r, s, Path(tb["figure1_png"]).with_suffix(".html"), out, 520)
    r.image(s, tb["figure1_png"], "Figure 1 (static)", base=out)

    s = r.section("Settings and run")
    r.table(s, settings_table(cfg.to_dict()), caption="demo settings")
    times = {k: v.get("seconds") for k, v in rec.items() if isinstance(v, dict)}
    r.table(s, pd.DataFrame({"stage": list(times), "seconds (last run)": [float(v) if v is not None else np.nan for v in times.values()]}),
            floatfmt="{:.0f}")
    return r.write(out)
