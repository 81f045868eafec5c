"""Batched Macenko stain estimation and reconstruction: pure tensor functions.

Macenko et al., "A method for normalizing histology slides for quantitative
analysis", ISBI 2009; the constants and steps follow torchstain 1.4 (torch backend),
which the paper's code copies (PROTOCOL.md §2). Every step is vectorized over the
batch: images with different amounts of tissue are handled with per-image masks and
counts instead of a Python loop.

Shapes: ``pixels`` (N, P, 3) uint8 with P = H·W; optical density ``od`` (N, P, 3)
float32; stain matrix (N, 3, 2) with columns hematoxylin, eosin (unit OD vectors);
max concentrations (N, 2).

Choices that differ from a literal loop over torchstain, and why:

* Percentiles are torchstain's *nearest rank* (``kthvalue`` at ``1 + round(q/100·(n-1))``,
  Python's round-half-to-even), not ``numpy``'s linear interpolation, so the stain
  vectors are the same pixels' angles. Computed per image over masked pixels with
  ``topk`` (masked values pushed to ±inf) and the per-image rank.
* Eigenvectors get a fixed sign (largest-magnitude component positive). The stain
  vectors do not depend on it mathematically (a flip maps angle φ to π−φ or −φ and
  swaps which percentile is which; the hematoxylin-first rule undoes the swap), but a
  fixed convention makes CPU and GPU agree when eigen-solvers flip signs.
* Concentrations use the closed-form 2×2 normal equations (pseudo-inverse) instead of
  ``torch.linalg.lstsq`` (QR): the same least-squares solution up to float32 rounding.
* Normalization is one per-image 3×3 matrix ``M`` on optical density:
  ``OD_out = OD · pinv(HE)ᵀ · diag(maxC_ref / maxC) · HE_refᵀ``, then ``Io·exp(−OD_out)``,
  clipped at 255 and truncated to uint8 like torchstain's ``.int()`` cast.
"""
from __future__ import annotations

import math

import torch

# Internal status codes (policy.STATUSES order).
OK_CODE, TOO_FEW_CODE, DEGENERATE_CODE, NONFINITE_CODE = 0, 1, 2, 3

# Smallest largest-eigenvalue of the OD covariance that still has a direction: a single
# colour gives ~1e-14 in float32; one grey level of noise on tissue gives ~1e-5.
MIN_EIGENVALUE = 1e-8
# Smallest 99th-percentile concentration we divide by.
MIN_MAX_CONC = 1e-6


def optical_density(pixels: torch.Tensor, Io: float) -> torch.Tensor:
    """OD = −log((I + 1) / Io) in float32; (…, 3) uint8 → (…, 3) float32.

    The same expression and order of operations as torchstain, so ODs match bit for bit.
    """
    return -torch.log((pixels.float() + 1) / Io)


def nearest_rank(n: torch.Tensor, q: float) -> torch.Tensor:
    """0-based rank of torchstain's percentile: ``round(0.01·q·(n−1))`` (half to even), int64.

    Computed in float64 with the same operation order as torchstain's Python float
    arithmetic, so the rank is identical.
    """
    r = torch.round((0.01 * float(q)) * (n.to(torch.float64) - 1))
    return r.clamp_min(0).to(torch.int64)


def _kth_smallest(values: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """values (N, P) with invalid entries = +inf, rank (N,) → values of that rank (N,)."""
    k = int(rank.max().item()) + 1
    p = values.shape[1]
    k = min(k, p)
    if 8 * k > p:  # topk is only faster than a full sort for small k
        top = torch.sort(values, dim=1).values
    else:
        top = torch.topk(values, k, dim=1, largest=False, sorted=True).values
    return top.gather(1, rank.clamp(max=top.shape[1] - 1).unsqueeze(1)).squeeze(1)


def masked_percentiles(
    values: torch.Tensor, mask: torch.Tensor, *, q_low: float, q_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row nearest-rank percentiles over the masked entries of ``values`` (N, P).

    Returns ``(low, high, n)``: the ``q_low`` and ``q_high`` percentiles (N,) and the
    counts (N,). Rows with no masked entry return ±inf (the caller flags them).
    """
    n = mask.sum(dim=1)
    inf = torch.tensor(float("inf"), dtype=values.dtype, device=values.device)
    lo = _kth_smallest(torch.where(mask, values, inf), nearest_rank(n, q_low))
    # The q_high percentile is the (n−1−rank)-th largest; negate to reuse the smallest-k path.
    from_top = (n - 1 - nearest_rank(n, q_high)).clamp_min(0)
    hi = -_kth_smallest(torch.where(mask, -values, inf), from_top)
    return lo, hi, n


def _fixed_sign(vecs: torch.Tensor) -> torch.Tensor:
    """Flip each column of (N, 3, k) so its largest-magnitude component is positive."""
    idx = vecs.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(vecs.gather(1, idx))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return vecs * sign


def estimate_stains(
    od: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 0.15,
    min_tissue_pixels: int = 100,
    min_tissue_fraction: float = 0.01,
    min_stain_angle_deg: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Macenko stain matrix and 99th-percentile concentrations of each image.

    Args:
        od: (N, P, 3) float32 optical density.
        alpha: angle percentile (%); stain vectors at alpha and 100 − alpha.
        beta: OD threshold; a pixel is tissue if OD ≥ beta in every channel.
        min_tissue_pixels, min_tissue_fraction: an image needs at least
            ``max(min_tissue_pixels, ceil(min_tissue_fraction · P))`` tissue pixels.
        min_stain_angle_deg: stain vectors closer than this are ``degenerate``.

    Returns dict of tensors: ``stain_matrix`` (N, 3, 2), ``max_conc`` (N, 2),
    ``pinv`` (N, 2, 3) the stain matrix pseudo-inverse, ``conc`` (N, P, 2),
    ``n_tissue`` (N,) int64, ``code`` (N,) int64 status code. Rows whose code is not
    OK hold finite placeholder values (the identity geometry) that callers must not use.
    """
    p = od.shape[1]
    mask = (od >= beta).all(dim=-1)  # == torchstain's ~any(OD < beta)
    n = mask.sum(dim=1)
    need = max(int(min_tissue_pixels), math.ceil(float(min_tissue_fraction) * p), 2)
    code = torch.where(n < need, TOO_FEW_CODE, OK_CODE).to(torch.int64)
    plane, code = _principal_plane(od, mask, n, code)
    he = _extreme_angle_vectors(od, mask, plane, alpha)
    del mask
    code = torch.where((code == OK_CODE) & _parallel(he, min_stain_angle_deg), DEGENERATE_CODE, code)
    pinv = stain_pinv(he)  # (N, 2, 3)
    conc = od @ pinv.transpose(1, 2)  # (N, P, 2)
    max_conc = _percentile_99(conc)
    code = torch.where((code == OK_CODE) & ~(max_conc > MIN_MAX_CONC).all(dim=1), DEGENERATE_CODE, code)
    finite = torch.isfinite(he).all(dim=(1, 2)) & torch.isfinite(max_conc).all(dim=1)
    code = torch.where((code == OK_CODE) & ~finite, NONFINITE_CODE, code)
    return {
        "stain_matrix": he,
        "max_conc": max_conc,
        "pinv": pinv,
        "conc": conc,
        "n_tissue": n.to(torch.int64),
        "code": code,
    }


def _principal_plane(od: torch.Tensor, mask: torch.Tensor, n: torch.Tensor,
                     code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 2) plane of the two largest eigenvectors of the tissue-OD covariance, and updated codes."""
    # Masked mean and covariance (unbiased, like torchstain's cov) of the tissue ODs.
    w = mask.unsqueeze(-1).to(od.dtype)
    nf = n.clamp_min(2).to(od.dtype)
    mean = (od * w).sum(dim=1) / nf.unsqueeze(-1)
    xc = (od - mean.unsqueeze(1)) * w
    cov = xc.transpose(1, 2) @ xc / (nf - 1).view(-1, 1, 1)
    del xc, w
    eye = torch.eye(3, dtype=od.dtype, device=od.device).expand_as(cov)
    usable = (code == OK_CODE) & torch.isfinite(cov).all(dim=(1, 2))
    cov = torch.where(usable.view(-1, 1, 1), cov, eye)  # eigh must never see NaN
    evals, evecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    code = torch.where((code == OK_CODE) & (evals[:, 2] <= MIN_EIGENVALUE), DEGENERATE_CODE, code)
    return _fixed_sign(evecs[:, :, 1:3]), code  # (N, 3, 2): second largest, largest


def _extreme_angle_vectors(od: torch.Tensor, mask: torch.Tensor, plane: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N, 3, 2) stain matrix [hematoxylin, eosin]: the directions at the alpha / 100 − alpha angle percentiles."""
    proj = od @ plane  # (N, P, 2)
    phi = torch.atan2(proj[..., 1], proj[..., 0])
    del proj
    min_phi, max_phi, _ = masked_percentiles(phi, mask, q_low=alpha, q_high=100 - alpha)
    del phi
    min_phi = torch.nan_to_num(min_phi, nan=0.0, posinf=0.0, neginf=0.0)
    max_phi = torch.nan_to_num(max_phi, nan=0.0, posinf=0.0, neginf=0.0)
    v_min = (plane @ torch.stack((torch.cos(min_phi), torch.sin(min_phi)), dim=1).unsqueeze(-1)).squeeze(-1)
    v_max = (plane @ torch.stack((torch.cos(max_phi), torch.sin(max_phi)), dim=1).unsqueeze(-1)).squeeze(-1)
    # Hematoxylin first: the vector with the larger red OD (torchstain's heuristic).
    h_first = (v_min[:, 0] > v_max[:, 0]).view(-1, 1)
    h = torch.where(h_first, v_min, v_max)
    e = torch.where(h_first, v_max, v_min)
    return torch.stack((h, e), dim=2)  # (N, 3, 2)


def _parallel(he: torch.Tensor, min_stain_angle_deg: float) -> torch.Tensor:
    """(N,) bool: stain vectors closer than ``min_stain_angle_deg`` cannot be separated (one stain)."""
    g = he.transpose(1, 2) @ he
    det = g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] * g[:, 1, 0]
    sin2_min = math.sin(math.radians(min_stain_angle_deg)) ** 2
    return ~(det > sin2_min * g[:, 0, 0] * g[:, 1, 1])


def _percentile_99(conc: torch.Tensor) -> torch.Tensor:
    """(N, 2) 99th percentile over all pixels of (N, P, 2) concentrations (as torchstain)."""
    # The (p−1−rank)-th largest, by topk on contiguous rows, which is much faster than kthvalue
    # along a strided dim (CPU and CUDA).
    p = conc.shape[1]
    from_top = p - 1 - int(nearest_rank(torch.tensor([p]), 99).item())
    rows = conc.transpose(1, 2).contiguous()  # (N, 2, P)
    return torch.topk(rows, from_top + 1, dim=2, largest=True, sorted=True).values[..., from_top]


def stain_pinv(stain_matrix: torch.Tensor) -> torch.Tensor:
    """(N, 3, 2) → (N, 2, 3) pseudo-inverse via the closed-form 2×2 normal equations."""
    g = stain_matrix.transpose(1, 2) @ stain_matrix
    det = g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] * g[:, 1, 0]
    det = torch.where(det.abs() > 0, det, torch.ones_like(det))
    g_inv = torch.stack(
        (torch.stack((g[:, 1, 1], -g[:, 0, 1]), dim=1), torch.stack((-g[:, 1, 0], g[:, 0, 0]), dim=1)), dim=1
    ) / det.view(-1, 1, 1)
    return g_inv @ stain_matrix.transpose(1, 2)


def od_transform(
    pinv: torch.Tensor, max_conc: torch.Tensor, *, target_matrix: torch.Tensor, target_max_conc: torch.Tensor
) -> torch.Tensor:
    """Per-image 3×3 map on row-vector OD: ``pinvᵀ · diag(target_maxC / maxC) · HE_refᵀ``.

    pinv (N, 2, 3), max_conc (N, 2), target_matrix (3, 2), target_max_conc (2,) → (N, 3, 3).
    """
    scale = target_max_conc.view(1, 2) / max_conc.clamp_min(MIN_MAX_CONC)
    return pinv.transpose(1, 2) @ (scale.unsqueeze(-1) * target_matrix.t().unsqueeze(0))


def reconstruct(od: torch.Tensor, transform: torch.Tensor, Io: float) -> torch.Tensor:
    """``Io·exp(−OD·M)`` clipped to 255 and truncated to uint8: (N, P, 3), (N, 3, 3) → (N, P, 3)."""
    out = torch.exp(-(od @ transform)).mul_(Io)
    return out.clamp_(max=255.0).to(torch.uint8)  # truncation, as torchstain's .int()
