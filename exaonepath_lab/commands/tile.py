"""``exaonepath-lab tile``: slides → tissue patches (CLAM-style, MPP-aware), resumable and shardable."""
from __future__ import annotations

import argparse
import os
import sys

from ..tiling.config import TileConfig

_D = TileConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tile",
        help="cut slides into non-overlapping tissue patches (HDF5 coords, CLAM convention)",
        description=(
            "Segment tissue on a thumbnail and lay a non-overlapping grid whose level-0 patch side is "
            "round(target_px * target_mpp / slide_mpp) (paper: 256 px at 0.5 um/px, 512 px at 0.25). "
            "Writes OUT/patches/<id>.h5, OUT/masks/<id>.png, OUT/manifest.csv, OUT/tile_config.json and "
            "OUT/tile_report.json. Rerunning skips slides already done with the same settings. "
            "Exit status: 0 all slides ok or skipped, 3 some failed (see the manifest), 1 usage error. "
            "On SLURM: sbatch --array=0-9 --wrap 'exaonepath-lab tile SLIDES --out OUT', then "
            "'exaonepath-lab tile --merge --out OUT'."
        ),
    )
    p.add_argument("inputs", nargs="*", metavar="SLIDES_OR_MANIFEST",
                   help="slide files, folders of slides, or CSV manifests with a `path` column (optional "
                        "`slide_id`, `mpp`); not needed with --merge")
    p.add_argument("--out", required=True, help="output folder (created; reused on reruns to resume)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="slides tiled in parallel processes (default: min(4, CPUs); segmentation is "
                        "decode-bound, more rarely helps on one disk). 1 = in this process, easiest to debug")
    p.add_argument("--mpp-override", type=float, default=None,
                   help="um/px to use for every slide instead of its metadata, e.g. 0.25 for a 40x scan "
                        "without MPP (default: read it from the slide; a slide without one fails clearly, "
                        "never guessed). A manifest `mpp` column wins over this per slide")
    p.add_argument("--target-mpp", type=float, default=_D.target_mpp,
                   help=f"um/px a patch corresponds to after resizing to --target-px (default {_D.target_mpp}: "
                        "the paper's 0.5 MPP)")
    p.add_argument("--target-px", type=int, default=_D.target_px,
                   help=f"patch side in px at --target-mpp (default {_D.target_px}, the paper's)")
    p.add_argument("--min-tissue", type=float, default=_D.min_tissue,
                   help=f"keep a patch when at least this fraction is tissue (default {_D.min_tissue}: the paper "
                        "gives none; half sits between CLAM's permissive point test and all-tissue)")
    p.add_argument("--seg-mpp", type=float, default=_D.seg_mpp,
                   help=f"um/px of the segmentation thumbnail (default {_D.seg_mpp}: a patch spans 16 mask px, "
                        "a 40k px slide at 0.25 um/px gives a 1,250 px thumbnail)")
    p.add_argument("--no-pen-filter", action="store_true",
                   help="keep ink-coloured and very dark pixels (default: green/blue/red ink and black "
                        "marker are removed before thresholding, as they are saturated and not tissue)")
    p.add_argument("--allow-plain-images", action="store_true",
                   help="also accept PNG/JPEG files as one-level slides (need --mpp-override or an `mpp` column)")
    p.add_argument("--shard-index", type=int, default=None,
                   help="this task's shard (default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, else 0)")
    p.add_argument("--num-shards", type=int, default=None,
                   help="number of shards (default: SLURM_ARRAY_TASK_COUNT, else 1); each writes "
                        "manifest.shard-IIII-of-NNNN.csv")
    p.add_argument("--merge", action="store_true",
                   help="join the shard manifests in --out into manifest.csv and tile_report.json, then exit")
    p.add_argument("--allow-partial", action="store_true",
                   help="with --merge: merge even if some shards have no manifest yet (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (e.g. in batch logs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tiling.run import format_report, merge_manifests, run_tiling

    if args.merge:
        res = merge_manifests(args.out, allow_partial=args.allow_partial)
        print(format_report(res.report))
        print(f"manifest: {res.manifest_path}")
        return 3 if res.report["counts"]["failed"] else 0
    if not args.inputs:
        print("exaonepath-lab tile: error: give SLIDES_OR_MANIFEST (or --merge)", file=sys.stderr)
        return 1
    cfg = TileConfig(
        target_mpp=args.target_mpp, target_px=args.target_px, min_tissue=args.min_tissue, seg_mpp=args.seg_mpp,
        exclude_pen=not args.no_pen_filter, mpp_override=args.mpp_override,
        allow_plain_images=args.allow_plain_images,
    )
    res = run_tiling(args.inputs, args.out, cfg, workers=args.workers, shard_index=args.shard_index,
                     num_shards=args.num_shards, progress=not args.no_progress)
    print(format_report(res.report))
    print(f"manifest: {res.manifest_path}")
    return 3 if res.report["counts"]["failed"] else 0
