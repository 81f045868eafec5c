"""The numbered notebooks: clean and paired, executed headless, and honest about their inputs.

Notebooks are executed with papermill (real kernel, real library calls) with their
``parameters`` cell overridden:

* every notebook at a smoke size on the shared smoke fixtures (a small synthetic demo cohort,
  its tiling and two briefly trained checkpoints), checking the numbers its summary must show;
* each notebook that takes user data on an input that is *not* the demo's (a second synthetic
  cohort made with ``exaonepath-lab synth`` under another seed and size), checking that it used it;
* partial or wrong parameter sets, which must fail before any work with a message naming them.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
FIGURE_MIME = ("image/png", "application/vnd.plotly.v1+json", "text/html")
NB = {p.stem[:2]: p for p in NOTEBOOKS}
PLUMBING_UNTAGGED: set[str] = set()  # notebooks whose summary cell is not tagged yet (none)


def test_notebooks_exist_and_are_numbered() -> None:
    names = [p.stem for p in NOTEBOOKS]
    expected = [
        "00_quickstart", "01_tiling_and_mpp", "02_stain_normalization", "03_wsi_collapse_tsne",
        "04_dino_pretraining_local", "05_launch_cluster_training", "06_linear_probing",
        "07_benchmark_table_and_efficiency",
    ]
    assert names == expected


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_paired_and_parameterised(nb_path: Path) -> None:
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{nb_path.name}: commit notebooks without outputs"
            assert cell.get("execution_count") is None, f"{nb_path.name}: stale execution counts"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb_path.name}: needs exactly one cell tagged 'parameters'"
    py = nb_path.with_suffix(".py")
    assert py.exists(), f"{py.name} (jupytext pair) is missing"
    paired = jupytext.read(py)
    src = lambda book: [c.source.strip() for c in book.cells if c.cell_type in ("code", "markdown")]
    assert src(paired) == src(nb), f"{nb_path.name} and {py.name} differ: run `jupytext --sync {py}`"
    # No default reaches into a folder outside the repository (`../../shared` exists only on the
    # project's machines), and the plumbing (summary JSON) is tagged so it can be hidden.
    assert "../../" not in tagged[0].source, f"{nb_path.name}: a parameter default points outside the repository"
    if nb_path.stem in PLUMBING_UNTAGGED:
        return
    for cell in nb.cells:
        if cell.cell_type == "code" and "notebook_summary.json\"" in cell.source and "write_json_atomic" in cell.source:
            assert "remove-cell" in cell.metadata.get("tags", []), \
                f"{nb_path.name}: tag the summary-JSON cell 'remove-cell' (plumbing a reader can hide)"


def _declared(nb_path: Path) -> set[str]:
    nb = nbformat.read(nb_path, as_version=4)
    tagged = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {line.split("=")[0].strip() for line in tagged.source.splitlines()
            if "=" in line and not line.lstrip().startswith("#")}


def _run(nb_path: Path, tmp_path: Path, params: dict[str, Any], *, cwd: Path = NB_DIR) -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``nb_path`` with ``params`` (each must be declared by the notebook); returns (notebook, summary)."""
    import papermill as pm

    unknown = set(params) - _declared(nb_path)
    assert not unknown, f"{nb_path.name} does not declare {unknown}"
    executed = tmp_path / nb_path.name
    pm.execute_notebook(str(nb_path), str(executed), parameters=params, cwd=str(cwd), kernel_name="python3",
                        progress_bar=False, request_save_on_cell_execute=False)
    out = Path(params["out_dir"])
    summary_path = (out if out.is_absolute() else NB_DIR / out) / "notebook_summary.json"
    assert summary_path.exists(), f"{nb_path.name} must write notebook_summary.json with its key numbers"
    return nbformat.read(executed, as_version=4), json.loads(summary_path.read_text())


def _figure_outputs(nb: nbformat.NotebookNode) -> int:
    return sum(1 for cell in nb.cells for out in cell.get("outputs", [])
               if any(m in out.get("data", {}) for m in FIGURE_MIME))


def _fails_with(nb_path: Path, tmp_path: Path, params: dict[str, Any], *needles: str) -> str:
    """Execute and expect a failure whose message contains every one of ``needles``."""
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError) as info:
        _run(nb_path, tmp_path, params)
    msg = str(info.value)
    for n in needles:
        assert n in msg, f"{nb_path.name}: error message lacks {n!r}:\n{msg[-1500:]}"
    return msg


def _purity_ok(rows: list[dict]) -> None:
    """Slide purity of the three Figure 2 panels (and of the reference rows), each inside its interval."""
    assert [r["features"][:3] for r in rows if r["features"].startswith("(")] == ["(a)", "(b)", "(c)"], rows
    for r in rows:
        assert r["ci_low"] <= r["value"] <= r["ci_high"], r
        assert -1.0 <= r["value"] <= 1.0, r


# ----------------------------------------------------------------------------- every notebook, smoke size
def _check_summary(stem: str, s: dict, inputs: dict) -> None:
    """The numbers each notebook must show, checked for what they can be (not hard-coded values)."""
    if stem == "00":
        _purity_ok(s["knn_slide_purity"])
    elif stem == "01":
        # the paper's rule, 256 px at 0.5 µm/px = 128 µm, from each exact MPP
        assert s["mpp_rule"] == {k: round(128 / float(k)) for k in s["mpp_rule"]} and s["mpp_rule"]["0.243"] == 527
        assert s["one_slide"]["matches_tiling_run"] is True
        assert s["n_patches"] > 0 and s["n_slides"] >= 1
        real = s["real_slides"]
        assert real["first_run_status"] == {"cmu-1-small-region": "ok", "tiatoolbox-target": "failed"}
        assert real["with_override"]["cmu-1-small-region"]["patch_size"] == 257
        assert real["with_override"]["tiatoolbox-target"]["status"] == "ok"
        assert "MPP" in s["missing_mpp_error"] or "mpp" in s["missing_mpp_error"]
    elif stem == "02":
        st = s["step_by_step"]
        assert st["stain_vectors_max_diff_vs_library"] < 1e-3
        assert st["pixels_mean_abs_diff_vs_library"] < 1.0
        a = s["assumptions"]
        assert a["single_stain_status"] == "ok"  # the silent failure the notebook shows:
        assert max(a["single_stain_angles_to_true_e"]) < a["true_h_e_angle"] / 2  # both vectors are eosin
        assert a["hyperchromasia_ratio_before"] > 1.3 and abs(a["hyperchromasia_ratio_after"] - 1) < 0.15
        spread = s["across_slides"]["spread"]
        assert spread["Reinhard"]["colour spread (ΔE)"] < spread["raw"]["colour spread (ΔE)"]
        assert spread["Macenko"]["H-vector spread (°)"] < spread["raw"]["H-vector spread (°)"]
        status = s["failure_policy"]["status"]  # tissue, blank glass, single colour, hematoxylin only
        assert status[0] == "ok" and status[1] != "ok" and status[2] != "ok" and status[3] == "ok"
    elif stem == "03":
        _purity_ok([r for r in s["knn_slide_purity"]])
    elif stem == "04":
        for name in ("raw", "macenko"):
            assert math.isfinite(s["final_loss"][name])
            assert s["iterations"][name] >= 1
        if not s["reused_demo_runs"]:
            assert s["warmup_iters"]["raw"] == max(1, round(60 * s["iterations"]["raw"] / 1200))
    elif stem == "06":
        for r in s["results"]:
            assert 0 <= r["linear top-1"] <= 1 and r["± std"] >= 0
        assert 0 < s["chance"]["majority_rate"] < 1
    elif stem == "07":
        assert s["flagged_averages"] == ["ResNet50 ImageNet"]  # printed 0.786, row mean 0.7867
        assert abs(s["exaonepath_avg_pct"] - 86.1) < 0.05


@pytest.mark.timeout(900)
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(nb_path: Path, tmp_path: Path, smoke_inputs: dict, request: pytest.FixtureRequest) -> None:
    if nb_path.stem[:2] in ("01", "02"):
        request.getfixturevalue("sample_he")  # their real-slide lessons use the fetched sample data (skips offline)
    out_dir = tmp_path / "out"
    demo_dir = str(Path(smoke_inputs["tile_dir"]).parent)  # demo_inputs' out folder (holds tiles/, runs/, stages/)
    params = {"out_dir": str(out_dir), "smoke": True, "demo_dir": demo_dir, **smoke_inputs}
    declared = _declared(nb_path)
    params = {k: v for k, v in params.items() if k in declared}
    if "demo_dir" in declared:
        # the demo's paths come through demo_dir (own paths None): the demo path is what is tested here,
        # without writing into the repository's outputs/
        params = {k: v for k, v in params.items() if k not in ("cohort_dir", "tile_dir", "ckpt_raw", "ckpt_norm")}
    result, summary = _run(nb_path, tmp_path, params)
    assert _figure_outputs(result) >= 1, f"{nb_path.name} displayed no figure"
    figs = list(out_dir.rglob("*.png")) + list(out_dir.rglob("*.html"))
    assert figs, f"{nb_path.name} wrote no figure files into out_dir"
    _check_summary(nb_path.stem[:2], summary, smoke_inputs)


# ----------------------------------------------------------------------------- not the demo's input
@pytest.fixture(scope="session")
def other_cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A second synthetic cohort (3 slides, seed 7, other size), made by the CLI as a user would, and tiled."""
    base = tmp_path_factory.mktemp("other_cohort")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cli = [sys.executable, "-m", "exaonepath_lab"]
    subprocess.run(cli + ["synth", "--out", str(base / "slides"), "--slides", "3", "--seed", "7", "--size", "1000", "1200",
                          "--mpp", "0.5", "--workers", "1"], check=True, env=env, capture_output=True)
    subprocess.run(cli + ["tile", str(base / "slides"), "--out", str(base / "tiles"), "--workers", "1"], check=True,
                   env=env, capture_output=True)
    return {"cohort_dir": str(base / "slides"), "tile_dir": str(base / "tiles")}


def _slide_ids(tile_dir: str) -> set[str]:
    import pandas as pd

    return set(pd.read_csv(Path(tile_dir) / "manifest.csv", dtype={"slide_id": str})["slide_id"])


@pytest.mark.timeout(900)
def test_01_tiles_the_users_cohort(tmp_path: Path, other_cohort: dict) -> None:
    """01 with cohort_dir: the user's slides are tiled into tile_dir (not the demo's tiling reused)."""
    out, tiles = tmp_path / "out", tmp_path / "my_tiles"
    _, s = _run(NB["01"], tmp_path, {"out_dir": str(out), "smoke": True, "cohort_dir": other_cohort["cohort_dir"],
                                     "tile_dir": str(tiles)})
    assert Path(s["tile_dir"]) == tiles and (tiles / "manifest.csv").exists()
    assert _slide_ids(str(tiles)) == _slide_ids(other_cohort["tile_dir"])
    assert s["n_slides"] == 3 and s["status_counts"] == {"ok": 3}


@pytest.mark.timeout(900)
def test_02_on_other_images_and_the_users_tiling(tmp_path: Path, other_cohort: dict, sample_he: dict) -> None:
    """02 with every input set: another tiling, example and target swapped, a folder of extra images."""
    import shutil

    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(sample_he["stardist-histo.jpg"], extra / "lab-x.jpg")
    _, s = _run(NB["02"], tmp_path, {
        "out_dir": str(tmp_path / "out"), "smoke": True, "tile_dir": other_cohort["tile_dir"],
        "example_image": str(sample_he["tiatoolbox-target.png"]), "target_image": str(sample_he["stardist-histo.jpg"]),
        "extra_images": str(extra)})
    assert s["tile_dir"] == other_cohort["tile_dir"]
    assert s["step_by_step"]["image"] == "tiatoolbox-target.png" and s["target_panel"]["target"] == "stardist-histo.jpg"
    slides = s["across_slides"]["slides"]
    assert slides[:3] == sorted(_slide_ids(other_cohort["tile_dir"])) and "lab-x" in slides
    assert s["step_by_step"]["stain_vectors_max_diff_vs_library"] < 1e-3


@pytest.mark.timeout(900)
def test_00_03_run_on_the_users_tiling(tmp_path: Path, other_cohort: dict, smoke_inputs: dict) -> None:
    """00 and 03 on another cohort's tiling (with given checkpoints): Figure 2 is made of its slides."""
    ckpts = {"ckpt_raw": smoke_inputs["ckpt_raw"], "ckpt_norm": smoke_inputs["ckpt_norm"]}
    for stem, data in (("00", "tile_dir"), ("03", "data")):
        out = tmp_path / stem
        _, s = _run(NB[stem], tmp_path, {"out_dir": str(out), "smoke": True, data: other_cohort["tile_dir"], **ckpts})
        _purity_ok(s["knn_slide_purity"])
        import pandas as pd

        sample = pd.read_csv(out / "sample.csv", dtype={"slide_id": str})
        assert set(sample["slide_id"]) == _slide_ids(other_cohort["tile_dir"])


@pytest.mark.timeout(900)
def test_04_trains_on_the_users_unlabelled_tiling(tmp_path: Path, other_cohort: dict) -> None:
    """04 on the user's tiling without tissue labels (like a real slide's): it trains on that tiling,
    with the warm-up scaled to the run, and skips the learning check with a message instead of crashing."""
    import shutil

    import h5py
    import pandas as pd

    out, tiles = tmp_path / "out", tmp_path / "unlabelled"
    shutil.copytree(other_cohort["tile_dir"], tiles)
    man = pd.read_csv(tiles / "manifest.csv", dtype=str, keep_default_na=False)
    man["h5_path"] = ""  # the copies under tiles/patches, not the original tiling's files
    man.to_csv(tiles / "manifest.csv", index=False)
    for h5 in (tiles / "patches").glob("*.h5"):
        with h5py.File(h5, "a") as f:
            if "labels" in f:
                del f["labels"]
    nb, s = _run(NB["04"], tmp_path, {"out_dir": str(out), "smoke": True, "tile_dir": str(tiles), "iterations": 2,
                                      "chunk": 2})
    assert s["tile_dir"] == str(tiles) and not s["reused_demo_runs"]
    assert s["iterations"] == {"raw": 2, "macenko": 2} and s["warmup_iters"] == {"raw": 1, "macenko": 1}
    cfg = json.loads((out / "raw" / "config.json").read_text())
    assert Path(cfg["data"]) == tiles
    assert s["tissue_knn"] == []
    text = json.dumps([o for c in nb.cells for o in c.get("outputs", [])])
    assert "Learning check skipped" in text


# ----------------------------------------------------------------------------- loud failures
@pytest.mark.parametrize("stem, params, needles", [
    ("00", {"tile_dir": "x"}, ("ckpt_raw", "ckpt_norm", "not")),
    ("00", {"ckpt_raw": "a.pt", "ckpt_norm": "b.pt"}, ("cohort_dir or tile_dir",)),
    ("03", {"ckpt_norm": "b.pt"}, ("data", "ckpt_raw")),
    ("03", {"encoder": "no-such-encoder"}, ("no-such-encoder",)),
    ("04", {"iterations": 0}, ("iterations=0",)),
    ("06", {"normalize": "yes"}, ("normalize='yes'",)),
    ("06", {"dataset": "pcam"}, ("dataset_root",)),
    ("06", {"encoder": "timm:resnet50", "ckpt_raw": "a.pt"}, ("ckpt_raw",)),
    ("01", {"tile_dir": "no/such/tiling"}, ("tile_dir", "not found")),
    ("02", {"example_image": "no/such.png"}, ("example_image", "not found")),
    ("07", {"results": "no/such/results"}, ("results", "not found")),
])
def test_partial_or_wrong_parameters_fail_loudly(stem: str, params: dict, needles: tuple, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _fails_with(NB[stem], tmp_path, {"out_dir": str(out), "smoke": True, **params}, "NotebookParameterError", *needles)
    # failed before any work: nothing but the (empty) output folder
    assert not any(p.is_file() for p in out.rglob("*"))


def test_07_draws_the_users_rows_with_error_bars(tmp_path: Path) -> None:
    """07 on result files that are not the demo's: a complete six-task row, its ± std as an error bar."""
    from exaonepath_lab.report.table1 import RESULT_KIND, TASKS

    res = tmp_path / "results"
    res.mkdir()
    means, stds = [0.80 + 0.01 * i for i in range(6)], [0.002 * (i + 1) for i in range(6)]
    for (task, _), m, sd in zip(TASKS, means, stds):
        (res / f"{task}.json").write_text(json.dumps({
            "kind": RESULT_KIND, "model": "my encoder", "method": "linear", "dataset": task,
            "test": {"top1": {"mean": m, "std": sd}}, "model_info": {"params": 50_000_000, "wsis": 2000}}))
    _, s = _run(NB["07"], tmp_path, {"out_dir": str(tmp_path / "out"), "smoke": True, "results": str(res)})
    assert s["n_user_results"] == 6 and s["user_models"] == ["my encoder"]
    (bar,) = s["user_error_bars"]
    assert bar["avg_pct"] == pytest.approx(100 * sum(means) / 6)
    assert bar["avg_std_pct"] == pytest.approx(100 * math.sqrt(sum(v * v for v in stds)) / 6)
    assert (tmp_path / "out" / "user_rows.html").exists()


def test_notebook_run_elsewhere_writes_relative_to_notebooks(tmp_path: Path) -> None:
    """papermill started in another folder (the repository root, VS Code): `../outputs/...` still lands in the
    repository's outputs/, not beside the working directory."""
    import shutil

    rel = f"../outputs/.test-notebooks-{os.getpid()}"
    target = (NB_DIR / rel).resolve()
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    try:
        _run(NB["07"], tmp_path, {"out_dir": rel, "smoke": True}, cwd=elsewhere)
        assert (target / "notebook_summary.json").exists()
        assert not (tmp_path / "outputs").exists() and not (tmp_path / "a" / "outputs").exists()
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_relative_paths_resolve_from_the_notebooks_folder(tmp_path: Path) -> None:
    """Run from the repository root (papermill, VS Code): `../outputs` still means the repo's outputs/."""
    from exaonepath_lab import notebook_params as nbp

    here = Path.cwd()
    try:
        os.chdir(tmp_path)
        assert nbp.resolve_path("../outputs") == (NB_DIR / ".." / "outputs").resolve()
        assert nbp.resolve_path(str(tmp_path / "a")) == tmp_path / "a"
    finally:
        os.chdir(here)
    with pytest.raises(nbp.NotebookParameterError, match="ckpt_norm"):
        nbp.own_or_demo("x", tile_dir="t", ckpt_raw="a", ckpt_norm=None)
    assert nbp.own_or_demo("x", tile_dir=None, ckpt_raw=None) is False


def test_extraction_estimate_warns_of_hours_for_a_vit_b_on_cpu() -> None:
    """The estimate notebook 06 prints before extracting: PCam through a ViT-B/16 is a day-plus job on 2 CPU cores."""
    from exaonepath_lab import notebook_params as nbp
    from exaonepath_lab.encoders import create_encoder

    vit_b = create_encoder("random:exaonepath", device="meta")  # architecture only, no weights in memory
    cpu = nbp.extraction_hours(327_680, vit_b, device="cpu")
    gpu = nbp.extraction_hours(327_680, vit_b, device="cuda")
    n_params = sum(p.numel() for p in vit_b.parameters())
    assert cpu == pytest.approx(327_680 * (n_params / 86e6) / nbp.VIT_B_CPU_IMG_PER_S / 3600)
    assert cpu > 24 and gpu < 1
