"""Every numbered notebook executes headless at a smoke size and produces its figures.

Notebooks are executed with papermill (real kernel, real library calls) with their
``parameters`` cell overridden to tiny sizes and to the shared smoke fixtures
(a small synthetic cohort, its tiling and two briefly trained checkpoints).
"""
from __future__ import annotations

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
FIGURE_MIME = ("image/png", "application/vnd.plotly.v1+json", "text/html")


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


def _figure_outputs(nb: nbformat.NotebookNode) -> int:
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if any(m in data for m in FIGURE_MIME):
                n += 1
    return n


@pytest.mark.timeout(900)
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(nb_path: Path, tmp_path: Path, smoke_inputs: dict) -> None:
    import papermill as pm

    out_dir = tmp_path / "out"
    params = {"out_dir": str(out_dir), "smoke": True, **smoke_inputs}
    nb = nbformat.read(nb_path, as_version=4)
    tagged = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # Only pass parameters the notebook declares (papermill would inject unknown ones blindly).
    declared = {line.split("=")[0].strip() for line in tagged.source.splitlines() if "=" in line and not line.lstrip().startswith("#")}
    params = {k: v for k, v in params.items() if k in declared}
    executed = tmp_path / nb_path.name
    pm.execute_notebook(
        str(nb_path), str(executed), parameters=params, cwd=str(NB_DIR), kernel_name="python3",
        progress_bar=False, request_save_on_cell_execute=False,
    )
    result = nbformat.read(executed, as_version=4)
    assert _figure_outputs(result) >= 1, f"{nb_path.name} displayed no figure"
    figs = list(out_dir.rglob("*.png")) + list(out_dir.rglob("*.html"))
    assert figs, f"{nb_path.name} wrote no figure files into out_dir"
    summary = out_dir / "notebook_summary.json"
    assert summary.exists(), f"{nb_path.name} must write notebook_summary.json with its key numbers"
    json.loads(summary.read_text())
