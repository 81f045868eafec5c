"""The Macenko target: the stain matrix and concentrations every image is mapped to.

EXAONEPath fits its target on a 4096×4096 TCGA crop that the authors' public code
repository ships (PROTOCOL.md §2)::

    git clone https://github.com/LG-AI-EXAONE/EXAONEPath
    EXAONEPath/macenko_target/target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png

Its licence (EXAONEPath, non-commercial) forbids bundling it with the kit, so the user
points the kit at it: every ``--stain-target`` option (train, extract, probe,
normalize) accepts that PNG (or any other image) and :func:`resolve_target` fits it
exactly as the authors' ``macenko_normalizer()`` does (the whole image, Io = 240,
alpha = 1, beta = 0.15, torchstain's algorithm) and caches the fitted target as
``stain_target.json`` next to the run. :func:`default_target` is the classic HERef /
maxCRef of Macenko's reference code (``exaonepath_lab/data/macenko_default_target.json``),
for users without that file; the authors' code never uses it.

The fit (:meth:`StainTarget.fit`) streams the pixels in chunks: a 4096² image is fitted
without any full-size float copy (peak ~20 MB of working memory beside the uint8 image,
measured in ``tests/test_stain_target_authors.py``), with the same stain vectors and
99th-percentile concentrations as torchstain's ``fit``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..io import sha256_json, write_json_atomic

FORMAT = "exaonepath-lab/macenko-target-v1"
#: The authors' target image in the public EXAONEPath repository (LG-AI-EXAONE/EXAONEPath).
AUTHORS_TARGET = "macenko_target/target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png"
AUTHORS_REPO = "https://github.com/LG-AI-EXAONE/EXAONEPath"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Pixels per chunk of the streaming fit (3 MB of float32 OD per chunk).
FIT_CHUNK_PIXELS = 1 << 18


@dataclasses.dataclass(frozen=True, eq=False)
class StainTarget:
    """A Macenko target.

    Attributes:
        stain_matrix: (3, 2) float64 OD stain vectors (columns hematoxylin, eosin).
        max_conc: (2,) float64 99th-percentile concentrations.
        Io, alpha, beta: the constants it was fitted with (recorded, not enforced on use).
        source: where it came from (file names), for provenance.
        n_pixels: number of pixels it was fitted on (0 for the default).
        source_sha256: SHA-256 of the image file it was fitted on ("" when not fitted on one file).
    """

    stain_matrix: np.ndarray
    max_conc: np.ndarray
    Io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    source: str = ""
    n_pixels: int = 0
    source_sha256: str = ""

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
        source_sha256: str = "",
        chunk_pixels: int = FIT_CHUNK_PIXELS,
    ) -> "StainTarget":
        """Fit a target on one image or several (their pixels pooled, as one large image).

        ``images``: uint8 (H, W, 3) or (N, H, W, 3) array/tensor, or a list of (H, W, 3)
        arrays of any sizes. The same computation as ``torchstain``'s (and the authors')
        ``fit`` on one image: tissue pixels (OD ≥ beta in every channel), eigenvectors of
        their OD covariance, the alpha / 100 − alpha nearest-rank percentiles of their
        angles, hematoxylin first, and the 99th-percentile concentrations over *all*
        pixels. Streamed in chunks of ``chunk_pixels``: three passes over the uint8
        pixels, keeping only the 3×3 moments and the extreme 1 % of the angles and
        concentrations, so memory does not grow with a float copy of the image. The
        covariance is accumulated in float64 (torchstain: float32), which moves the
        stain vectors by less than 0.01°.
        Raises :class:`StainNormalizationError` if the pooled pixels hold too little tissue.
        """
        from .policy import StainNormalizationError

        items = _pixel_arrays(images)
        fit = _streaming_fit(items, Io=Io, alpha=alpha, beta=beta, chunk=int(chunk_pixels))
        if isinstance(fit, str):
            raise StainNormalizationError(
                f"cannot fit a stain target on {source or 'these images'}: {fit}. "
                "Fit on a tissue-rich H&E region (both stains present, little background)."
            )
        he, max_conc, n_pixels = fit
        return cls(stain_matrix=he, max_conc=max_conc, Io=float(Io), alpha=float(alpha), beta=float(beta),
                   source=source, n_pixels=n_pixels, source_sha256=source_sha256)

    @classmethod
    def fit_files(cls, paths: Sequence[str | os.PathLike], **kw: Any) -> "StainTarget":
        """Fit on image files (pixels pooled); ``source`` records their names, ``source_sha256``
        the file's SHA-256 when there is one file.

        A file is read as the authors' ``macenko_normalizer()`` reads its target
        (``PIL.Image.open`` → RGB): an RGBA image must be fully opaque (its alpha is
        dropped); a translucent one is refused rather than silently composited.
        """
        imgs = [read_target_image(p) for p in paths]
        kw.setdefault("source", ", ".join(Path(p).name for p in paths))
        if len(paths) == 1:
            kw.setdefault("source_sha256", file_sha256(paths[0]))
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
            "source_sha256": self.source_sha256,
        }

    def provenance(self) -> dict[str, str]:
        """Which target: ``name`` (its source) and ``sha256`` (of the image it was fitted on, else of its numbers)."""
        return {"name": self.source or "unnamed target", "sha256": self.source_sha256 or self.fingerprint()}

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
        """Read a target JSON; an image file (e.g. the authors' PNG) is fitted instead (not cached:
        :func:`resolve_target` caches)."""
        p = Path(path)
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return resolve_target(p)
        if not p.exists():
            raise FileNotFoundError(f"stain target not found: {p}. Create one with `exaonepath-lab normalize --fit-target IMAGE --save-target {p}`")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p} is not a stain target JSON written by StainTarget.save (nor an image to fit one "
                             f"on: {', '.join(IMAGE_SUFFIXES)}): {e}") from e

    def __repr__(self) -> str:
        sm = np.array2string(self.stain_matrix, precision=4, separator=", ").replace("\n", "")
        return f"StainTarget(stain_matrix={sm}, max_conc={np.round(self.max_conc, 4).tolist()}, source={self.source!r})"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_target_image(path: str | os.PathLike) -> np.ndarray:
    """A target image as uint8 RGB (H, W, 3), read as the authors read theirs (PIL); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"stain target image not found: {p}. The authors' target is "
                                f"{AUTHORS_TARGET!r} in a clone of {AUTHORS_REPO}")
    try:
        with Image.open(p) as im:
            if im.mode == "RGBA":
                a = np.asarray(im)
                if (a[..., 3] != 255).any():
                    raise ValueError(f"{p} has transparent pixels; save it as RGB (a target must be opaque tissue)")
                return np.ascontiguousarray(a[..., :3])
            if im.mode != "RGB":
                raise ValueError(f"{p} is a {im.mode} image; a Macenko target must be an RGB H&E image")
            return np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError as e:
        raise ValueError(f"cannot read stain target image {p}: {e}") from e


def resolve_target(spec: str | os.PathLike | None, *, cache_path: str | os.PathLike | None = None) -> StainTarget:
    """The target a ``--stain-target`` value names: ``None`` = :func:`default_target`; a ``.json``
    file = :meth:`StainTarget.load`; an image (e.g. the authors'
    ``target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png``) = fitted on the whole image
    with the paper's constants (Io 240, alpha 1, beta 0.15), as the authors' ``macenko_normalizer()``.

    With ``cache_path`` (a JSON file next to the run) the fitted target is saved there and reused
    while the image's SHA-256 is unchanged (fitting a 4096² image takes ~5 s on one core).
    """
    if spec is None or str(spec) == "":
        return default_target()
    p = Path(spec)
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return StainTarget.load(p)
    if not p.is_file():
        raise FileNotFoundError(f"stain target image not found: {p}. For the authors' target: git clone "
                                f"{AUTHORS_REPO} and pass EXAONEPath/{AUTHORS_TARGET}")
    sha = file_sha256(p)
    cache = Path(cache_path) if cache_path is not None else None
    if cache is not None and cache.is_file():
        try:
            old = StainTarget.load(cache)
        except (ValueError, TypeError):
            old = None
        if old is not None and old.source_sha256 == sha and (old.Io, old.alpha, old.beta) == (240.0, 1.0, 0.15):
            return old
    target = StainTarget.fit_files([p])
    if cache is not None:
        target.save(cache)
    return target


def _pixel_arrays(images: Any) -> list[np.ndarray]:
    """(P, 3) uint8 views of every image (layouts of :mod:`.layout`; torch tensors moved to the CPU)."""
    from .layout import to_batch

    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("no images to fit a stain target on")
    out = []
    for im in items:
        px = to_batch(im, "cpu").pixels.numpy()
        out.extend(px[i] for i in range(len(px)))
    return out


def _chunks(items: Sequence[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    for px in items:
        for s in range(0, len(px), chunk):
            yield px[s:s + chunk]


def _kth_stream(chunks: Iterator[np.ndarray], k: int, *, largest: bool) -> float:
    """The value of 0-based rank ``k`` among all values (``largest``: rank counted from the top), keeping
    only the ``k + 1`` most extreme values seen so far. Exact: the same value as a full sort."""
    keep = np.empty(0, np.float32)
    for c in chunks:
        v = -c if largest else c
        both = np.concatenate([keep, v.astype(np.float32, copy=False)])
        keep = np.partition(both, k)[: k + 1] if len(both) > k + 1 else both
    val = float(np.partition(keep, k)[k])
    return -val if largest else val


def _streaming_fit(items: Sequence[np.ndarray], *, Io: float, alpha: float, beta: float,
                   chunk: int) -> tuple[np.ndarray, np.ndarray, int] | str:
    """torchstain's Macenko fit over uint8 (P, 3) pixel arrays in chunks; a reason string on failure."""
    from .estimate import MIN_EIGENVALUE, MIN_MAX_CONC, optical_density

    # The OD of each grey level, computed by the kit's one OD function (float32, torchstain's expression).
    lut = optical_density(torch.arange(256, dtype=torch.uint8), Io).numpy()
    tissue_lut = lut >= np.float32(beta)
    n_pixels = sum(len(px) for px in items)

    def tissue_od(c: np.ndarray) -> np.ndarray:
        return lut[c[tissue_lut[c].all(axis=1)]]

    # Pass 1: count and moments of the tissue ODs (float64 accumulators).
    n, s1, s2 = 0, np.zeros(3), np.zeros((3, 3))
    for c in _chunks(items, chunk):
        t = tissue_od(c).astype(np.float64)
        n += len(t)
        s1 += t.sum(axis=0)
        s2 += t.T @ t
    if n < 100:
        return f"too_few_tissue_pixels ({n} of {n_pixels} pixels have OD ≥ beta={beta:g} in every channel; need ≥ 100)"
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / (n - 1)  # unbiased, as torchstain's cov
    evals, evecs = np.linalg.eigh(cov)  # ascending
    if not np.isfinite(evals).all() or evals[2] <= MIN_EIGENVALUE:
        return "degenerate (the tissue pixels have a single colour)"
    plane = evecs[:, 1:3]  # second largest, largest (torchstain: eigvecs[:, [1, 2]])
    plane = (plane * np.where(plane[np.abs(plane).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)).astype(np.float32)

    # Pass 2: angles of the tissue pixels in that plane; torchstain's nearest-rank percentiles.
    def angles() -> Iterator[np.ndarray]:
        for c in _chunks(items, chunk):
            proj = tissue_od(c) @ plane
            yield np.arctan2(proj[:, 1], proj[:, 0])

    k_lo = int(round(0.01 * float(alpha) * (n - 1)))
    k_hi = int(round(0.01 * float(100 - alpha) * (n - 1)))
    min_phi = np.float32(_kth_stream(angles(), k_lo, largest=False))
    max_phi = np.float32(_kth_stream(angles(), n - 1 - k_hi, largest=True))
    v_min = plane @ np.array([np.cos(min_phi), np.sin(min_phi)], dtype=np.float32)
    v_max = plane @ np.array([np.cos(max_phi), np.sin(max_phi)], dtype=np.float32)
    he = np.stack([v_min, v_max] if v_min[0] > v_max[0] else [v_max, v_min], axis=1)  # hematoxylin first
    g = he.T.astype(np.float64) @ he
    if not g[0, 0] * g[1, 1] - g[0, 1] ** 2 > math.sin(math.radians(1.0)) ** 2 * g[0, 0] * g[1, 1]:
        return "degenerate (the two stain vectors are less than 1° apart)"
    pinv = (np.linalg.inv(g) @ he.T.astype(np.float64)).astype(np.float32)  # least squares, as lstsq(HE, OD)

    # Pass 3: 99th-percentile concentration of each stain over all pixels (torchstain: all, not only tissue).
    k99 = int(round(0.01 * 99.0 * (n_pixels - 1)))
    max_conc = np.array([
        _kth_stream((lut[c] @ pinv[j] for c in _chunks(items, chunk)), n_pixels - 1 - k99, largest=True)
        for j in range(2)
    ])
    if not (np.isfinite(he).all() and np.isfinite(max_conc).all()) or not (max_conc > MIN_MAX_CONC).all():
        return f"degenerate (99th-percentile concentrations {max_conc.tolist()})"
    return he.astype(np.float64), max_conc.astype(np.float64), int(n_pixels)


def default_target() -> StainTarget:
    """HERef / maxCRef of the reference implementation (PROTOCOL.md §2), from package data."""
    text = resources.files("exaonepath_lab").joinpath("data/macenko_default_target.json").read_text()
    return StainTarget.from_dict(json.loads(text))
