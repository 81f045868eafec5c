"""The Macenko target: the stain matrix and concentrations every image is mapped to.

EXAONEPath fits its target on a 4096×4096 TCGA crop that is not distributed
(PROTOCOL.md §2), so users fit their own (:meth:`StainTarget.fit`) and keep it as a
small JSON file beside their features; :func:`default_target` is the classic
HERef / maxCRef of Macenko's reference code, shipped as
``exaonepath_lab/data/macenko_default_target.json``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..io import sha256_json, write_json_atomic

FORMAT = "exaonepath-lab/macenko-target-v1"


@dataclasses.dataclass(frozen=True, eq=False)
class StainTarget:
    """A Macenko target.

    Attributes:
        stain_matrix: (3, 2) float64 OD stain vectors (columns hematoxylin, eosin).
        max_conc: (2,) float64 99th-percentile concentrations.
        Io, alpha, beta: the constants it was fitted with (recorded, not enforced on use).
        source: where it came from (file names), for provenance.
        n_pixels: number of pixels it was fitted on (0 for the default).
    """

    stain_matrix: np.ndarray
    max_conc: np.ndarray
    Io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    source: str = ""
    n_pixels: int = 0

    def __post_init__(self) -> None:
        sm = np.asarray(self.stain_matrix, dtype=np.float64)
        mc = np.asarray(self.max_conc, dtype=np.float64).reshape(-1)
        if sm.shape != (3, 2) or mc.shape != (2,):
            raise ValueError(f"StainTarget needs stain_matrix (3, 2) and max_conc (2,), got {sm.shape} and {mc.shape}")
        if not (np.isfinite(sm).all() and np.isfinite(mc).all() and (mc > 0).all()):
            raise ValueError(f"StainTarget values must be finite with positive max_conc; got {sm.tolist()}, {mc.tolist()}")
        object.__setattr__(self, "stain_matrix", sm)
        object.__setattr__(self, "max_conc", mc)

    # ---- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        images: Any,
        *,
        Io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        source: str = "",
        device: str | torch.device | None = None,
    ) -> "StainTarget":
        """Fit a target on one image or several (their pixels pooled, as one large image).

        ``images``: uint8 (H, W, 3) or (N, H, W, 3) array/tensor, or a list of (H, W, 3)
        arrays of any sizes. Equivalent to ``torchstain``'s ``fit`` on one image.
        Raises :class:`StainNormalizationError` if the pooled pixels hold too little tissue.
        """
        from .estimate import OK_CODE, estimate_stains, optical_density
        from .layout import to_batch
        from .policy import STATUSES, StainNormalizationError

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        pixels = torch.cat([to_batch(im, device).pixels.reshape(-1, 3) for im in items]).unsqueeze(0)
        est = estimate_stains(
            optical_density(pixels, Io), alpha=alpha, beta=beta, min_tissue_pixels=100, min_tissue_fraction=0.0
        )
        code = int(est["code"][0])
        if code != OK_CODE:
            raise StainNormalizationError(
                f"cannot fit a stain target on {source or 'these images'}: {STATUSES[code]} "
                f"({int(est['n_tissue'][0])} of {pixels.shape[1]} pixels have OD ≥ beta={beta}). "
                "Fit on a tissue-rich H&E region (both stains present, little background)."
            )
        return cls(
            stain_matrix=est["stain_matrix"][0].double().cpu().numpy(),
            max_conc=est["max_conc"][0].double().cpu().numpy(),
            Io=float(Io),
            alpha=float(alpha),
            beta=float(beta),
            source=source,
            n_pixels=int(pixels.shape[1]),
        )

    @classmethod
    def fit_files(cls, paths: Sequence[str | os.PathLike], **kw: Any) -> "StainTarget":
        """Fit on image files (pixels pooled); ``source`` records their names."""
        from ..datasets import read_rgb

        imgs = [read_rgb(p) for p in paths]
        kw.setdefault("source", ", ".join(Path(p).name for p in paths))
        return cls.fit(imgs, **kw)

    # ---- tensors and files -------------------------------------------------------------------
    def tensors(self, device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(stain_matrix (3, 2), max_conc (2,)) as float32 tensors on ``device``."""
        return (
            torch.tensor(self.stain_matrix, dtype=torch.float32, device=device),
            torch.tensor(self.max_conc, dtype=torch.float32, device=device),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "stain_matrix": self.stain_matrix.tolist(),
            "max_conc": self.max_conc.tolist(),
            "Io": self.Io,
            "alpha": self.alpha,
            "beta": self.beta,
            "source": self.source,
            "n_pixels": self.n_pixels,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StainTarget":
        d = dict(d)
        fmt = d.pop("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"unknown stain target format {fmt!r}; expected {FORMAT!r}")
        return cls(**d)

    def fingerprint(self) -> str:
        """SHA-256 of the numbers that change the output (for feature-cache keys)."""
        d = self.to_dict()
        return sha256_json({k: d[k] for k in ("stain_matrix", "max_conc", "Io")})

    def save(self, path: str | os.PathLike) -> Path:
        """Write as small JSON, atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StainTarget":
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"stain target not found: {p}. Create one with `exaonepath-lab normalize --fit-target IMAGE --save-target {p}`")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{p} is not a stain target JSON written by StainTarget.save: {e}") from e

    def __repr__(self) -> str:
        sm = np.array2string(self.stain_matrix, precision=4, separator=", ").replace("\n", "")
        return f"StainTarget(stain_matrix={sm}, max_conc={np.round(self.max_conc, 4).tolist()}, source={self.source!r})"


def default_target() -> StainTarget:
    """HERef / maxCRef of the reference implementation (PROTOCOL.md §2), from package data."""
    text = resources.files("exaonepath_lab").joinpath("data/macenko_default_target.json").read_text()
    return StainTarget.from_dict(json.loads(text))
