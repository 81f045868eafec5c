"""``exaonepath-lab audit``: your slides, your encoders -> Figure 2 with references and an offline report, in one command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._args import parse_key_values
from .collapse import add_collapse_options, parse_baselines, print_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="audit encoders for WSI-specific feature collapse on your slides: Figure 2, references, report",
        description="From a folder or CSV of whole-slide images (tiled first), a tiling output, or an image folder "
        "(one sub-folder of patches per slide; symbolic links followed), and one or more encoders: sample K slides × "
        "M patches (slides with too few patches are dropped before any compute, and listed), extract features of "
        "every encoder on raw and Macenko-normalized input (cached in OUT/features: a rerun resumes), add the "
        "reference rows (colour statistics, random-init twin of each encoder) on the same patches, compute every "
        "metric with a 95% bootstrap CI over slides and the paired differences between panels, and write "
        "OUT/index.html (offline), OUT/figure2.html/png, OUT/metrics.csv, OUT/differences.csv, OUT/collapse.json.",
    )
    p.add_argument("input", help="folder of WSIs, CSV of WSIs (column 'path'), tiling output (manifest.csv + "
                   "patches/), or image folder (FOLDER/<slide>/<patch>.png)")
    p.add_argument("--out", required=True, help="output folder (feature caches, figures, report)")
    p.add_argument("--encoder", action="append", required=True,
                   help="encoder registry name (repeat for several): kit-dino, exaonepath, uni, timm:<name>, "
                   "random:<name> ... (exaonepath_lab.encoders.list_encoders())")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="weights of the encoder at the same position (repeat; 'none' for an encoder without); the "
                   "kit never downloads")
    p.add_argument("--encoder-kw", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra create_encoder keywords for every encoder, e.g. img_size=96")
    p.add_argument("--input-kind", choices=["auto", "wsi", "tiles", "images"], default="auto",
                   help="what INPUT is (auto: manifest.csv -> tiles; slide files at the top -> wsi; else images)")
    p.add_argument("--class-dirs", action="store_true",
                   help="images: FOLDER/<class>/<slide>/img.png (class labels enable the SO share)")
    p.add_argument("--out-px", type=int, help="tiles: read patches resized to this many px (default: the tiler's)")
    p.add_argument("--patch-px", type=int, default=224,
                   help="images: an image directly in INPUT (not in a slide sub-folder) is one slide, cut into "
                   "non-overlapping tissue patches of this many px (224)")
    p.add_argument("--mpp", "--mpp-override", dest="mpp", type=float,
                   help="WSI input: µm/px for every slide instead of its metadata (slides without an MPP need it; "
                   "for some slides only: a CSV with an `mpp` column); same as `tile --mpp-override`")
    p.add_argument("--no-resize", action="store_true",
                   help="skip the encoders' Resize->CenterCrop (small patches an encoder was built for)")
    p.add_argument("--stain-target", help="fitted Macenko target JSON for the Macenko panels (default: HERef)")
    p.add_argument("--stain-backend", choices=["auto", "torch", "numba"], default="auto",
                   help="Macenko implementation (torch: no compile step)")
    add_collapse_options(p)
    p.add_argument("--baselines", default="colour,random",
                   help="reference rows: colour, random, both (default) or none")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=2, help="torch/openTSNE threads")
    p.add_argument("--workers", type=int, default=1, help="tiling processes (WSI input)")
    p.add_argument("--no-thumbnails", action="store_true", help="skip hover thumbnails")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def encoder_specs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(name, checkpoint or None) per --encoder; checkpoints pair with encoders by position."""
    ck = list(args.checkpoint)
    if len(ck) > len(args.encoder):
        raise ValueError(f"{len(ck)} --checkpoint for {len(args.encoder)} --encoder; give one per encoder "
                         "('none' for an encoder without weights)")
    ck += [None] * (len(args.encoder) - len(ck))
    return [(e, None if c in (None, "none", "") else c) for e, c in zip(args.encoder, ck)]


def encoder_label(name: str, checkpoint: str | None, taken: set[str]) -> str:
    label = name if checkpoint is None else f"{name} ({Path(checkpoint).stem})"
    base, i = label, 2
    while label in taken:
        label, i = f"{base} #{i}", i + 1
    taken.add(label)
    return label


def load_dataset(args: argparse.Namespace, out: Path) -> tuple[Any, dict[str, Any]]:
    """The patch dataset of INPUT (WSIs tiled into OUT/tiles first, resumable) and a description for the report."""
    from ..analysis.inputs import open_patches

    return open_patches(args.input, kind=args.input_kind, tiles_dir=out / "tiles", out_px=args.out_px,
                        patch_px=args.patch_px, class_dirs=args.class_dirs, mpp=args.mpp, workers=args.workers,
                        progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import collapse_report
    from ..encoders import create_encoder
    from ..report.audit_report import write_audit_report
    from ..stain import MacenkoNormalizer
    from ..stain.target import StainTarget

    torch.set_num_threads(max(1, args.threads))
    baselines = parse_baselines(args.baselines)
    out = Path(args.out)
    # Everything that can fail cheaply fails first: encoders (weights present), stain target, input layout.
    kw = parse_key_values(args.encoder_kw, "--encoder-kw")
    taken: set[str] = set()
    encoders = [(encoder_label(n, c, taken), create_encoder(n, checkpoint=c, device=args.device, **kw))
                for n, c in encoder_specs(args)]
    target = StainTarget.load(args.stain_target) if args.stain_target else None
    mac = MacenkoNormalizer(target, backend=args.stain_backend)
    ds, info = load_dataset(args, out)
    if not args.quiet:
        print(f"[audit] {info['patches found']} ({info['kind']} input {args.input})", file=sys.stderr)
        for key in ("slides excluded by tiling", "images without a tissue patch (left out)"):
            if key in info:  # said before any feature is computed
                print(f"  {key}: {info[key]}", file=sys.stderr)
    panels: dict[str, tuple[Any, Any]] = {}
    for label, enc in encoders:
        panels[f"{label}, raw input"] = (enc, None)
        panels[f"{label}, Macenko input"] = (enc, mac)
    rep = collapse_report(
        ds, panels, out_dir=out, n_slides=args.n_slides, per_slide=args.per_slide, min_per_slide=args.min_per_slide,
        seed=args.seed, method=args.method, perplexity=args.perplexity, lisi_perplexity=args.lisi_perplexity,
        k=args.k, n_boot=args.n_boot, baselines=baselines, batch_size=args.batch_size, resize=not args.no_resize,
        crop=not args.no_resize, thumbnails=not args.no_thumbnails, color_by=args.color_by, progress=not args.quiet,
        include_plotlyjs="directory", n_jobs=args.threads)
    titles = list(panels)
    # Two encoders given raw-trained first, Macenko-trained second: the paper's (a), (b), (c).
    paper = (titles[0], titles[1], titles[3]) if len(encoders) == 2 else None
    own = [label for label, enc in encoders if getattr(enc, "checkpoint_sha256", None) == f"random-seed-{args.seed}"]
    skipped = (f" (no random-init twin of {', '.join(own)}: it is random-init itself)"
               if own and "random" in baselines else "")
    info.update({"encoders": ", ".join(f"{label}" for label, _ in encoders), "stain target": args.stain_target or
                 "HERef (torchstain default)", "baselines": (", ".join(baselines) or "none") + skipped})
    index = write_audit_report(rep, out, inputs=info, panels=paper)
    print_summary(rep)
    print(f"report: {index}")
    return 0
