"""Reinhard colour normalization (Lab mean/std matching), batched, for comparison with Macenko.

Reinhard et al., "Color transfer between images", IEEE CG&A 2001: convert to CIE Lab,
standardize each channel per image and rescale to the target's mean and standard
deviation. Statistics are over all pixels and the standard deviation is unbiased, as
in torchstain's ``TorchReinhardNormalizer``; the output is rounded (torchstain
truncates), so it may differ from torchstain by one level.

Lab here is the standard sRGB (D65) conversion, the one OpenCV's ``cv2.cvtColor``
computes for float RGB in [0, 1]: L in [0, 100], a and b unscaled.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .layout import to_batch
from .policy import DEGENERATE, OK, check_policy, enforce_policy
from .results import NormalizeResult

# sRGB (linear) → XYZ, D65, and the D65 white point: OpenCV's constants.
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)
_EPS = 0.008856  # (6/29)^3
_KAPPA = 7.787  # (29/6)^2 / 3


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(…, 3) float RGB in [0, 1] → (…, 3) CIE Lab (L 0–100)."""
    m = torch.tensor(_RGB2XYZ, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device)
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = (lin @ m.t()) / white
    f = torch.where(xyz > _EPS, xyz.clamp_min(0) ** (1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return torch.stack((L, a, b), dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(…, 3) CIE Lab → (…, 3) float RGB, clipped to [0, 1]."""
    m_inv = torch.linalg.inv(torch.tensor(_RGB2XYZ, dtype=torch.float64)).to(lab.dtype).to(lab.device)
    white = torch.tensor(_WHITE, dtype=lab.dtype, device=lab.device)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = torch.stack((fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0), dim=-1)
    xyz = torch.where(f > 6.0 / 29.0, f**3, (f - 16.0 / 116.0) / _KAPPA) * white
    lin = (xyz @ m_inv.t()).clamp(0.0, 1.0)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin ** (1.0 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0.0, 1.0)


def lab_stats(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P, 3) uint8 → per-image Lab mean and unbiased std, each (N, 3)."""
    lab = rgb_to_lab(pixels.float() / 255.0)
    return lab.mean(dim=1), lab.std(dim=1)


class ReinhardNormalizer:
    """Batched Reinhard normalization to a target's Lab mean and std.

    Args:
        target_means, target_stds: (3,) Lab statistics of the target; or call :meth:`fit`.
        policy: for single-colour images (a zero std), see :mod:`exaonepath_lab.stain.policy`.
        min_std: a channel with a smaller std (Lab units) is ``degenerate``.
        device: compute device; ``None`` = the input tensor's device (numpy: CPU).
    """

    def __init__(
        self,
        target_means: Any = None,
        target_stds: Any = None,
        *,
        policy: str = "passthrough",
        min_std: float = 1e-3,
        device: str | torch.device | None = None,
    ) -> None:
        self.target_means = None if target_means is None else np.asarray(target_means, np.float64).reshape(3)
        self.target_stds = None if target_stds is None else np.asarray(target_stds, np.float64).reshape(3)
        self.policy = check_policy(policy)
        self.min_std = float(min_std)
        self.device = torch.device(device) if device is not None else None

    def fit(self, images: Any) -> "ReinhardNormalizer":
        """Target statistics from one image or a list of images (pixels pooled)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        px = torch.cat([to_batch(im, self.device).pixels.reshape(-1, 3) for im in items]).unsqueeze(0)
        mu, sd = lab_stats(px)
        self.target_means = mu[0].double().cpu().numpy()
        self.target_stds = sd[0].double().cpu().numpy()
        if (self.target_stds < self.min_std).any():
            raise ValueError(f"Reinhard target has a (near) zero Lab std {self.target_stds.tolist()}: fit on a real H&E image")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "reinhard",
            "target_means": None if self.target_means is None else self.target_means.tolist(),
            "target_stds": None if self.target_stds is None else self.target_stds.tolist(),
        }

    def normalize(self, images: Any) -> NormalizeResult:
        """uint8 images (see :mod:`exaonepath_lab.stain.layout`) → :class:`NormalizeResult` (params None)."""
        if self.target_means is None or self.target_stds is None:
            raise ValueError("ReinhardNormalizer has no target: call .fit(target_image) or pass target_means/target_stds")
        batch = to_batch(images, self.device)
        px = batch.pixels
        lab = rgb_to_lab(px.float() / 255.0)
        mu, sd = lab.mean(dim=1, keepdim=True), lab.std(dim=1, keepdim=True)
        ok = (sd > self.min_std).all(dim=-1).squeeze(1)  # (N,)
        t_mu = torch.tensor(self.target_means, dtype=lab.dtype, device=lab.device)
        t_sd = torch.tensor(self.target_stds, dtype=lab.dtype, device=lab.device)
        out = (lab - mu) / torch.where(sd > self.min_std, sd, torch.ones_like(sd)) * t_sd + t_mu
        rgb = (lab_to_rgb(out) * 255.0).round_().to(torch.uint8)
        rgb = torch.where(ok.view(-1, 1, 1), rgb, px)
        status = [OK if o else DEGENERATE for o in ok.cpu().tolist()]
        enforce_policy(self.policy, status)
        return NormalizeResult(images=batch.restore(rgb), status=status, params=None)

    def __call__(self, images: Any) -> Any:
        return self.normalize(images).images
