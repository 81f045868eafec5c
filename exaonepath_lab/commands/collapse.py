"""``exaonepath-lab collapse``: collapse metrics and Figure 2 from one or more feature files."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collapse",
        help="measure WSI-specific feature collapse and draw Figure 2 from feature files",
        description="For each FEATURES.h5 (one panel each, e.g. (a) raw-trained/raw input, (b) raw-trained/"
        "Macenko input, (c) Macenko-trained/Macenko input): sample K slides × M patches (paper: 10 × 1,000), "
        "compute k-NN slide purity, iLISI, slide silhouette, slide-probe balanced accuracy and the SO share "
        "(when class labels exist) with bootstrap CIs and chance levels, paired differences between panels, embed "
        "(t-SNE by default, as the paper) and write OUT/metrics.csv, OUT/differences.csv, OUT/figure2.html (hover "
        "shows the patch), OUT/figure2.png and OUT/collapse.json. The files must hold features of the same patches.",
    )
    p.add_argument("features", nargs="+", help="feature files written by `exaonepath-lab extract`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--names", nargs="+", help="panel titles, one per file (default: file stems)")
    add_collapse_options(p)
    p.add_argument("--baselines", default="",
                   help="reference rows on the same patches, comma-separated: colour (colour statistics of each "
                   "file's input), random (random-init twin of each file's encoder, built from the architecture "
                   "recorded in the file, e.g. of a kit-dino checkpoint). 'colour,random' is what the demo and audit "
                   "show; default none (patches are read again from their sources)")
    p.add_argument("--report", action="store_true", help="also write OUT/index.html, the offline report of audit")
    p.add_argument("--no-thumbnails", action="store_true",
                   help="skip hover thumbnails (they are read from the patches' source files)")
    p.add_argument("--include-plotlyjs", default="true",
                   help="true (embed plotly.js: offline, ~4 MB), cdn, or directory (plotly.min.js beside the HTML)")
    p.add_argument("--threads", type=int, default=2, help="torch/openTSNE threads")
    p.set_defaults(func=run)


def add_collapse_options(p: argparse.ArgumentParser) -> None:
    """Sampling, metric and embedding options shared by ``collapse`` and ``audit``."""
    p.add_argument("--method", choices=["tsne", "umap", "pca"], default="tsne",
                   help="2-D embedding; tsne (openTSNE, PCA init) is the paper's")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (the picture only)")
    p.add_argument("--lisi-perplexity", type=float, default=30.0,
                   help="iLISI's own neighbourhood (30: Harmony's LISI default; independent of the t-SNE's)")
    p.add_argument("--n-slides", type=int, default=10, help="slides sampled (paper: 10)")
    p.add_argument("--per-slide", type=int, default=1000, help="patches per slide (paper: 1,000)")
    p.add_argument("--min-per-slide", type=int,
                   help="slides with fewer patches are dropped before any compute, with the reason "
                   "(default k + 1: a slide can then fill a patch's neighbourhood)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, embedding and bootstrap")
    p.add_argument("--color-by", default="slide_id", help="meta column for colours (slide_id, class_name, label)")
    p.add_argument("--k", type=int, default=15,
                   help="neighbours for purity and the SO share (15: local, stable at ~1,000 patches per slide)")
    p.add_argument("--n-boot", type=int, default=200,
                   help="bootstrap replicates over slides for the 95%% CIs and paired differences (200: CI ends "
                   "stable to ~0.01)")


def parse_baselines(text: str) -> tuple[str, ...]:
    """'colour,random' -> ('colour', 'random'); '' or 'none' -> ()."""
    items = tuple(x.strip() for x in text.split(",") if x.strip() and x.strip() != "none")
    bad = sorted(set(items) - {"colour", "random"})
    if bad:
        raise ValueError(f"--baselines: unknown {bad}; use colour, random, colour,random or none")
    return items


def print_summary(rep: Any) -> None:
    import pandas as pd

    from ..analysis import differences_table, metrics_table
    from ..analysis.summary import metric_notes

    with pd.option_context("display.width", 200, "display.max_columns", 12, "display.max_colwidth", 60):
        print(metrics_table(rep.metrics).to_string(index=False))
        for note in metric_notes(rep.metrics):
            print(f"  {note}")
        if len(rep.differences):
            print("paired differences a − b [95% CI over the same resampled slides]:")
            print(differences_table(rep.differences).to_string(index=False))


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import collapse_from_features

    torch.set_num_threads(max(1, args.threads))
    names = args.names or [Path(f).stem for f in args.features]
    if len(names) != len(args.features):
        raise ValueError(f"--names has {len(names)} titles for {len(args.features)} feature files")
    if len(set(names)) != len(names):
        raise ValueError(f"panel titles must be unique, got {names}; pass --names")
    for f in args.features:
        if not Path(f).is_file():
            raise FileNotFoundError(f"features file not found: {f}; write it with `exaonepath-lab extract ... --out {f}`")
    inc: Any = {"true": True, "false": False}.get(args.include_plotlyjs.lower(), args.include_plotlyjs)
    rep = collapse_from_features(
        dict(zip(names, args.features)), out_dir=args.out, n_slides=args.n_slides, per_slide=args.per_slide,
        min_per_slide=args.min_per_slide, seed=args.seed, method=args.method, perplexity=args.perplexity,
        lisi_perplexity=args.lisi_perplexity, k=args.k, n_boot=args.n_boot, baselines=parse_baselines(args.baselines),
        thumbnails=not args.no_thumbnails, color_by=args.color_by, include_plotlyjs=inc, n_jobs=args.threads)
    print_summary(rep)
    if args.report:
        from ..report.audit_report import write_audit_report

        index = write_audit_report(rep, args.out, title="exaonepath-lab collapse",
                                   inputs={n: f for n, f in zip(names, args.features)})
        print(f"report: {index}")
    print(f"wrote {rep.paths['metrics']}, {rep.paths['differences']}, {rep.paths['html']}, {rep.paths['png']}")
    return 0
