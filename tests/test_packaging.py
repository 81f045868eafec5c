"""The pip and conda descriptions of the environment must agree."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject() -> None:
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in py["dependencies"] + py["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_name(r): r.replace(" ", "") for r in pip_list if not r.startswith("-e")}
    assert set(have) == set(wanted), f"only in environment.yml: {set(have) - set(wanted)}; only in pyproject: {set(wanted) - set(have)}"
    for k, spec in wanted.items():
        assert have[k] == spec, f"{k}: pyproject says {spec!r}, environment.yml says {have[k]!r}"


def test_card_packages_are_dependencies() -> None:
    deps = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    card = {"jupyterlab", "torch", "timm", "opentsne", "umap-learn", "plotly", "ipywidgets", "torchstain", "openslide-python"}
    assert card <= deps, card - deps


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_ci_installs_what_a_clean_debian_lacks_for_make_test() -> None:
    """`.ci/run` on a clean Debian (root, nothing but apt): `make` itself, `python3 -m venv` (python3-venv:
    Debian's python3 has no ensurepip), `unzip` (tests unpack archives as users do), besides SLURM and
    chromium (the browser tests)."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in (ROOT / "Makefile").read_text().replace("$(PY)", "python3")
    assert "unzip" in (ROOT / "tests" / "fixtures_downstream.py").read_text()
    for guard, package in (("command -v make", "make"), ("command -v unzip", "unzip"),
                           ("import ensurepip, venv", "python3-venv"), ("command -v munged", "munge"),
                           ("command -v chromium", "chromium")):
        assert guard in ci and re.search(rf"\b{re.escape(package)}\b", ci.split(guard, 1)[1].split("\n\n")[0]), \
            f".ci/run does not install {package} where it is missing ({guard!r})"
