"""Batch jobs behind ``exaonepath-lab normalize``: a folder of images, or the patches of a tiling run.

Both are resumable (finished outputs are kept and skipped), write every artifact
atomically, and never drop an item: each one gets a status in a CSV, and the counts go
into a JSON run report.

Folder → ``OUT/<relative path>.png`` (lossless), ``OUT/stain_status.csv`` (one row per
input: path, out_path, status, error, n_tissue, stain matrix, max concentrations),
``OUT/normalize_report.json``.

Tiling run (ARCHITECTURE.md: ``manifest.csv`` + ``patches/<slide_id>.h5``) →
``TILE_DIR/stain/<slide_id>.h5``: datasets ``stain_matrix`` (N, 3, 2), ``max_conc`` (N, 2),
``status`` (N,), ``n_tissue`` (N,), row i for ``coords[i]``; attrs ``Io``, ``alpha``,
``beta``, ``slide_id``, ``patch_size``, ``n_patches``. The parameters do not depend on
the target, so one sidecar serves any target (:meth:`MacenkoNormalizer.apply`).
Plus ``TILE_DIR/stain/stain_report.csv`` (one row per slide) and ``stain_report.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..datasets import IMAGE_SUFFIXES, read_rgb
from ..io import atomic_path, write_json_atomic
from .macenko import MacenkoNormalizer
from .policy import count_statuses
from .results import StainParams

STATUS_CSV = "stain_status.csv"
FOLDER_REPORT = "normalize_report.json"
SIDECAR_DIR = "stain"
UNREADABLE = "unreadable"
_PARAM_COLS = ["h_r", "h_g", "h_b", "e_r", "e_g", "e_b", "maxc_h", "maxc_e"]


def _progress(it: Iterable, **kw: Any) -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(it, **kw)


def _param_row(params: StainParams, j: int) -> dict[str, float]:
    sm, mc = params.stain_matrix[j], params.max_conc[j]
    vals = [*sm[:, 0], *sm[:, 1], *mc]
    return {k: float(v) for k, v in zip(_PARAM_COLS, vals)}


def normalize_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    normalizer: MacenkoNormalizer,
    *,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Normalize every image under ``in_dir`` into ``out_dir`` (see module docstring); returns the report."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder not found: {in_dir}")
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError(f"--out must differ from the input folder ({in_dir}); originals are never overwritten")
    files = sorted(
        p for p in in_dir.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and out_dir.resolve() not in p.resolve().parents
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {in_dir}")
    csv_path = out_dir / STATUS_CSV
    done: dict[str, dict] = {}
    if csv_path.exists() and not overwrite:
        prev = pd.read_csv(csv_path, keep_default_na=False)
        for row in prev.to_dict("records"):
            if row.get("status") != UNREADABLE and (out_dir / str(row["out_path"])).exists():
                done[str(row["path"])] = row
    rows: dict[str, dict] = {}
    todo = []
    for f in files:
        rel = f.relative_to(in_dir).as_posix()
        if rel in done:
            rows[rel] = done[rel]
        else:
            todo.append((rel, f))
    n_skipped = len(files) - len(todo)

    def flush() -> None:
        table = pd.DataFrame([rows[r] for r in sorted(rows)])
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp, index=False)

    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    for chunk in _progress(chunks, desc="normalize", unit="batch", disable=not progress):
        imgs: list[np.ndarray] = []
        ok_items = []
        for rel, f in chunk:
            try:
                imgs.append(read_rgb(f))
                ok_items.append(rel)
            except (ValueError, FileNotFoundError) as e:
                rows[rel] = {"path": rel, "out_path": "", "status": UNREADABLE, "error": str(e), "n_tissue": -1,
                             "height": -1, "width": -1, **{k: np.nan for k in _PARAM_COLS}}
        if imgs:
            res = normalizer.normalize(imgs)  # a list: grouped by size inside
            for j, rel in enumerate(ok_items):
                out_rel = str(Path(rel).with_suffix(".png").as_posix())
                _write_png(out_dir / out_rel, res.images[j])
                h, w = imgs[j].shape[:2]
                rows[rel] = {"path": rel, "out_path": out_rel, "status": res.status[j], "error": "",
                             "n_tissue": int(res.params.n_tissue[j]), "height": h, "width": w,
                             **_param_row(res.params, j)}
        flush()
    if not todo:
        flush()
    counts = count_statuses(r["status"] for r in rows.values())
    report = {
        "input": str(in_dir),
        "output": str(out_dir),
        "n_images": len(files),
        "n_skipped_done": n_skipped,
        "counts": counts,
        "normalizer": normalizer.config(),
        "status_csv": STATUS_CSV,
    }
    write_json_atomic(out_dir / FOLDER_REPORT, report)
    return report


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(img)).save(tmp, format="PNG")


# ---- tiling runs ----------------------------------------------------------------------------
def sidecar_path(tile_dir: str | Path, slide_id: str) -> Path:
    """``TILE_DIR/stain/<slide_id>.h5``."""
    return Path(tile_dir) / SIDECAR_DIR / f"{slide_id}.h5"


def _read_coords(h5_path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import h5py

    with h5py.File(h5_path, "r") as f:
        if "coords" not in f:
            raise ValueError(f"{h5_path} has no 'coords' dataset; is it a tiling output (patches/<slide_id>.h5)?")
        coords = np.asarray(f["coords"][()], dtype=np.int64).reshape(-1, 2)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    if "patch_size" not in attrs:
        raise ValueError(f"{h5_path} lacks the 'patch_size' attribute (level-0 px); re-run `exaonepath-lab tile`")
    return coords, attrs


def _sidecar_done(path: Path, n: int) -> bool:
    import h5py

    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            return len(f["status"]) == n and len(f["stain_matrix"]) == n
    except (OSError, KeyError):
        return False  # a damaged sidecar is recomputed


def _open(slide_path: str, mpp: float | None) -> Any:
    try:
        from ..slides.wsi import open_slide
    except ImportError:  # pragma: no cover - slides/ is part of the kit
        import openslide

        class _Plain:
            def __init__(self, p: str) -> None:
                self.h = openslide.OpenSlide(p)

            def read_region(self, loc: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
                return np.asarray(self.h.read_region(loc, level, size).convert("RGB"))

            def close(self) -> None:
                self.h.close()

        return _Plain(slide_path)
    # Only level-0 pixels are read, so the MPP is irrelevant here; pass the one tiling
    # recorded so that slides without MPP metadata open.
    return open_slide(slide_path, mpp_override=mpp if mpp and mpp > 0 else None)


def fit_tiles(
    tile_dir: str | Path,
    normalizer: MacenkoNormalizer,
    *,
    batch_size: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit per-patch stain parameters for every slide of a tiling run (see module docstring)."""
    tile_dir = Path(tile_dir)
    manifest = tile_dir / "manifest.csv"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found: --tiles expects the output folder of `exaonepath-lab tile`")
    man = pd.read_csv(manifest, keep_default_na=False)
    missing = {"slide_id", "status", "h5_path"} - set(man.columns)
    if missing:
        raise ValueError(f"{manifest} lacks columns {sorted(missing)}; is it a tiling manifest?")
    rows = []
    for rec in man.to_dict("records"):
        sid = str(rec["slide_id"])
        row: dict[str, Any] = {"slide_id": sid, "status": "", "error": "", "n_patches": 0, "sidecar": ""}
        if str(rec["status"]) not in ("ok", "skipped_done") or not rec["h5_path"]:
            row.update(status="skipped_not_tiled", error=f"tiling status {rec['status']!r}")
            rows.append(row)
            continue
        try:
            row.update(_fit_one_slide(tile_dir, rec, normalizer, batch_size, overwrite, progress))
        except (OSError, ValueError, RuntimeError) as e:  # per-slide failure: counted, never silent
            row.update(status="failed", error=str(e))
        rows.append(row)
    flat = []
    for r in rows:
        r2 = {k: v for k, v in r.items() if k not in ("patch_counts", "n_ok")}
        for k, v in r.get("patch_counts", {}).items():
            if k != "total":
                r2[f"n_{k}"] = int(v)
        flat.append(r2)
    table = pd.DataFrame(flat)
    count_cols = [c for c in table.columns if c.startswith("n_") and c != "n_patches"]
    table[count_cols] = table[count_cols].fillna(0).astype(int)
    with atomic_path(tile_dir / SIDECAR_DIR / "stain_report.csv") as tmp:
        table.to_csv(tmp, index=False)
    patch_counts: dict[str, int] = {}
    for r in rows:
        for k, v in r.get("patch_counts", {}).items():
            patch_counts[k] = patch_counts.get(k, 0) + int(v)
    report = {
        "tile_dir": str(tile_dir),
        "slides": count_statuses(r["status"] for r in rows),
        "patches": patch_counts,
        "normalizer": {k: v for k, v in normalizer.config().items() if k not in ("target", "target_fingerprint", "policy")},
        "sidecar_layout": "stain/<slide_id>.h5: stain_matrix (N,3,2), max_conc (N,2), status (N,), n_tissue (N,)",
    }
    write_json_atomic(tile_dir / SIDECAR_DIR / "stain_report.json", json.loads(json.dumps(report, default=str)))
    return report


def _fit_one_slide(
    tile_dir: Path, rec: dict[str, Any], normalizer: MacenkoNormalizer, batch_size: int, overwrite: bool, progress: bool
) -> dict[str, Any]:
    sid = str(rec["slide_id"])
    h5 = Path(rec["h5_path"])
    h5 = h5 if h5.is_absolute() else tile_dir / h5
    if not h5.exists() and (tile_dir / "patches" / f"{sid}.h5").exists():
        h5 = tile_dir / "patches" / f"{sid}.h5"
    coords, attrs = _read_coords(h5)
    out = sidecar_path(tile_dir, sid)
    n = len(coords)
    if not overwrite and _sidecar_done(out, n):
        counts = StainParams.load(out).counts()
        return {"status": "skipped_done", "n_patches": n, "sidecar": str(out.relative_to(tile_dir)),
                "patch_counts": counts}
    ps = int(attrs["patch_size"])
    level = int(attrs.get("patch_level", 0))
    slide_path = str(attrs.get("slide_path") or rec.get("path") or "")
    mpp = attrs.get("slide_mpp", rec.get("mpp"))
    try:
        mpp = float(mpp) if mpp not in (None, "") else None
    except (TypeError, ValueError):
        mpp = None
    parts = []
    if n:
        slide = _open(slide_path, mpp)
        try:
            starts = range(0, n, batch_size)
            for s in _progress(starts, desc=sid, unit="batch", disable=not progress, leave=False):
                batch = np.stack([slide.read_region((int(x), int(y)), level, (ps, ps)) for x, y in coords[s : s + batch_size]])
                parts.append(normalizer.fit_stains(batch))
        finally:
            slide.close()
        params = StainParams.concat(parts)
    else:
        params = StainParams(np.zeros((0, 3, 2)), np.zeros((0, 2)), [], np.zeros(0), normalizer.Io, normalizer.alpha, normalizer.beta)
    params.save(out, slide_id=sid, patch_size=ps, patch_level=level, n_patches=n, slide_path=slide_path)
    counts = params.counts()
    return {"status": "ok", "n_patches": n, "sidecar": str(out.relative_to(tile_dir)), "patch_counts": counts}
