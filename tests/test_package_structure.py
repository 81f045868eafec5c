"""Conventions a reader can rely on across the package (STYLE.md; scanpy's signature test).

- Every function fits on a screen or two: at most ``MAX_FUNCTION_LINES`` lines, numba kernels excepted
  (one fused loop is the point of a kernel).
"""
from __future__ import annotations

import ast
from pathlib import Path

import exaonepath_lab

PACKAGE = Path(exaonepath_lab.__file__).resolve().parent
MAX_FUNCTION_LINES = 80

#: Functions being split by other helpers of issue 13; each entry goes when that work lands.
LONG_FUNCTIONS_BEING_SPLIT = {
    "pretrain/trainer.py::train",  # H4: trainer split into build / resume / iteration / log / checkpoint
    "analysis/figure2.py::figure2",  # H5: compute in tl, draw in pl
    "analysis/pipeline.py::collapse_report",  # H5: one collapse pipeline
    "analysis/collapse.py::collapse_metrics",  # H5: collapse pipeline / metrics
    "report/demo_report.py::write_demo_report",  # H5: demo_report import fix
}


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((f"{rel}::{node.name}", node))
    return out


def _is_numba_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    def name(d: ast.expr) -> str:
        d = d.func if isinstance(d, ast.Call) else d
        return d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")

    return any(name(d) in {"njit", "jit", "vectorize", "guvectorize"} for d in node.decorator_list)


def test_no_function_is_longer_than_a_screenful() -> None:
    lengths = {where: node.end_lineno - node.lineno + 1 for where, node in _functions()
               if not _is_numba_kernel(node)}
    too_long = {w: n for w, n in lengths.items() if n > MAX_FUNCTION_LINES and w not in LONG_FUNCTIONS_BEING_SPLIT}
    assert not too_long, (f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): "
                          + ", ".join(f"{w} ({n})" for w, n in sorted(too_long.items())))
    stale = {w for w in LONG_FUNCTIONS_BEING_SPLIT if lengths.get(w, 0) <= MAX_FUNCTION_LINES}
    assert not stale, f"split already (or gone): remove {sorted(stale)} from LONG_FUNCTIONS_BEING_SPLIT"


def test_the_length_check_sees_numba_kernels_and_long_functions() -> None:
    """The check itself: the numba kernel is recognised as one, and a long function is found."""
    kernels = {w for w, node in _functions() if _is_numba_kernel(node)}
    assert "stain/_numba_macenko.py::fit_apply" in kernels
    src = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    node = ast.parse(src).body[0]
    assert node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and not _is_numba_kernel(node)
