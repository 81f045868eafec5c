"""``datasets check``: tell a user precisely what is missing or wrong in a downloaded dataset.

Checks, per dataset: the layout (folders/files, via the same scanners the loaders use), counts
per partition and class against ``data_manifests/<name>.json`` (the paper's numbers), every image
(readable header, expected size; with ``decode=True`` the full pixel data, which catches truncated
files), HDF5 keys/shapes for PCam, and optionally checksums of the archives the manifest lists.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .datasets import DATASETS, dataset_spec
from .manifests import load_manifest


@dataclasses.dataclass
class CheckReport:
    """Result of checking one dataset folder. ``ok`` is False when any problem was found."""

    dataset: str
    root: str
    problems: list[str]
    warnings: list[str]
    counts: pd.DataFrame  # partition, class_name, found, expected
    n_items: int = 0
    n_unreadable: int = 0
    n_wrong_size: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_text(self) -> str:
        lines = [f"[{'OK' if self.ok else 'PROBLEMS'}] {self.dataset} at {self.root}: {self.n_items} items, "
                 f"{self.n_unreadable} unreadable, {self.n_wrong_size} of unexpected size"]
        if len(self.counts):
            lines.append(self.counts.to_string(index=False))
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _count_table(items: pd.DataFrame, manifest: dict[str, Any], expected: dict[str, Any] | None) -> pd.DataFrame:
    parts = expected if expected is not None else manifest["partitions"]
    rows = []
    for part, exp in parts.items():
        sel = items if part == "all" else items[items["partition"] == part]
        rows.append({"partition": part, "class_name": "(total)", "found": len(sel), "expected": exp.get("total")})
        for cls, n in (exp.get("per_class") or {}).items():
            rows.append({"partition": part, "class_name": cls, "found": int((sel["class_name"] == cls).sum()),
                         "expected": n})
    return pd.DataFrame(rows, columns=["partition", "class_name", "found", "expected"])


def _check_images(items: pd.DataFrame, size: int, decode: bool, progress: bool) -> tuple[list[str], int, int]:
    """Open every image file (header, or full decode); return (problems, n_unreadable, n_wrong_size)."""
    from PIL import Image
    from tqdm.auto import tqdm

    bad: list[str] = []
    wrong: list[str] = []
    for p in tqdm(items["path"].tolist(), desc="checking images", disable=not progress, unit="img"):
        try:
            with Image.open(p) as im:
                if decode:
                    im.load()
                if im.size != (size, size):
                    wrong.append(f"{p} ({im.size[0]}x{im.size[1]})")
        except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
            bad.append(f"{p} ({type(e).__name__})")
    problems = []
    if bad:
        problems.append(f"{len(bad)} unreadable images (corrupt or truncated; re-download them), e.g. {bad[:3]}")
    if wrong:
        problems.append(f"{len(wrong)} images are not {size}x{size} px, e.g. {wrong[:3]}")
    return problems, len(bad), len(wrong)


def _check_pcam_pixels(items: pd.DataFrame, progress: bool) -> tuple[list[str], int]:
    """Read every image block of the PCam x files (catches truncated data past the header)."""
    import h5py
    from tqdm.auto import tqdm

    problems, n_bad = [], 0
    for path, sel in items.groupby("path"):
        n = len(sel)
        try:
            with h5py.File(path, "r") as h:
                for s in tqdm(range(0, n, 4096), desc=f"reading {Path(path).name}", disable=not progress):
                    h["x"][s : s + 4096]
        except OSError as e:
            problems.append(f"{path}: image data unreadable ({e}); download it again")
            n_bad += n
    return problems, n_bad


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - md5 is what the sources publish
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_dataset(
    name: str,
    root: str | Path,
    *,
    expected: dict[str, Any] | None = None,
    image_size: int | None = None,
    decode: bool = False,
    checksums: bool = False,
    progress: bool = False,
) -> CheckReport:
    """Check the folder ``root`` holding dataset ``name``.

    ``expected`` overrides the manifest's ``partitions`` (``{partition: {"total": n, "per_class":
    {...}}}``; tests and subsets use it); ``image_size`` overrides the expected side in px.
    """
    spec = dataset_spec(name)
    manifest = load_manifest(name)
    root = Path(root)
    scan = spec.scan(root)
    items = scan.items
    problems, warnings = list(scan.problems), list(scan.warnings)
    counts = _count_table(items, manifest, expected)
    for r in counts.itertuples():
        if r.expected is not None and r.found != r.expected:
            what = "images" if r.class_name == "(total)" else f"images of class {r.class_name}"
            problems.append(f"partition {r.partition}: found {r.found} {what}, expected {r.expected}")
    n_bad = n_wrong = 0
    if len(items) and name != "pcam":
        p, n_bad, n_wrong = _check_images(items, image_size or spec.image_size, decode, progress)
        problems += p
    elif len(items) and decode:
        p, n_bad = _check_pcam_pixels(items, progress)
        problems += p
    if checksums:
        for fname, md5 in manifest.get("checksums", {}).get("files", {}).items():
            f = root / fname
            if f.is_file():
                got = _md5(f)
                if got != md5:
                    problems.append(f"{f}: md5 {got} differs from the recorded {md5} ({manifest['checksums']['note']})")
            else:
                warnings.append(f"checksum not verified: {fname} not in {root}")
    return CheckReport(name, str(root), problems, warnings, counts, int(len(items)), n_bad, n_wrong)


def check_all(root: str | Path, **kw: Any) -> tuple[list[CheckReport], list[str]]:
    """Check every dataset whose default sub-folder (``data_manifests`` name, e.g. ``mhist``) exists
    under ``root``; returns the reports and the names of the datasets not present."""
    root = Path(root)
    reports, absent = [], []
    for name, spec in DATASETS.items():
        d = root / spec.default_subdir
        # MSI CRC and STAD share a folder; each counts as present only if one of its folders is there.
        prefix = {"msi_crc": "CRC_DX_", "msi_stad": "STAD_"}.get(name)
        if d.is_dir() and (prefix is None or any(d.glob(prefix + "*"))):
            reports.append(check_dataset(name, d, **kw))
        else:
            absent.append(f"{name} (expected at {d})")
    return reports, absent
