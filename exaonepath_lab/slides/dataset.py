"""Patch datasets that read tissue patches straight from the slides, by coordinate.

:class:`TiledPatchDataset` serves the patches of a tiling run (``exaonepath-lab tile``:
``manifest.csv`` + ``patches/<slide_id>.h5``); :class:`PatchListDataset` serves an
explicit table of ``(slide_path, x, y, patch_size)``. Both follow the kit's item
protocol (:mod:`exaonepath_lab.datasets`): ``ds[i] -> {"image": uint8 (H, W, 3), "index": i}``
and ``ds.meta`` with columns ``slide_id, x, y, patch_size, mpp, label, class_name,
tissue_fraction, slide_path`` (+ ``path``, the same as ``slide_path``).

Images come at the extracted size (``patch_size`` level-0 px: 256 at 0.5 MPP, 512 at
0.25 MPP, as the paper pretrains on them) or, with ``out_px``, area-resized to a square
``out_px`` image; then a coarser pyramid level is read when one covers the patch at no
less than ``out_px`` (a 512 px patch at 0.25 MPP asked at 128 px reads 128 px from the
1/4 level instead of decoding 512²).

Slides are opened lazily, once per worker process (a cache keyed by ``os.getpid()``),
never in ``__init__``: OpenSlide handles cannot cross a fork or be pickled for spawn, so
each DataLoader worker opens its own.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..datasets import ItemDataset
from .synth_spec import CLASS_NAMES

log = logging.getLogger(__name__)

META_COLUMNS = ["slide_id", "x", "y", "patch_size", "mpp", "label", "class_name", "tissue_fraction", "slide_path"]
USABLE_STATUSES = ("ok", "skipped_done")


def _class_name(label: int, names: Sequence[str]) -> str:
    return names[label] if 0 <= label < len(names) else ""


class SlidePatchDataset(ItemDataset):
    """Base class: reads ``meta`` rows (slide_path, x, y, patch_size) from slides.

    Subclasses set ``self.meta``; this class owns the per-process slide handles and the
    level choice. ``mpp_overrides`` (slide_id → µm/px) is passed to ``open_slide`` so
    slides tiled with an explicit MPP (no MPP in their metadata) open too.
    """

    out_px: int | None
    mpp_overrides: dict[str, float]

    def _init_reader(self, out_px: int | None, transform: Callable[[np.ndarray], Any] | None,
                     mpp_overrides: Mapping[str, float] | None) -> None:
        if out_px is not None and int(out_px) < 1:
            raise ValueError(f"out_px must be a positive number of pixels or None, got {out_px}")
        self.out_px = int(out_px) if out_px is not None else None
        self.transform = transform
        self.mpp_overrides = {str(k): float(v) for k, v in (mpp_overrides or {}).items()}
        self._pid: int | None = None
        self._slides: dict[str, Any] = {}

    # -- per-process handle cache -------------------------------------------------------
    def _slide(self, slide_path: str, slide_id: str, mpp: float) -> Any:
        from .wsi import open_slide

        pid = os.getpid()
        if self._pid != pid:  # first use in this process (or inherited by fork): start afresh
            self._pid, self._slides = pid, {}
        s = self._slides.get(slide_path)
        if s is None:
            override = self.mpp_overrides.get(slide_id)
            if override is None and np.isfinite(mpp):
                override = float(mpp)  # the MPP the patches were cut with; reading needs no other
            s = open_slide(slide_path, mpp_override=override)
            self._slides[slide_path] = s
        return s

    def __getstate__(self) -> dict[str, Any]:
        # Spawned DataLoader workers get a copy without handles and open their own.
        d = self.__dict__.copy()
        d["_slides"], d["_pid"] = {}, None
        return d

    def close(self) -> None:
        """Close the slides opened by this process."""
        for s in self._slides.values():
            s.close()
        self._slides = {}

    # -- reading ---------------------------------------------------------------------
    def read_patch(self, slide_path: str, x: int, y: int, *, patch_size: int, slide_id: str = "",
                   mpp: float = float("nan")) -> np.ndarray:
        """RGB uint8 (s, s, 3) of the level-0 square at (x, y) of side ``patch_size``;
        s = ``patch_size``, or ``out_px`` when set."""
        import cv2

        slide = self._slide(slide_path, slide_id, mpp)
        out = self.out_px or patch_size
        level, read_px = 0, patch_size
        if out < patch_size:
            lv = slide.get_best_level_for_downsample(patch_size / out * (1 + 1e-6))
            d = slide.level_downsamples[lv]
            # Use a coarser level only when the patch is a whole number of its pixels,
            # so the footprint is exactly the extracted one.
            px = patch_size / d
            if lv > 0 and abs(px - round(px)) < 1e-3 * px and round(px) >= out:
                level, read_px = lv, int(round(px))
        img = slide.read_region((int(x), int(y)), level, (read_px, read_px))
        if img.shape[:2] != (out, out):
            img = cv2.resize(img, (out, out), interpolation=cv2.INTER_AREA)
        return img

    def load_image(self, i: int) -> np.ndarray:
        r = self.meta.iloc[i]
        return self.read_patch(r["slide_path"], int(r["x"]), int(r["y"]), patch_size=int(r["patch_size"]),
                               slide_id=str(r["slide_id"]), mpp=float(r["mpp"]))


class PatchListDataset(SlidePatchDataset):
    """Patches given as a table with columns ``slide_path, x, y, patch_size`` (level-0 px).

    Optional columns (``slide_id``, ``mpp``, ``label``, ``class_name``,
    ``tissue_fraction``) are kept or filled (slide_id = file stem, label −1).
    """

    def __init__(
        self,
        meta: pd.DataFrame,
        *,
        out_px: int | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        mpp_overrides: Mapping[str, float] | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> None:
        missing = [c for c in ("slide_path", "x", "y", "patch_size") if c not in meta.columns]
        if missing:
            raise ValueError(f"PatchListDataset needs columns slide_path, x, y, patch_size; missing {missing} "
                             f"(has {list(meta.columns)})")
        m = meta.reset_index(drop=True).copy()
        m["slide_path"] = m["slide_path"].astype(str)
        if "slide_id" not in m:
            m["slide_id"] = [Path(p).stem for p in m["slide_path"]]
        if "mpp" not in m:
            m["mpp"] = np.nan
        if "label" not in m:
            m["label"] = -1
        if "class_name" not in m:
            m["class_name"] = [_class_name(int(l), class_names) for l in m["label"]]
        if "tissue_fraction" not in m:
            m["tissue_fraction"] = np.nan
        m["label"] = pd.to_numeric(m["label"], errors="coerce").fillna(-1)
        for c in ("x", "y", "patch_size"):
            if m[c].isna().any():
                bad = m.loc[m[c].isna(), "slide_id"].unique().tolist()
                raise ValueError(f"column {c} has missing values (slides {bad}); every row needs slide_path, x, y, patch_size")
        for c in ("x", "y", "patch_size", "label"):
            m[c] = m[c].astype(np.int64)
        if (m["patch_size"] <= 0).any():
            bad = m.loc[m["patch_size"] <= 0, "slide_id"].unique().tolist()
            raise ValueError(f"patch_size must be > 0 px; rows of slides {bad} have {m['patch_size'].min()}")
        m["path"] = m["slide_path"]
        self.meta = m[META_COLUMNS + ["path"] + [c for c in m.columns if c not in META_COLUMNS + ["path"]]]
        self._init_reader(out_px, transform, mpp_overrides)


def _read_tiling_manifest(man_path: Path, slide_ids: Sequence[str] | None) -> pd.DataFrame:
    """The rows of a tiling ``manifest.csv`` (restricted to ``slide_ids``), with errors that name the fix."""
    if not man_path.exists():
        raise FileNotFoundError(f"tiling manifest not found: {man_path}. Run `exaonepath-lab tile SLIDES --out "
                                f"{man_path.parent}` first (or merge shard manifests).")
    man = pd.read_csv(man_path, dtype={"slide_id": str}, keep_default_na=False)
    need = {"slide_id", "path", "status"}
    if not need <= set(man.columns):
        raise ValueError(f"{man_path} lacks columns {sorted(need - set(man.columns))}; is it a tiling manifest?")
    if slide_ids is not None:
        unknown = sorted(set(slide_ids) - set(man["slide_id"]))
        if unknown:
            raise ValueError(f"slide_ids {unknown} are not in {man_path} (has {man['slide_id'].tolist()})")
        man = man[man["slide_id"].isin(list(slide_ids))]
    return man


def _read_patch_file(h5: Path, slide_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """``coords`` (N, 2) int64, ``labels`` (N,) int64 (-1 when absent), ``tissue_fraction`` (N,) float32, attrs."""
    import h5py

    try:
        with h5py.File(h5, "r") as f:
            coords = np.asarray(f["coords"][()], dtype=np.int64)
            n = len(coords)
            labels = np.asarray(f["labels"][()], np.int64) if "labels" in f else np.full(n, -1, np.int64)
            frac = np.asarray(f["tissue_fraction"][()], np.float32) if "tissue_fraction" in f else np.full(n, np.nan, np.float32)
            attrs = dict(f.attrs)
            if "patch_size" not in attrs:
                attrs.update(dict(f["coords"].attrs))
    except (OSError, KeyError) as e:
        raise ValueError(f"cannot read patch file {h5} of slide {slide_id}: {e}. Rerun the tiling.") from e
    if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != (n,) or frac.shape != (n,):
        raise ValueError(f"{h5}: coords {coords.shape}, labels {labels.shape}, tissue_fraction {frac.shape} "
                         "disagree; rerun the tiling")
    if "patch_size" not in attrs:
        raise ValueError(f"{h5} has no `patch_size` attribute; it is not a tiling output of this kit")
    return coords, labels, frac, attrs


class TiledPatchDataset(SlidePatchDataset):
    """The patches of a tiling run in ``tile_dir`` (``manifest.csv`` + ``patches/<id>.h5``).

    Slides with status ``ok`` or ``skipped_done`` are used; failed slides are listed in
    ``self.excluded`` (slide_id, status, error) and logged, never dropped silently.
    ``slide_ids`` restricts to those slides (an unknown id is an error).
    ``max_per_slide`` keeps a random subset of that many patches per slide (``seed``),
    in file order. ``mpp_overrides`` replaces the ``mpp`` recorded by the tiler.
    """

    def __init__(
        self,
        tile_dir: str | os.PathLike,
        *,
        slide_ids: Sequence[str] | None = None,
        out_px: int | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        mpp_overrides: Mapping[str, float] | None = None,
        max_per_slide: int | None = None,
        seed: int = 0,
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> None:
        self.tile_dir = Path(tile_dir)
        man_path = self.tile_dir / "manifest.csv"
        man = _read_tiling_manifest(man_path, slide_ids)
        usable = man["status"].isin(USABLE_STATUSES)
        self.excluded = man.loc[~usable, ["slide_id", "status", "error"]].reset_index(drop=True)
        if len(self.excluded):
            log.warning("TiledPatchDataset: %d slide(s) of %s not usable and left out: %s", len(self.excluded),
                        man_path, ", ".join(f"{r.slide_id} ({r.status}: {r.error})" for r in self.excluded.itertuples()))
        overrides = {str(k): float(v) for k, v in (mpp_overrides or {}).items()}
        rng = np.random.default_rng(seed)
        parts: list[pd.DataFrame] = []
        for r in man[usable].itertuples():
            h5 = Path(str(getattr(r, "h5_path", "") or "")) if getattr(r, "h5_path", "") else self.tile_dir / "patches" / f"{r.slide_id}.h5"
            if not h5.is_absolute():
                h5 = self.tile_dir / h5
            if not h5.exists():
                raise FileNotFoundError(f"patch file of slide {r.slide_id} not found: {h5} (listed as {r.status} in "
                                        f"{man_path}); rerun the tiling, which rebuilds missing files")
            coords, labels, frac, attrs = _read_patch_file(h5, r.slide_id)
            n = len(coords)
            keep = np.arange(n)
            if max_per_slide is not None and n > max_per_slide:
                keep = np.sort(rng.choice(n, int(max_per_slide), replace=False))
            mpp = overrides.get(r.slide_id, float(attrs.get("slide_mpp", np.nan)))
            # The manifest's path wins when the H5's recorded path no longer exists (cohort moved).
            slide_path = str(attrs.get("slide_path", r.path) or r.path)
            if not Path(slide_path).exists() and Path(str(r.path)).exists():
                slide_path = str(r.path)
            parts.append(pd.DataFrame({
                "slide_id": r.slide_id,
                "x": coords[keep, 0],
                "y": coords[keep, 1],
                "patch_size": int(attrs["patch_size"]),
                "mpp": mpp,
                "label": labels[keep],
                "class_name": [_class_name(int(l), class_names) for l in labels[keep]],
                "tissue_fraction": frac[keep],
                "slide_path": slide_path,
            }))
        meta = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in META_COLUMNS})
        if meta.empty:
            log.warning("TiledPatchDataset: no patches in %s (usable slides: %d)", self.tile_dir, int(usable.sum()))
        meta["path"] = meta["slide_path"]
        self.meta = meta[META_COLUMNS + ["path"]]
        self._init_reader(out_px, transform, overrides)
