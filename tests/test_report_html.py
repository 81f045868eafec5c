"""The HTML report is self-contained and offline: local plotly.js, no CDN, images beside it."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from exaonepath_lab.report.html import HtmlReport


def test_report_is_offline_and_contains_everything(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = tmp_path / "fig.png"
    plt.figure()
    plt.plot([0, 1], [1, 0])
    plt.savefig(png)
    plt.close("all")
    r = HtmlReport("Demo <report>")
    s = r.section("Figure 3")
    r.text(s, "MPP of patches & more")
    r.plotly(s, go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), caption="interactive")
    r.image(s, png, caption="static", base=tmp_path)
    r.table(s, pd.DataFrame({"model": ["a", "b"], "acc": [0.91234, np.nan]}))
    path = r.write(tmp_path)
    text = path.read_text()
    js = tmp_path / "plotly.min.js"
    assert js.exists() and js.stat().st_size > 1_000_000
    assert "cdn.plot.ly" not in text and "https://cdn" not in text
    assert "<script src='plotly.min.js'>" in text
    assert 'src="fig.png"' in text
    assert "0.912" in text and "–" in text
    assert "Demo &lt;report&gt;" in text and "MPP of patches & more" in text
    assert len(re.findall(r'class="fig"', text)) == 2
    assert not list(tmp_path.glob("*.part*")), "temporary files left behind"
