"""``exaonepath-lab datasets check|fetch``: validate downloaded downstream datasets; download, verify and
unpack the public archives into the layout the loaders read."""
from __future__ import annotations

import argparse
import sys

NAMES = ["pcam", "mhist", "crc100k", "til", "msi_crc", "msi_stad"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="check or fetch the downstream datasets (PCam, MHIST, CRC-100K, TIL, MSI CRC/STAD)",
        description="`check`: report precisely what is missing or wrong in a download: layout, files, counts per "
        "partition and class (data_manifests/<name>.json), unreadable or wrongly sized images, HDF5 shapes, md5s. "
        "`fetch`: download the public archives, verify their md5, unpack them into ROOT/<name>/. ROOT is the same "
        "for every command: a folder holding one folder per dataset (data_manifests/README.md shows the tree), "
        "or one dataset's own folder.",
    )
    sub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    c = sub.add_parser("check", help="validate the datasets at ROOT (exit code 1 on any problem)")
    c.add_argument("root", help="a root holding pcam/ mhist/ crc100k/ til/ msi_crc/ msi_stad/ (datasets absent are "
                   "listed, not failed), or one dataset's own folder")
    c.add_argument("--dataset", choices=NAMES, help="check only this dataset (at ROOT/<name> or ROOT itself)")
    c.add_argument("--decode", action="store_true",
                   help="decode every image fully (catches truncated files; slower, so off by default: "
                   "the default reads headers, which catches missing, garbage and wrongly sized files)")
    c.add_argument("--verify", "--checksums", dest="checksums", action="store_true",
                   help="also verify the md5 of the archives/files whose md5 is published (data_manifests), found in "
                   "the dataset folder or its downloads/, and of every TIL tile against its metadata CSV (minutes)")
    c.add_argument("--expect-total", nargs="+", metavar="PARTITION=N",
                   help="replace the manifest's expected counts by these totals (for a subset you made on purpose)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--debug", action="store_true", help="show tracebacks")
    c.set_defaults(func=run)
    f = sub.add_parser("fetch", help="download, md5-verify and unpack a dataset's public archives into ROOT/<name>/",
                       description="Resumes partial downloads (HTTP Range), checks the published md5s, unpacks in a "
                       "temporary folder and renames it into place, records completion in ROOT/<name>/"
                       ".fetch-complete.json. MHIST is behind a form: put its files in ROOT/mhist/ and fetch unpacks "
                       "them. Without internet it stops at once with the URL and the manual route.")
    f.add_argument("name", choices=NAMES, help="dataset to fetch")
    f.add_argument("--root", required=True, help="root holding one folder per dataset; the data goes to ROOT/<name>/")
    f.add_argument("--mirror", help="base URL serving the archives by file name (instead of the manifest URLs)")
    f.add_argument("--remove-archives", action="store_true",
                   help="delete each downloaded archive once unpacked (saves space; `check --verify` then has nothing "
                   "to verify)")
    f.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a connection counts as lost")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--debug", action="store_true", help="show tracebacks")
    f.set_defaults(func=run_fetch)
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
    if not Path(args.root).is_dir():
        print(f"datasets check: folder not found: {args.root}", file=sys.stderr)
        return 1
    if args.dataset:
        reports, absent = [check_dataset(args.dataset, args.root, **kw)], []
    else:
        reports, absent = check_all(args.root, **kw)
    for r in reports:
        print(r.to_text())
    for a in absent:
        print(f"[absent] {a}")
    if not reports:
        print(f"no dataset found at {args.root}: neither a dataset's own folder nor a root holding "
              "pcam/ mhist/ crc100k/ til/ msi_crc/ msi_stad/ (data_manifests/README.md shows the tree)", file=sys.stderr)
        return 1
    bad = [r.dataset for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)} ok, {len(bad)} with problems" + (f": {bad}" if bad else ""))
    return 1 if bad else 0


def run_fetch(args: argparse.Namespace) -> int:
    from ..probing.fetch import FetchError, fetch_dataset

    try:
        fetch_dataset(args.name, args.root, mirror=args.mirror, keep_archives=not args.remove_archives,
                      timeout=args.timeout, progress=not args.quiet and sys.stderr.isatty())
    except FetchError as e:
        print(f"datasets fetch: {e}", file=sys.stderr)
        return 1
    return 0
