"""The offline HTML report of a collapse run (``exaonepath-lab audit`` / ``collapse --report``).

Renders a :class:`~exaonepath_lab.analysis.CollapseReport` like the demo's Figure 2 section: the
sample (slides used, slides dropped and why), the plain-words reading from the paired
differences, Figure 2 (interactive, hover shows the patch; and static), the metrics table with
direction arrows and chance row, the paired differences, and the settings as a table.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..analysis import summary
from .demo_report import figure2_section, settings_table
from .html import HtmlReport


def write_audit_report(rep: Any, out_dir: str | Path, *, title: str = "exaonepath-lab audit: WSI-specific feature collapse",
                       inputs: Mapping[str, Any] | None = None, panels: tuple[str, str, str] | None = None) -> Path:
    """Write ``out_dir/index.html`` (+ ``plotly.min.js``) for ``rep``; return its path.

    ``panels``: the paper's (a), (b), (c) among ``rep.panels`` for the three-panel reading; otherwise
    every reported difference is read on its own.
    """
    out = Path(out_dir)
    r = HtmlReport(title, "Does the encoder cluster patches by the slide they came from, beyond what the input "
                   "colour carries? Every number has a 95% bootstrap interval over slides and sits next to "
                   "reference rows computed on the same patches.")
    s = r.section("Input and sample")
    if inputs:
        r.table(s, settings_table(inputs), caption="input")
    plan = rep.plan
    r.text(s, f"{len(rep.sample)} patches of {len(plan.used)} slides (at least {plan.min_per_slide} patches per slide "
              "required, decided before any feature was computed).")
    r.table(s, plan.used, caption="slides used")
    if len(plan.dropped):
        r.table(s, plan.dropped, caption="slides dropped before any compute, and why")
    for note in plan.notes:
        r.text(s, html.escape(note), "note")

    s = r.section("Figure 2 and the numbers")
    lines = (summary.collapse_reading(rep.metrics, rep.differences, panels=panels) if panels
             else summary.differences_reading(rep.differences))
    figure2_section(r, s, out, metrics=rep.metrics, differences=rep.differences, lines=lines,
                    paths={k: v for k, v in rep.paths.items() if k in ("html", "png")})

    s = r.section("Settings and files")
    r.table(s, settings_table({k: v for k, v in rep.settings.items() if not isinstance(v, dict)}), caption="settings")
    r.table(s, pd.DataFrame({"file": list(rep.paths), "path": [str(p) for p in rep.paths.values()]}),
            caption="files written")
    return r.write(out)
