"""Tile one slide: thumbnail → tissue mask → grid → HDF5 + QC picture.

:func:`tile_slide` is the unit of work of a tiling run; it raises on any problem
(the run turns that into a ``failed`` row). It is a plain function of paths and a
config, so it runs the same in-process, in a worker process or on a SLURM node.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io import sha256_json
from ..slides.wsi import open_slide
from .config import TileConfig
from .grid import majority_labels, patch_size_px, tissue_patches
from .h5 import write_patch_h5
from .mask import tissue_mask
from .overlay import mask_overlay, save_png
from .thumbnail import read_at_mpp

OVERLAY_MIN_SIDE = 768  # px; below this the QC picture is re-read finer so patches stay visible
OVERLAY_MAX_SIDE = 1024


def config_sha256(config: TileConfig) -> str:
    """Hash of the config stored in every patch file: a rerun with other settings redoes the slide."""
    return sha256_json(config.to_dict())


def find_classmap(slide_path: str | os.PathLike) -> tuple[np.ndarray, float] | None:
    """The synthetic cohort's class map beside a slide, or None.

    Looks for ``<stem>_classmap.png`` and ``<stem>.json`` (key ``classmap_downsample``:
    level-0 px per class-map px). A class map without its downsample is an error.
    """
    from PIL import Image

    p = Path(slide_path)
    png, meta = p.with_name(f"{p.stem}_classmap.png"), p.with_name(f"{p.stem}.json")
    if not png.exists():
        return None
    try:
        ds = float(json.loads(meta.read_text())["classmap_downsample"])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"class map {png} found but its downsample could not be read from {meta} "
            f"(key 'classmap_downsample'): {e!r}. Regenerate the cohort or remove the class map."
        ) from e
    with Image.open(png) as im:
        cmap = np.asarray(im)
    if cmap.ndim == 3:
        cmap = cmap[..., 0]  # saved as RGB by some tools: class index in every channel
    return cmap.astype(np.int32), ds


def remove_stale_parts(folder: Path, stem: str, suffix: str) -> int:
    """Delete temporary files a killed run left for this slide; returns how many."""
    pat = re.compile(rf"^\.{re.escape(stem)}\.[A-Za-z0-9_]+\.part{re.escape(suffix)}$")
    n = 0
    if folder.is_dir():
        for f in folder.iterdir():
            if pat.match(f.name):
                f.unlink(missing_ok=True)
                n += 1
    return n


def tile_slide(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TileConfig = TileConfig(),
    *,
    slide_id: str | None = None,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Segment and grid one slide; write ``patches/<id>.h5`` and ``masks/<id>.png`` under ``out_dir``.

    ``mpp`` (µm/px) overrides both the metadata and ``config.mpp_override`` for this
    slide (a manifest's ``mpp`` column). Returns the manifest row (status ``ok``)
    plus ``mpp_source`` and ``seconds``. Raises ``SlideReadError``/``MissingMPPError``
    and other errors, each naming the slide.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    sid = slide_id or Path(path).stem
    override = mpp if mpp is not None else config.mpp_override
    h5_path = out / "patches" / f"{sid}.h5"
    remove_stale_parts(h5_path.parent, sid, ".h5")
    remove_stale_parts(out / "masks", sid, ".png")
    with open_slide(path, mpp_override=override, allow_plain_images=config.allow_plain_images) as slide:
        if mpp is not None:
            slide.mpp_source = "manifest mpp column"
        W, H = slide.dimensions
        thumb, scale = read_at_mpp(slide, config.seg_mpp)
        thumb_mpp = slide.mpp * W / thumb.shape[1]  # exact µm/px of the thumbnail after rounding
        mask = tissue_mask(thumb, mpp=thumb_mpp, config=config)
        ps = patch_size_px(slide.mpp, target_mpp=config.target_mpp, target_px=config.target_px)
        coords, frac = tissue_patches(mask, scale=scale, level0_size=(W, H), patch_size=ps, min_tissue=config.min_tissue)
        cm = find_classmap(path)
        labels = majority_labels(cm[0], coords, downsample=cm[1], patch_size=ps) if cm else np.full(len(coords), -1, np.int16)
        attrs = {
            "patch_size": ps, "patch_level": 0, "slide_mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "target_mpp": config.target_mpp, "target_px": config.target_px,
            "slide_path": str(Path(path).resolve()), "slide_id": sid, "width": W, "height": H,
            "min_tissue": config.min_tissue, "config_sha256": config_sha256(config),
        }
        # QC picture first: the h5 is the "done" marker, so it must be the last thing written.
        if max(thumb.shape[:2]) < OVERLAY_MIN_SIDE:
            fine = max(slide.mpp, max(W, H) * slide.mpp / OVERLAY_MAX_SIDE)
            qc, qc_scale = read_at_mpp(slide, fine)
        else:
            qc, qc_scale = thumb, scale
        save_png(out / "masks" / f"{sid}.png", mask_overlay(qc, mask, coords=coords, patch_size=ps, scale=qc_scale))
        write_patch_h5(h5_path, coords, tissue_fraction=frac, labels=labels, attrs=attrs)
        mpp_used, source = slide.mpp, slide.mpp_source
    return {
        "slide_id": sid, "path": str(path), "mpp": mpp_used, "width": W, "height": H,
        "n_patches": int(len(coords)), "patch_size": ps, "status": "ok", "error": "",
        "h5_path": str(h5_path), "mpp_source": source, "seconds": round(time.perf_counter() - t0, 3),
    }
