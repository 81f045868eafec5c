"""The demo: stage bookkeeping (skip, redo on changed settings) and the offline report end to end."""
from __future__ import annotations

import json
import re
from pathlib import Path

from exaonepath_lab.demo import DemoConfig, Stages, run_demo


def test_stages_skip_same_settings_and_redo_changed(tmp_path: Path) -> None:
    calls = []

    def make(tag: str):
        def fn() -> dict:
            calls.append(tag)
            d = tmp_path / "cohort"
            d.mkdir(exist_ok=True)
            (d / f"{tag}.txt").write_text(tag)
            return {"files": [str(d / f"{tag}.txt")]}
        return fn

    st = Stages(tmp_path, progress=False)
    st.run("synth", make("a"), {"n_slides": 3})
    st.run("synth", make("b"), {"n_slides": 3})  # same settings: skipped
    assert calls == ["a"]
    (tmp_path / "cohort" / "a.txt").unlink()  # an output vanished: redone
    st.run("synth", make("c"), {"n_slides": 3})
    assert calls == ["a", "c"]
    st.run("synth", make("d"), {"n_slides": 4})  # settings changed: old outputs removed, redone
    assert calls == ["a", "c", "d"]
    assert sorted(p.name for p in (tmp_path / "cohort").iterdir()) == ["d.txt"]
    rec = json.loads((tmp_path / "stages" / "synth.json").read_text())
    assert rec["key"] == {"n_slides": 4} and rec["seconds"] >= 0


def test_smoke_demo_writes_offline_report(smoke_inputs: dict) -> None:
    out = Path(smoke_inputs["tile_dir"]).parent  # the fixture ran the demo's first stages here
    index = run_demo(DemoConfig(out_dir=str(out), smoke=True), progress=False)
    html = index.read_text()
    for title in ("Cohort", "Figure 3", "Stain normalization", "DINO pretraining", "Figure 2", "Linear probe",
                  "Table 1 and Figure 1"):
        assert title in html, title
    assert "cdn.plot.ly" not in html and "https://cdn" not in html
    for src in re.findall(r'(?:src|href)="([^"#:]+)"', html):
        assert (index.parent / src).exists(), f"report links a missing file: {src}"
    for js in re.findall(r'iframe src="([^"]+)"', html):
        assert (index.parent / js).parent.joinpath("plotly.min.js").exists(), js
    # every collapse metric the stage computed is shown with its 95 % interval, as "value [low, high]"
    import pandas as pd

    metrics = pd.read_csv(json.loads((out / "stages" / "collapse.json").read_text())["metrics_csv"])
    assert len(metrics) >= 3 and "k-NN slide purity" in html
    for r in metrics.itertuples():
        assert f"{r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" in html, (r.features, r.metric)
    assert "EXAONEPath" in html and "0.861" in html  # Table 1's published row
    stages = {p.stem for p in (out / "stages").glob("*.json")}
    assert stages == {"synth", "tile", "normalize", "train_raw", "train_macenko", "collapse", "probe", "table"}
    # a rerun skips every stage and rewrites the same report
    before = {p.name: p.stat().st_mtime for p in (out / "stages").glob("*.json")}
    run_demo(DemoConfig(out_dir=str(out), smoke=True), progress=False)
    assert before == {p.name: p.stat().st_mtime for p in (out / "stages").glob("*.json")}


def test_report_reading_pairs_each_trained_encoder_with_its_own_twin() -> None:
    """(a) is judged against the random twin on raw input, (c) against the twin on Macenko input;
    the verdict follows the smaller margin (clear >= CLEAR_MARGIN, small, or none)."""
    import pandas as pd

    from exaonepath_lab.demo import PANEL_A, PANEL_B, PANEL_C
    from exaonepath_lab.report.demo_report import CLEAR_MARGIN, PURITY, reading

    metrics = pd.DataFrame([{"features": n, "metric": PURITY, "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05,
                             "chance": 0.0} for n, v in ((PANEL_A, 0.5), (PANEL_B, 0.2), (PANEL_C, 0.1))])
    diffs = _paired(metrics, [(PANEL_A, PANEL_C), (PANEL_B, PANEL_C)])

    def verdict(a: float, c: float) -> tuple[str, str]:
        knn = pd.DataFrame({"features": [PANEL_A, "random-init vit (raw)", PANEL_C, "random-init vit (macenko)"],
                            "tissue_knn_bacc": [a, 0.25, c, 0.45]})
        return [r for r in reading(metrics, diffs, knn) if r[0].startswith("Tissue")][0]

    # (a) 0.33 would lose to the Macenko twin (0.45) but beats its own raw twin (0.25) clearly.
    text, kind = verdict(0.25 + CLEAR_MARGIN + 0.03, 0.45 + CLEAR_MARGIN + 0.01)
    assert kind == "good" and f"{CLEAR_MARGIN + 0.03:+.2f}" in text
    assert verdict(0.27, 0.52)[1] == "note"  # +0.02 on raw: beats, not clearly
    assert verdict(0.30, 0.44)[1] == "bad" and "NOT" in verdict(0.30, 0.44)[0]
    # Without the raw-input twin row nothing is claimed about (a), and "both" is never said.
    knn = pd.DataFrame({"features": [PANEL_A, PANEL_C, "random-init vit (macenko)"], "tissue_knn_bacc": [0.4, 0.6, 0.45]})
    text, kind = [r for r in reading(metrics, diffs, knn) if r[0].startswith("Tissue")][0]
    assert kind == "note" and "cannot be said" in text and "Both" not in text


def test_train_stage_key_follows_the_cpu_demo_preset(monkeypatch) -> None:
    """A kit update that changes the cpu-demo preset must retrain, not reuse old checkpoints."""
    from exaonepath_lab.demo import DemoConfig, stage_key
    from exaonepath_lab.pretrain import presets

    cfg = DemoConfig(out_dir="unused")
    before = stage_key(cfg, "train")
    assert stage_key(cfg, "synth") == stage_key(cfg, "synth") and "cpu_demo_preset" not in stage_key(cfg, "synth")
    monkeypatch.setitem(presets.CPU_DEMO, "max_iters", presets.CPU_DEMO["max_iters"] + 1)
    assert stage_key(cfg, "train") != before and stage_key(cfg, "collapse")["cpu_demo_preset"] != before["cpu_demo_preset"]


def test_report_reading_says_when_raw_training_added_slide_clustering() -> None:
    import pandas as pd

    from exaonepath_lab.demo import PANEL_A, PANEL_B, PANEL_C
    from exaonepath_lab.report.demo_report import PURITY, reading

    def lines(a: float, twin: float) -> list[str]:
        rows = [(PANEL_A, a), (PANEL_B, 0.2), (PANEL_C, 0.2), ("random-init vit (raw)", twin)]
        m = pd.DataFrame([{"features": n, "metric": PURITY, "value": v, "ci_low": v - 0.04, "ci_high": v + 0.04,
                           "chance": 0.0} for n, v in rows])
        d = _paired(m, [(PANEL_A, PANEL_C), (PANEL_B, PANEL_C), (PANEL_A, "random-init vit (raw)")])
        return [t for t, _ in reading(m, d, pd.DataFrame(columns=["features", "tissue_knn_bacc"]))]

    assert any("made slide clustering stronger" in t for t in lines(0.65, 0.39))
    assert not any("made slide clustering stronger" in t for t in lines(0.42, 0.39))  # paired CI includes 0
    assert any("not above the untrained network" in t for t in lines(0.35, 0.39))


def _paired(metrics, pairs, half: float = 0.04):
    """Paired-difference rows (a − b ± half) as collapse's paired_differences writes them."""
    import pandas as pd

    v = metrics.set_index("features")["value"]
    return pd.DataFrame([{"a": a, "b": b, "metric": "knn_slide_purity", "difference": v[a] - v[b],
                          "ci_low": v[a] - v[b] - half, "ci_high": v[a] - v[b] + half, "n_slides": 10, "n_boot": 200,
                          "note": ""} for a, b in pairs])
