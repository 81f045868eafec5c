"""Scanners: what a downloaded dataset folder holds, as an item table plus a list of problems.

One scanner per distribution layout (PROTOCOL.md §4). Loaders and the validator share them, so
``datasets check`` reports exactly what the loader would refuse. A scanner never raises on a
broken download; it lists each problem (naming the path and the fix) and returns the items it
could find. Item columns: ``relpath`` (unique, relative to the root), ``path``, ``label``,
``class_name``, ``partition`` (as distributed: ``train``/``val``/``test``, or ``trainval`` when the
paper re-splits it), ``patient``, ``slide_id``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..datasets import IMAGE_SUFFIXES
from .splits import tcga_patient

COLUMNS = ["relpath", "path", "label", "class_name", "partition", "patient", "slide_id"]


@dataclasses.dataclass
class Scan:
    """Items found under a dataset root, and what is wrong with the download."""

    items: pd.DataFrame
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _rows(root: Path, files: Sequence[Path], label: int, cls: str, partition: str, patient_from_name: bool) -> list[dict]:
    out = []
    for f in files:
        patient = tcga_patient(f.name) if patient_from_name else ""
        out.append({"relpath": f.relative_to(root).as_posix(), "path": str(f), "label": label, "class_name": cls,
                    "partition": partition, "patient": patient, "slide_id": patient})
    return out


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["label"] = df["label"].astype(np.int64)
    return df.sort_values("relpath", kind="stable").reset_index(drop=True)


def _missing_root(root: Path, what: str) -> Scan | None:
    if not root.is_dir():
        return Scan(_frame([]), [f"dataset folder not found: {root} (expected {what})"])
    return None


def _class_folders(root: Path, parent: Path, classes: Sequence[str], partition: str, scan: Scan,
                   patient_from_name: bool = False, fix: str = "") -> list[dict]:
    """Rows of ``parent/<class>/*`` for each class; missing/empty class folders are problems."""
    rows: list[dict] = []
    if not parent.is_dir():
        scan.problems.append(f"missing folder {parent}{fix}")
        return rows
    for label, cls in enumerate(classes):
        d = parent / cls
        if not d.is_dir():
            scan.problems.append(f"missing class folder {d} (class {cls!r}){fix}")
            continue
        files = list_images(d)
        if not files:
            scan.problems.append(f"class folder {d} holds no images")
        rows += _rows(root, files, label, cls, partition, patient_from_name)
    extra = sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name not in classes and not p.name.startswith("."))
    if extra:
        scan.warnings.append(f"{parent}: unexpected sub-folders {extra} ignored (classes are {list(classes)})")
    return rows


# ---- MHIST ---------------------------------------------------------------------------------
MHIST_CLASSES = ("HP", "SSA")


def scan_mhist(root: Path) -> Scan:
    """``images/*.png`` + ``annotations.csv`` (``Image Name``, ``Majority Vote Label``, ``Partition``)."""
    root = Path(root)
    if (s := _missing_root(root, "images/ and annotations.csv")) is not None:
        return s
    scan = Scan(_frame([]))
    ann, img_dir = root / "annotations.csv", root / "images"
    if not ann.is_file():
        scan.problems.append(f"missing {ann} (MHIST's label file; it comes with the images from the MHIST form)")
    if not img_dir.is_dir():
        scan.problems.append(f"missing folder {img_dir} (unzip images.zip there)")
    if scan.problems:
        return scan
    try:
        df = pd.read_csv(ann, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - any parse error is a broken file
        scan.problems.append(f"cannot read {ann}: {e}")
        return scan
    need = ["Image Name", "Majority Vote Label", "Partition"]
    if missing := [c for c in need if c not in df.columns]:
        scan.problems.append(f"{ann} lacks columns {missing} (has {list(df.columns)})")
        return scan
    bad_label = df[~df["Majority Vote Label"].isin(MHIST_CLASSES)]
    if len(bad_label):
        scan.problems.append(f"{ann}: {len(bad_label)} rows with a label not in {MHIST_CLASSES} "
                             f"(e.g. {bad_label['Majority Vote Label'].iloc[0]!r})")
    bad_part = df[~df["Partition"].str.lower().isin(["train", "test"])]
    if len(bad_part):
        scan.problems.append(f"{ann}: {len(bad_part)} rows with Partition not train/test")
    on_disk = {p.name for p in list_images(img_dir)}
    listed = set(df["Image Name"])
    if missing_files := sorted(listed - on_disk):
        scan.problems.append(f"{len(missing_files)} images listed in {ann.name} are missing from {img_dir} "
                             f"(e.g. {missing_files[:3]})")
    if unlisted := sorted(on_disk - listed):
        scan.warnings.append(f"{len(unlisted)} images in {img_dir} are not in {ann.name} and are ignored "
                             f"(e.g. {unlisted[:3]})")
    ok = df[df["Image Name"].isin(on_disk) & df["Majority Vote Label"].isin(MHIST_CLASSES)
            & df["Partition"].str.lower().isin(["train", "test"])]
    rows = [{"relpath": f"images/{r['Image Name']}", "path": str(img_dir / r["Image Name"]),
             "label": MHIST_CLASSES.index(r["Majority Vote Label"]), "class_name": r["Majority Vote Label"],
             "partition": "trainval" if r["Partition"].lower() == "train" else "test",
             "patient": "", "slide_id": ""} for _, r in ok.iterrows()]
    scan.items = _frame(rows)
    return scan


# ---- CRC-100K ------------------------------------------------------------------------------
CRC_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
CRC_TRAIN_DIR, CRC_TEST_DIR = "NCT-CRC-HE-100K-NONORM", "CRC-VAL-HE-7K"


def scan_crc100k(root: Path) -> Scan:
    """``NCT-CRC-HE-100K-NONORM/<CLASS>/*.tif`` (train+val) and ``CRC-VAL-HE-7K/<CLASS>/*.tif`` (test)."""
    root = Path(root)
    if (s := _missing_root(root, f"{CRC_TRAIN_DIR}/ and {CRC_TEST_DIR}/")) is not None:
        return s
    scan = Scan(_frame([]))
    fix = ""
    if not (root / CRC_TRAIN_DIR).is_dir() and (root / "NCT-CRC-HE-100K").is_dir():
        fix = (f"; found NCT-CRC-HE-100K (the Macenko-normalized release) but the paper uses the "
               f"non-normalized {CRC_TRAIN_DIR}.zip from doi:10.5281/zenodo.1214456")
    rows = _class_folders(root, root / CRC_TRAIN_DIR, CRC_CLASSES, "trainval", scan, fix=fix)
    rows += _class_folders(root, root / CRC_TEST_DIR, CRC_CLASSES, "test", scan)
    scan.items = _frame(rows)
    return scan


# ---- TIL detection -------------------------------------------------------------------------
TIL_CLASSES = ("til-negative", "til-positive")
TIL_SPLITS = ("train", "val", "test")


def scan_til(root: Path) -> Scan:
    """``<cancer>/{train,val,test}/{til-negative,til-positive}/*.png``; ``patient`` from a TCGA barcode
    in the file name when there is one."""
    root = Path(root)
    if (s := _missing_root(root, "<cancer>/{train,val,test}/{til-negative,til-positive}/")) is not None:
        return s
    scan = Scan(_frame([]))
    cancers = sorted(p for p in root.iterdir() if p.is_dir() and any((p / s).is_dir() for s in TIL_SPLITS))
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and p not in cancers and not p.name.startswith("."))
    if others:
        scan.warnings.append(f"{root}: folders without train/val/test inside ignored: {others}")
    if not cancers:
        scan.problems.append(f"no <cancer>/{{train,val,test}} folders under {root}")
    rows: list[dict] = []
    for c in cancers:
        for part in TIL_SPLITS:
            rows += _class_folders(root, c / part, TIL_CLASSES, part, scan, patient_from_name=True)
    scan.items = _frame(rows)
    return scan


# ---- MSI (CRC, STAD) -----------------------------------------------------------------------
MSI_CLASSES = ("MSS", "MSIMUT")


def scan_msi(root: Path, prefix: str) -> Scan:
    """``{prefix}_{TRAIN,TEST}_{MSIMUT,MSS}/*.png`` with ``prefix`` ``CRC_DX`` or ``STAD``; each tile name
    must carry a TCGA patient barcode (the split is patient-level)."""
    root = Path(root)
    if (s := _missing_root(root, f"{prefix}_{{TRAIN,TEST}}_{{MSIMUT,MSS}}/")) is not None:
        return s
    scan = Scan(_frame([]))
    rows: list[dict] = []
    for part, partition in (("TRAIN", "trainval"), ("TEST", "test")):
        for label, cls in enumerate(MSI_CLASSES):
            d = root / f"{prefix}_{part}_{cls}"
            if not d.is_dir():
                scan.problems.append(f"missing folder {d} (unzip {d.name}.zip from doi:10.5281/zenodo.2530835)")
                continue
            files = list_images(d)
            if not files:
                scan.problems.append(f"folder {d} holds no images")
            rows += _rows(root, files, label, cls, partition, patient_from_name=True)
    df = _frame(rows)
    no_patient = df[df["patient"] == ""]
    if len(no_patient):
        scan.problems.append(
            f"{len(no_patient)} tiles have no TCGA patient barcode (regex TCGA-XX-XXXX) in their name, "
            f"e.g. {no_patient['relpath'].iloc[0]}; the MSI split is patient-level, so every tile needs one. "
            "Restore the original file names."
        )
    if len(df):
        both = df.groupby("patient")["partition"].nunique()
        if (leak := both[both > 1]).size and leak.index[0] != "":
            scan.warnings.append(f"{len(leak)} patients appear in both TRAIN and TEST (e.g. {leak.index[0]})")
    scan.items = df
    return scan


def scan_msi_crc(root: Path) -> Scan:
    return scan_msi(root, "CRC_DX")


def scan_msi_stad(root: Path) -> Scan:
    return scan_msi(root, "STAD")
