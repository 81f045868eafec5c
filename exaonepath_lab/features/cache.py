"""The feature cache: one HDF5 file per (encoder, preprocessing, normalization, patch list).

Layout of ``FEATURES.h5``::

    features        (N, D) float32
    norm_status     (N,)   UTF-8 strings (stain-normalization status per item; "none" if off)
    meta/<column>   (N,)   one dataset per column of the item meta table (attr ``columns`` = order)
    attrs: key      JSON of what produced it (encoder identity incl. checkpoint sha256,
                    preprocessing, normalizer identity incl. target and policy, how the
                    dataset reads (out_px, MPP overrides, transform), patch-list sha256)
           key_sha256, format = "exaonepath-lab/features-v1", n_items, embed_dim

While extraction runs, finished chunks are written atomically as ``FEATURES.h5.parts/
chunk_XXXXX.npz`` beside a ``key.json``; a rerun after a kill reuses the chunks whose key
matches and the HDF5 file appears (atomically) only when every chunk is done. HDF5 is never
written in place, so a kill cannot leave a corrupt cache behind.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_path, sha256_json, write_json_atomic

FORMAT = "exaonepath-lab/features-v1"
#: Meta columns that identify a patch (others, e.g. labels, do not change the pixels). ``mpp`` is the
#: µm/px the patch was cut and is read at; the dataset's read size and transform are keyed separately
#: (``extract.dataset_identity``).
IDENTITY_COLUMNS = ("path", "slide_id", "x", "y", "patch_size", "mpp", "h5_path", "slide_path", "index_in_file")


@dataclasses.dataclass(eq=False)
class FeatureSet:
    """Features of N items and everything that produced them.

    Attributes:
        features: (N, D) float32.
        meta: item table, one row per feature row (``slide_id``, ``x``, ``y``, ``label`` ...).
        key: JSON-able dict (encoder identity, preprocessing, normalizer, patch-list hash).
        norm_status: (N,) str, per-item stain-normalization status (``"none"`` when off).
        cache_status: how this object came to be ("computed", "reused", "resumed ...",
            "recomputed (...)", "loaded"); not stored in the file.
    """

    features: np.ndarray
    meta: pd.DataFrame
    key: dict[str, Any]
    norm_status: np.ndarray
    cache_status: str = "loaded"

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.norm_status = np.asarray(self.norm_status, dtype=str)
        n = len(self.features)
        if len(self.meta) != n or len(self.norm_status) != n:
            raise ValueError(f"FeatureSet: {n} feature rows but {len(self.meta)} meta rows and "
                             f"{len(self.norm_status)} statuses")

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, idx: np.ndarray) -> "FeatureSet":
        """Rows ``idx`` (int indices) with meta re-indexed 0..n-1."""
        idx = np.asarray(idx)
        return FeatureSet(self.features[idx], self.meta.iloc[idx].reset_index(drop=True), dict(self.key),
                          self.norm_status[idx])

    def status_counts(self) -> dict[str, int]:
        s, c = np.unique(self.norm_status, return_counts=True)
        return {str(a): int(b) for a, b in zip(s, c)}

    def save(self, path: str | Path) -> Path:
        return save_features(path, self)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        return load_features(path)


def patch_list_sha256(meta: pd.DataFrame) -> str:
    """Hash of the identifying columns of ``meta`` (row order matters: rows are features)."""
    cols = [c for c in IDENTITY_COLUMNS if c in meta.columns]
    if not cols:
        cols = list(meta.columns)
    return sha256_json({"columns": cols, "n": len(meta), "rows": meta[cols].astype(str).values.tolist()})


def key_sha256(key: dict[str, Any]) -> str:
    return sha256_json(key)


def describe_key_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Human-readable list of the top-level key fields that differ (why a cache is stale)."""
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(diff) if diff else "nothing (identical)"


# --- HDF5 ------------------------------------------------------------------------------------

def save_features(path: str | Path, fs: FeatureSet) -> Path:
    """Write ``fs`` to HDF5 atomically (see module docstring for the layout)."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=fs.features, chunks=True)
            f.create_dataset("norm_status", data=np.array(fs.norm_status, dtype=object), dtype=h5py.string_dtype())
            g = f.create_group("meta")
            g.attrs["columns"] = json.dumps([str(c) for c in fs.meta.columns])
            for c in fs.meta.columns:
                col = fs.meta[c]
                if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                    g.create_dataset(str(c), data=col.to_numpy())
                else:
                    vals = np.array(["" if pd.isna(v) else str(v) for v in col], dtype=object)
                    g.create_dataset(str(c), data=vals, dtype=h5py.string_dtype())
            f.attrs["format"] = FORMAT
            f.attrs["key"] = json.dumps(fs.key, sort_keys=True, default=str)
            f.attrs["key_sha256"] = key_sha256(fs.key)
            f.attrs["n_items"] = len(fs)
            f.attrs["embed_dim"] = int(fs.features.shape[1]) if fs.features.ndim == 2 else 0
    return path


def read_key(path: str | Path) -> dict[str, Any] | None:
    """The key stored in a cache file, or None if the file is missing or not a feature cache."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
            return json.loads(f.attrs["key"])
    except OSError:
        return None


def load_features(path: str | Path) -> FeatureSet:
    """Read a cache written by :func:`save_features`; errors name the file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}. Create it with `exaonepath-lab extract ... --out {path}`")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{path} is not an exaonepath-lab feature file (format={f.attrs.get('format')!r})")
            feats = f["features"][()]
            status = np.array([s.decode() if isinstance(s, bytes) else str(s) for s in f["norm_status"][()]])
            g = f["meta"]
            cols = json.loads(g.attrs["columns"])
            data: dict[str, Any] = {}
            for c in cols:
                v = g[c][()]
                if v.dtype.kind in "OS":
                    v = [s.decode() if isinstance(s, bytes) else str(s) for s in v]
                data[c] = v
            key = json.loads(f.attrs["key"])
    except OSError as e:
        raise ValueError(f"cannot read feature file {path}: {e}. Delete it and re-run extraction.") from e
    return FeatureSet(feats, pd.DataFrame(data, columns=cols), key, status)


# --- resumable parts -------------------------------------------------------------------------

class PartStore:
    """Finished chunks of a running extraction, each written atomically (``.npz``).

    ``PATH.parts/key.json`` holds the key; chunks of a different key are discarded (with the
    reason returned by :meth:`open`).
    """

    def __init__(self, cache_path: str | Path, key: dict[str, Any], chunk_size: int) -> None:
        self.dir = Path(str(cache_path) + ".parts")
        self.key = {"key": key, "chunk_size": int(chunk_size)}

    def open(self) -> str | None:
        """Prepare the folder; return a message when old parts were discarded, else None."""
        msg = None
        kf = self.dir / "key.json"
        if self.dir.exists():
            try:
                old = json.loads(kf.read_text())
            except (OSError, ValueError):
                old = None
            if old != json.loads(json.dumps(self.key, default=str)):
                why = describe_key_difference((old or {}).get("key", {}), self.key["key"]) if old else "unreadable key.json"
                msg = f"discarding partial extraction in {self.dir} (differs in: {why})"
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not kf.exists():
            write_json_atomic(kf, self.key)
        return msg

    def chunk_path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:05d}.npz"

    def done(self, i: int) -> bool:
        return self.chunk_path(i).is_file()

    def write(self, i: int, features: np.ndarray, status: list[str]) -> None:
        with atomic_path(self.chunk_path(i)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, features=features.astype(np.float32), status=np.array(status, dtype=str))

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.chunk_path(i)) as z:
            return z["features"], z["status"]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
