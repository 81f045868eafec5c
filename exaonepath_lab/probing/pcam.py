"""PatchCamelyon: the six HDF5 files of the Zenodo release, read lazily.

Layout (doi:10.5281/zenodo.2546921, after ``gunzip``): ``camelyonpatch_level_2_split_{train,valid,test}_
{x,y}.h5`` with dataset ``x`` (N, 96, 96, 3) uint8 and ``y`` (N, 1, 1, 1) (1 = tumour in the central
32×32 px; any integer or boolean dtype, or floats holding 0/1, and shape (N,), (N, 1) or (N, 1, 1, 1)
are read: re-packaged copies differ); optional ``camelyonpatch_level_2_split_{split}_meta.csv`` with a
``wsi`` column. Still-gzipped ``.h5.gz`` files are named with the exact ``gunzip`` command.
Splits are the release's own (``valid`` -> ``val``); nothing is re-split.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..datasets import ItemDataset
from .scan import COLUMNS, Scan, _frame, list_images

PCAM_CLASSES = ("no_tumor", "tumor")
PCAM_PARTS = {"train": "train", "valid": "val", "test": "test"}
PCAM_SHAPE = (96, 96, 3)


def pcam_file(root: Path, part: str, kind: str) -> Path:
    return Path(root) / f"camelyonpatch_level_2_split_{part}_{kind}.h5"


def _missing_hint(f: Path, root: Path) -> str:
    """How to get a missing PCam file: gunzip the .gz that is there, or download it."""
    gz = f.with_name(f.name + ".gz")
    if gz.is_file() or (root / "downloads" / gz.name).is_file():
        return (f"; {gz.name} is there (still gzipped): run `gunzip -k {gz}`, or `exaonepath-lab datasets "
                f"fetch pcam --root {root.parent}` which checks its md5 first")
    return (f" (download {gz.name} from doi:10.5281/zenodo.2546921 and `gunzip -k` it, or run "
            f"`exaonepath-lab datasets fetch pcam --root {root.parent}`)")


def _check_pcam_file(f: Path, kind: str, problems: list[str]) -> tuple[int, np.ndarray | None] | None:
    """``(n, labels)`` of one PCam H5 (labels only for ``kind == "y"``), or None with the problem appended."""
    import h5py

    y = None
    try:
        with h5py.File(f, "r") as h:
            if kind not in h:
                problems.append(f"{f} has no dataset {kind!r} (keys: {list(h.keys())})")
                return None
            ds = h[kind]
            if kind == "x":
                if tuple(ds.shape[1:]) != PCAM_SHAPE or ds.dtype != np.uint8:
                    problems.append(f"{f}: dataset 'x' is {ds.shape} {ds.dtype}, expected (N, 96, 96, 3) uint8")
                    return None
            else:
                if ds.ndim == 0 or int(np.prod(ds.shape[1:], dtype=np.int64)) != 1:
                    problems.append(f"{f}: dataset 'y' is {ds.shape} {ds.dtype}, expected one label per "
                                    "image, (N, 1, 1, 1) or (N,)")
                    return None
                raw = np.asarray(ds[()]).reshape(-1)
                if raw.dtype.kind not in "biuf":
                    problems.append(f"{f}: dataset 'y' has dtype {raw.dtype}, expected integer labels 0/1")
                    return None
                if raw.dtype.kind == "f" and not np.isin(raw, (0.0, 1.0)).all():
                    problems.append(f"{f}: dataset 'y' holds non-integer values; expected labels 0/1")
                    return None
                y = raw.astype(np.int64)
            return int(ds.shape[0]), y
    except OSError as e:
        with open(f, "rb") as fh:
            gz_magic = fh.read(2) == b"\x1f\x8b"
        problems.append(
            f"{f} is gzip data named .h5: run `mv {f} {f}.gz && gunzip -k {f}.gz`" if gz_magic else
            f"cannot read {f} ({e}); the file is truncated or corrupt: download it again")
        return None


def scan_pcam(root: Path) -> Scan:
    """Check the six files (presence, gzip, readability, keys, shapes, dtypes) and list the items."""
    root = Path(root)
    if not root.is_dir():
        return Scan(_frame([]), [f"dataset folder not found: {root} (expected camelyonpatch_level_2_split_*.h5)"])
    champ = next((d for d in (root / "images", root) if (d / "train" / CHAMPKIT_CLASSES[0]).is_dir()), None)
    if champ is not None and not any(root.glob("camelyonpatch_level_2_split_*")):
        return _scan_champkit_pngs(root, champ)
    if (root / "train_labels.csv").is_file() and not any(root.glob("camelyonpatch_level_2_split_*")):
        return Scan(_frame([]), [
            f"{root} holds the Kaggle 'Histopathologic Cancer Detection' layout (train_labels.csv + train/*.tif): a "
            "re-cut of PCam without its duplicates and without labelled valid/test splits, so not the paper's PCam "
            f"splits. Get the original release: `exaonepath-lab datasets fetch pcam --root {root.parent}` "
            "(doi:10.5281/zenodo.2546921)"], layout="Kaggle histopathologic-cancer-detection (not the PCam release)")
    scan = Scan(_frame([]), layout="camelyonpatch_level_2_split_*.h5 (gunzipped)")
    frames = []
    for part, split in PCAM_PARTS.items():
        n: dict[str, int] = {}
        for kind in ("x", "y"):
            f = pcam_file(root, part, kind)
            if not f.is_file():
                scan.problems.append(f"missing {f}{_missing_hint(f, root)}")
                continue
            got = _check_pcam_file(f, kind, scan.problems)
            if got is None:
                continue
            n[kind], labels = got
            if labels is not None:
                y = labels
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


CHAMPKIT_CLASSES = ("tumor-negative", "tumor-positive")


def _scan_champkit_pngs(root: Path, images: Path) -> Scan:
    """ChampKit's export of the H5 files: ``images/{train,val,test}/{tumor-negative,tumor-positive}/<j>.png``
    with ``j`` the row in the H5 file; items keyed like the H5 items (``..._x.h5#j``)."""
    scan = Scan(_frame([]), layout="images/{train,val,test}/{tumor-negative,tumor-positive}/*.png (ChampKit export)")
    rows = []
    for part, split in PCAM_PARTS.items():
        for label, cls in enumerate(CHAMPKIT_CLASSES):
            d = images / split / cls
            if not d.is_dir():
                scan.problems.append(f"missing folder {d} (ChampKit's PNG export of PCam)")
                continue
            for f in list_images(d):
                key = f"{pcam_file(root, part, 'x').name}#{int(f.stem)}" if f.stem.isdigit() else f"{split}/{cls}/{f.name}"
                rows.append({"relpath": key, "path": str(f), "label": label, "class_name": PCAM_CLASSES[label],
                             "partition": split, "patient": "", "slide_id": ""})
    scan.items = _frame(rows)
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
