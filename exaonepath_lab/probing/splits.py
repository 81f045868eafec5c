"""Deterministic train/val splits, saved to CSV so every encoder is probed on the same samples.

Rule (documented in each ``data_manifests/<dataset>.json``): items are sorted by relative path
(stable, independent of file-system order), each stratum (class, or patient label for
patient-level splits) is permuted with ``numpy.random.default_rng(seed)``, and the validation
share ``round(N * val_fraction)`` is spread over strata by largest remainder, so that the total
hits the paper's count exactly (MHIST: 2,175 train items -> 1,740 / 435).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_json_atomic

#: TCGA patient barcode inside a tile name, e.g. ``blk-AAAFIYHTSVPE-TCGA-G4-6309-01Z-00-DX1.png``
#: -> ``TCGA-G4-6309`` (project ``TCGA``, tissue-source site 2 chars, participant 4 chars).
TCGA_PATIENT_RE = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)


def tcga_patient(name: str) -> str:
    """The TCGA patient barcode in ``name`` (upper case), or ``""`` when there is none."""
    m = TCGA_PATIENT_RE.search(name)
    return m.group(0).upper() if m else ""


def _allocate(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``sizes`` (largest remainder; ties -> first)."""
    if sizes.sum() == 0:
        return np.zeros_like(sizes)
    exact = sizes * total / sizes.sum()
    base = np.floor(exact).astype(int)
    rest = total - base.sum()
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return np.minimum(base, sizes)


def stratified_val_mask(keys: np.ndarray, strata: np.ndarray, *, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask (N,) of validation items; ``keys`` (N,) unique str, ``strata`` (N,) labels.

    Independent of input order: items are sorted by key first.
    """
    keys = np.asarray(keys).astype(str)
    strata = np.asarray(strata)
    if len(set(keys)) != len(keys):
        raise ValueError("split keys must be unique (relative paths)")
    order = np.argsort(keys, kind="stable")
    rng = np.random.default_rng(seed)
    levels = sorted(set(strata.tolist()), key=str)
    sizes = np.array([(strata == s).sum() for s in levels])
    n_val = _allocate(sizes, int(round(len(keys) * val_fraction)))
    mask = np.zeros(len(keys), dtype=bool)
    for s, k in zip(levels, n_val):
        members = order[strata[order] == s]  # sorted by key
        mask[members[rng.permutation(len(members))[:k]]] = True
    return mask


def group_val_mask(keys: np.ndarray, groups: np.ndarray, group_labels: np.ndarray, *,
                   val_fraction: float, seed: int) -> np.ndarray:
    """Validation mask (N,) that never splits a group (patient): ``round(G * val_fraction)``
    groups go to validation, stratified by the group's label (majority label of its items)."""
    groups = np.asarray(groups).astype(str)
    df = pd.DataFrame({"g": groups, "y": np.asarray(group_labels)})
    per_group = df.groupby("g")["y"].agg(lambda s: s.value_counts().sort_index().idxmax())
    gval = stratified_val_mask(per_group.index.to_numpy(), per_group.to_numpy(), val_fraction=val_fraction, seed=seed)
    val_groups = set(per_group.index[gval])
    return np.array([g in val_groups for g in groups])


def group_split_labels(keys: np.ndarray, groups: np.ndarray, labels: np.ndarray, *, val_fraction: float,
                       test_fraction: float, seed: int) -> np.ndarray:
    """``"train"``/``"val"``/``"test"`` per item (N,) that never splits a group (slide or patient).

    Groups are labelled by the majority label of their items; ``round(G * test_fraction)`` groups go
    to test and ``round(G * val_fraction)`` to validation, each stratified by group label (the same
    rule as :func:`stratified_val_mask`, test drawn first with ``seed``, validation from the rest with
    ``seed + 1``). Every split gets at least one group; fewer than 3 groups is an error.
    """
    groups = np.asarray(groups).astype(str)
    df = pd.DataFrame({"g": groups, "y": np.asarray(labels)})
    per_group = df.groupby("g")["y"].agg(lambda s: s.value_counts().sort_index().idxmax())
    n_groups = len(per_group)
    if n_groups < 3:
        raise ValueError(f"a train/val/test split by slide or patient needs >= 3 groups, found {n_groups} "
                         f"({list(per_group.index)}); add slides/patients or pass a CSV with more groups")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in (0, 1), sum < 1")
    n_test = min(max(1, int(round(n_groups * test_fraction))), n_groups - 2)
    n_val = min(max(1, int(round(n_groups * val_fraction))), n_groups - n_test - 1)
    gkeys, glab = per_group.index.to_numpy(), per_group.to_numpy()
    test = stratified_val_mask(gkeys, glab, val_fraction=n_test / n_groups, seed=seed)
    rest = ~test
    val = np.zeros(n_groups, dtype=bool)
    val[rest] = stratified_val_mask(gkeys[rest], glab[rest], val_fraction=n_val / rest.sum(), seed=seed + 1)
    lut = {g: ("test" if t else "val" if v else "train") for g, t, v in zip(gkeys, test, val)}
    return np.array([lut[g] for g in groups])


def split_file_path(split_dir: Path, dataset: str, *, seed: int, val_fraction: float,
                    test_fraction: float | None = None) -> Path:
    tail = "" if test_fraction is None else f"_test{test_fraction:g}"
    return Path(split_dir) / f"{dataset}_split_seed{seed}_val{val_fraction:g}{tail}.csv"


def load_or_create_assignment(
    relpaths: np.ndarray,
    make_labels: "callable[[], np.ndarray]",
    *,
    path: Path,
    rule: dict,
    allowed: tuple[str, ...] = ("train", "val"),
) -> np.ndarray:
    """Split name per item of ``relpaths``: read from ``path`` if it exists (validated against the
    files present), else computed with ``make_labels()`` and saved (CSV ``relpath,split`` + ``.json``
    sidecar with the rule and the counts)."""
    relpaths = np.asarray(relpaths).astype(str)
    path = Path(path)
    if path.exists():
        saved = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(saved.columns[:2]) != ["relpath", "split"]:
            raise ValueError(f"{path} is not a split file (columns relpath, split expected); delete it to regenerate")
        have, want = set(saved["relpath"]), set(relpaths)
        missing, extra = sorted(have - want), sorted(want - have)
        if missing or extra:
            ex = (missing + extra)[:3]
            raise ValueError(
                f"split file {path} does not match the files on disk: {len(missing)} listed files are missing, "
                f"{len(extra)} files are not in it (e.g. {ex}). Restore the download, or delete {path} to "
                "regenerate the split (then re-probe every encoder so all see the same samples)."
            )
        bad = sorted(set(saved["split"]) - set(allowed))
        if bad:
            raise ValueError(f"split file {path}: unknown split values {bad}; expected {'/'.join(allowed)}")
        lut = dict(zip(saved["relpath"], saved["split"]))
        return np.array([lut[r] for r in relpaths])
    labels = np.asarray(make_labels()).astype(str)
    out = pd.DataFrame({"relpath": relpaths, "split": labels}).sort_values("relpath")
    try:
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False)
    except PermissionError as e:
        # ValueError: the CLI reports it as a one-line error with the fix, not a traceback.
        raise ValueError(f"cannot save the split to {path} ({e}); pass split_dir= (CLI --split-dir) to a "
                         "writable folder") from e
    counts = {f"n_{s}": int((labels == s).sum()) for s in allowed}
    write_json_atomic(path.with_suffix(".json"), {**rule, **counts})
    return labels


def load_or_create_split(
    relpaths: np.ndarray,
    make_mask: "callable[[], np.ndarray]",
    *,
    path: Path,
    rule: dict,
) -> np.ndarray:
    """Validation mask for ``relpaths``: read from ``path`` if it exists (validated against the files
    present), else computed with ``make_mask()`` and saved (CSV + ``.json`` sidecar with the rule)."""
    labels = load_or_create_assignment(relpaths, lambda: np.where(make_mask(), "val", "train"), path=path, rule=rule)
    return labels == "val"
