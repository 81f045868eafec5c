"""End to end: `probe` (real encoder, real extraction + cache, real probe) then `table`."""
from __future__ import annotations

import json
from pathlib import Path

from exaonepath_lab.cli import main
from exaonepath_lab.features import load_features
from exaonepath_lab.probing.config import ProbeConfig
from exaonepath_lab.probing.linear import run_linear_probe

from fixtures_downstream import make_pcam


def test_probe_then_table(tmp_path: Path, capsys) -> None:
    root = tmp_path / "pcam"
    make_pcam(root, n={"train": 24, "valid": 8, "test": 8})
    out = tmp_path / "runs"
    argv = ["probe", "--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=96", "--no-resize",
            "--dataset", "pcam", "--root", str(root), "--out", str(out), "--iterations", "200", "--eval-every", "50",
            "--seeds", "0", "1", "--knn", "--normalize", "--stain-backend", "torch", "--model-name", "tiny", "--wsis", "10", "--threads", "1",
            "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "(computed)" in first
    res = json.loads((out / "tiny__pcam__linear.json").read_text())
    assert res["kind"] == "exaonepath-lab/probe-result" and res["n"] == {"train": 24, "val": 8, "test": 8}
    assert res["protocol"]["iterations"] == 200 and res["protocol"]["lr"] == 0.1 and res["protocol"]["batch_size"] == 128
    # the reported numbers are the library's probe on the cached features with the saved protocol
    fs = load_features(res["feature_cache"])
    again = run_linear_probe(fs.features, fs.meta["label"].to_numpy(), fs.meta["split"].to_numpy(), n_classes=2,
                             config=ProbeConfig.load(out / "probe_config.json"), progress=False)
    assert res["test"]["top1"] == again["test"]["top1"] and len(res["test"]["top1"]["values"]) == 2
    # tumour and normal fixture patches differ in colour, which even a random ViT passes on: well above chance
    assert res["test"]["top1"]["mean"] >= 0.75 and res["test"]["auroc"]["mean"] >= 0.75
    assert res["classes"] == ["no_tumor", "tumor"]
    # every item is accounted for in the stain-normalization counts, failures included
    assert {s: sum(c.values()) for s, c in res["normalization"].items()} == {"train": 24, "val": 8, "test": 8}
    assert res["normalizer"] is not None and res["model_info"]["params"] > 1e6
    assert (out / "tiny__pcam__knn.json").is_file() and (out / "probe_config.json").is_file()
    # rerun: the feature cache is reused, not recomputed
    assert main(argv) == 0
    assert "(reused)" in capsys.readouterr().out

    tab = tmp_path / "table"
    assert main(["table", "--results", str(out), "--out", str(tab)]) == 0
    md = (tab / "table1.md").read_text()
    row = [l for l in md.splitlines() if l.startswith("| tiny ")][0]
    # 200 iterations, the HERef target and no Resize->CenterCrop differ from the paper: marked, with a footnote
    assert row.startswith("| tiny \u20211 | 10 | - | 5.5M | ") and row.endswith("| - | - | - | - | - | - |")
    note = [l for l in md.splitlines() if l.startswith("\u20211 tiny")][0]
    assert "SGD iterations 200 instead of 12,500 (PCAM)" in note and "no Macenko" not in note
    assert res["protocol_deviations"] == json.loads((tab / "table1.json").read_text())["rows"][-1][
        "protocol_deviations"]["pcam"]
    for f in ("table1.html", "table1.csv", "figure1.html", "figure1.png", "plotly.min.js"):
        assert (tab / f).is_file(), f


def test_probe_stain_target_with_no_normalize_names_the_fix(tmp_path: Path, capsys) -> None:
    """Like `extract`: a target without normalization is an error, raised before any data is read."""
    argv = ["probe", "--encoder", "random:vit_tiny_patch16_224", "--dataset", "pcam", "--root", str(tmp_path / "absent"),
            "--out", str(tmp_path / "runs"), "--stain-target", str(tmp_path / "t.json"), "--no-normalize", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--stain-target given with --no-normalize" in err and "absent" not in err
