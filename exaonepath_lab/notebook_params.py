"""The numbered notebooks' parameters: resolve paths, check what the user set, fall back to the demo only when asked.

Every notebook's ``parameters`` cell holds literals; the first code cell hands them to these
functions, so that the rules are the same in every notebook and live in one place:

* a relative path (``"../outputs"``) is resolved against the repository's ``notebooks/``
  folder, not the working directory — papermill or VS Code started from the repository root
  must not write into the repository's parent (:func:`resolve_path`);
* a group of paths that only make sense together (a tiling and its two checkpoints) is either
  all set (your data) or all ``None`` (the demo's); a partial set is an error naming what is
  missing (:func:`own_or_demo`);
* a parameter with a fixed set of values, a size or a path that does not exist is rejected
  before any work starts, with the parameter's name and the fix (:func:`check_choice`,
  :func:`check_int`, :func:`existing_dir`, :func:`tiling_dir`, :func:`checkpoint_file`).

This module sits on top of the library, beside :mod:`exaonepath_lab.demo` (the CLI and the
notebooks are its only callers).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_NOTEBOOKS = PACKAGE_DIR.parent / "notebooks"
DEMO_OUT = "../outputs"
"""Where ``make demo`` writes, relative to the notebooks folder (the repository's ``outputs/``)."""


class NotebookParameterError(ValueError):
    """A notebook parameter (or a combination of them) that cannot be used; the message names it and the fix."""


def notebook_dir() -> Path:
    """The folder relative notebook paths are resolved against.

    The repository's ``notebooks/`` when the kit is used from its checkout (``pip install -e .``,
    ``make``), else the working directory (a Jupyter kernel starts in the notebook's folder).
    """
    if (REPO_NOTEBOOKS / "00_quickstart.py").exists() or (REPO_NOTEBOOKS / "00_quickstart.ipynb").exists():
        return REPO_NOTEBOOKS
    return Path.cwd()


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """``path`` made absolute: ``~`` expanded, a relative path taken from :func:`notebook_dir`; ``None`` stays ``None``."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise NotebookParameterError(f"a path parameter must be a string or None, got {path!r} ({type(path).__name__})")
    p = Path(path).expanduser()
    return p if p.is_absolute() else (notebook_dir() / p).resolve()


def output_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` resolved (:func:`resolve_path`) and created."""
    out = resolve_path(out_dir)
    if out is None:
        raise NotebookParameterError("out_dir must be a folder path, not None")
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; else an error listing them."""
    choices = list(choices)
    if value not in choices:
        raise NotebookParameterError(f"{name}={value!r} is not one of {choices}")
    return value


def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """``value`` as an int ≥ ``minimum`` (``None`` passes when ``allow_none``); else an error naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        none = " or None" if allow_none else ""
        raise NotebookParameterError(f"{name}={value!r}: expected a whole number ≥ {minimum}{none}")
    return int(value)


def check_device(device: Any) -> str:
    """``device`` if it names a torch device the kit runs on (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    if not (isinstance(device, str) and (device == "cpu" or device.startswith(("cuda", "mps")))):
        raise NotebookParameterError(f"device={device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


def _existing(name: str, path: str | os.PathLike, *, folder: bool, fix: str) -> Path:
    p = resolve_path(path)
    if p is None or not (p.is_dir() if folder else p.is_file()):
        what = "folder" if folder else "file"
        raise NotebookParameterError(f"{name}={str(path)!r}: {what} not found ({p}). {fix}".strip())
    return p


def existing_dir(name: str, path: str | os.PathLike, *, fix: str = "") -> Path:
    """``path`` resolved; an error naming ``name`` if it is not a folder."""
    return _existing(name, path, folder=True, fix=fix)


def existing_file(name: str, path: str | os.PathLike, *, fix: str = "") -> Path:
    """``path`` resolved; an error naming ``name`` if it is not a file."""
    return _existing(name, path, folder=False, fix=fix)


def tiling_dir(path: str | os.PathLike, *, name: str = "tile_dir") -> Path:
    """A tiling output folder (``manifest.csv`` inside), resolved; else an error with the command that makes one."""
    p = existing_dir(name, path, fix="Tile your slides first: `exaonepath-lab tile SLIDES --out DIR`.")
    if not (p / "manifest.csv").is_file():
        raise NotebookParameterError(f"{name}={str(path)!r}: {p} holds no manifest.csv, so it is not a tiling output. "
                                     "Tile your slides first: `exaonepath-lab tile SLIDES --out DIR` (or give "
                                     "cohort_dir where the notebook tiles it).")
    return p


def checkpoint_file(path: str | os.PathLike, *, name: str) -> Path:
    """A model checkpoint file, resolved; else an error naming ``name``."""
    return existing_file(name, path, fix="Train one with notebook 04 or `exaonepath-lab train`, or give the "
                                          "path of a downloaded checkpoint.")


def own_or_demo(what: str, **paths: Any) -> bool:
    """``True`` when every path in ``paths`` is set (your data), ``False`` when none is (the demo's).

    A partial set is an error that names the parameters still missing: silently replacing the
    ones you did set by the demo's would run the notebook on data you did not choose.
    """
    missing = [k for k, v in paths.items() if v is None]
    if not missing:
        return True
    if len(missing) == len(paths):
        return False
    given = [k for k in paths if k not in missing]
    raise NotebookParameterError(
        f"{what} needs {', '.join(paths)} together: you set {', '.join(given)} but not {', '.join(missing)}. "
        f"Set the missing one(s), or leave all of {', '.join(paths)} as None to use the demo's.")


def reject_unused(reason: str, **params: Any) -> None:
    """An error when any of ``params`` is set (not ``None``): they would be ignored, which a user would not notice."""
    set_ = [k for k, v in params.items() if v is not None]
    if set_:
        raise NotebookParameterError(f"{', '.join(f'{k}={params[k]!r}' for k in set_)}: not used {reason}; "
                                     "leave it as None")


def demo_paths(demo_dir: str | os.PathLike = DEMO_OUT, *, smoke: bool = False, train: bool = True,
               progress: bool = True) -> dict[str, str]:
    """The demo's cohort, tiling (and with ``train`` its two checkpoints), made if missing in ``demo_dir``.

    ``demo_dir`` is resolved like every notebook path (default: the repository's ``outputs/``,
    where ``make demo`` writes), so the notebooks reuse what ``make demo`` made.
    """
    from .demo import demo_inputs

    out = resolve_path(demo_dir)
    assert out is not None
    return demo_inputs(out, smoke=smoke, train=train, progress=progress)


def demo_runs(demo_dir: str | os.PathLike = DEMO_OUT) -> dict[str, dict[str, Any]] | None:
    """The demo's two finished DINO runs (``{"raw": record, "macenko": record}``) if ``make demo`` trained them.

    Each record is what the demo stage wrote (``run_dir``, ``checkpoint``, ``final``,
    ``collapse_warnings``, ``stain_counts``, ``iterations``); ``None`` when either run is missing.
    """
    out = resolve_path(demo_dir)
    assert out is not None
    runs = {}
    for name, stage in (("raw", "train_raw"), ("macenko", "train_macenko")):
        rec_path = out / "stages" / f"{stage}.json"
        if not rec_path.is_file():
            return None
        rec = json.loads(rec_path.read_text())
        if not Path(rec.get("checkpoint", "")).is_file() or not (Path(rec["run_dir"]) / "log.jsonl").is_file():
            return None
        runs[name] = rec
    return runs


def tile_cohort(cohort_dir: str | os.PathLike, tile_dir: str | os.PathLike, *, workers: int = 1,
                progress: bool = True) -> Path:
    """Tile the slides of ``cohort_dir`` into ``tile_dir`` (resumable: finished slides are skipped).

    Prints the run report (statuses and counts: a slide that fails is listed, never dropped)
    and raises when no slide could be tiled.
    """
    from .tiling import TileConfig, format_report, run_tiling

    src = existing_dir("cohort_dir", cohort_dir, fix="Give the folder that holds your slide files.")
    dst = resolve_path(tile_dir)
    assert dst is not None
    res = run_tiling(src, dst, TileConfig(), workers=workers, progress=progress)
    print(format_report(res.report))
    usable = res.manifest["status"].isin(["ok", "skipped_done"])
    if not usable.any() or int(res.manifest.loc[usable, "n_patches"].sum()) == 0:
        raise NotebookParameterError(f"cohort_dir={str(cohort_dir)!r}: no slide gave any tissue patch "
                                     f"(statuses in {dst / 'manifest.csv'}); check the slides and their MPP")
    return dst


def slides_and_tiles(cohort_dir: str | os.PathLike | None, tile_dir: str | os.PathLike | None, *,
                     out: Path, workers: int = 1, progress: bool = True) -> tuple[str | None, Path]:
    """The rule shared by the notebooks that accept slides: returns ``(cohort_dir, tile_dir)`` resolved.

    * ``cohort_dir`` set: its slides are tiled into ``tile_dir`` (or ``out/tiles`` when
      ``tile_dir`` is None); a rerun resumes;
    * only ``tile_dir`` set: that existing tiling is used as it is;
    * neither: an error (the caller decides whether the demo's are used before calling this).
    """
    if cohort_dir is not None:
        dst = resolve_path(tile_dir) if tile_dir is not None else out / "tiles"
        assert dst is not None
        return str(resolve_path(cohort_dir)), tile_cohort(cohort_dir, dst, workers=workers, progress=progress)
    if tile_dir is not None:
        return None, tiling_dir(tile_dir)
    raise NotebookParameterError("give cohort_dir (a folder of slides, tiled here) or tile_dir (an existing tiling)")


VIT_B_CPU_IMG_PER_S = 2.0
"""ViT-B/16 at 224 px on 2 CPU cores, images/s (benchmarks/features.md measured 0.34 on a loaded machine)."""
VIT_B_GPU_IMG_PER_S = 1000.0
"""ViT-B/16 at 224 px on one recent GPU, images/s: an estimate (~17.6 GFLOPs per image); not measured here."""


def extraction_hours(n_images: int, encoder: Any, *, device: str = "cpu") -> float:
    """Rough hours to extract ``n_images`` features with ``encoder``, scaled from a ViT-B/16 at 224 px.

    Cost is taken as proportional to parameters × input pixels; the base rates are
    :data:`VIT_B_CPU_IMG_PER_S` and :data:`VIT_B_GPU_IMG_PER_S`. Good to a factor of a few —
    meant for a warning before a CPU run that would take hours, not for a benchmark.
    """
    params = sum(p.numel() for p in encoder.parameters())
    rel = (params / 86e6) * (int(encoder.input_size) / 224) ** 2
    rate = VIT_B_GPU_IMG_PER_S if str(device).startswith("cuda") else VIT_B_CPU_IMG_PER_S
    return float(n_images * rel / rate / 3600)
