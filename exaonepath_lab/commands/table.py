"""``exaonepath-lab table``: Table 1 (md/html/csv) and Figure 1 (html/png) from probe results."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "table",
        help="render Table 1 and Figure 1 with the published rows and your probe results",
        description="Published rows exactly as printed (averages re-checked: a disagreeing printed average is "
        "marked with a dagger; an incomplete row has none), your models merged in from probe result JSONs, "
        "and Figure 1 (a) accuracy vs parameters, (b) vs training WSIs, log x axes.",
    )
    p.add_argument("--results", nargs="*", default=[],
                   help="probe result JSON files or folders (searched recursively); none = published rows only")
    p.add_argument("--out", required=True, help="output folder for table1.{md,html,csv} and figure1.{html,png}")
    p.add_argument("--method", choices=["linear", "knn"], default="linear",
                   help="which results to tabulate; Table 1 is linear evaluation")
    p.add_argument("--no-published", action="store_true", help="only your rows")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report.figure1 import figure1_plotly, figure1_png
    from ..report.html import PLOTLY_JS, write_plotlyjs
    from ..report.table1 import build_table1, load_results, table1_markdown, write_table1
    from ..io import atomic_path

    out = Path(args.out)
    results = load_results(args.results)
    table = build_table1(results, include_published=not args.no_published, method=args.method)
    paths = write_table1(table, out)
    write_plotlyjs(out)  # offline: the HTML loads plotly.min.js from beside it
    with atomic_path(out / "figure1.html") as tmp:
        figure1_plotly(table).write_html(str(tmp), include_plotlyjs=PLOTLY_JS, full_html=True)
    png = figure1_png(table, out / "figure1.png")
    print(table1_markdown(table))
    print(f"{len(results)} result files; wrote {', '.join(str(p) for p in paths.values())}, {out / 'figure1.html'}, {png}")
    return 0
