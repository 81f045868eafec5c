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
        "compute k-NN slide purity, iLISI, slide silhouette, slide-probe balanced accuracy and the robustness "
        "index (when labels exist) with bootstrap CIs and chance levels, embed (t-SNE by default, as the paper) "
        "and write OUT/metrics.csv, OUT/figure2.html (hover shows the patch), OUT/figure2.png.",
    )
    p.add_argument("features", nargs="+", help="feature files written by `exaonepath-lab extract`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--names", nargs="+", help="panel titles, one per file (default: file stems)")
    p.add_argument("--method", choices=["tsne", "umap", "pca"], default="tsne",
                   help="2-D embedding; tsne (openTSNE, PCA init) is the paper's")
    p.add_argument("--perplexity", type=float, default=30.0,
                   help="t-SNE perplexity and iLISI neighbourhood (30: the common default, used by LISI)")
    p.add_argument("--n-slides", type=int, default=10, help="slides sampled (paper: 10)")
    p.add_argument("--per-slide", type=int, default=1000, help="patches per slide (paper: 1,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, embedding and bootstrap")
    p.add_argument("--k", type=int, default=15,
                   help="neighbours for purity and robustness index (15: local, stable at ~1,000 patches per slide)")
    p.add_argument("--n-boot", type=int, default=200,
                   help="bootstrap replicates over slides for the 95%% CIs (200: CI ends stable to ~0.01)")
    p.add_argument("--color-by", default="slide_id", help="meta column for colours (slide_id, class_name, label)")
    p.add_argument("--no-thumbnails", action="store_true",
                   help="skip hover thumbnails (they are read from the patches' source files)")
    p.add_argument("--include-plotlyjs", default="true",
                   help="true (embed plotly.js: offline, ~4 MB), cdn, or directory (plotly.min.js beside the HTML)")
    p.add_argument("--threads", type=int, default=2, help="torch/openTSNE threads")
    p.set_defaults(func=run)


def thumbnails_for(meta: Any, size: int = 48) -> list[str] | None:
    """Thumbnails of ``meta`` rows read from their sources (slides via OpenSlide or image files); None if unreadable."""
    import numpy as np

    from ..analysis.figure2 import thumbnail_uri
    from ..datasets import read_rgb

    try:
        if "slide_path" in meta.columns:
            from ..slides.dataset import PatchListDataset

            ds = PatchListDataset(meta, out_px=size)
            return [thumbnail_uri(ds[i]["image"], size) for i in range(len(ds))]
        if "path" in meta.columns:
            out, cache = [], {}
            for r in meta.itertuples():
                img = cache.get(r.path)
                if img is None:
                    img = cache.setdefault(r.path, read_rgb(r.path))
                if {"x", "y", "patch_size"} <= set(meta.columns) and not np.isnan(float(r.patch_size)):
                    x, y, s = int(r.x), int(r.y), int(r.patch_size)
                    img = img[y:y + s, x:x + s]
                out.append(thumbnail_uri(img, size))
            return out
    except (OSError, ValueError, KeyError) as e:
        print(f"collapse: no thumbnails ({e})")
    return None


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from ..analysis import collapse_metrics, figure2, sample_patches
    from ..features import load_features
    from ..io import atomic_path, write_json_atomic

    torch.set_num_threads(max(1, args.threads))
    names = args.names or [Path(f).stem for f in args.features]
    if len(names) != len(args.features):
        raise ValueError(f"--names has {len(names)} titles for {len(args.features)} feature files")
    if len(set(names)) != len(names):
        raise ValueError(f"panel titles must be unique, got {names}; pass --names")
    out = Path(args.out)
    panels, tables, sampled, keys = {}, [], {}, {}
    for name, f in zip(names, args.features):
        fs = load_features(f)
        idx = sample_patches(fs.meta, n_slides=args.n_slides, per_slide=args.per_slide, seed=args.seed)
        sub = fs.subset(idx)
        panels[name] = (sub.features, sub.meta)
        sampled[name] = sub.meta
        keys[name] = {"file": str(f), "key": fs.key, "norm_status": sub.status_counts()}
        tables.append(collapse_metrics(sub.features, sub.meta, name=name, k=args.k, perplexity=args.perplexity,
                                       n_boot=args.n_boot, seed=args.seed))
        print(f"{name}: {len(sub)} patches of {sub.meta['slide_id'].nunique()} slides from {f}")
    metrics = pd.concat(tables, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    first = next(iter(sampled.values()))
    same = all(len(m) == len(first) and (m["slide_id"].to_numpy() == first["slide_id"].to_numpy()).all()
               for m in sampled.values())
    thumbs = None
    if not args.no_thumbnails:
        if same:  # the same patches in every panel: read and store their thumbnails once
            t0 = thumbnails_for(first)
            thumbs = {n: t0 for n in sampled} if t0 is not None else None
        else:
            thumbs = {n: t for n, m in sampled.items() if (t := thumbnails_for(m)) is not None}
    inc: Any = {"true": True, "false": False}.get(args.include_plotlyjs.lower(), args.include_plotlyjs)
    fig = figure2(panels, metrics=metrics, method=args.method, perplexity=args.perplexity, seed=args.seed,
                  color_by=args.color_by, thumbnails=thumbs or None)
    paths = fig.save(out, include_plotlyjs=inc)
    with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{f"panel{i}": c for i, c in enumerate(fig.embeddings.values())})
    write_json_atomic(out / "collapse.json", {"panels": keys, "same_patches_in_all_panels": bool(same),
                                              "args": {k: v for k, v in vars(args).items() if k != "func"},
                                              "files": {k: str(v) for k, v in paths.items()}})
    cols = ["features", "metric", "value", "ci_low", "ci_high", "chance"]
    with pd.option_context("display.width", 160, "display.max_columns", 10):
        print(metrics[cols].round(3).to_string(index=False))
    print(f"wrote {out / 'metrics.csv'}, {paths['html']}, {paths['png']}")
    return 0
