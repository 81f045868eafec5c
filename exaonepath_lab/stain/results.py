"""Per-image stain parameters and the result of a normalization call.

:class:`StainParams` is what "fit once, apply cheaply" stores: for each image its
own stain matrix (3×2, optical-density RGB columns for hematoxylin then eosin) and
the 99th-percentile concentration of each stain. Written beside the tiling
coordinates (HDF5) it lets a data loader normalize with one 3×3 matrix product and an
exponential per pixel (:meth:`MacenkoNormalizer.apply`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io import atomic_path
from .policy import OK, count_statuses


@dataclasses.dataclass(eq=False)
class StainParams:
    """Stain parameters of N images.

    Attributes:
        stain_matrix: (N, 3, 2) float32, OD-space unit stain vectors (columns H, E);
            zeros for images whose status is not ``ok``.
        max_conc: (N, 2) float32, 99th percentile of each stain's concentration; zeros if not ok.
        status: N status strings (see :mod:`exaonepath_lab.stain.policy`).
        n_tissue: (N,) int64, pixels with OD ≥ beta in every channel.
        Io, alpha, beta: the constants they were fitted with.
    """

    stain_matrix: np.ndarray
    max_conc: np.ndarray
    status: list[str]
    n_tissue: np.ndarray
    Io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15

    def __post_init__(self) -> None:
        self.stain_matrix = np.asarray(self.stain_matrix, dtype=np.float32).reshape(-1, 3, 2)
        n = len(self.stain_matrix)
        self.max_conc = np.asarray(self.max_conc, dtype=np.float32).reshape(n, 2)
        self.status = [str(s) for s in self.status]
        self.n_tissue = np.asarray(self.n_tissue, dtype=np.int64).reshape(n)
        if len(self.status) != n:
            raise ValueError(f"StainParams: {n} stain matrices but {len(self.status)} statuses")

    def __len__(self) -> int:
        return len(self.status)

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: status is ``ok``."""
        return np.array([s == OK for s in self.status], dtype=bool)

    def counts(self) -> dict[str, int]:
        return count_statuses(self.status)

    def __getitem__(self, idx: Any) -> "StainParams":
        """Subset by an int, slice, index array or boolean mask."""
        ix = np.arange(len(self))[idx]
        ix = np.atleast_1d(ix)
        return dataclasses.replace(
            self,
            stain_matrix=self.stain_matrix[ix],
            max_conc=self.max_conc[ix],
            status=[self.status[i] for i in ix],
            n_tissue=self.n_tissue[ix],
        )

    @classmethod
    def concat(cls, parts: Sequence["StainParams"]) -> "StainParams":
        """Concatenate along N; the constants must agree."""
        if not parts:
            raise ValueError("StainParams.concat needs at least one part")
        p0 = parts[0]
        for p in parts[1:]:
            if (p.Io, p.alpha, p.beta) != (p0.Io, p0.alpha, p0.beta):
                raise ValueError(
                    f"cannot concatenate StainParams fitted with different constants: "
                    f"{(p0.Io, p0.alpha, p0.beta)} vs {(p.Io, p.alpha, p.beta)}"
                )
        return cls(
            stain_matrix=np.concatenate([p.stain_matrix for p in parts]),
            max_conc=np.concatenate([p.max_conc for p in parts]),
            status=[s for p in parts for s in p.status],
            n_tissue=np.concatenate([p.n_tissue for p in parts]),
            Io=p0.Io,
            alpha=p0.alpha,
            beta=p0.beta,
        )

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **attrs: Any) -> Path:
        """Write to ``.h5``/``.hdf5`` (datasets + attrs) or ``.npz``, atomically.

        HDF5 layout (the tiling sidecar ``stain/<slide_id>.h5``): datasets
        ``stain_matrix`` (N,3,2) float32, ``max_conc`` (N,2) float32, ``status`` (N,)
        UTF-8 strings, ``n_tissue`` (N,) int64; attrs ``Io``, ``alpha``, ``beta`` and
        any extra ``attrs`` (e.g. ``slide_id``, ``patch_size``).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            import h5py

            with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("stain_matrix", data=self.stain_matrix)
                f.create_dataset("max_conc", data=self.max_conc)
                f.create_dataset("status", data=np.array(self.status, dtype=object), dtype=h5py.string_dtype())
                f.create_dataset("n_tissue", data=self.n_tissue)
                for k, v in {"Io": self.Io, "alpha": self.alpha, "beta": self.beta, **attrs}.items():
                    f.attrs[k] = v
        elif suffix == ".npz":
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(
                        fh,
                        stain_matrix=self.stain_matrix,
                        max_conc=self.max_conc,
                        status=np.array(self.status, dtype=str),
                        n_tissue=self.n_tissue,
                        constants=np.array([self.Io, self.alpha, self.beta], dtype=np.float64),
                    )
        else:
            raise ValueError(f"StainParams.save: unsupported suffix {path.suffix!r} for {path}; use .h5 or .npz")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StainParams":
        """Read a file written by :meth:`save`; errors name the file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"stain parameter file not found: {path}")
        suffix = path.suffix.lower()
        try:
            if suffix in (".h5", ".hdf5"):
                import h5py

                with h5py.File(path, "r") as f:
                    status = [s.decode() if isinstance(s, bytes) else str(s) for s in f["status"][()]]
                    return cls(
                        stain_matrix=f["stain_matrix"][()],
                        max_conc=f["max_conc"][()],
                        status=status,
                        n_tissue=f["n_tissue"][()] if "n_tissue" in f else np.zeros(len(status), np.int64),
                        Io=float(f.attrs.get("Io", 240.0)),
                        alpha=float(f.attrs.get("alpha", 1.0)),
                        beta=float(f.attrs.get("beta", 0.15)),
                    )
            if suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    Io, alpha, beta = (float(v) for v in z["constants"])
                    return cls(z["stain_matrix"], z["max_conc"], list(z["status"]), z["n_tissue"], Io, alpha, beta)
        except KeyError as e:
            raise ValueError(f"{path} is not a stain parameter file (missing {e}); write it with StainParams.save") from e
        raise ValueError(f"StainParams.load: unsupported suffix {path.suffix!r} for {path}; use .h5 or .npz")


@dataclasses.dataclass(eq=False)
class NormalizeResult:
    """What a normalization call returns.

    Attributes:
        images: same layout and container type as the input (numpy/torch, NHWC/NCHW/HWC), uint8.
            Images whose status is not ``ok`` are the input pixels unchanged.
        status: one status string per image.
        ok: (N,) bool.
        params: the per-image :class:`StainParams` (Macenko), or ``None`` (Reinhard).
    """

    images: Any
    status: list[str]
    params: StainParams | None = None

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == OK for s in self.status], dtype=bool)

    def counts(self) -> dict[str, int]:
        """``{"ok": n, <failure status>: n, ..., "total": N}``."""
        return count_statuses(self.status)
