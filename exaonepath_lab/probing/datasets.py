"""The six downstream datasets of Table 1, by name, with the paper's splits.

>>> ds = load_dataset("mhist", "/data/downstream")       # doctest: +SKIP  (the root, or /data/downstream/mhist)
>>> ds.meta.split.value_counts()                        # train 1740, val 435, test 977

``root`` is either one root holding a folder per dataset (``pcam/ mhist/ crc100k/ til/ msi_crc/
msi_stad/``, the tree of ``data_manifests/README.md``) or the dataset's own folder:
:func:`resolve_dataset_root` decides, for the CLI, the notebooks and the validator alike.

Every dataset follows the kit's item protocol (``ds[i] -> {"image": uint8 (H, W, 3), "index": i}``;
``ds.meta`` with ``path``, ``label``, ``class_name``, ``split``, ``patient``, ``slide_id``,
``relpath``). Splits the paper makes itself (80:20 of a train partition) are generated once by the
rule in :mod:`exaonepath_lab.probing.splits` and saved as CSV under ``<root>/splits/`` (or
``split_dir``), so every encoder is probed on the same samples.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..datasets import FileItemDataset, ItemDataset
from .pcam import PCAM_CLASSES, PCamDataset, scan_pcam
from .scan import (CRC_CLASSES, CRC_TEST_DIR, CRC_TRAIN_DIR, MHIST_CLASSES, MSI_CLASSES, TIL_CLASSES, TIL_SPLITS,
                   Scan, scan_crc100k, scan_mhist, scan_msi_crc, scan_msi_stad, scan_til, til_images_dir)
from .splits import group_val_mask, load_or_create_split, split_file_path, stratified_val_mask


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A downstream dataset: its layout scanner, classes and split rule.

    ``split_rule``: ``given`` (the release's splits), ``stratified`` (80:20 of the ``trainval``
    partition, stratified by class) or ``patient`` (80:20 of patients, stratified by patient label).
    """

    name: str
    title: str
    table_column: str
    classes: tuple[str, ...]
    image_size: int  # px, side of the square images as distributed
    scan: Callable[[Path], Scan]
    split_rule: str
    default_subdir: str  # its folder under a root of datasets (``fetch`` writes there)
    val_fraction: float = 0.2
    aliases: tuple[str, ...] = ()  # other folder names found under roots (peer tools' names)


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("pcam", "PatchCamelyon", "PCAM", PCAM_CLASSES, 96, scan_pcam, "given", "pcam",
                    aliases=("PCam", "PCAM", "patch_camelyon", "patchcamelyon")),
        DatasetSpec("mhist", "MHIST", "MHIST", MHIST_CLASSES, 224, scan_mhist, "stratified", "mhist", aliases=("MHIST",)),
        DatasetSpec("crc100k", "CRC-100K (NONORM) + CRC-VAL-HE-7K", "CRC-100K", CRC_CLASSES, 224, scan_crc100k,
                    "stratified", "crc100k", aliases=("crc", "CRC-100K", "crc_he", "crc100k_nonorm")),
        DatasetSpec("til", "TIL detection (TCGA)", "TIL Det.", TIL_CLASSES, 100, scan_til, "given", "til",
                    aliases=("tcga_tils", "TIL", "tils")),
        DatasetSpec("msi_crc", "MSI vs MSS, CRC (TCGA, FFPE DX)", "MSI CRC", MSI_CLASSES, 224, scan_msi_crc,
                    "patient", "msi_crc", aliases=("msi", "MSI", "crc_msi", "MSI_CRC")),
        DatasetSpec("msi_stad", "MSI vs MSS, STAD (TCGA)", "MSI STAD", MSI_CLASSES, 224, scan_msi_stad,
                    "patient", "msi_stad", aliases=("msi", "MSI", "stad_msi", "MSI_STAD")),
    ]
}


def real_name(d: Path) -> str:
    return Path(os.path.realpath(d)).name


def _any(root: Path, *patterns: str) -> bool:
    return any(next(root.glob(p), None) is not None for p in patterns)


def looks_like(name: str, folder: str | Path) -> bool:
    """Whether ``folder`` is (a download of) dataset ``name`` itself, in any supported layout, judged from
    its top-level names only (cheap; the scanner then checks it)."""
    d = Path(folder)
    if not d.is_dir():
        return False
    if name == "pcam":
        return _any(d, "camelyonpatch_level_2_split_*", "downloads/camelyonpatch_level_2_split_*",
                    "images/train/tumor-negative", "train/tumor-negative")
    if name == "mhist":
        return (d / "annotations.csv").is_file() or _any(d, "images.zip", "downloads/images.zip")
    if name == "crc100k":
        return _any(d, f"{CRC_TRAIN_DIR}*", f"{CRC_TEST_DIR}*", "NCT-CRC-HE-100K*", f"downloads/{CRC_TEST_DIR}*")
    if name == "til":
        images, tree = til_images_dir(d)
        if images is not None:
            return images == d or images.parent == d or images.parent.parent == d
        return (tree is not None and any((d / s / c).is_dir() for s in TIL_SPLITS for c in TIL_CLASSES)) \
            or _any(d, "TCGA-TILs.tar.gz", "downloads/TCGA-TILs.tar.gz")
    if name in ("msi_crc", "msi_stad"):
        prefix = "CRC_DX_" if name == "msi_crc" else "STAD_"
        if _any(d, prefix + "*", "downloads/" + prefix + "*"):
            return True
        champ = any((d / b / c).is_dir() for b in ("trainval", "images/trainval") for c in MSI_CLASSES)
        other = "STAD_" if name == "msi_crc" else "CRC_DX_"
        if not champ or _any(d, other + "*"):
            return False
        # ChampKit's layout carries no CRC/STAD prefix: the folder's name tells them apart when it can
        low = real_name(d).lower()
        mine, theirs = ("crc", "stad") if name == "msi_crc" else ("stad", "crc")
        return mine in low or theirs not in low
    return False


def resolve_dataset_root(name: str, root: str | Path) -> Path:
    """The folder holding dataset ``name`` for a ``root`` that is either the dataset's own folder or a
    root holding one folder per dataset (``root/<name>`` or a peer tool's folder name, e.g. ``tcga_tils``,
    ``patch_camelyon``, ``msi``). The one function the CLI, the notebooks and ``datasets check`` use.

    When neither matches, returns ``root/<name>`` if ``root`` holds other datasets' folders (so the
    error names the folder to create), else ``root`` (so the scanner lists what is missing there).
    """
    spec = dataset_spec(name)
    root = Path(root)
    if looks_like(name, root):
        return root
    for sub in (spec.default_subdir, *spec.aliases):
        if (root / sub).is_dir() and (looks_like(name, root / sub) or sub == spec.default_subdir):
            return root / sub
    for sub in (spec.default_subdir, *spec.aliases):
        if (root / sub).is_dir():
            return root / sub
    if root.is_dir() and any((root / s.default_subdir).is_dir() or any((root / a).is_dir() for a in s.aliases)
                             for s in DATASETS.values()):
        return root / spec.default_subdir
    return root


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (error lists the known names)."""
    if name not in DATASETS:
        raise ValueError(f"unknown downstream dataset {name!r}; known: {sorted(DATASETS)} (and 'synthetic', 'folder')")
    return DATASETS[name]


def assign_splits(spec: DatasetSpec, items: pd.DataFrame, root: Path, *, seed: int = 0,
                  split_dir: str | Path | None = None) -> pd.Series:
    """``split`` per item: the given partition, or the saved/generated 80:20 split of ``trainval``."""
    split = items["partition"].astype(str).copy()
    tv = (items["partition"] == "trainval").to_numpy()
    if spec.split_rule == "given" or not tv.any():
        return split
    sub = items[tv]
    rule = {"dataset": spec.name, "rule": spec.split_rule, "val_fraction": spec.val_fraction, "seed": seed,
            "order": "relpath (stable sort); numpy.random.default_rng(seed).permutation per stratum; largest remainder"}
    if spec.split_rule == "stratified":
        make = lambda: stratified_val_mask(sub["relpath"].to_numpy(), sub["label"].to_numpy(),  # noqa: E731
                                           val_fraction=spec.val_fraction, seed=seed)
    else:
        make = lambda: group_val_mask(sub["relpath"].to_numpy(), sub["patient"].to_numpy(),  # noqa: E731
                                      sub["label"].to_numpy(), val_fraction=spec.val_fraction, seed=seed)
    where = Path(split_dir) if split_dir is not None else Path(root) / "splits"
    mask = load_or_create_split(sub["relpath"].to_numpy(), make,
                                path=split_file_path(where, spec.name, seed=seed, val_fraction=spec.val_fraction), rule=rule)
    split[tv] = np.where(mask, "val", "train")
    return split


def load_dataset(
    name: str,
    root: str | Path,
    *,
    split: str | None = None,
    transform: Callable[[np.ndarray], Any] | None = None,
    split_seed: int = 0,
    split_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> ItemDataset:
    """Dataset ``name`` from ``root`` in its distributed layout, all splits or one.

    ``root``: a root holding one folder per dataset, or the dataset's own folder
    (:func:`resolve_dataset_root`). ``name="folder"``: the user's own ``<class>/<slide>/`` patches or
    CSV (:mod:`exaonepath_lab.probing.folder`), split by slide/patient with ``val_fraction`` and
    ``test_fraction`` (the paper datasets use their fixed rules and ignore both).
    ``split``: ``"train"``, ``"val"``, ``"test"`` or None (all; ``meta.split`` tells them apart, so
    features are extracted once and the probe picks the splits). A broken download raises a
    ``ValueError`` listing every problem (run ``exaonepath-lab datasets check`` for counts).
    """
    if name == "synthetic":
        from .synthetic_task import load_synthetic_task

        ds = load_synthetic_task(root, transform=transform, seed=split_seed, split_dir=split_dir)
    elif name == "folder":
        from .folder import load_folder_dataset

        ds = load_folder_dataset(root, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed,
                                 split_dir=split_dir, transform=transform)
    else:
        spec = dataset_spec(name)
        folder = resolve_dataset_root(name, root)
        scan = spec.scan(folder)
        if scan.problems:
            where = str(folder) if folder == Path(root) else f"{folder} (from root {root})"
            raise ValueError(f"{name} at {where}: " + "; ".join(scan.problems)
                             + f". Run `exaonepath-lab datasets check {root} --dataset {name}` for a full report.")
        items = scan.items.copy()
        items["split"] = assign_splits(spec, items, folder, seed=split_seed, split_dir=split_dir)
        items["dataset"] = name
        cls = PCamDataset if "index_in_file" in items.columns else FileItemDataset  # PCam's H5 (or its PNG export)
        ds = cls(items, transform=transform)
        ds.classes = list(spec.classes)  # type: ignore[attr-defined]
        ds.root = folder  # type: ignore[attr-defined]
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r}: use 'train', 'val', 'test' or None")
        ds.meta = ds.meta[ds.meta["split"] == split].reset_index(drop=True)
    return ds
