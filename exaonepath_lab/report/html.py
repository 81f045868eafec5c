"""A self-contained, offline HTML report: sections of text, tables, interactive and static figures.

The report is one ``index.html`` with its assets beside it: ``plotly.min.js`` is copied
from the installed plotly package (never fetched from a CDN), PNGs are referenced by
relative path, so the folder can be zipped and opened on a machine without internet.
The report only *renders* results computed elsewhere.
"""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import write_text_atomic

PLOTLY_JS = "plotly.min.js"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #a50034;padding-bottom:.3em} h2{margin-top:2.2em;color:#a50034}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
.bad{background:#fdecea;border-left:4px solid #d93025;padding:.6em 1em}
.good{background:#e6f4ea;border-left:4px solid #188038;padding:.6em 1em}
img{max-width:100%;border:1px solid #ddd} .fig{margin:1em 0} nav a{margin-right:1em}
code{background:#f4f4f4;padding:0 .25em}
"""


@dataclass
class Section:
    """One titled block: paragraphs of HTML, then tables, figures and images in order."""

    title: str
    anchor: str
    blocks: list[str] = field(default_factory=list)


class HtmlReport:
    """Collect sections, then :meth:`write` ``index.html`` + ``plotly.min.js`` into a folder.

    Example::

        r = HtmlReport("Demo")
        s = r.section("Figure 3")
        r.text(s, "MPP of every extracted patch.")
        r.plotly(s, fig)            # interactive, offline
        r.image(s, "fig3.png")      # static, relative to the report folder
        r.table(s, df)
        r.write("outputs")
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []
        self._n_fig = 0

    def section(self, title: str) -> Section:
        anchor = "s%d" % (len(self.sections) + 1)
        sec = Section(title, anchor)
        self.sections.append(sec)
        return sec

    def text(self, sec: Section, html_text: str, kind: str = "") -> None:
        """Append raw HTML (a paragraph is wrapped in <p> unless it starts with a tag)."""
        body = html_text if html_text.lstrip().startswith("<") else f"<p>{html_text}</p>"
        sec.blocks.append(f'<div class="{kind}">{body}</div>' if kind else body)

    def table(self, sec: Section, df: pd.DataFrame, *, caption: str = "", floatfmt: str = "{:.3f}") -> None:
        fmt = {c: (lambda v, f=floatfmt: "" if pd.isna(v) else f.format(v)) for c in df.columns if pd.api.types.is_float_dtype(df[c])}
        tab = df.to_html(index=False, escape=True, formatters=fmt, na_rep="–", border=0)
        cap = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
        sec.blocks.append(cap + tab)

    def plotly(self, sec: Section, fig: Any, caption: str = "") -> None:
        """Embed a plotly figure; the library is loaded once from the local ``plotly.min.js``."""
        self._n_fig += 1
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{self._n_fig}")
        cap = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
        sec.blocks.append(f'<div class="fig">{div}{cap}</div>')

    def image(self, sec: Section, path: str | os.PathLike, caption: str = "", *, embed: bool = False, base: str | os.PathLike | None = None) -> None:
        """Show a PNG: by relative path (``base`` = the report folder), or embedded as base64."""
        p = Path(path)
        if embed:
            src = "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
        else:
            src = os.path.relpath(p, base) if base is not None else str(p)
        cap = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
        sec.blocks.append(f'<div class="fig"><img src="{html.escape(src)}" alt="{html.escape(caption or p.name)}">{cap}</div>')

    def render(self) -> str:
        nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        body = "\n".join(
            f'<h2 id="{s.anchor}">{html.escape(s.title)}</h2>\n' + "\n".join(s.blocks) for s in self.sections
        )
        sub = f"<p>{self.subtitle}</p>" if self.subtitle else ""
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>"
            f"<script src='{PLOTLY_JS}'></script></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}<nav>{nav}</nav>{body}</body></html>\n"
        )

    def write(self, out_dir: str | os.PathLike, name: str = "index.html") -> Path:
        """Write the report and ``plotly.min.js`` beside it (atomically); return the HTML path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_plotlyjs(out)
        return write_text_atomic(out / name, self.render())


def write_plotlyjs(out_dir: str | os.PathLike) -> Path:
    """Copy the installed plotly.js next to a report so it works offline."""
    from plotly.offline import get_plotlyjs

    target = Path(out_dir) / PLOTLY_JS
    js = get_plotlyjs()
    if not target.exists() or target.stat().st_size != len(js.encode()):
        write_text_atomic(target, js)
    return target
