"""The probe follows the paper unless told otherwise, and `table` marks every row that does not (issue 12.5)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from exaonepath_lab.cli import main
from exaonepath_lab.report.table1 import build_table1, protocol_deviations, table1_cells, table1_json

from fixtures_downstream import make_pcam


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("probe_protocol")
    root = tmp / "pcam"
    make_pcam(root, n={"train": 16, "valid": 8, "test": 8})
    out = tmp / "runs"
    base = ["probe", "--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=96", "--no-resize",
            "--dataset", "pcam", "--root", str(root), "--out", str(out), "--iterations", "40", "--eval-every", "20",
            "--seeds", "0", "--stain-backend", "torch", "--threads", "1", "--quiet"]
    assert main([*base, "--model-name", "default"]) == 0  # no stain flag at all: the paper's Macenko
    assert main([*base, "--model-name", "opted-out", "--no-normalize", "--lr-schedule", "cosine", "--lr", "0.05",
                 "--selection", "last"]) == 0
    return out


def test_probe_normalizes_by_default_and_no_normalize_opts_out(runs: Path) -> None:
    default = json.loads((runs / "default__pcam__linear.json").read_text())
    assert default["normalizer"]["class"] == "MacenkoNormalizer"
    assert sum(default["normalization"]["train"].values()) == 16 and "none" not in default["normalization"]["train"]
    opted = json.loads((runs / "opted-out__pcam__linear.json").read_text())
    assert opted["normalizer"] is None and opted["protocol"]["lr_schedule"] == "cosine"
    assert "no Macenko normalization" in opted["protocol_deviations"]
    assert "no Macenko normalization" not in default["protocol_deviations"]


def test_table_marks_each_protocol_difference_with_a_footnote_and_in_the_json(runs: Path, tmp_path: Path) -> None:
    assert main(["table", "--results", str(runs), "--out", str(tmp_path), "--no-published"]) == 0
    md = (tmp_path / "table1.md").read_text()
    note = next(l for l in md.splitlines() if "opted-out:" in l)
    for want in ("no Macenko normalization (PCAM)", "lr 0.05 instead of 0.1", "lr schedule cosine instead of constant",
                 "SGD iterations 40 instead of 12,500", "last checkpoint instead of best validation",
                 "Resize None -> CenterCrop None instead of 256 -> 224"):
        assert want in note, want
    js = json.loads((tmp_path / "table1.json").read_text())
    rows = {r["model"]: r for r in js["rows"]}
    assert not rows["opted-out"]["follows_paper_protocol"]
    assert "no Macenko normalization" in rows["opted-out"]["protocol_deviations"]["pcam"]
    assert any("opted-out" in n for n in js["footnotes"]) and js["paper_probe_protocol"]["iterations"] == 12_500
    assert "protocol_deviations" in (tmp_path / "table1.csv").read_text().splitlines()[0]


def test_a_result_that_follows_the_paper_is_not_marked(runs: Path) -> None:
    res = json.loads((runs / "default__pcam__linear.json").read_text())
    paper = copy.deepcopy(res)
    paper["protocol"].update(iterations=12_500, lr=0.1, lr_schedule="constant", selection="best_val")
    paper["preprocessing"].update(resize_size=256, crop_size=224)
    paper["normalizer"]["config"]["target"]["source"] = "target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png"
    assert protocol_deviations(paper) == []
    assert protocol_deviations(res) == ["Macenko target other than the authors' TCGA-55-A48X image (e.g. the HERef "
                                        "default)", "SGD iterations 40 instead of 12,500",
                                        "preprocessing Resize None -> CenterCrop None instead of 256 -> 224"]
    table = build_table1([paper, res | {"model": "short"}], include_published=False)
    _, rows, notes = table1_cells(table)
    assert rows[0][0] == "default" and rows[1][0] == "short \u20211"
    assert sum(n.startswith("\u2021") for n in notes) == 1
    assert [r["follows_paper_protocol"] for r in table1_json(table)["rows"]] == [True, False]
