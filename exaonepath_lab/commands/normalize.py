"""``exaonepath-lab normalize``: Macenko-normalize a folder, fit stain parameters of a tiling run, fit a target.

Examples::

    exaonepath-lab normalize IMAGES/ --out NORMALIZED/
    exaonepath-lab normalize --tiles TILES/                      # writes TILES/stain/<slide_id>.h5
    exaonepath-lab normalize --fit-target ref.png --save-target target.json
    exaonepath-lab normalize IMAGES/ --out NORMALIZED/ --target target.json
    exaonepath-lab normalize IMAGES/ --out NORMALIZED/ \
        --stain-target "EXAONEPath/macenko_target/target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png"

The last form uses the authors' own target: clone https://github.com/LG-AI-EXAONE/EXAONEPath (its
non-commercial licence keeps the image out of the kit) and pass the PNG; it is fitted as the authors'
macenko_normalizer() fits it and cached as OUT/stain_target.json. Without it the default is the HERef/maxCRef
reference of Macenko/torchstain.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._args import STAIN_TARGET_HELP


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "normalize",
        help="Macenko stain normalization of an image folder or a tiling run; fit and save targets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="?", help="folder of images (png/jpg/tif/...; searched recursively) to normalize")
    p.add_argument("--out", help="output folder for normalized PNGs, stain_status.csv, normalize_report.json and "
                   "stain_config.json "
                   "(required with INPUT; must differ from INPUT so originals are never overwritten)")
    p.add_argument("--tiles", metavar="TILE_DIR", help="output folder of `exaonepath-lab tile`: fit per-patch stain "
                   "parameters and write TILE_DIR/stain/<slide_id>.h5 beside patches/<slide_id>.h5 (resumable)")
    p.add_argument("--target", "--stain-target", dest="target", metavar="JSON_OR_IMAGE", help=STAIN_TARGET_HELP)
    p.add_argument("--fit-target", nargs="+", metavar="IMAGE", help="fit a target on these images (pixels pooled); "
                   "the authors fit on their 4096x4096 TCGA-55-A48X crop (pass it to --stain-target); used for INPUT if given")
    p.add_argument("--save-target", metavar="JSON", help="where to write the target fitted with --fit-target")
    p.add_argument("--policy", choices=["passthrough", "flag", "raise"], default="passthrough",
                   help="images that cannot be normalized (background, single colour): passthrough = write them "
                   "unchanged with a status (default: a batch job must not stop or drop items), flag = same plus "
                   "a warning, raise = stop at the first one")
    p.add_argument("--batch-size", type=int, default=64, help="images/patches per batch (64: ~40 MB of 224² patches "
                   "in flight, ~5 s of work per batch on 2 cores; larger batches only help on a GPU)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda:0 (default: CPU, fused kernels)")
    p.add_argument("--Io", type=float, default=240.0, help="transmitted light intensity (paper/torchstain: 240)")
    p.add_argument("--alpha", type=float, default=1.0, help="angle percentile for the stain vectors (paper: 1)")
    p.add_argument("--beta", type=float, default=0.15, help="OD threshold of tissue pixels (paper: 0.15)")
    p.add_argument("--min-tissue-fraction", type=float, default=0.01, help="share of tissue pixels below which a "
                   "patch is 'too_few_tissue_pixels' (1%%: at 224² that is 502 px, enough for the 1st/99th "
                   "angle percentiles to be more than single extreme pixels)")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist (default: resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..stain import StainConfig, StainTarget
    from ..stain.runs import fit_tiles, normalize_folder

    if not (args.input or args.tiles or args.fit_target):
        raise ValueError("nothing to do: give an image folder (with --out), --tiles TILE_DIR, or --fit-target IMAGE...")
    if args.save_target and not args.fit_target:
        raise ValueError("--save-target needs --fit-target IMAGE... (the images to fit the target on)")
    if args.input and not args.out:
        raise ValueError(f"--out is required to normalize {args.input} (originals are never overwritten)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {args.batch_size}")

    target = None
    if args.target:
        from ..stain.target import resolve_target

        run_dir = Path(args.out) if args.input else (Path(args.tiles) / "stain" if args.tiles else None)
        target = resolve_target(args.target, cache_path=run_dir / "stain_target.json" if run_dir else None)
        prov = target.provenance()
        print(f"Macenko target: {prov['name']} (sha256 {prov['sha256'][:16]}...)", file=sys.stderr)
    if args.fit_target:
        if args.target:
            raise ValueError("give either --target or --fit-target, not both")
        target = StainTarget.fit_files(args.fit_target, Io=args.Io, alpha=args.alpha, beta=args.beta)
        print(f"fitted {target!r} on {target.n_pixels} pixels", file=sys.stderr)
        if args.save_target:
            path = target.save(args.save_target)
            print(f"saved target to {path}", file=sys.stderr)

    cfg = StainConfig(target=args.target, fit_target=tuple(args.fit_target or ()), save_target=args.save_target,
                      Io=args.Io, alpha=args.alpha, beta=args.beta, min_tissue_fraction=args.min_tissue_fraction,
                      policy=args.policy, batch_size=args.batch_size)
    norm = cfg.normalizer(target, device=args.device)
    results: dict[str, Any] = {}
    if args.input:
        rep = normalize_folder(args.input, args.out, norm, batch_size=args.batch_size, overwrite=args.overwrite,
                               progress=not args.quiet)
        cfg.save(Path(args.out) / "stain_config.json")
        results["folder"] = {k: rep[k] for k in ("output", "n_images", "n_skipped_done", "counts")}
    if args.tiles:
        rep = fit_tiles(args.tiles, norm, batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.quiet)
        cfg.save(Path(args.tiles) / "stain" / "stain_config.json")
        results["tiles"] = {k: rep[k] for k in ("tile_dir", "slides", "patches")}
    if results:
        print(json.dumps(results, indent=2))
    failed = results.get("tiles", {}).get("slides", {}).get("failed", 0)
    return 1 if failed else 0
