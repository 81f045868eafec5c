"""``exaonepath-lab datasets check ROOT [--dataset NAME]``: validate downloaded downstream datasets."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="check downloaded downstream datasets (PCam, MHIST, CRC-100K, TIL, MSI) against the paper's counts",
        description="Report precisely what is missing or wrong in a download: folders, files, counts per "
        "partition and class (data_manifests/<name>.json), unreadable or wrongly sized images, HDF5 shapes.",
    )
    sub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    c = sub.add_parser("check", help="validate a dataset folder (exit code 1 on any problem)")
    c.add_argument("root", help="the dataset's folder with --dataset; without it, a parent folder holding "
                   "pcam/ mhist/ crc100k/ til/ msi/ (datasets whose folder is absent are listed, not failed)")
    c.add_argument("--dataset", choices=["pcam", "mhist", "crc100k", "til", "msi_crc", "msi_stad"],
                   help="check ROOT as this one dataset")
    c.add_argument("--decode", action="store_true",
                   help="decode every image fully (catches truncated files; slower, so off by default: "
                   "the default reads headers, which catches missing, garbage and wrongly sized files)")
    c.add_argument("--checksums", action="store_true",
                   help="also verify md5 of the archives/files the manifest records (large files: minutes)")
    c.add_argument("--expect-total", nargs="+", metavar="PARTITION=N",
                   help="replace the manifest's expected counts by these totals (for a subset you made on purpose)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--debug", action="store_true", help="show tracebacks")
    c.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _parse_expect(items: list[str] | None) -> dict | None:
    if not items:
        return None
    out = {}
    for it in items:
        part, _, n = it.partition("=")
        if not n.isdigit():
            raise ValueError(f"--expect-total {it!r}: use PARTITION=N, e.g. trainval=2175")
        out[part] = {"total": int(n)}
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..probing.check import check_all, check_dataset

    kw = dict(expected=_parse_expect(args.expect_total), decode=args.decode, checksums=args.checksums,
              progress=not args.quiet and sys.stderr.isatty())
    if args.dataset:
        reports, absent = [check_dataset(args.dataset, args.root, **kw)], []
    else:
        if not Path(args.root).is_dir():
            print(f"datasets check: folder not found: {args.root}", file=sys.stderr)
            return 1
        reports, absent = check_all(args.root, **kw)
    for r in reports:
        print(r.to_text())
    for a in absent:
        print(f"[absent] {a}")
    if not reports:
        print(f"no dataset folder found under {args.root}; pass --dataset NAME to check ROOT itself", file=sys.stderr)
        return 1
    bad = [r.dataset for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)} ok, {len(bad)} with problems" + (f": {bad}" if bad else ""))
    return 1 if bad else 0
