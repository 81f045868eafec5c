"""The synthetic downstream task: tissue classes of a real tiled synthetic cohort, split by slide."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exaonepath_lab.probing.config import ProbeConfig
from exaonepath_lab.probing.datasets import load_dataset
from exaonepath_lab.probing.linear import run_linear_probe, train_linear_probe
from exaonepath_lab.probing.synthetic_task import slide_splits


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> Path:
    from exaonepath_lab.slides.synthetic import make_cohort
    from exaonepath_lab.tiling.run import run_tiling

    d = tmp_path_factory.mktemp("synthetic_task")
    make_cohort(d / "cohort", n_slides=4, seed=7, workers=1, progress=False, size_um=(420.0, 560.0),
                coverage=(0.55, 0.65))
    run_tiling(d / "cohort", d / "tiles", progress=False)
    return d / "tiles"


def test_task_items_labels_and_slide_split(tiled: Path) -> None:
    ds = load_dataset("synthetic", tiled, split_seed=0)
    m = ds.meta
    assert ds.classes == ["tumor", "stroma", "lymphocytes", "adipose", "necrosis"]
    assert m.label.between(0, 4).all() and (m.class_name == [ds.classes[l] for l in m.label]).all()
    per_slide = m.groupby("slide_id").split.nunique()
    assert (per_slide == 1).all()  # a slide never spans two splits
    assert set(m.split) == {"train", "val", "test"}
    assert ds.excluded_counts == m.attrs["excluded_counts"] and set(ds.excluded_counts) == {"background", "unknown"}
    img = ds[0]["image"]
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    saved = pd.read_csv(tiled / "splits" / "synthetic_slides_seed0.csv")
    assert dict(zip(saved.slide_id, saved.split)) == m.groupby("slide_id").split.first().to_dict()
    assert (load_dataset("synthetic", tiled).meta.split == m.split).all()  # reload reads the saved split
    assert len(load_dataset("synthetic", tiled, split="test")) == int((m.split == "test").sum())


def test_probe_on_colour_features_reports_the_probe_selected_on_val(tiled: Path) -> None:
    """End to end on the task's splits: the reported test numbers are those of the probe chosen on
    the validation curve, recomputed here from a probe trained on the train split alone."""
    ds = load_dataset("synthetic", tiled)
    feats = np.stack([ds[i]["image"].reshape(-1, 3).mean(0) / 255 for i in range(len(ds))]).astype(np.float32)
    y, split = ds.meta.label.to_numpy(), ds.meta.split.to_numpy()
    cfg = ProbeConfig(iterations=100, eval_every=10, seeds=(0, 1))
    res = run_linear_probe(feats, y, split, n_classes=5, config=cfg, progress=False)
    assert res["n"] == {s: int((split == s).sum()) for s in ("train", "val", "test")}
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    for run in res["per_seed"]:
        sel, _, curve = train_linear_probe(feats[tr], y[tr], n_classes=5, config=cfg, seed=run["seed"],
                                           x_val=feats[va], y_val=y[va])
        assert [c["iteration"] for c in curve] == list(range(10, 101, 10)) and run["val_curve"] == curve
        best = max(curve, key=lambda c: (c["top1"], -c["loss"]))  # first of equals: ties keep the earlier
        assert run["selected_iteration"] == sel.iteration == best["iteration"]
        assert run["test"]["top1"] == pytest.approx(float((sel.scores(feats[te]).argmax(1) == y[te]).mean()))
    assert res["test"]["top1"]["mean"] == pytest.approx(np.mean([r["test"]["top1"] for r in res["per_seed"]]))


def test_slide_split_rule_and_errors(tiled: Path) -> None:
    s = slide_splits([f"s{i}" for i in range(10)], seed=0)
    assert sorted(s.values()).count("test") == 2 and sorted(s.values()).count("val") == 2
    assert slide_splits([f"s{i}" for i in range(10)], seed=0) == s
    with pytest.raises(ValueError, match=">= 3 slides"):
        slide_splits(["a", "b"])
    bad = tiled / "splits" / "synthetic_slides_seed5.csv"
    bad.parent.mkdir(exist_ok=True)
    pd.DataFrame({"slide_id": ["nope"], "split": ["train"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="delete"):
        load_dataset("synthetic", tiled, split_seed=5)
