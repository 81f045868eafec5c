"""The six downstream datasets of Table 1, by name, with the paper's splits.

>>> ds = load_dataset("mhist", "/data/mhist")            # doctest: +SKIP
>>> ds.meta.split.value_counts()                        # train 1740, val 435, test 977

Every dataset follows the kit's item protocol (``ds[i] -> {"image": uint8 (H, W, 3), "index": i}``;
``ds.meta`` with ``path``, ``label``, ``class_name``, ``split``, ``patient``, ``slide_id``,
``relpath``). Splits the paper makes itself (80:20 of a train partition) are generated once by the
rule in :mod:`exaonepath_lab.probing.splits` and saved as CSV under ``<root>/splits/`` (or
``split_dir``), so every encoder is probed on the same samples.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..datasets import ItemDataset, read_rgb
from .pcam import PCAM_CLASSES, PCamDataset, scan_pcam
from .scan import (CRC_CLASSES, MHIST_CLASSES, MSI_CLASSES, TIL_CLASSES, Scan, scan_crc100k, scan_mhist,
                   scan_msi_crc, scan_msi_stad, scan_til)
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
    default_subdir: str
    val_fraction: float = 0.2


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("pcam", "PatchCamelyon", "PCAM", PCAM_CLASSES, 96, scan_pcam, "given", "pcam"),
        DatasetSpec("mhist", "MHIST", "MHIST", MHIST_CLASSES, 224, scan_mhist, "stratified", "mhist"),
        DatasetSpec("crc100k", "CRC-100K (NONORM) + CRC-VAL-HE-7K", "CRC-100K", CRC_CLASSES, 224, scan_crc100k,
                    "stratified", "crc100k"),
        DatasetSpec("til", "TIL detection (TCGA)", "TIL Det.", TIL_CLASSES, 100, scan_til, "given", "til"),
        DatasetSpec("msi_crc", "MSI vs MSS, CRC (TCGA, FFPE DX)", "MSI CRC", MSI_CLASSES, 224, scan_msi_crc,
                    "patient", "msi"),
        DatasetSpec("msi_stad", "MSI vs MSS, STAD (TCGA)", "MSI STAD", MSI_CLASSES, 224, scan_msi_stad,
                    "patient", "msi"),
    ]
}


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (error lists the known names)."""
    if name not in DATASETS:
        raise ValueError(f"unknown downstream dataset {name!r}; known: {sorted(DATASETS)} (and 'synthetic')")
    return DATASETS[name]


class FileItemDataset(ItemDataset):
    """Items that are image files (``meta.path``)."""

    def __init__(self, meta: pd.DataFrame, transform: Callable[[np.ndarray], Any] | None = None) -> None:
        self.meta = meta.reset_index(drop=True)
        self.transform = transform

    def load_image(self, i: int) -> np.ndarray:
        return read_rgb(self.meta.at[i, "path"])


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
) -> ItemDataset:
    """Dataset ``name`` from the folder ``root`` in its distributed layout, all splits or one.

    ``split``: ``"train"``, ``"val"``, ``"test"`` or None (all; ``meta.split`` tells them apart, so
    features are extracted once and the probe picks the splits). A broken download raises a
    ``ValueError`` listing every problem (run ``exaonepath-lab datasets check`` for counts).
    """
    if name == "synthetic":
        from .synthetic_task import load_synthetic_task

        ds = load_synthetic_task(root, transform=transform, seed=split_seed, split_dir=split_dir)
    else:
        spec = dataset_spec(name)
        scan = spec.scan(Path(root))
        if scan.problems:
            raise ValueError(f"{name} at {root}: " + "; ".join(scan.problems)
                             + f". Run `exaonepath-lab datasets check {root} --dataset {name}` for a full report.")
        items = scan.items.copy()
        items["split"] = assign_splits(spec, items, Path(root), seed=split_seed, split_dir=split_dir)
        items["dataset"] = name
        cls = PCamDataset if name == "pcam" else FileItemDataset
        ds = cls(items, transform=transform)
        ds.classes = list(spec.classes)  # type: ignore[attr-defined]
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r}: use 'train', 'val', 'test' or None")
        ds.meta = ds.meta[ds.meta["split"] == split].reset_index(drop=True)
    return ds
