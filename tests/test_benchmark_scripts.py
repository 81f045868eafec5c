"""Benchmark scripts import the kit inside ``main()`` (so ``--help`` stays fast); a refactor that
renames a kit function then breaks a benchmark without any test noticing. This checks every
``from exaonepath_lab... import name`` in ``benchmarks/*.py`` resolves, and that each script parses."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCH.glob("*.py"))


def _kit_imports(path: Path) -> list[tuple[str, str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exaonepath_lab"):
            out += [(node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("exaonepath_lab")]
    return out


def test_every_benchmark_script_is_recorded_in_benchmarks_md() -> None:
    """Every speed claim is a script whose numbers are in BENCHMARKS.md, and every script it names exists."""
    import re

    text = (BENCH.parent / "BENCHMARKS.md").read_text()
    scripts = {p.name for p in SCRIPTS if not p.name.startswith("_")}
    assert {"bench_tiling.py", "bench_stain.py", "bench_dino.py", "bench_features.py", "bench_probe.py"} <= scripts
    unrecorded = sorted(n for n in scripts if n not in text)
    assert not unrecorded, f"benchmark scripts with no section in BENCHMARKS.md: {unrecorded}"
    named = set(re.findall(r"`((?:bench_)?\w+\.py)`", text)) - {"_assemble_benchmarks_md.py"}
    assert named <= scripts, f"BENCHMARKS.md names scripts that do not exist: {sorted(named - scripts)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_kit_imports_resolve(script: Path) -> None:
    missing = []
    for module, name, line in _kit_imports(script):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{script.name}:{line}: import {module} failed ({e})")
            continue
        if name and name != "*" and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ImportError:
                missing.append(f"{script.name}:{line}: {module} has no {name!r}")
    assert not missing, "\n".join(missing)


def test_benchmarks_md_is_assembled_from_the_area_pages() -> None:
    """BENCHMARKS.md is generated from benchmarks/<area>.md; editing one without regenerating fails here."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(BENCH / "_assemble_benchmarks_md.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
