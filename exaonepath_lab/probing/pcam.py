"""PatchCamelyon: the six HDF5 files of the Zenodo release, read lazily.

Layout (doi:10.5281/zenodo.2546921, after ``gunzip``): ``camelyonpatch_level_2_split_{train,valid,test}_
{x,y}.h5`` with dataset ``x`` (N, 96, 96, 3) uint8 and ``y`` (N, 1, 1, 1) uint8 (1 = tumour in the
central 32×32 px); optional ``camelyonpatch_level_2_split_{split}_meta.csv`` with a ``wsi`` column.
Splits are the release's own (``valid`` -> ``val``); nothing is re-split.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..datasets import ItemDataset
from .scan import COLUMNS, Scan, _frame

PCAM_CLASSES = ("no_tumor", "tumor")
PCAM_PARTS = {"train": "train", "valid": "val", "test": "test"}
PCAM_SHAPE = (96, 96, 3)


def pcam_file(root: Path, part: str, kind: str) -> Path:
    return Path(root) / f"camelyonpatch_level_2_split_{part}_{kind}.h5"


def scan_pcam(root: Path) -> Scan:
    """Check the six files (presence, gzip, readability, keys, shapes, dtypes) and list the items."""
    import h5py

    root = Path(root)
    if not root.is_dir():
        return Scan(_frame([]), [f"dataset folder not found: {root} (expected camelyonpatch_level_2_split_*.h5)"])
    scan = Scan(_frame([]))
    frames = []
    for part, split in PCAM_PARTS.items():
        n: dict[str, int] = {}
        for kind, shape in (("x", PCAM_SHAPE), ("y", (1, 1, 1))):
            f = pcam_file(root, part, kind)
            if not f.is_file():
                gz = f.with_name(f.name + ".gz")
                hint = f"; {gz.name} is there: run `gunzip {gz}`" if gz.is_file() else " (download it from doi:10.5281/zenodo.2546921)"
                scan.problems.append(f"missing {f}{hint}")
                continue
            try:
                with h5py.File(f, "r") as h:
                    if kind not in h:
                        scan.problems.append(f"{f} has no dataset {kind!r} (keys: {list(h.keys())})")
                        continue
                    ds = h[kind]
                    if tuple(ds.shape[1:]) != shape or ds.dtype != np.uint8:
                        scan.problems.append(f"{f}: dataset {kind!r} is {ds.shape} {ds.dtype}, expected (N, "
                                             f"{', '.join(map(str, shape))}) uint8")
                        continue
                    n[kind] = ds.shape[0]
                    if kind == "y":
                        y = ds[()].reshape(-1).astype(np.int64)
            except OSError as e:
                scan.problems.append(f"cannot read {f} ({e}); the file is truncated or corrupt: download it again")
                continue
        if "x" in n and "y" in n and n["x"] != n["y"]:
            scan.problems.append(f"{part}: x has {n['x']} images but y has {n['y']} labels")
            continue
        if "x" not in n or "y" not in n:
            continue
        if (bad := int(((y < 0) | (y > 1)).sum())):
            scan.problems.append(f"{pcam_file(root, part, 'y')}: {bad} labels outside {{0, 1}}")
        df = pd.DataFrame({
            "relpath": [f"{pcam_file(root, part, 'x').name}#{i}" for i in range(n["x"])],
            "path": str(pcam_file(root, part, "x")),
            "label": y, "class_name": np.array(PCAM_CLASSES)[np.clip(y, 0, 1)],
            "partition": split, "patient": "", "slide_id": "",
        })
        df["index_in_file"] = np.arange(n["x"])
        meta_csv = root / f"camelyonpatch_level_2_split_{part}_meta.csv"
        if meta_csv.is_file():
            m = pd.read_csv(meta_csv)
            if len(m) == len(df) and "wsi" in m.columns:
                df["slide_id"] = m["wsi"].astype(str).to_numpy()
            else:
                scan.warnings.append(f"{meta_csv}: {len(m)} rows / columns {list(m.columns)} do not match "
                                     f"{len(df)} images with a 'wsi' column; slide ids left empty")
        frames.append(df)
    if frames:
        scan.items = pd.concat(frames, ignore_index=True)[COLUMNS + ["index_in_file"]]
    return scan


class PCamDataset(ItemDataset):
    """Items of the PCam HDF5 files; ``meta`` carries ``path`` (the x file) and ``index_in_file``.

    Each process (DataLoader worker) opens its own read-only h5py handle on first use: h5py handles
    must not cross ``fork``.
    """

    def __init__(self, meta: pd.DataFrame, transform: Callable[[np.ndarray], Any] | None = None) -> None:
        self.meta = meta.reset_index(drop=True)
        self.transform = transform
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def load_image(self, i: int) -> np.ndarray:
        import h5py

        if os.getpid() != self._pid:
            self._handles, self._pid = {}, os.getpid()
        path = self.meta.at[i, "path"]
        h = self._handles.get(path)
        if h is None:
            h = self._handles[path] = h5py.File(path, "r")
        return np.asarray(h["x"][int(self.meta.at[i, "index_in_file"])], dtype=np.uint8)
