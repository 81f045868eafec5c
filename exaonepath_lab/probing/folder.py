"""The user's own labelled patches: ``--dataset folder``, how a researcher evaluates an encoder on an
in-house task with the same probe, k-NN and Table 1 machinery as the paper's datasets.

Two inputs:

* a folder ``ROOT/<class>/<slide or patient>/*.png`` (any image suffix; deeper sub-folders inside a
  slide folder are read too). A slide folder of the same name under two classes is one slide;
* a CSV with columns ``path`` (relative to the CSV, or absolute), ``label`` (class name or integer)
  and one of ``slide``, ``slide_id``, ``patient``, ``patient_id``, ``group``.

The split is by slide/patient, never by patch: :func:`~exaonepath_lab.probing.splits.group_split_labels`
(``round(G * test_fraction)`` groups to test, ``round(G * val_fraction)`` to validation, stratified by
the group's majority label), saved to ``<root>/splits/folder_<name>_split_seed<seed>_val<v>_test<t>.csv``
(or ``split_dir``) and validated on reload, like the paper datasets. Classes are the sorted class
names (label = index); the result's dataset name is ``folder:<name>`` (``name``: the folder or CSV
stem), which ``exaonepath-lab table`` shows as its own column.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..datasets import IMAGE_SUFFIXES, FileItemDataset
from .scan import KIT_DIRS, COLUMNS, Scan, _frame
from .splits import group_split_labels, load_or_create_assignment, split_file_path

GROUP_COLUMNS = ("slide", "slide_id", "patient", "patient_id", "group")


def folder_task_name(root: str | Path) -> str:
    """``folder:<name>`` for a folder or CSV (its stem)."""
    p = Path(root)
    return f"folder:{p.stem if p.suffix.lower() == '.csv' else p.resolve().name}"


def _csv_path(value: str, base: Path) -> Path:
    """A CSV's ``path`` cell as a file path: relative to ``base`` unless absolute; a CSV written on Windows
    (``imgs\\tumor\\p1.png``) is read with its backslashes as separators when the path does not exist as is."""
    p = Path(value) if Path(value).is_absolute() else base / value
    if "\\" in value and not p.is_file():
        posix = value.replace("\\", "/")
        p = Path(posix) if Path(posix).is_absolute() else base / posix
    return p


def _scan_csv(csv: Path) -> Scan:
    scan = Scan(_frame([]), layout="CSV path,label,slide/patient")
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        return Scan(_frame([]), [f"cannot read {csv}: {e}"])
    df.columns = [c.strip().lower() for c in df.columns]
    group = next((c for c in GROUP_COLUMNS if c in df.columns), None)
    miss = [c for c in ("path", "label") if c not in df.columns] + ([] if group else ["slide or patient"])
    if miss:
        scan.problems.append(f"{csv} lacks columns {miss} (has {list(df.columns)}); it needs path, label and one of "
                             f"{list(GROUP_COLUMNS)} (the split is by slide/patient, never by patch)")
        return scan
    if (df[group].str.strip() == "").any():
        n = int((df[group].str.strip() == "").sum())
        scan.problems.append(f"{csv}: {n} rows have an empty {group!r}; every patch needs its slide/patient")
    labels = df["label"].str.strip()
    if (labels == "").any():
        scan.problems.append(f"{csv}: {int((labels == '').sum())} rows have an empty 'label' (e.g. row "
                             f"{int((labels == '').to_numpy().argmax()) + 2} of the file); label every patch or "
                             "leave the unlabelled ones out of the CSV")
        return scan
    numeric = labels.str.fullmatch(r"-?\d+").all()
    classes = [str(c) for c in sorted(set(labels.astype(int)))] if numeric else sorted(set(labels))
    if numeric and classes != [str(i) for i in range(len(classes))]:
        scan.problems.append(f"{csv}: integer labels must be 0..K-1, found {classes}")
    paths = [_csv_path(p, csv.parent) for p in df["path"].str.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        drive = any(re.match(r"[A-Za-z]:[\\/]", p) for p in df["path"].str.strip())
        scan.problems.append(f"{len(missing)} files listed in {csv} do not exist (e.g. {missing[:3]}); paths are "
                             f"relative to {csv.parent}" + ("; Windows drive paths (C:\\...) cannot be read here: "
                                                           "make them relative to the CSV" if drive else ""))
    rows = []
    for p, lab, g in zip(paths, labels, df[group].str.strip()):
        if not p.is_file():
            continue
        k = int(lab) if numeric else classes.index(lab)
        rel = p.relative_to(csv.parent).as_posix() if p.is_relative_to(csv.parent) else str(p)
        rows.append({"relpath": rel, "path": str(p), "label": k, "class_name": classes[k], "partition": "all",
                     "patient": g, "slide_id": g})
    scan.items = _frame(rows)
    if scan.items["relpath"].duplicated().any():
        scan.problems.append(f"{csv}: {int(scan.items['relpath'].duplicated().sum())} paths listed twice")
    scan.items.attrs["classes"] = classes
    return scan


def scan_folder(root: str | Path) -> Scan:
    """Items of ``ROOT/<class>/<slide>/**/*.<image>`` or of a CSV (see the module doc)."""
    root = Path(root)
    if root.suffix.lower() == ".csv":
        return _scan_csv(root) if root.is_file() else Scan(_frame([]), [f"CSV not found: {root}"])
    if not root.is_dir():
        return Scan(_frame([]), [f"folder not found: {root} (expected <class>/<slide or patient>/*.png, or a CSV "
                                 "with path,label,slide)"])
    scan = Scan(_frame([]), layout="<class>/<slide or patient>/*")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in KIT_DIRS
                     and not p.name.startswith("."))
    if len(classes) < 2:
        scan.problems.append(f"{root}: found {len(classes)} class folder(s) {classes}; a task needs >= 2 "
                             "(ROOT/<class>/<slide or patient>/*.png)")
        return scan
    rows, loose = [], []
    for k, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                loose.append(f)
        for slide in sorted(p for p in (root / cls).iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(slide.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    rows.append({"relpath": f.relative_to(root).as_posix(), "path": str(f), "label": k,
                                 "class_name": cls, "partition": "all", "patient": slide.name, "slide_id": slide.name})
    if loose:
        scan.problems.append(f"{len(loose)} images lie directly in a class folder (e.g. {loose[0]}): put each patch in "
                             f"a folder named after its slide or patient, ROOT/<class>/<slide>/, so the split can keep "
                             "a slide's patches together (a patch-level split leaks), or list them in a CSV with "
                             "path,label,slide")
    empty = [c for c in classes if not any(r["class_name"] == c for r in rows)]
    if rows and empty:  # a typo'd or empty folder, or an output folder (probe --out) inside ROOT: not a class
        scan.problems.append(f"{', '.join(str(root / c) for c in empty)} hold(s) no images in <slide>/ sub-folders, "
                             f"so would be an empty class among {classes}: move or delete it (outputs belong "
                             "outside ROOT), or put that class's patches in it")
    scan.items = _frame(rows)
    scan.items.attrs["classes"] = classes
    if not rows:
        scan.problems.append(f"no images under {root}/<class>/<slide>/")
    return scan



def _check_every_class_in_train_and_test(items: pd.DataFrame, splits: np.ndarray, classes: list[str],
                                         root: Path) -> None:
    """Raise before a split is saved in which a class has no patch in train or in test (a class with one
    slide/patient, or too few for the test share): its probe would be untrained or its test metrics
    meaningless (AUROC nan), with nothing said."""
    for part in ("train", "test"):
        absent = [c for k, c in enumerate(classes) if not ((splits == part) & (items["label"] == k)).any()]
        if absent:
            groups = {c: sorted(items.loc[items["label"] == classes.index(c), "patient"].unique()) for c in absent}
            have = "; ".join(f"{c!r}: {len(g)} slide(s)/patient(s) {g[:5]}" for c, g in groups.items())
            raise ValueError(f"{root}: the slide/patient-level split leaves {part} without any patch of class(es) "
                             f"{absent} ({have}). Each class needs slides in both train and test: add slides or "
                             "patients of those classes (>= 3 each is safest), raise --test-fraction, or leave "
                             "the class out")

def load_folder_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    split_dir: str | Path | None = None,
    transform: Callable[[np.ndarray], Any] | None = None,
) -> Any:
    """The user's labelled patches with a saved slide/patient-level train/val/test split (item protocol)."""
    root = Path(root)
    scan = scan_folder(root)
    if scan.problems:
        raise ValueError(f"folder dataset at {root}: " + "; ".join(scan.problems))
    items = scan.items.copy()
    classes = list(scan.items.attrs["classes"])
    name = folder_task_name(root)
    base = root.parent if root.suffix.lower() == ".csv" else root
    where = Path(split_dir) if split_dir is not None else base / "splits"
    safe = name.replace(":", "_")
    rule = {"dataset": name, "rule": "group (slide/patient) train/val/test, stratified by the group's majority label",
            "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
            "order": "groups sorted; numpy.random.default_rng(seed) for test, seed+1 for val; largest remainder"}

    def make() -> np.ndarray:
        labels = group_split_labels(items["relpath"].to_numpy(), items["patient"].to_numpy(),
                                    items["label"].to_numpy(), val_fraction=val_fraction, test_fraction=test_fraction,
                                    seed=seed)
        _check_every_class_in_train_and_test(items, labels, classes, root)
        return labels

    items["split"] = load_or_create_assignment(
        items["relpath"].to_numpy(), make,
        path=split_file_path(where, safe, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction), rule=rule,
        allowed=("train", "val", "test"))
    per_group = items.groupby("patient")["split"].nunique()
    if (per_group > 1).any():  # a saved file edited by hand, or patches moved between slides
        raise ValueError(f"slide/patient {per_group[per_group > 1].index[0]!r} is in two splits of the saved split "
                         f"under {where}; delete that split file to regenerate it")
    items["dataset"] = name
    ds = FileItemDataset(items[COLUMNS + ["split", "dataset"]], transform=transform)
    ds.classes = classes  # type: ignore[attr-defined]
    ds.dataset_name = name  # type: ignore[attr-defined]
    return ds
