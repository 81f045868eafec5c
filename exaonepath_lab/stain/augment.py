"""Macenko stain augmentation: random perturbation of each image's stains.

Tellez et al. 2018 / torchstain's ``MacenkoAugmentor``: estimate the image's own stain
matrix HE and concentrations C (Macenko), then draw per image and per stain
``C' = a·C + b`` with ``a ~ U(1 − sigma1, 1 + sigma1)``, ``b ~ U(−sigma2, sigma2)``,
optionally jitter the stain vectors themselves (``sigma_vec``: Gaussian noise on each
unit OD vector, renormalized), and reconstruct ``Io·exp(−HE'·C')``. With
``sigma_vec=0`` this is torchstain's augmentation, batched. It is the alternative to
normalization that the notebooks compare against (augment the variation instead of
removing it).
"""
from __future__ import annotations

from typing import Any

import torch

from .estimate import optical_density, stain_pinv
from .layout import to_batch
from .macenko import MacenkoNormalizer
from .policy import check_policy, enforce_policy
from .results import NormalizeResult


class MacenkoStainAugment:
    """Batched, seeded Macenko stain augmentation.

    Args:
        sigma1: multiplicative concentration jitter (torchstain's default 0.2).
        sigma2: additive concentration jitter (0.2).
        sigma_vec: std of Gaussian noise added to each unit stain vector (0 = off).
        seed: seeds a private ``torch.Generator`` (reproducible sequence of calls); ``None``
            uses torch's global RNG, which DataLoader seeds per worker.
        Io, alpha, beta, policy, device: as :class:`MacenkoNormalizer`; images whose stains
            cannot be estimated are returned unchanged with their status.
    """

    def __init__(
        self,
        sigma1: float = 0.2,
        sigma2: float = 0.2,
        sigma_vec: float = 0.0,
        *,
        seed: int | None = None,
        Io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        policy: str = "passthrough",
        device: str | torch.device | None = None,
    ) -> None:
        if sigma1 < 0 or sigma2 < 0 or sigma_vec < 0:
            raise ValueError(f"sigmas must be ≥ 0, got sigma1={sigma1}, sigma2={sigma2}, sigma_vec={sigma_vec}")
        self.sigma1, self.sigma2, self.sigma_vec = float(sigma1), float(sigma2), float(sigma_vec)
        self.policy = check_policy(policy)
        self._fitter = MacenkoNormalizer(Io=Io, alpha=alpha, beta=beta, policy="passthrough", device=device)
        self.generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None

    def _uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.generator)

    def augment(self, images: Any) -> NormalizeResult:
        """Augmented uint8 images (same layout as the input) with per-image status and stain params."""
        batch = to_batch(images, self._fitter.device)
        params = self._fitter.fit_stains(batch.pixels.reshape(batch.n, batch.height, batch.width, 3))
        dev = batch.pixels.device
        n = batch.n
        # Draw on the CPU generator so a seed gives the same result on CPU and GPU.
        a = self._uniform((n, 2), 1 - self.sigma1, 1 + self.sigma1).to(dev)
        b = self._uniform((n, 2), -self.sigma2, self.sigma2).to(dev)
        he = torch.as_tensor(params.stain_matrix, device=dev)
        if self.sigma_vec > 0:
            noise = torch.randn(he.shape, generator=self.generator).to(dev) * self.sigma_vec
            he_new = he + noise
            he_new = he_new / he_new.norm(dim=1, keepdim=True).clamp_min(1e-6)
        else:
            he_new = he
        ok = torch.as_tensor(params.ok, device=dev)
        od = optical_density(batch.pixels, self._fitter.Io)
        conc = od @ stain_pinv(he).transpose(1, 2)  # (N, P, 2)
        conc = conc * a.unsqueeze(1) + b.unsqueeze(1)
        out = torch.exp(-(conc @ he_new.transpose(1, 2))).mul_(self._fitter.Io).clamp_(max=255.0).to(torch.uint8)
        out = torch.where(ok.view(-1, 1, 1), out, batch.pixels)
        enforce_policy(self.policy, params.status)
        return NormalizeResult(images=batch.restore(out), status=list(params.status), params=params)

    def __call__(self, images: Any) -> Any:
        return self.augment(images).images
