"""Tiny downstream datasets in each real distribution layout, generated into a folder at test time.

Images are small smooth RGB tiles at the real sizes (PCam 96, TIL 100, others 224 px) whose colour
depends on the class, so a probe on raw pixels can learn something. Each ``make_*`` returns the
expected partition counts to pass to ``check_dataset(expected=...)``. ``break_*`` functions damage
a generated download the way real downloads break.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_COLORS = [(200, 120, 170), (120, 60, 140), (230, 190, 210), (90, 40, 120), (240, 230, 235),
                (170, 80, 150), (210, 150, 190), (140, 90, 160), (180, 60, 120)]


def tile(size: int, label: int, seed: int) -> np.ndarray:
    """uint8 (size, size, 3): class colour plus a smooth random pattern."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.array(CLASS_COLORS[label % len(CLASS_COLORS)], dtype=np.float64)
    wave = 20 * np.sin(2 * np.pi * (rng.uniform(1, 3) * xx + rng.uniform(1, 3) * yy))[..., None]
    img = base + wave  # smooth: small, fast PNGs
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _exp(per: dict[str, dict[str, int]]) -> dict[str, dict]:
    return {p: {"total": sum(c.values()), "per_class": c} for p, c in per.items()}


def make_mhist(root: Path, n_train: tuple[int, int] = (8, 4), n_test: tuple[int, int] = (3, 2)) -> dict:
    rows = ["Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition"]
    k = 0
    for part, counts in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(("HP", "SSA")):
            for _ in range(counts[label]):
                name = f"MHIST_{k:04d}.png"
                _save(root / "images" / name, tile(224, label, k))
                rows.append(f"{name},{cls},{5 * label},{part}")
                k += 1
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return _exp({"trainval": {"HP": n_train[0], "SSA": n_train[1]}, "test": {"HP": n_test[0], "SSA": n_test[1]}})


CRC = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")


def make_crc100k(root: Path, n_train: int = 5, n_test: int = 2) -> dict:
    k = 0
    for folder, n in (("NCT-CRC-HE-100K-NONORM", n_train), ("CRC-VAL-HE-7K", n_test)):
        for label, cls in enumerate(CRC):
            for i in range(n):
                _save(root / folder / cls / f"{cls}-{folder[:3]}{k:05d}.tif", tile(224, label, k))
                k += 1
    return _exp({"trainval": {c: n_train for c in CRC}, "test": {c: n_test for c in CRC}})


def make_til(root: Path, cancers: tuple[str, ...] = ("brca", "luad"), n: int = 2) -> dict:
    k = 0
    for c in cancers:
        for part in ("train", "val", "test"):
            for label, cls in enumerate(("til-negative", "til-positive")):
                for i in range(n):
                    name = f"TCGA-{10 + k % 7:02d}-{1000 + k:04d}-01Z-00-DX1_{k}.png"
                    _save(root / c / part / cls / name, tile(100, label, k))
                    k += 1
    per = {cls: n * len(cancers) for cls in ("til-negative", "til-positive")}
    return _exp({"train": per, "val": per, "test": per, "all": {c: 3 * v for c, v in per.items()}})


def make_msi(root: Path, prefix: str = "CRC_DX", patients: tuple[int, int] = (10, 4), tiles_per: int = 3) -> dict:
    """``patients`` per class in TRAIN and TEST; tile names carry the TCGA barcode like the release."""
    k, counts = 0, {}
    for part, n_pat in (("TRAIN", patients[0]), ("TEST", patients[1])):
        for label, cls in enumerate(("MSS", "MSIMUT")):
            for p in range(n_pat):
                barcode = f"TCGA-{'AB' if part == 'TRAIN' else 'CD'}-{label}{p:03d}"
                for t in range(tiles_per):
                    _save(root / f"{prefix}_{part}_{cls}" / f"blk-{k:012d}-{barcode}-01Z-00-DX1.png", tile(224, label, k))
                    k += 1
            counts.setdefault("trainval" if part == "TRAIN" else "test", {})[cls] = n_pat * tiles_per
    return _exp(counts)


def make_pcam(root: Path, n: dict[str, int] | None = None, with_meta: bool = True) -> dict:
    import h5py
    import pandas as pd

    n = n or {"train": 16, "valid": 8, "test": 8}
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, m in n.items():
        y = np.arange(m) % 2
        x = np.stack([tile(96, int(l), 1000 * len(part) + i) for i, l in enumerate(y)])
        with h5py.File(root / f"camelyonpatch_level_2_split_{part}_x.h5", "w") as h:
            h.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
        with h5py.File(root / f"camelyonpatch_level_2_split_{part}_y.h5", "w") as h:
            h.create_dataset("y", data=y.astype(np.uint8).reshape(-1, 1, 1, 1))
        if with_meta:
            pd.DataFrame({"coord_y": 0, "coord_x": 0, "tumor_patch": y.astype(bool), "center_tumor_patch": y.astype(bool),
                          "wsi": [f"camelyon16_{part}_{i // 4:03d}" for i in range(m)]}).to_csv(
                root / f"camelyonpatch_level_2_split_{part}_meta.csv", index=False)
        split = {"valid": "val"}.get(part, part)
        out[split] = {"total": m, "per_class": {"no_tumor": int((y == 0).sum()), "tumor": int((y == 1).sum())}}
    return out


# ---- broken downloads ----------------------------------------------------------------------
def break_remove_class_folder(root: Path, rel: str) -> None:
    """Delete a class folder (an interrupted unzip)."""
    import shutil

    shutil.rmtree(root / rel)


def break_truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its bytes (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def break_garbage(path: Path) -> None:
    """Replace a file's content with bytes no decoder accepts."""
    path.write_bytes(b"this is not an image" * 10)
