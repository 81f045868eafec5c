"""Tile many slides: inputs → parallel workers → manifest + run report; resumable, shardable.

Output folder layout (docs/ARCHITECTURE.md): ``patches/<id>.h5``, ``masks/<id>.png``,
``manifest.csv``, ``tile_config.json``, plus ``tile_report.json`` (counts per status).

- One bad slide never stops the run: it gets ``status=failed`` and its error.
- A rerun skips slides whose patch file exists, is readable and was made with the
  same config (``skipped_done``); anything else is redone.
- SLURM arrays: each task tiles the slides ``i`` with ``i % num_shards == shard_index``
  and writes ``manifest.shard-IIII-of-NNNN.csv``; :func:`merge_manifests` joins them.
  Example: ``sbatch --array=0-9 --wrap "exaonepath-lab tile slides/ --out tiles/"``, then
  ``exaonepath-lab tile --merge --out tiles/``.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..io import write_json_atomic, write_text_atomic
from .config import TileConfig
from .h5 import read_patch_h5
from .slide import config_sha256, tile_slide

MANIFEST_COLUMNS = ["slide_id", "path", "mpp", "width", "height", "n_patches", "patch_size", "status", "error", "h5_path"]
STATUSES = ("ok", "failed", "skipped_done")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclasses.dataclass(frozen=True)
class SlideJob:
    """One slide to tile: its path, output id and optional per-slide MPP (µm/px)."""

    path: str
    slide_id: str
    mpp: float | None = None


@dataclasses.dataclass
class TilingResult:
    """What a run did: the manifest (one row per slide) and the report (counts per status)."""

    manifest: pd.DataFrame
    report: dict[str, Any]
    manifest_path: Path


# ---------------------------------------------------------------- inputs
def resolve_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    allow_plain_images: bool = False,
) -> list[SlideJob]:
    """Turn a folder, a CSV manifest or a list of paths into slide jobs.

    A folder contributes its slide files (non-recursive, sorted; PNG/JPEG only with
    ``allow_plain_images``, and never a slide's sidecars such as ``<stem>_thumb.png``). A ``.csv`` needs a ``path`` column
    (relative paths are relative to the CSV), optional ``slide_id`` and ``mpp``.
    Paths are made absolute so the manifest works from any directory.
    Any other path is taken as a slide (missing ones fail in the run, not here, so the
    manifest records them). Duplicate slide ids are an error: their outputs would collide.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    suffixes = SLIDE_SUFFIXES + (PLAIN_SUFFIXES if allow_plain_images else ())
    jobs: list[SlideJob] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes
                           and not f.name.startswith(".") and not f.stem.endswith("_classmap"))
            # sidecar pictures of a slide (<stem>_thumb.png, <stem>_classmap.png) are not slides
            wsi_stems = {f.stem for f in files if f.suffix.lower() in SLIDE_SUFFIXES}
            files = [f for f in files if f.suffix.lower() in SLIDE_SUFFIXES
                     or not any(f.stem.startswith(w + "_") for w in wsi_stems)]
            if not files:
                raise ValueError(f"no slide files ({', '.join(suffixes)}) in folder {p}")
            jobs += [SlideJob(os.path.abspath(f), f.stem) for f in files]
        elif p.suffix.lower() == ".csv":
            jobs += _jobs_from_csv(p)
        else:
            jobs.append(SlideJob(os.path.abspath(p), p.stem))
    if not jobs:
        raise ValueError("no slides given: pass a folder, a CSV manifest with a `path` column, or slide paths")
    seen: dict[str, str] = {}
    for j in jobs:
        if not _SAFE_ID.match(j.slide_id):
            raise ValueError(f"slide id {j.slide_id!r} (from {j.path}) is not a safe file name; "
                             "give a `slide_id` column with letters, digits, '.', '_', '-', '+'")
        if j.slide_id in seen:
            raise ValueError(f"duplicate slide id {j.slide_id!r}: {seen[j.slide_id]} and {j.path}; "
                             "give unique ids in a CSV manifest (`slide_id` column)")
        seen[j.slide_id] = j.path
    return jobs


def _jobs_from_csv(csv: Path) -> list[SlideJob]:
    if not csv.exists():
        raise FileNotFoundError(f"slide manifest not found: {csv}")
    df = pd.read_csv(csv)
    if "path" not in df.columns:
        raise ValueError(f"slide manifest {csv} needs a `path` column (has {list(df.columns)}); "
                         "optional columns: `slide_id`, `mpp`")
    jobs = []
    for _, r in df.iterrows():
        p = Path(str(r["path"]))
        p = p if p.is_absolute() else csv.parent / p
        sid = str(r["slide_id"]) if "slide_id" in df.columns and pd.notna(r["slide_id"]) else p.stem
        mpp = float(r["mpp"]) if "mpp" in df.columns and pd.notna(r["mpp"]) else None
        jobs.append(SlideJob(os.path.abspath(p), sid, mpp))
    return jobs


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(shard_index, num_shards) from a SLURM job array, else (0, 1).

    Uses ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` so ``--array=1-10`` works too.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return 0, 1
    idx = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    return idx, int(env["SLURM_ARRAY_TASK_COUNT"])


def _shard_tag(index: int, count: int) -> str:
    return f"shard-{index:04d}-of-{count:04d}"


# ---------------------------------------------------------------- one slide, safely
def _failed_row(job: SlideJob, out: Path, err: BaseException | str) -> dict[str, Any]:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return {"slide_id": job.slide_id, "path": job.path, "mpp": float("nan"), "width": -1, "height": -1,
            "n_patches": 0, "patch_size": -1, "status": "failed", "error": msg,
            "h5_path": "", "mpp_source": "", "seconds": 0.0}


def _tile_or_fail(job: SlideJob, out: str, config: TileConfig) -> dict[str, Any]:
    """Worker entry point: never raises for a bad slide, returns a ``failed`` row instead."""
    try:
        return tile_slide(job.path, out, config, slide_id=job.slide_id, mpp=job.mpp)
    except Exception as e:  # any slide-level problem, by design: it is reported, not fatal
        return _failed_row(job, Path(out), e)


def _done_row(job: SlideJob, out: Path, config_hash: str) -> dict[str, Any] | None:
    """Row for a slide whose valid patch file already exists with this config, else None."""
    h5 = out / "patches" / f"{job.slide_id}.h5"
    if not h5.exists():
        return None
    try:
        a = read_patch_h5(h5)
    except ValueError:
        return None  # truncated / foreign: redo it
    at = a["attrs"]
    if at.get("config_sha256") != config_hash or (job.mpp is not None and abs(at["slide_mpp"] - job.mpp) > 1e-9):
        return None  # other settings or another MPP: the old coordinates would be wrong
    if at.get("slide_path") != str(Path(job.path).resolve()):
        return None  # same id, different file

    return {"slide_id": job.slide_id, "path": job.path, "mpp": at["slide_mpp"], "width": at["width"],
            "height": at["height"], "n_patches": int(len(a["coords"])), "patch_size": at["patch_size"],
            "status": "skipped_done", "error": "", "h5_path": str(h5), "mpp_source": at.get("mpp_source", ""),
            "seconds": 0.0}


# ---------------------------------------------------------------- the run
def run_tiling(
    inputs: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[SlideJob],
    out_dir: str | os.PathLike,
    config: TileConfig = TileConfig(),
    *,
    workers: int = 1,
    shard_index: int | None = None,
    num_shards: int | None = None,
    progress: bool = True,
) -> TilingResult:
    """Tile every slide of ``inputs`` into ``out_dir``; see the module docstring.

    ``workers`` ≤ 1 runs in this process (easiest to debug); more uses a process pool.
    ``shard_index``/``num_shards`` default to the SLURM array variables (else 0/1).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(out_dir).absolute()  # manifest paths stay valid from any working directory
    out.mkdir(parents=True, exist_ok=True)
    if shard_index is None or num_shards is None:
        env_i, env_n = shard_from_env()
        shard_index = env_i if shard_index is None else shard_index
        num_shards = env_n if num_shards is None else num_shards
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index} of {num_shards}")
    all_jobs = (list(inputs) if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], SlideJob)
                else resolve_inputs(inputs, allow_plain_images=config.allow_plain_images))  # type: ignore[arg-type]
    jobs = [j for i, j in enumerate(all_jobs) if i % num_shards == shard_index]
    config.save(out / "tile_config.json")
    chash = config_sha256(config)

    rows: dict[str, dict[str, Any]] = {}
    todo: list[SlideJob] = []
    for j in jobs:
        done = _done_row(j, out, chash)
        if done is not None:
            rows[j.slide_id] = done
        else:
            todo.append(j)

    bar = tqdm(total=len(jobs), initial=len(rows), desc="tiling", unit="slide", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        for j in todo:
            rows[j.slide_id] = _tile_or_fail(j, str(out), config)
            bar.update(1)
    else:
        rows.update(_run_pool(todo, out, config, workers, bar))
    bar.close()

    manifest = pd.DataFrame([rows[j.slide_id] for j in jobs], columns=MANIFEST_COLUMNS + ["mpp_source", "seconds"])
    tag = "" if num_shards == 1 else "." + _shard_tag(shard_index, num_shards)
    manifest_path = out / f"manifest{tag}.csv"
    write_text_atomic(manifest_path, manifest[MANIFEST_COLUMNS].to_csv(index=False))
    report = _report(manifest, time.perf_counter() - t0, chash, shard_index, num_shards)
    write_json_atomic(out / f"tile_report{tag}.json", report)
    return TilingResult(manifest[MANIFEST_COLUMNS].copy(), report, manifest_path)


def _run_pool(todo: list[SlideJob], out: Path, config: TileConfig, workers: int, bar) -> dict[str, dict]:
    """Tile ``todo`` in a process pool; a slide that kills its worker (e.g. a decoder
    segfault) is retried alone so it is identified and the others still finish."""
    from concurrent.futures.process import BrokenProcessPool

    # spawn: no inherited threads/locks (tqdm, torch, OpenSlide caches) in the workers.
    ctx = multiprocessing.get_context("spawn")
    rows: dict[str, dict] = {}
    crashed: list[SlideJob] = []
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as ex:
        futs = {ex.submit(_tile_or_fail, j, str(out), config): j for j in todo}
        try:
            for fut in cf.as_completed(futs):
                j = futs[fut]
                try:
                    rows[j.slide_id] = fut.result()
                    bar.update(1)
                except BrokenProcessPool:
                    crashed.append(j)
        except KeyboardInterrupt:
            # stop queued slides now; finished ones are on disk and a rerun skips them
            ex.shutdown(wait=False, cancel_futures=True)
            raise
    for j in crashed:  # one at a time, each in a fresh process
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            try:
                rows[j.slide_id] = ex.submit(_tile_or_fail, j, str(out), config).result()
            except BrokenProcessPool:
                rows[j.slide_id] = _failed_row(j, out, "worker process crashed while reading this slide "
                                                       "(decoder crash?); check the file with openslide-show-properties")
        bar.update(1)
    return rows


def _report(manifest: pd.DataFrame, seconds: float, chash: str, shard_index: int, num_shards: int) -> dict[str, Any]:
    counts = {s: int((manifest["status"] == s).sum()) for s in STATUSES}
    failed = manifest[manifest["status"] == "failed"]
    return {
        "n_slides": int(len(manifest)),
        "counts": counts,
        "n_patches": int(manifest.loc[manifest["status"] != "failed", "n_patches"].sum()),
        "seconds": round(seconds, 3),
        "config_sha256": chash,
        "shard_index": shard_index,
        "num_shards": num_shards,
        "failed": failed[["slide_id", "path", "error"]].to_dict("records"),
        "slides": manifest[["slide_id", "status", "n_patches", "mpp_source", "seconds"]].to_dict("records")
        if "mpp_source" in manifest.columns else [],
    }


def format_report(report: dict[str, Any]) -> str:
    """One human line per fact of a run report (what the CLI prints)."""
    c = report["counts"]
    lines = [f"tiled {report['n_slides']} slides: {c.get('ok', 0)} ok, {c.get('skipped_done', 0)} skipped "
             f"(already done), {c.get('failed', 0)} failed; {report['n_patches']} patches in {report['seconds']:.1f} s"]
    lines += [f"  FAILED {f['slide_id']}: {f['error']}" for f in report.get("failed", [])]
    return "\n".join(lines)


def merge_manifests(out_dir: str | os.PathLike, *, allow_partial: bool = False) -> TilingResult:
    """Join the shard manifests of ``out_dir`` into ``manifest.csv`` + ``tile_report.json``.

    Raises ``ValueError`` listing the missing shards unless ``allow_partial``.
    """
    out = Path(out_dir)
    parts = sorted(out.glob("manifest.shard-*-of-*.csv"))
    if not parts:
        raise ValueError(f"no shard manifests (manifest.shard-*-of-*.csv) in {out}; run the sharded tiling first")
    pat = re.compile(r"manifest\.shard-(\d+)-of-(\d+)\.csv$")
    found: dict[int, set[int]] = {}
    for p in parts:
        m = pat.search(p.name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if len(found) != 1:
        raise ValueError(f"shard manifests from runs with different shard counts {sorted(found)} in {out}; "
                         "delete the stale ones")
    (n, have), = found.items()
    missing = sorted(set(range(n)) - have)
    if missing and not allow_partial:
        raise ValueError(f"shards {missing} of {n} have no manifest in {out} yet (still running or failed); "
                         "rerun them, or merge with allow_partial=True / --allow-partial")
    manifest = pd.concat([pd.read_csv(p, dtype={"error": str}) for p in parts], ignore_index=True)
    manifest["error"] = manifest["error"].fillna("")
    manifest = manifest.sort_values("slide_id", kind="stable").reset_index(drop=True)
    path = out / "manifest.csv"
    write_text_atomic(path, manifest[MANIFEST_COLUMNS].to_csv(index=False))
    import json

    secs, hashes = 0.0, set()
    for i in have:
        rp = out / f"tile_report.{_shard_tag(i, n)}.json"
        if rp.exists():
            r = json.loads(rp.read_text())
            secs = max(secs, float(r.get("seconds", 0.0)))  # shards run side by side: wall time is the max
            hashes.add(r.get("config_sha256", ""))
    if len(hashes) > 1:
        raise ValueError(f"shards in {out} were tiled with different configs ({len(hashes)} config hashes); "
                         "rerun the odd shards with the same options")
    report = _report(manifest.assign(mpp_source="", seconds=0.0), secs, hashes.pop() if hashes else "", -1, n)
    report["missing_shards"] = missing
    report.pop("slides")
    write_json_atomic(out / "tile_report.json", report)
    return TilingResult(manifest[MANIFEST_COLUMNS], report, path)
