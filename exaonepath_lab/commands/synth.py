"""``exaonepath-lab synth``: generate the synthetic multi-site H&E cohort."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic multi-site H&E cohort (pyramidal TIFF WSIs + class maps)",
        description="Render synthetic H&E whole-slide images whose tissue classes differ by morphology and whose "
        "slides differ by physically modelled stain/scanner effects (per-slide H&E OD vectors and strengths, "
        "white point, gamma, blur, noise, JPEG). Writes <id>.tiff, <id>.json, <id>_classmap.png, <id>_thumb.png "
        "and cohort.csv into --out. Reruns skip slides already complete for the same spec.",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--slides", type=int, default=10, help="number of slides (default 10: like the paper's Figure 2, one colour per WSI)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed; same seed and kit version give byte-identical slides (default 0)")
    p.add_argument(
        "--mpp", type=float, nargs="+", default=[0.5, 0.25],
        help="pixel sizes (µm/px) cycled over slides (default 0.5 0.25: the 20x/40x mix of Figure 3)",
    )
    p.add_argument(
        "--size", type=float, nargs=2, default=[2300.0, 2800.0], metavar=("MIN_UM", "MAX_UM"),
        help="range of slide width/height in µm (default 2300 2800: ~150-300 patches of 256 px at 0.5 MPP per slide "
        "and a 10-slide cohort in about a minute on 2 cores)",
    )
    p.add_argument(
        "--stain-strength", type=float, default=1.0,
        help="scale of between-slide stain/scanner differences (0 = all slides stained and scanned alike; default 1: "
        "visibly different labs)",
    )
    p.add_argument("--workers", type=int, default=None, help="slides rendered in parallel (default min(2, CPUs); ~1 GB RAM each)")
    p.add_argument("--overwrite", action="store_true", help="re-render slides even if they are complete")
    p.add_argument("--no-pen", action="store_true", help="no pen mark on any slide (default: one slide has one)")
    p.add_argument("--no-fold", action="store_true", help="no tissue fold on any slide (default: the last slide has one)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..slides.synthetic import make_cohort

    df = make_cohort(
        args.out,
        n_slides=args.slides,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        mpps=tuple(args.mpp),
        size_um=tuple(args.size),
        acquisition_strength=args.stain_strength,
        pen_slides=0 if args.no_pen else 1,
        fold_slides=0 if args.no_fold else 1,
    )
    counts = df.status.value_counts().to_dict()
    print(f"synth: {len(df)} slides in {args.out} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}); "
          f"table: {args.out}/cohort.csv")
    for r in df[df.status == "failed"].itertuples():
        print(f"  FAILED {r.slide_id}: {r.error}")
    return 1 if counts.get("failed") else 0
