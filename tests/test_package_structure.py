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


# ----------------------------------------------------------------------------- job configs
#: Job configs still outside their room's config.py; each entry goes when that work lands.
JOB_CONFIGS_BEING_MOVED: set[str] = set()


def test_every_job_config_is_found_the_same_way() -> None:
    """A JobConfig subclass lives in the config.py of the room that runs the job and is exported by that room."""
    import importlib

    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "JobConfig" for b in node.bases):
                found[f"{rel}::{node.name}"] = rel
    misplaced = {w for w, rel in found.items() if not rel.endswith("config.py")} - JOB_CONFIGS_BEING_MOVED
    assert not misplaced, f"move these job configs into their room's config.py: {sorted(misplaced)}"
    jobs = {w.split("::")[1] for w in found}
    assert {"TileConfig", "StainConfig", "PretrainConfig", "LaunchConfig", "ExtractConfig", "ProbeConfig",
            "DemoConfig"} <= jobs
    for where, rel in found.items():
        if where in JOB_CONFIGS_BEING_MOVED:
            continue
        room = rel.rsplit("/", 1)[0] if "/" in rel else ""
        pkg = importlib.import_module("exaonepath_lab" + (f".{room.replace('/', '.')}" if room else ".config"))
        assert hasattr(pkg, where.split("::")[1]), f"exaonepath_lab.{room or 'config'} should export {where}"


def test_every_pretrain_field_says_why_and_list_keys_prints_it(capsys) -> None:
    import dataclasses

    import pytest

    from exaonepath_lab.cli import main
    from exaonepath_lab.pretrain.config import PretrainConfig

    fields = dataclasses.fields(PretrainConfig)
    assert len(fields) > 50
    bare = [f.name for f in fields if len(f.metadata.get("help", "")) < 20]
    assert not bare, f"PretrainConfig fields without a help string saying why: {bare}"
    with pytest.raises(SystemExit) as done:  # no --data/--out needed, like --version
        main(["train", "--list-keys"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for f in fields:
        assert f"\n{f.name} (" in f"\n{out}", f"--list-keys does not list {f.name}"
    assert "lr (float, default 0.005)" in out and "Peak learning rate reached after warm-up" in out
    assert "teacher_temp (float, default 0.07)" in out and "unstable for ViT-B" in out


# ----------------------------------------------------------------------------- CLI
def test_a_listed_command_that_is_missing_is_an_error(monkeypatch) -> None:
    import pytest

    from exaonepath_lab import cli

    assert cli.build_parser()  # every listed command exists
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "no_such_command"])
    with pytest.raises(ImportError, match=r"'no_such_command'.*commands/no_such_command\.py is missing"):
        cli.build_parser()


# ----------------------------------------------------------------------------- atomic writes
def test_artifacts_are_written_through_a_temporary_name() -> None:
    """io.py's promise: every artifact goes to a temp name, then is renamed (``atomic_path``).

    A direct ``fig.write_html(path)``, ``df.to_csv(path)``, ``path.write_text(...)``,
    ``plt.savefig(path)`` or ``open(path, "w")`` leaves a half-written file when a job is killed;
    inside ``with atomic_path(path) as tmp`` the target is ``tmp`` (or a download's ``.part``).
    """
    writers = {"write_html", "to_csv", "write_text", "write_bytes", "savefig", "imwrite", "to_parquet"}
    direct = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text())
        # names bound by `with atomic_path(...) as NAME` are temporary names too
        temp_names = {item.optional_vars.id for node in ast.walk(tree) if isinstance(node, ast.With)
                      for item in node.items if isinstance(item.optional_vars, ast.Name)
                      and isinstance(item.context_expr, ast.Call)
                      and getattr(item.context_expr.func, "id", getattr(item.context_expr.func, "attr", "")) == "atomic_path"}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue  # e.g. df.to_csv(index=False) returns the text
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            writes = name in writers or (name == "open" and isinstance(mode, ast.Constant) and "w" in str(mode.value))
            target = ast.unparse(node.args[0]) if name != "write_text" or not isinstance(node.func, ast.Attribute) \
                else ast.unparse(node.func.value)
            if writes and not any(t in target.lower() for t in ("tmp", "part")) and target not in temp_names:
                direct.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:100]}")
    assert not direct, "write these through exaonepath_lab.io.atomic_path:\n" + "\n".join(direct)


# ----------------------------------------------------------------------------- docs agree with each other
def test_the_demo_duration_is_stated_the_same_everywhere() -> None:
    """README, Makefile and DemoConfig state one duration (measured: 5 min 55 s on 2 idle cores in the last rerun, 11 min 48 s the session before)."""
    import re

    from exaonepath_lab.config import DemoConfig

    root = PACKAGE.parent
    readme_line = next(line for line in (root / "README.md").read_text().splitlines() if line.startswith("make demo"))
    make_line = next(line for line in (root / "Makefile").read_text().splitlines() if line.startswith("## make demo"))
    stated = {where: re.findall(r"~\d+(?:-\d+)? min", text) for where, text in
              {"README.md": readme_line, "Makefile": make_line, "DemoConfig": DemoConfig.__doc__ or ""}.items()}
    assert all(len(v) == 1 for v in stated.values()) and len({v[0] for v in stated.values()}) == 1, stated


# ----------------------------------------------------------------------------- signatures (scanpy's convention)
MAX_POSITIONAL = 3

#: Public functions with more positional parameters, in other helpers' files or called positionally
#: from them; each entry goes when that work lands.
POSITIONAL_BEING_FIXED: set[str] = set()


def _public_signatures() -> dict[str, ast.arguments]:
    """Module-level functions and methods of classes in public modules, by ``path::[Class.]name``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(part.startswith("_") and part != "__init__.py" for part in rel.split("/")):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                out[f"{rel}::{node.name}"] = node.args
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for m in node.body:
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                            not m.name.startswith("_") or m.name == "__init__"):
                        out[f"{rel}::{node.name}.{m.name}"] = m.args
    return out


def _n_positional(args: ast.arguments, *, method: bool) -> int:
    names = [a.arg for a in args.posonlyargs + args.args]
    if method and names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


def test_public_functions_take_data_first_and_options_by_keyword() -> None:
    sigs = _public_signatures()
    assert len(sigs) > 200  # the scan sees the package
    counts = {w: _n_positional(a, method="." in w.split("::")[1]) for w, a in sigs.items()}
    bad = {w: n for w, n in counts.items() if n > MAX_POSITIONAL and w not in POSITIONAL_BEING_FIXED}
    assert not bad, (f"public functions with more than {MAX_POSITIONAL} positional parameters (make the options "
                     "keyword-only with `*`): " + ", ".join(f"{w} ({n})" for w, n in sorted(bad.items())))
    stale = {w for w in POSITIONAL_BEING_FIXED if counts.get(w, 0) <= MAX_POSITIONAL}
    assert not stale, f"fixed already (or gone): remove {sorted(stale)} from POSITIONAL_BEING_FIXED"


# ----------------------------------------------------------------------------- the public face
def test_the_public_face_is_short_lazy_and_resolves_to_the_home_objects() -> None:
    import importlib
    import os
    import subprocess
    import sys

    assert len(exaonepath_lab.__all__) <= 40  # short: one name per step, the configs, the demo
    for name in exaonepath_lab.__all__:
        obj = getattr(exaonepath_lab, name)
        if name != "__version__":
            assert obj is getattr(importlib.import_module(exaonepath_lab._LAZY[name]), name), name
    assert set(exaonepath_lab.__all__) <= set(dir(exaonepath_lab))
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        exaonepath_lab.nope  # noqa: B018
    # `import exaonepath_lab` stays cheap: no torch, numpy or pandas until a name is used
    code = ("import sys, exaonepath_lab; heavy = [m for m in ('torch', 'numpy', 'pandas') if m in sys.modules]; "
            "print(','.join(heavy))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "", f"import exaonepath_lab loaded {out.strip()}"
