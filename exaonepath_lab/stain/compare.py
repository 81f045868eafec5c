"""Numbers for comparing stain-normalization methods across images (notebook 02, the demo's stain section).

Each number is the quantity one of the methods equalises, so none is a neutral referee
(that is the downstream test: collapse metrics, linear probe):

- :func:`colour_spread`: mean pairwise CIE ΔE between per-image mean Lab colours
  (what Reinhard matches exactly);
- :func:`stain_angle_spread`: mean pairwise angle between the hematoxylin vectors, and
  between the eosin vectors, Macenko estimates on each image (what Macenko equalises).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .macenko import MacenkoNormalizer
from .reinhard import rgb_to_lab


def colour_spread(images: Any) -> float:
    """Mean pairwise Euclidean distance (ΔE, Lab units) between the mean Lab colours of ``(N, H, W, 3)`` uint8 images."""
    imgs = np.asarray(images)
    n = len(imgs)
    if n < 2:
        raise ValueError(f"colour_spread needs at least 2 images, got {n}")
    lab = rgb_to_lab(torch.from_numpy(imgs).float() / 255).reshape(n, -1, 3).mean(1)
    return float(torch.cdist(lab, lab).sum() / (n * (n - 1)))


def stain_angle_spread(images: Any, *, normalizer: MacenkoNormalizer | None = None) -> tuple[float, float]:
    """Mean pairwise angle (degrees) between the H vectors, and between the E vectors, of the images Macenko fits.

    Images whose fit fails (blank, single stain) are left out; with fewer than two fitted
    images the spread is ``nan``.
    """
    prm = (normalizer or MacenkoNormalizer()).fit_stains(np.asarray(images))
    sm = prm.stain_matrix[prm.ok]  # (n, 3, 2) unit vectors
    n = len(sm)
    if n < 2:
        return float("nan"), float("nan")
    out = []
    for j in range(2):
        cos = np.clip(sm[:, :, j] @ sm[:, :, j].T, -1, 1)
        out.append(float(np.degrees(np.arccos(cos)).sum() / (n * (n - 1))))
    return out[0], out[1]


def spread_table(variants: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method (``name -> (N, H, W, 3)`` images): colour spread (ΔE), H- and E-vector spread (°)."""
    rows = {}
    for name, imgs in variants.items():
        h, e = stain_angle_spread(imgs)
        rows[name] = {"colour spread (ΔE)": colour_spread(imgs), "H-vector spread (°)": h, "E-vector spread (°)": e}
    return pd.DataFrame(rows).T


def stain_vectors_table(names: Sequence[str], params: Any) -> pd.DataFrame:
    """Per-image Macenko estimates (:class:`~exaonepath_lab.stain.StainParams`) as a readable table."""
    return pd.DataFrame({
        "image": list(names), "status": params.status, "tissue px": params.n_tissue,
        "H (r, g, b)": [tuple(np.round(v[:, 0], 3)) for v in params.stain_matrix],
        "E (r, g, b)": [tuple(np.round(v[:, 1], 3)) for v in params.stain_matrix],
        "maxC H": params.max_conc[:, 0].round(3), "maxC E": params.max_conc[:, 1].round(3)})


def render_stains(conc: torch.Tensor, stain_matrix: torch.Tensor, Io: float = 240.0) -> np.ndarray:
    """Beer–Lambert forward: ``(H, W, k)`` concentrations and a ``(3, k)`` stain matrix -> ``(H, W, 3)`` uint8 RGB."""
    return (Io * torch.exp(-(conc @ stain_matrix.T))).clamp(max=255).to(torch.uint8).numpy()


def single_stain_rgb(conc: torch.Tensor, vector: torch.Tensor, Io: float = 240.0) -> np.ndarray:
    """RGB picture of one stain alone: ``Io·exp(−vector·c)``; ``(H, W)`` concentrations -> ``(H, W, 3)`` uint8."""
    return render_stains(conc[..., None], vector[:, None], Io)


def mean_concentrations(image: np.ndarray, stain_matrix: torch.Tensor, Io: float = 240.0) -> np.ndarray:
    """Mean concentration of each stain over all pixels of ``(H, W, 3)`` uint8, measured with a *fixed*
    ``(3, k)`` stain matrix (a fixed ruler: comparing two images needs the same vectors for both)."""
    from .estimate import optical_density, stain_pinv

    od = optical_density(torch.from_numpy(np.ascontiguousarray(image)).reshape(1, -1, 3), Io)[0]
    return (od @ stain_pinv(stain_matrix[None].to(od.dtype))[0].T).mean(0).numpy()


def tissue_share(image: np.ndarray, *, grey_below: int = 200) -> float:
    """Share of pixels darker than ``grey_below`` (mean of r, g, b): a quick tissue-vs-glass measure."""
    return float((np.asarray(image).mean(axis=2) < grey_below).mean())


def centre_crop(image: np.ndarray, size: int) -> np.ndarray | None:
    """The central ``size``×``size`` crop of ``(H, W, 3)``; ``None`` when the image is smaller."""
    h, w = image.shape[:2]
    if h < size or w < size:
        return None
    y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size])
