"""Table 1 of the paper (linear evaluation, top-1) as data, with the user's probe results merged in.

The published rows live in ``exaonepath_lab/data/table1_published.csv`` exactly as printed
(PROTOCOL.md §4). Averages are recomputed from the six task columns: a printed average that
disagrees with its row mean rounded to 3 decimals is flagged (ResNet50 ImageNet: mean 0.7867 ->
0.787, printed 0.786), and an incomplete row (Virchow) has no average, never a zero-filled one.

User rows come from probe result JSONs (``exaonepath-lab probe`` writes them): one row per
``model``, one column per dataset, the mean top-1 over seeds. A user row whose protocol differs
from the paper's (§4.4: Macenko in train and eval with the authors' target, SGD lr 0.1 held
constant, momentum 0.9, no weight decay, batch 128, 12,500 iterations, Resize 256 -> CenterCrop
224; the best-validation checkpoint, the kit's reading of the paper's val splits) is marked
``‡n`` with a footnote naming every difference and the tasks it concerns
(:func:`protocol_deviations`); ``table1.json`` and ``table1.csv`` carry the same list.
"""
from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..io import write_json_atomic, write_text_atomic

#: (dataset name of the kit, column header of the paper), in the paper's order.
TASKS: list[tuple[str, str]] = [("pcam", "PCAM"), ("mhist", "MHIST"), ("crc100k", "CRC-100K"), ("til", "TIL Det."),
                                ("msi_crc", "MSI CRC"), ("msi_stad", "MSI STAD")]
RESULT_KIND = "exaonepath-lab/probe-result"
DAGGER = "\u2020"
DOUBLE_DAGGER = "\u2021"

#: The linear-probe protocol of the paper (§4.4) that a result is compared with.
PAPER_PROBE: dict[str, Any] = {"lr": 0.1, "lr_schedule": "constant", "momentum": 0.9, "weight_decay": 0.0,
                               "batch_size": 128, "iterations": 12_500, "selection": "best_val"}
#: The file name of the authors' Macenko target image (public EXAONEPath repository).
AUTHORS_TARGET_STEM = "target_TCGA-55-A48X"


def protocol_deviations(result: dict[str, Any]) -> list[str]:
    """How a probe result's protocol differs from the paper's (empty list: it follows it).

    Checks Macenko normalization (on, Macenko, fitted on the authors' TCGA-55-A48X target),
    the probe's lr, lr schedule, momentum, weight decay, batch size, iterations, which
    checkpoint was reported, and the Resize 256 -> CenterCrop 224 preprocessing.
    """
    out: list[str] = []
    norm = result.get("normalizer")
    if "normalizer" not in result:
        out.append("stain normalization not recorded")
    elif not norm:
        out.append("no Macenko normalization")
    elif norm.get("class") != "MacenkoNormalizer":
        out.append(f"{norm.get('class')} instead of Macenko normalization")
    else:
        target = ((norm.get("config") or {}).get("target") or {})
        if not str(target.get("source", "")).startswith(AUTHORS_TARGET_STEM):  # fit_files records the file name
            out.append("Macenko target other than the authors' TCGA-55-A48X image (e.g. the HERef default)")
    proto = result.get("protocol") or {}
    if result.get("method", "linear") == "linear" and "protocol" not in result:
        out.append("probe protocol not recorded")
    elif result.get("method", "linear") == "linear":
        for k, want in PAPER_PROBE.items():
            got = proto.get(k, want)
            if k == "selection":
                used = str(result.get("selection_used", got))
                if used != want:
                    out.append(f"{used} checkpoint instead of best validation")
            elif got != want:
                what = {"lr": "lr", "lr_schedule": "lr schedule", "momentum": "momentum",
                        "weight_decay": "weight decay", "batch_size": "batch size", "iterations": "SGD iterations"}[k]
                out.append(f"{what} {got:,} instead of {want:,}" if isinstance(got, (int, float))
                           and not isinstance(got, bool) else f"{what} {got} instead of {want}")
    pre = result.get("preprocessing") or {}
    if not pre:
        out.append("preprocessing not recorded")
    elif (pre.get("resize_size"), pre.get("crop_size")) != (256, 224):
        out.append(f"preprocessing Resize {pre.get('resize_size')} -> CenterCrop {pre.get('crop_size')} "
                   "instead of 256 -> 224")
    return out


def published_table1() -> pd.DataFrame:
    """The nine published rows: ``model, wsis, patches, params`` (strings as printed), the six task
    accuracies (float, NaN where the paper prints "-"), ``avg_published`` (float or NaN),
    ``params_m`` / ``wsis_k`` (numbers for Figure 1) and ``source``."""
    with resources.files("exaonepath_lab").joinpath("data/table1_published.csv").open("r", encoding="utf-8") as f:
        df = pd.read_csv(f, dtype={"model": str, "wsis": str, "patches": str, "params": str, "source": str},
                         keep_default_na=False, na_values={c: [""] for c, _ in TASKS}
                         | {"avg_published": [""], "params_m": [""], "wsis_k": [""]})
    return df


def row_average(values: Sequence[float]) -> float:
    """Mean over the six tasks; NaN if any task is missing (an incomplete row has no average)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()) if len(v) and np.isfinite(v).all() else math.nan


def check_published_averages(df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per published row: printed average, row mean, mean rounded to 3 decimals, and ``agrees``.

    Rounding is half-up on the exact mean (``round(x + 1e-12, 3)``) so 0.78667 -> 0.787.
    """
    df = published_table1() if df is None else df
    rows = []
    for _, r in df.iterrows():
        mean = row_average([r[c] for c, _ in TASKS])
        printed = r["avg_published"]
        rounded = math.floor(mean * 1000 + 0.5 + 1e-9) / 1000 if math.isfinite(mean) else math.nan
        agrees = (math.isnan(printed) and math.isnan(mean)) or (
            math.isfinite(printed) and math.isfinite(rounded) and abs(printed - rounded) < 5e-7)
        rows.append({"model": r["model"], "printed": printed, "row_mean": mean, "row_mean_3dp": rounded,
                     "agrees": bool(agrees)})
    return pd.DataFrame(rows)


# ---- user results --------------------------------------------------------------------------
def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Probe result JSONs from files or folders (searched recursively for ``*.json`` with
    ``kind == "exaonepath-lab/probe-result"``; other JSON files are skipped)."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"results path not found: {p}")
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                d = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if p.is_dir():
                    continue
                raise ValueError(f"{f} is not JSON ({e})") from e
            if isinstance(d, dict) and d.get("kind") == RESULT_KIND:
                d["_file"] = str(f)
                out.append(d)
            elif not p.is_dir():
                raise ValueError(f"{f} is not a probe result (kind {RESULT_KIND!r}); write it with `exaonepath-lab probe`")
    return out


def user_rows(results: Sequence[dict[str, Any]], *, method: str = "linear") -> pd.DataFrame:
    """One row per model from probe results of ``method``; the last result wins per (model, dataset)."""
    rows: dict[str, dict[str, Any]] = {}
    extra: list[str] = []
    for r in results:
        if r.get("method", "linear") != method:
            continue
        name = r["model"]
        row = rows.setdefault(name, {"model": name, "wsis": "-", "patches": "-", "params": "-", "source": "this kit",
                                     "params_m": math.nan, "wsis_k": math.nan})
        info = r.get("model_info") or {}
        if info.get("params"):
            row["params"], row["params_m"] = _human(info["params"]), info["params"] / 1e6
        if info.get("wsis"):
            row["wsis"], row["wsis_k"] = _human(info["wsis"], k=True), info["wsis"] / 1e3
        if info.get("patches"):
            row["patches"] = _human(info["patches"])
        ds = r["dataset"]
        row[ds] = r["test"]["top1"]["mean"]
        row[f"{ds}_std"] = r["test"]["top1"].get("std", math.nan)
        row[f"{ds}_norm_failures"] = sum(v for k, v in (r.get("normalization") or {}).get("test", {}).items()
                                         if k not in ("ok", "none"))
        row.setdefault("protocol_deviations", {})[ds] = protocol_deviations(r)
        if ds not in dict(TASKS) and ds not in extra:
            extra.append(ds)
    df = pd.DataFrame(list(rows.values()))
    for c, _ in TASKS:
        if c not in df.columns:
            df[c] = math.nan
    df.attrs["extra_datasets"] = extra
    return df


def _human(n: float, k: bool = False) -> str:
    """Counts the way Table 1 prints them: 86M, 1.3B, 35k."""
    for div, suf in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            v = n / div
            return (f"{v:,.0f}" if v >= 10 or v == int(v) else f"{v:.1f}") + suf
    return str(int(n))


def build_table1(results: Sequence[dict[str, Any]] = (), *, include_published: bool = True,
                 method: str = "linear") -> pd.DataFrame:
    """Published rows (optional) plus user rows. Columns: ``model, group, wsis, patches, params``, the
    six tasks (+ any extra datasets of the results), ``avg`` (recomputed; NaN when incomplete),
    ``avg_published``, ``avg_flag`` (True when the printed average disagrees), ``params_m``, ``wsis_k``."""
    parts = []
    if include_published:
        pub = published_table1()
        chk = check_published_averages(pub)
        pub = pub.assign(group="published", avg=chk["row_mean"].to_numpy(), avg_flag=~chk["agrees"].to_numpy())
        parts.append(pub)
    extra: list[str] = []
    if results:
        usr = user_rows(results, method=method)
        extra = usr.attrs.get("extra_datasets", [])
        if len(usr):
            usr = usr.assign(group="user", avg=[row_average([r[c] for c, _ in TASKS]) for _, r in usr.iterrows()],
                             avg_published=math.nan, avg_flag=False)
            parts.append(usr)
    if not parts:
        raise ValueError("Table 1 is empty: no published rows and no probe results")
    df = pd.concat(parts, ignore_index=True)
    df.attrs["extra_datasets"] = extra
    return df


# ---- rendering -----------------------------------------------------------------------------
def _fmt(v: Any, std: Any = math.nan, show_std: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = f"{v:.3f}"
    if show_std and isinstance(std, float) and math.isfinite(std) and std > 0:
        s += f" ± {std:.3f}"
    return s


def table1_cells(df: pd.DataFrame, *, mark: bool = True, show_std: bool = True) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, string cells in the paper's format, and footnotes.

    Published rows print their published average (``†`` when it disagrees with the row mean, with a
    footnote); user rows print the recomputed average; incomplete rows print "-".
    """
    extra = list(df.attrs.get("extra_datasets", []))
    header = ["Model", "WSIs", "Patches", "Params"] + [h for _, h in TASKS] + ["Avg"] + extra
    rows, notes = [], []
    for _, r in df.iterrows():
        cells = [r["model"], r["wsis"] or "-", r["patches"] or "-", r["params"] or "-"]
        cells += [_fmt(r[c], r.get(f"{c}_std", math.nan), show_std) for c, _ in TASKS]
        if r["group"] == "published":
            avg = _fmt(r["avg_published"])
            if mark and r["avg_flag"]:
                avg += f" {DAGGER}"
                notes.append(f"{DAGGER} {r['model']}: printed average {r['avg_published']:.3f}, but the row mean is "
                             f"{r['avg']:.4f} -> {math.floor(r['avg'] * 1000 + 0.5 + 1e-9) / 1000:.3f}")
        else:
            avg = _fmt(r["avg"])
        cells.append(avg)
        cells += [_fmt(r.get(c, math.nan), r.get(f"{c}_std", math.nan), show_std) for c in extra]
        rows.append(cells)
    n_dev = 0
    for i, (_, r) in enumerate(df.iterrows()):
        text = deviation_note(r.get("protocol_deviations"))
        if mark and text:
            n_dev += 1
            rows[i][0] += f" {DOUBLE_DAGGER}{n_dev}"
            notes.append(f"{DOUBLE_DAGGER}{n_dev} {r['model']}: protocol differs from the paper's: {text}")
    if any(df["group"] == "user"):
        notes.append("User rows: mean top-1 over seeds (± sample std) of the kit's linear probe; "
                     "Avg only when all six tasks are present. Extra columns are not part of Avg.")
    return header, rows, notes


def deviation_note(deviations: Any) -> str:
    """``{dataset: [deviation, ...]}`` -> "no Macenko normalization (PCAM, MHIST); lr 0.05 instead of 0.1 (all tasks)"."""
    if not isinstance(deviations, dict) or not deviations:
        return ""
    names = dict(TASKS)
    by_dev: dict[str, list[str]] = {}
    for ds, devs in deviations.items():
        for d in devs or []:
            by_dev.setdefault(d, []).append(names.get(ds, ds))
    parts = []
    for d, tasks in by_dev.items():
        where = "all tasks" if len(tasks) == len(deviations) and len(deviations) > 1 else ", ".join(tasks)
        parts.append(f"{d} ({where})")
    return "; ".join(parts)


def table1_markdown(df: pd.DataFrame, *, mark: bool = True, show_std: bool = True) -> str:
    """Markdown table in the paper's layout (PROTOCOL.md §4), footnotes below."""
    header, rows, notes = table1_cells(df, mark=mark, show_std=show_std)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def table1_html(df: pd.DataFrame, *, mark: bool = True, show_std: bool = True) -> str:
    """An HTML ``<table>`` fragment (user rows in bold) with footnotes."""
    import html

    header, rows, notes = table1_cells(df, mark=mark, show_std=show_std)
    out = ["<table class='table1'>", "<caption>Table 1: linear evaluation, top-1 accuracy</caption>",
           "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for g, r in zip(df["group"], rows):
        tag = ("<td><b>{}</b></td>" if g == "user" else "<td>{}</td>")
        out.append("<tr>" + "".join(tag.format(html.escape(c)) for c in r) + "</tr>")
    out.append("</table>")
    out += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    return "\n".join(out) + "\n"


def table1_csv(df: pd.DataFrame) -> str:
    """Machine-readable CSV: numbers unformatted, the recomputed and the printed average side by side."""
    cols = ["model", "group", "wsis", "patches", "params"] + [c for c, _ in TASKS] + ["avg", "avg_published", "avg_flag"]
    extra = list(df.attrs.get("extra_datasets", []))
    std = [c for c in df.columns if c.endswith("_std")]
    out = df[cols + extra + std].copy()
    devs = df["protocol_deviations"] if "protocol_deviations" in df.columns else [None] * len(df)
    out["protocol_deviations"] = [deviation_note(d) for d in devs]
    return out.to_csv(index=False, float_format="%.6g")


def table1_json(df: pd.DataFrame) -> dict[str, Any]:
    """Rows (numbers, NaN as null) with each user row's protocol deviations per dataset, and the footnotes."""
    _, _, notes = table1_cells(df)
    rows = []
    for _, r in df.iterrows():
        d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()
             if k != "protocol_deviations" and not isinstance(v, (dict, list))}
        devs = r.get("protocol_deviations")
        d["protocol_deviations"] = devs if isinstance(devs, dict) else {}
        d["follows_paper_protocol"] = not deviation_note(devs)
        rows.append(d)
    return {"kind": "exaonepath-lab/table1", "paper_probe_protocol": PAPER_PROBE, "rows": rows, "footnotes": notes}


def write_table1(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``table1.md``, ``table1.html``, ``table1.csv``, ``table1.json`` atomically into ``out_dir``."""
    out = Path(out_dir)
    return {
        "md": write_text_atomic(out / "table1.md", table1_markdown(df)),
        "html": write_text_atomic(out / "table1.html", table1_html(df)),
        "csv": write_text_atomic(out / "table1.csv", table1_csv(df)),
        "json": write_json_atomic(out / "table1.json", table1_json(df)),
    }
