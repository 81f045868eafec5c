"""Table 1 renders the published numbers exactly; Figure 1 is drawn from them; user rows merge in."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from exaonepath_lab.report.figure1 import figure1_plotly, figure1_png, figure1_points
from exaonepath_lab.report.table1 import (build_table1, check_published_averages, load_results, published_table1,
                                          table1_csv, table1_html, table1_markdown, write_table1)

# PROTOCOL.md §4, copied by hand (an independent transcription of the paper's Table 1).
PAPER_ROWS = """\
| ResNet50 ImageNet | - | - | - | 0.833 | 0.806 | 0.849 | 0.915 | 0.653 | 0.664 | 0.786 |
| ViT-L/16 ImageNet | - | - | 307M | 0.852 | 0.796 | 0.847 | 0.924 | 0.669 | 0.671 | 0.793 |
| Lunit | 21k | 33M | 22M | 0.918 | 0.771 | 0.949 | 0.943 | 0.745 | 0.756 | 0.847 |
| CTransPath | 32k | 15M | 28M | 0.872 | 0.817 | 0.840 | 0.930 | 0.694 | 0.726 | 0.813 |
| Phikon | 6k | 43M | 86M | 0.906 | 0.795 | 0.883 | 0.946 | 0.733 | 0.751 | 0.836 |
| Virchow | 1.5M | 2B | 632M | 0.933 | 0.834 | 0.968 | - | - | - | - |
| RudolfV | 103k | 759M | 307M | 0.944 | 0.821 | 0.973 | 0.943 | 0.755 | 0.788 | 0.871 |
| GigaPath (patch encoder) | 171k | 1.3B | 1,100M | 0.947 | 0.822 | 0.964 | 0.938 | 0.753 | 0.748 | 0.862 |
| EXAONEPath | 35k | 285M | 86M | 0.901 | 0.818 | 0.946 | 0.939 | 0.756 | 0.804 | 0.861 |
"""


def test_markdown_renders_the_published_rows_exactly() -> None:
    md = table1_markdown(build_table1(), mark=False)
    lines = md.splitlines()
    assert lines[0] == ("| Model | WSIs | Patches | Params | PCAM | MHIST | CRC-100K | TIL Det. | MSI CRC | MSI STAD "
                        "| Avg |")
    assert "\n".join(lines[2:11]) + "\n" == PAPER_ROWS


def test_disagreeing_average_is_flagged_and_incomplete_row_has_none() -> None:
    chk = check_published_averages().set_index("model")
    assert list(chk.index[~chk.agrees]) == ["ResNet50 ImageNet"]
    assert chk.loc["ResNet50 ImageNet", "row_mean"] == pytest.approx(0.78667, abs=1e-5)
    assert chk.loc["ResNet50 ImageNet", "row_mean_3dp"] == 0.787
    assert math.isnan(chk.loc["Virchow", "row_mean"])
    md = table1_markdown(build_table1())
    assert "| 0.786 \u2020 |" in md and "row mean is 0.7867 -> 0.787" in md
    assert "| 0.968 | - | - | - | - |" in md  # Virchow: no average, never a zero-filled one


def test_published_data_types() -> None:
    df = published_table1()
    assert len(df) == 9 and df.loc[df.model == "EXAONEPath", "params_m"].item() == 86
    assert df.loc[df.model == "ResNet50 ImageNet", "params_m"].item() == 25  # Figure 1a, though the table is blank
    assert df.loc[df.model == "GigaPath (patch encoder)", "params"].item() == "1,100M"


PAPER_RUN = {"protocol": {"lr": 0.1, "lr_schedule": "constant", "momentum": 0.9, "weight_decay": 0.0,
                          "batch_size": 128, "iterations": 12_500, "selection": "best_val"},
             "selection_used": "best_val", "preprocessing": {"resize_size": 256, "crop_size": 224},
             "normalizer": {"class": "MacenkoNormalizer", "config": {"target": {
                 "source": "target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png"}}}}


def _result(model: str, dataset: str, top1: float, std: float = 0.01, **info) -> dict:
    return {"kind": "exaonepath-lab/probe-result", "model": model, "dataset": dataset, "method": "linear",
            "test": {"top1": {"mean": top1, "std": std, "values": [top1]}}, "model_info": info,
            "normalization": {"test": {"ok": 90, "too_few_tissue_pixels": 10}}, **PAPER_RUN}


def test_user_rows_merge_with_recomputed_average(tmp_path: Path) -> None:
    tasks = ["pcam", "mhist", "crc100k", "til", "msi_crc", "msi_stad"]
    full = [_result("mine", t, 0.80 + 0.01 * i, params=86_000_000, wsis=1200) for i, t in enumerate(tasks)]
    partial = [{k: v for k, v in _result("half", "mhist", 0.7).items() if k not in PAPER_RUN}]  # an old result file
    for i, r in enumerate(full + partial):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    (tmp_path / "unrelated.json").write_text(json.dumps({"hello": 1}))
    res = load_results([tmp_path])
    assert len(res) == 7
    t = build_table1(res)
    mine = t[t.model == "mine"].iloc[0]
    assert mine.avg == pytest.approx(0.825) and mine.params == "86M" and mine.wsis == "1.2k"
    assert mine.pcam_norm_failures == 10
    assert math.isnan(t[t.model == "half"].iloc[0].avg)
    md = table1_markdown(t)
    assert "| mine | 1.2k | - | 86M | 0.800 ± 0.010 |" in md and "| 0.825 |" in md
    assert "| half \u20211 |" in md and "stain normalization not recorded (MHIST); probe protocol not recorded" in md
    assert "<b>mine</b>" in table1_html(t)
    csv = pd.read_csv(pd.io.common.StringIO(table1_csv(t)))
    assert csv.loc[csv.model == "mine", "avg"].item() == pytest.approx(0.825)
    pts = figure1_points(t)
    assert set(pts.model) >= {"mine", "EXAONEPath"} and "half" not in set(pts.model) and "Virchow" not in set(pts.model)
    with pytest.raises(ValueError, match="not a probe result"):
        load_results([tmp_path / "unrelated.json"])


def test_figure1_from_published_numbers(tmp_path: Path) -> None:
    t = build_table1()
    pts = figure1_points(t).set_index("model")
    assert pts.loc["EXAONEPath", "kind"] == "ours" and pts.loc["EXAONEPath", "avg_pct"] == pytest.approx(86.1)
    assert pts.loc["ResNet50 ImageNet", "avg_pct"] == pytest.approx(78.6)  # the printed average, as plotted
    fig = figure1_plotly(t)
    a = {tr.name: tr for tr in fig.data if tr.xaxis == "x"}
    b = {tr.name: tr for tr in fig.data if tr.xaxis == "x2"}
    assert list(a["EXAONEPath"].x) == [86] and a["EXAONEPath"].marker.color == "#d62728"
    assert "ResNet50 ImageNet" in a["published (Table 1)"].text and "ResNet50 ImageNet" not in b["published (Table 1)"].text
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert tuple(fig.layout.yaxis.range) == (75, 90)
    png = figure1_png(t, tmp_path / "f1.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    paths = write_table1(t, tmp_path)
    assert paths["md"].read_text().count("\n|") >= 10 and paths["csv"].is_file()
