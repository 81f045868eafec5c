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

import pandas as pd

from .datasets import DATASETS, dataset_spec, looks_like, resolve_dataset_root
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
    layout: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_text(self) -> str:
        lines = [f"[{'OK' if self.ok else 'PROBLEMS'}] {self.dataset} at {self.root}: {self.n_items} items, "
                 f"{self.n_unreadable} unreadable, {self.n_wrong_size} of unexpected size"
                 + (f" (layout: {self.layout})" if self.layout else "")]
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


def md5_file(path: Path) -> str:
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
    """Check dataset ``name`` under ``root`` (its own folder, or a root of datasets:
    :func:`~exaonepath_lab.probing.datasets.resolve_dataset_root`).

    ``expected`` overrides the manifest's ``partitions`` (``{partition: {"total": n, "per_class":
    {...}}}``; tests and subsets use it); ``image_size`` overrides the expected side in px.
    """
    spec = dataset_spec(name)
    manifest = load_manifest(name)
    root = resolve_dataset_root(name, root)
    scan = spec.scan(root)
    items = scan.items
    problems, warnings = list(scan.problems), list(scan.warnings)
    counts = _count_table(items, manifest, expected)
    for r in counts.itertuples():
        if r.expected is not None and r.found != r.expected:
            what = "images" if r.class_name == "(total)" else f"images of class {r.class_name}"
            problems.append(f"partition {r.partition}: found {r.found} {what}, expected {r.expected}")
    n_bad = n_wrong = 0
    if len(items) and "index_in_file" not in items.columns:  # image files (PCam: H5 rows, unless exported)
        p, n_bad, n_wrong = _check_images(items, image_size or spec.image_size, decode, progress)
        problems += p
    elif len(items) and decode:
        p, n_bad = _check_pcam_pixels(items, progress)
        problems += p
    if checksums:
        p, w = verify_checksums(name, root)
        problems += p
        warnings += w
        if "md5" in items.columns:  # TIL: the metadata CSV publishes every tile's md5
            problems += _verify_item_md5s(items, progress)
    return CheckReport(name, str(root), problems, warnings, counts, int(len(items)), n_bad, n_wrong, scan.layout)


def _verify_item_md5s(items: pd.DataFrame, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    listed = items[items["md5"].astype(str).str.fullmatch(r"[0-9a-f]{32}")]
    bad = [p for p, m in tqdm(zip(listed["path"], listed["md5"]), total=len(listed), desc="md5 of tiles",
                              disable=not progress, unit="img") if md5_file(Path(p)) != m]
    if bad:
        return [f"{len(bad)} tiles differ from the md5 their metadata CSV publishes (e.g. {bad[:3]}); extract the "
                "archive again"]
    return []


def verify_checksums(name: str, folder: str | Path) -> tuple[list[str], list[str]]:
    """md5 of every file the manifest records a checksum for, found in ``folder`` or ``folder/downloads``
    (where ``datasets fetch`` keeps the archives): (problems, warnings)."""
    manifest = load_manifest(name)
    folder = Path(folder)
    problems, warnings = [], []
    note = manifest.get("checksums", {}).get("note", "")
    files = {k: v for k, v in manifest.get("checksums", {}).get("files", {}).items() if v}
    if not files:
        warnings.append(f"no published md5 for {name}: nothing to verify ({note})")
    found = 0
    for fname, md5 in files.items():
        f = next((c for c in (folder / fname, folder / "downloads" / fname) if c.is_file()), None)
        if f is None:
            continue
        found += 1
        got = md5_file(f)
        if got != md5:
            problems.append(f"{f}: md5 {got} differs from the published {md5} ({note}); download it again")
    if files and not found:
        warnings.append(f"checksums not verified: none of {sorted(files)} is in {folder} or {folder / 'downloads'} "
                        "(archives deleted after extraction?)")
    return problems, warnings


def present_datasets(root: str | Path) -> dict[str, Path]:
    """``{dataset: folder}`` for every dataset found at ``root``: the root itself when it is one dataset's
    folder, else its per-dataset folders (``root/<name>`` or a peer tool's folder name)."""
    root = Path(root)
    own = {n: root for n in DATASETS if looks_like(n, root)}
    out = dict(own)
    for n in DATASETS:
        if n in out:
            continue
        d = resolve_dataset_root(n, root)
        if d != root and d.is_dir() and (d.name == DATASETS[n].default_subdir or looks_like(n, d)):
            out[n] = d
    return out


def check_all(root: str | Path, **kw: Any) -> tuple[list[CheckReport], list[str]]:
    """Check every dataset present at ``root`` (a root holding one folder per dataset, or one dataset's
    own folder); returns the reports and the names of the datasets not present."""
    root = Path(root)
    found = present_datasets(root)
    reports = [check_dataset(n, d, **kw) for n, d in found.items()]
    absent = [f"{n} (expected at {root / s.default_subdir})" for n, s in DATASETS.items() if n not in found]
    return reports, absent
