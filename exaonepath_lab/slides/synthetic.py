"""A synthetic multi-site H&E cohort: pyramidal TIFF WSIs with class maps and acquisition truth.

The demo needs slides that behave like a real multi-lab cohort so that the paper's
story can be told without downloading anything: tissue classes that differ by
*morphology* (nuclear size/density/shape, collagen fibres, fat vacuoles, debris), and
between-slide differences that are *physical* stain/scanner differences (per-slide H and E
OD vectors and strengths mixed by Beer–Lambert, white point, gamma, blur, noise, JPEG),
i.e. what Macenko normalization is meant to remove.

One call::

    from exaonepath_lab.slides.synthetic import make_cohort
    cohort = make_cohort("outputs/cohort", n_slides=10, seed=0)   # pandas.DataFrame

writes, per slide, ``<id>.tiff`` (pyramidal, 256 px JPEG tiles, levels 1, 1/4, 1/16 ...,
MPP in the resolution tags), ``<id>_classmap.png`` (uint8 class index, one pixel per
``classmap_downsample`` level-0 px), ``<id>_thumb.png`` and ``<id>.json`` (spec,
acquisition, MPP, class names, class fractions, SHA-256 of the TIFF), and ``cohort.csv``.
The JSON is written last, so it marks a finished slide: a rerun skips slides whose JSON
matches the spec and whose TIFF still has the recorded hash.

Composable stages: :func:`sample_cohort_specs` → :func:`render_slide` →
:func:`write_slide`; :func:`render_class_patch` renders one class alone (a quick look at
the morphology of each class under any acquisition).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path, sha256_file, sha256_json, write_json_atomic
from .synth_render import CLASSMAP_CELL_UM, RenderedSlide, estimate_tissue_patches, render_slide
from .synth_spec import (
    CLASS_NAMES,
    DEFAULT_CLASS_MIX,
    RUIFROK_E,
    RUIFROK_H,
    SYNTH_VERSION,
    Acquisition,
    SlideSpec,
    sample_acquisition,
    sample_cohort_specs,
)
from .synth_tiff import write_pyramid_tiff

__all__ = [
    "CLASS_NAMES",
    "CLASSMAP_CELL_UM",
    "DEFAULT_CLASS_MIX",
    "RUIFROK_E",
    "RUIFROK_H",
    "SYNTH_VERSION",
    "Acquisition",
    "SlideSpec",
    "RenderedSlide",
    "make_cohort",
    "write_slide",
    "render_slide",
    "render_class_patch",
    "sample_acquisition",
    "sample_cohort_specs",
    "slide_is_done",
    "read_classmap",
    "load_slide_info",
    "rgb_to_od",
    "spec_hash",
    "cohort_montage",
    "estimate_tissue_patches",
]

log = logging.getLogger(__name__)

THUMB_PX = 1024
"""Long side of the thumbnails (px): enough to see nuclei-dense vs fibrous regions."""


def spec_hash(spec: SlideSpec) -> str:
    """Hash of everything that determines a slide's bytes (spec + renderer version)."""
    return sha256_json({"spec": spec.to_dict(), "synth_version": SYNTH_VERSION})


def _paths(out_dir: Path, slide_id: str) -> dict[str, Path]:
    return {
        "tiff": out_dir / f"{slide_id}.tiff",
        "json": out_dir / f"{slide_id}.json",
        "classmap": out_dir / f"{slide_id}_classmap.png",
        "thumb": out_dir / f"{slide_id}_thumb.png",
    }


def slide_is_done(spec: SlideSpec, out_dir: str | os.PathLike) -> bool:
    """True if ``out_dir`` holds a complete slide for exactly this spec (hash-checked)."""
    p = _paths(Path(out_dir), spec.slide_id)
    if not all(q.exists() for q in p.values()):
        return False
    try:
        info = json.loads(p["json"].read_text())
    except (OSError, ValueError):
        return False
    return info.get("spec_hash") == spec_hash(spec) and info.get("tiff_sha256") == sha256_file(p["tiff"])


def _write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        arr = img[..., ::-1] if img.ndim == 3 else img  # cv2 writes BGR
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(arr)):
            raise OSError(f"could not write {path}")


def write_slide(spec: SlideSpec, out_dir: str | os.PathLike, *, rendered: RenderedSlide | None = None) -> dict[str, Any]:
    """Render (unless ``rendered`` is given) and write one slide's files; returns its JSON dict."""
    import cv2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = _paths(out_dir, spec.slide_id)
    t0 = time.perf_counter()
    r = rendered if rendered is not None else render_slide(spec)
    t_render = time.perf_counter() - t0
    write_pyramid_tiff(
        p["tiff"], r.rgb, spec.mpp, jpeg_quality=spec.acquisition.jpeg_quality,
        description=f"exaonepath-lab synthetic H&E slide {spec.slide_id} (synth v{SYNTH_VERSION}); MPP = {spec.mpp}",
    )
    _write_png(p["classmap"], r.classmap)
    H, W = r.rgb.shape[:2]
    s = THUMB_PX / max(H, W)
    _write_png(p["thumb"], cv2.resize(r.rgb, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA))
    info = {
        "slide_id": spec.slide_id,
        "synth_version": SYNTH_VERSION,
        "spec_hash": spec_hash(spec),
        "spec": spec.to_dict(),
        "acquisition": spec.acquisition.to_dict(),
        "mpp": spec.mpp,
        "width": W,
        "height": H,
        "class_names": list(CLASS_NAMES),
        "classmap_downsample": r.classmap_downsample,
        "classmap_shape": list(r.classmap.shape),
        "classmap_rule": "class at the centre of each classmap_downsample x classmap_downsample level-0 cell",
        "tissue_fraction": r.stats["tissue_fraction"],
        "class_fractions": r.stats["class_fractions"],
        "nuclei": r.stats["nuclei"],
        "n_patches_estimate": estimate_tissue_patches(r.classmap, r.classmap_downsample, spec.mpp),
        "n_patches_estimate_rule": "non-overlapping 128 µm patches (256 px at 0.5 MPP) with >= 50% tissue in the class map",
        "tiff_sha256": sha256_file(p["tiff"]),
        "files": {k: v.name for k, v in p.items()},
    }
    write_json_atomic(p["json"], info)  # last: its presence marks a finished slide
    log.info("%s: %dx%d px at %.3g MPP rendered in %.1f s", spec.slide_id, W, H, spec.mpp, t_render)
    return info


def _worker(spec_dict: dict[str, Any], out_dir: str, overwrite: bool) -> dict[str, Any]:
    """Process-pool entry: one slide → one cohort row (never raises; errors become a status)."""
    import cv2

    cv2.setNumThreads(1)  # one slide per core; cv2's own threads would oversubscribe
    spec = SlideSpec.from_dict(spec_dict)
    t0 = time.perf_counter()
    try:
        if not overwrite and slide_is_done(spec, out_dir):
            info = json.loads(_paths(Path(out_dir), spec.slide_id)["json"].read_text())
            status = "skipped_done"
        else:
            info = write_slide(spec, out_dir)
            status = "ok"
        return _row(spec, Path(out_dir), info, status, "", time.perf_counter() - t0)
    except Exception as e:  # one bad slide must not stop the cohort; it is reported in cohort.csv
        return _row(spec, Path(out_dir), None, "failed", f"{type(e).__name__}: {e}", time.perf_counter() - t0)


def _row(spec: SlideSpec, out_dir: Path, info: dict | None, status: str, error: str, seconds: float) -> dict[str, Any]:
    p = _paths(out_dir, spec.slide_id)
    a = spec.acquisition
    row: dict[str, Any] = {
        "slide_id": spec.slide_id,
        "path": str(p["tiff"].resolve()),
        "mpp": spec.mpp,
        "width": info["width"] if info else spec.width_px,
        "height": info["height"] if info else spec.height_px,
        "site": a.site,
        "status": status,
        "error": error,
        "seconds": round(seconds, 2),
        "tissue_fraction": info["tissue_fraction"] if info else np.nan,
        "n_patches_estimate": info["n_patches_estimate"] if info else -1,
        "classmap_downsample": info["classmap_downsample"] if info else -1,
        "pen_mark": spec.pen_mark,
        "fold": spec.fold,
        "h_vector": json.dumps([round(x, 4) for x in a.h_vector]),
        "e_vector": json.dumps([round(x, 4) for x in a.e_vector]),
        "h_scale": a.h_scale,
        "e_scale": a.e_scale,
        "gamma": a.gamma,
        "jpeg_quality": a.jpeg_quality,
        "classmap_path": str(p["classmap"].resolve()),
        "json_path": str(p["json"].resolve()),
        "thumb_path": str(p["thumb"].resolve()),
    }
    for k, name in enumerate(CLASS_NAMES[1:]):
        row[f"frac_{name}"] = info["class_fractions"][name] if info else np.nan
    return row


def make_cohort(
    out_dir: str | os.PathLike,
    n_slides: int = 10,
    seed: int = 0,
    *,
    specs: Sequence[SlideSpec] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **spec_kwargs: Any,
) -> pd.DataFrame:
    """Generate (or complete) a synthetic cohort in ``out_dir``; returns the ``cohort.csv`` table.

    ``specs`` overrides the drawn specs; otherwise ``sample_cohort_specs(n_slides, seed,
    **spec_kwargs)`` (e.g. ``mpps=(0.5,)``, ``size_um=(600, 800)`` for a tiny cohort).
    ``workers``: slides rendered in parallel (default: min(2, CPUs), ~1 GB RAM each).
    Slides already complete for the same spec are skipped (status ``skipped_done``); a
    slide that fails is reported with status ``failed`` and its error, the others go on.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    specs = list(specs) if specs is not None else sample_cohort_specs(n_slides, seed, **spec_kwargs)
    ids = [s.slide_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"slide ids must be unique, got duplicates in {ids}")
    out.mkdir(parents=True, exist_ok=True)
    workers = int(workers or min(2, os.cpu_count() or 1))
    todo = [(s.to_dict(), str(out), overwrite) for s in specs]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc="synth slides", unit="slide", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        for t in todo:
            rows.append(_worker(*t))
            bar.update(1)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        # spawn, not fork: the caller may hold torch/OpenMP threads that do not survive a fork.
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(_worker, *t) for t in todo]
            for fu in cf.as_completed(futs):
                rows.append(fu.result())
                bar.update(1)
    bar.close()
    df = pd.DataFrame(rows).set_index("slide_id").loc[ids].reset_index()
    with atomic_path(out / "cohort.csv") as tmp:
        df.to_csv(tmp, index=False)
    ok = df[df.status != "failed"]
    if len(ok):
        _write_png(out / "cohort_thumbs.png", cohort_montage(ok.thumb_path.tolist(), ok.slide_id.tolist()))
    n_failed = int((df.status == "failed").sum())
    if n_failed:
        log.warning("%d of %d synthetic slides failed; see the error column of %s", n_failed, len(df), out / "cohort.csv")
    return df


def cohort_montage(thumb_paths: Sequence[str | os.PathLike], labels: Sequence[str], *, cell: int = 320, cols: int = 5) -> np.ndarray:
    """RGB uint8 grid of thumbnails with their slide ids, for a one-glance look at the cohort."""
    import cv2

    n = len(thumb_paths)
    rows = (n + cols - 1) // cols
    canvas = np.full((rows * (cell + 24), min(n, cols) * cell, 3), 255, np.uint8)
    for i, (tp, lab) in enumerate(zip(thumb_paths, labels)):
        im = cv2.imread(str(tp))
        if im is None:
            continue
        s = cell / max(im.shape[:2])
        im = cv2.resize(im, (int(im.shape[1] * s), int(im.shape[0] * s)), interpolation=cv2.INTER_AREA)[..., ::-1]
        r, c = divmod(i, cols)
        y, x = r * (cell + 24) + 24, c * cell
        canvas[y : y + im.shape[0], x : x + im.shape[1]] = im
        cv2.putText(canvas, str(lab), (x + 4, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def load_slide_info(json_path: str | os.PathLike) -> dict[str, Any]:
    """The ``<id>.json`` of a synthetic slide, with a clear error if it is not one."""
    p = Path(json_path)
    try:
        info = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"synthetic slide info not found: {p}") from None
    except ValueError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); regenerate the cohort with `exaonepath-lab synth`") from e
    if "classmap_downsample" not in info:
        raise ValueError(f"{p} is not a synthetic slide description (no classmap_downsample)")
    return info


def read_classmap(slide_path: str | os.PathLike) -> tuple[np.ndarray, int] | None:
    """(class map uint8 (h, w), downsample) for a synthetic slide path, or None if it has none.

    Looks for ``<stem>_classmap.png`` and ``<stem>.json`` beside the slide.
    """
    import cv2

    p = Path(slide_path)
    cm, js = p.with_name(f"{p.stem}_classmap.png"), p.with_name(f"{p.stem}.json")
    if not (cm.exists() and js.exists()):
        return None
    img = cv2.imread(str(cm), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read class map {cm}; regenerate the cohort")
    return img, int(load_slide_info(js)["classmap_downsample"])


def render_class_patch(
    class_name: str,
    *,
    size_px: int = 256,
    mpp: float = 0.5,
    acquisition: Acquisition | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One ``size_px``² RGB uint8 patch of pure ``class_name`` tissue (no glass, no JPEG)."""
    if class_name not in CLASS_NAMES[1:]:
        raise ValueError(f"unknown class {class_name!r}; choose one of {CLASS_NAMES[1:]}")
    props = [1.0 if n == class_name else 0.0 for n in CLASS_NAMES[1:]]
    spec = SlideSpec(
        slide_id=f"patch_{class_name}", seed=int(seed), mpp=mpp, width_um=size_px * mpp, height_um=size_px * mpp,
        class_proportions=tuple(props), tissue_coverage=1.0, acquisition=acquisition or Acquisition(),
    )
    return render_slide(spec).rgb


def rgb_to_od(rgb: np.ndarray, white: float = 255.0) -> np.ndarray:
    """Optical density −log((I+1)/(white+1)) per channel, float32, same shape as ``rgb``."""
    return (-np.log((rgb.astype(np.float32) + 1.0) / (white + 1.0))).astype(np.float32)
