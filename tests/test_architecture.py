"""The layering of docs/ARCHITECTURE.md is a checked contract (import-linter, configured in pyproject.toml).

Lower rooms never import higher ones (slides -> tiling -> stain -> encoders -> pretrain/features ->
analysis/probing -> report -> demo/commands/cli), and sibling modules never import each other in a
cycle. A failure prints import-linter's report: which module imports which, at which line.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import exaonepath_lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(exaonepath_lab.__file__).resolve().parent


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_layers_contract_holds() -> None:
    # A fresh interpreter with this tree first on the path, so the graph is of this checkout's code.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"import-linter contract broken:\n{res.stdout}\n{res.stderr}"
    assert "0 broken" in res.stdout, res.stdout


def test_every_room_of_the_package_is_in_a_layer() -> None:
    """A new subpackage or top-level module must be given its place, or the contract would not see it."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    rooms = {f"exaonepath_lab.{p.stem if p.is_file() else p.name}" for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert rooms - named == set(), f"add these to a layer in pyproject.toml [tool.importlinter]: {sorted(rooms - named)}"
    assert named - rooms == set(), f"layers name modules that do not exist: {sorted(named - rooms)}"


def test_layers_follow_architecture_md_pipeline_order() -> None:
    """The contract and the document agree on the order of the pipeline rooms."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    pos = {m.strip().split(".")[-1]: i for i, layer in enumerate(layers) for m in layer.split("|")}
    # ARCHITECTURE.md: slides -> tiling -> stain -> pretrain / features -> probing -> analysis -> report.
    order = ["report", "analysis", "probing", "pretrain", "stain", "tiling", "slides", "io"]
    assert [pos[r] for r in order] == sorted(pos[r] for r in order), pos
    assert pos["pretrain"] == pos["features"] < pos["encoders"] < pos["stain"]
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert "slides -> tiling -> stain -> pretrain / features -> probing -> analysis -> report" in text


def test_imagenet_statistics_and_eval_preprocessing_are_defined_once() -> None:
    import timm.data

    from exaonepath_lab.models import IMAGENET_MEAN, IMAGENET_STD

    assert IMAGENET_MEAN == timm.data.IMAGENET_DEFAULT_MEAN and IMAGENET_STD == timm.data.IMAGENET_DEFAULT_STD
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    for literal in ("0.485, 0.456, 0.406", "0.229, 0.224, 0.225"):
        where = sorted(str(p.relative_to(PACKAGE)) for p, s in sources.items() if literal in s)
        assert where == ["models.py"], f"{literal} defined in {where}; import it from exaonepath_lab.models"
    # One eval preprocessing (resize -> crop -> mean/std), owned by the encoders.
    resizers = sorted(str(p.relative_to(PACKAGE)) for p, s in sources.items() if "def center_crop" in s
                      or "F.center_crop(" in s or "class EvalTransform" in s)
    assert resizers == ["encoders/preprocess.py"], resizers
