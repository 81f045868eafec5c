"""Batched Macenko normalization with an explicit failure policy.

>>> norm = MacenkoNormalizer()                    # default target, paper constants
>>> res = norm.normalize(patches)                 # uint8 (N, H, W, 3) numpy or torch
>>> res.images, res.status, res.counts()
>>> params = norm.fit_stains(patches)             # once, e.g. at tiling time
>>> norm.apply(patches, params).images            # later: one 3×3 product + exp per pixel

The numerics live in :mod:`exaonepath_lab.stain.estimate`; parity with torchstain's
torch backend (same target, same constants) on real H&E patches is measured in
``tests/test_stain_parity.py``: mean absolute difference well below one grey level.
The residual comes from float32 summation order (batched covariance, matmuls), the
closed-form least squares instead of QR, and, through the truncating uint8 cast, a
value that lands on the other side of an integer flips a whole level.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .estimate import (
    OK_CODE,
    estimate_stains,
    od_transform,
    optical_density,
    reconstruct,
    stain_pinv,
)
from . import cpu_kernels
from .layout import Batch, to_batch
from .policy import STATUSES, check_policy, enforce_policy
from .results import NormalizeResult, StainParams
from .target import StainTarget, default_target

# Pixels per chunk: bounds peak memory (~6 float32 copies of (chunk, 3)) to ~1.2 GB on
# CPU while keeping chunks large enough that per-call overhead is negligible.
CPU_CHUNK_PIXELS = 1 << 24
CUDA_CHUNK_PIXELS = 1 << 26


class MacenkoNormalizer:
    """Macenko stain normalization of whole batches on CPU or GPU.

    Args:
        target: the stain target to map to; ``None`` = :func:`default_target` (HERef/maxCRef).
        Io: transmitted light intensity (paper/torchstain: 240).
        alpha: angle percentile in % (1: stain vectors at the 1st and 99th percentile).
        beta: OD threshold for tissue pixels (0.15).
        policy: ``passthrough`` | ``flag`` | ``raise`` for images that cannot be
            normalized (see :mod:`exaonepath_lab.stain.policy`).
        min_tissue_fraction: share of pixels that must be tissue (default 1%: at 224² that
            is 502 pixels, enough for the 1st/99th angle percentiles to differ from the
            extreme pixels; torchstain has no threshold and fails only at 0 pixels).
        min_tissue_pixels: absolute floor (100: with alpha=1 fewer pixels make the 1st
            percentile the minimum; also rejects tiny images).
        min_stain_angle_deg: stain vectors closer than this are ``degenerate``.
        pixel_stride: estimate the stains from every k-th pixel (row-major). 1 (default) uses
            all pixels, as torchstain does (exact parity); 4 makes fitting ~3× cheaper for
            a small deviation (measured in ``tests/test_stain_macenko.py``). The output image
            is always computed for every pixel.
        device: compute device; ``None`` = the input tensor's device (numpy: CPU).
        backend: ``auto`` (fused numba kernels on CPU, torch on GPU), ``torch`` (the
            vectorized torch implementation everywhere) or ``numba`` (CPU only). Both
            compute the same statuses and agree to float rounding.
    """

    def __init__(
        self,
        target: StainTarget | None = None,
        *,
        Io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        policy: str = "passthrough",
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 100,
        min_stain_angle_deg: float = 1.0,
        pixel_stride: int = 1,
        device: str | torch.device | None = None,
        backend: str = "auto",
    ) -> None:
        self.target = target if target is not None else default_target()
        if not isinstance(self.target, StainTarget):
            raise TypeError(f"target must be a StainTarget (or None for the default), got {type(target).__name__}")
        if not (0 < alpha < 50):
            raise ValueError(f"alpha is a percentile in (0, 50), got {alpha}")
        if not (Io > 0 and beta >= 0):
            raise ValueError(f"need Io > 0 and beta >= 0, got Io={Io}, beta={beta}")
        self.Io, self.alpha, self.beta = float(Io), float(alpha), float(beta)
        self.policy = check_policy(policy)
        self.min_tissue_fraction = float(min_tissue_fraction)
        self.min_tissue_pixels = int(min_tissue_pixels)
        self.min_stain_angle_deg = float(min_stain_angle_deg)
        if int(pixel_stride) < 1:
            raise ValueError(f"pixel_stride must be ≥ 1, got {pixel_stride}")
        self.pixel_stride = int(pixel_stride)
        self.device = torch.device(device) if device is not None else None
        if backend not in ("auto", "torch", "numba"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
        if backend == "numba" and not cpu_kernels.available():
            raise ValueError("backend='numba' needs numba (pip install numba); or use backend='torch'")
        self.backend = backend

    def __repr__(self) -> str:
        return (
            f"MacenkoNormalizer(Io={self.Io:g}, alpha={self.alpha:g}, beta={self.beta:g}, policy={self.policy!r}, "
            f"target={self.target!r})"
        )

    def config(self) -> dict[str, Any]:
        """Everything that changes the output, for provenance and cache keys."""
        return {
            "method": "macenko",
            "Io": self.Io,
            "alpha": self.alpha,
            "beta": self.beta,
            "min_tissue_fraction": self.min_tissue_fraction,
            "min_tissue_pixels": self.min_tissue_pixels,
            "min_stain_angle_deg": self.min_stain_angle_deg,
            "pixel_stride": self.pixel_stride,
            "policy": self.policy,
            "target": self.target.to_dict(),
            "target_fingerprint": self.target.fingerprint(),
        }

    # ---- internals ---------------------------------------------------------------------------
    def _chunks(self, batch: Batch) -> list[slice]:
        budget = CUDA_CHUNK_PIXELS if batch.pixels.is_cuda else CPU_CHUNK_PIXELS
        per = max(1, budget // max(1, batch.pixels.shape[1]))
        return [slice(i, min(i + per, batch.n)) for i in range(0, batch.n, per)]

    def _n_est(self, n_pixels: int) -> int:
        """Pixels per image the stains are estimated from."""
        return -(-n_pixels // self.pixel_stride)

    def _estimate(self, od: torch.Tensor) -> dict[str, torch.Tensor]:
        return estimate_stains(
            od[:, :: self.pixel_stride] if self.pixel_stride > 1 else od,
            alpha=self.alpha,
            beta=self.beta,
            min_tissue_pixels=self.min_tissue_pixels,
            min_tissue_fraction=self.min_tissue_fraction,
            min_stain_angle_deg=self.min_stain_angle_deg,
        )

    def _params(self, est: dict[str, torch.Tensor]) -> StainParams:
        ok = (est["code"] == OK_CODE).view(-1, 1)
        sm = torch.where(ok.view(-1, 1, 1), est["stain_matrix"], 0.0)
        mc = torch.where(ok, est["max_conc"], 0.0)
        return StainParams(
            stain_matrix=sm.cpu().numpy(),
            max_conc=mc.cpu().numpy(),
            status=[STATUSES[int(c)] for c in est["code"].cpu()],
            n_tissue=est["n_tissue"].cpu().numpy(),
            Io=self.Io,
            alpha=self.alpha,
            beta=self.beta,
        )

    def _apply_chunk(
        self, pixels: torch.Tensor, od: torch.Tensor, stain_matrix: torch.Tensor, max_conc: torch.Tensor, ok: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct with the target; failed images keep their pixels. Returns (pixels, finite)."""
        t_sm, t_mc = self.target.tensors(pixels.device)
        m = od_transform(stain_pinv(stain_matrix), max_conc, target_matrix=t_sm, target_max_conc=t_mc)
        finite = torch.isfinite(m).all(dim=(1, 2))
        m = torch.where((ok & finite).view(-1, 1, 1), m, torch.zeros_like(m))
        out = reconstruct(od, m, self.Io)
        return torch.where((ok & finite).view(-1, 1, 1), out, pixels), finite

    def _details(self, params: StainParams, n_pixels: int) -> list[str]:
        n_pixels = self._n_est(n_pixels)
        need = max(self.min_tissue_pixels, int(np.ceil(self.min_tissue_fraction * n_pixels)), 2)
        return [
            f"{int(t)} of {n_pixels} pixels have OD ≥ beta={self.beta:g} in every channel; need ≥ {need}"
            for t in params.n_tissue
        ]

    def _use_numba(self, batch: Batch) -> bool:
        if batch.pixels.device.type != "cpu" or self.backend == "torch":
            return False
        return self.backend == "numba" or cpu_kernels.available()

    def _numba_common(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lut = cpu_kernels.od_lut(self.Io)
        return lut, self.target.stain_matrix.astype(np.float64), self.target.max_conc.astype(np.float64)

    def _numba_fit(self, pixels: torch.Tensor, do_apply: bool) -> tuple[torch.Tensor | None, StainParams]:
        """Fit (and optionally apply) with the fused CPU kernels; (N, P, 3) uint8 in."""
        from .estimate import MIN_EIGENVALUE, MIN_MAX_CONC

        fit_apply, _ = cpu_kernels.kernels()
        px = np.ascontiguousarray(pixels.numpy())
        n, p_all, _ = px.shape
        p = self._n_est(p_all)
        lut, tsm, tmc = self._numba_common()
        need = max(self.min_tissue_pixels, int(np.ceil(self.min_tissue_fraction * p)), 2)
        out = np.empty_like(px) if do_apply else np.empty((1, 1, 3), np.uint8)
        sm = np.zeros((n, 3, 2), np.float32)
        mc = np.zeros((n, 2), np.float32)
        code = np.zeros(n, np.int64)
        ntis = np.zeros(n, np.int64)
        sin2 = float(np.sin(np.radians(self.min_stain_angle_deg)) ** 2)
        cpu_kernels.run_parallel(
            fit_apply, n, px, self.pixel_stride, lut, cpu_kernels.tissue_max_intensity(lut, self.beta), need, self.alpha,
            cpu_kernels.rank99(p), sin2, MIN_EIGENVALUE, MIN_MAX_CONC, tsm, tmc, self.Io, do_apply,
            out, sm, mc, code, ntis,
        )
        params = StainParams(sm, mc, [STATUSES[int(c)] for c in code], ntis, self.Io, self.alpha, self.beta)
        return (torch.from_numpy(out) if do_apply else None), params

    def _numba_apply(self, pixels: torch.Tensor, params: StainParams) -> torch.Tensor:
        _, apply = cpu_kernels.kernels()
        px = np.ascontiguousarray(pixels.numpy())
        lut, tsm, tmc = self._numba_common()
        out = np.empty_like(px)
        cpu_kernels.run_parallel(
            apply, len(px), px, lut, np.ascontiguousarray(params.stain_matrix),
            np.ascontiguousarray(params.max_conc), params.ok, tsm, tmc, self.Io, out,
        )
        return torch.from_numpy(out)

    # ---- public API --------------------------------------------------------------------------
    def fit_stains(self, images: Any) -> StainParams:
        """Per-image stain matrix and max concentrations, (N, 3, 2) and (N, 2); no output images.

        Failed images get zero parameters and a status; the policy applies.
        """
        batch = to_batch(images, self.device)
        if self._use_numba(batch):
            params = self._numba_fit(batch.pixels, do_apply=False)[1]
            enforce_policy(self.policy, params.status, self._details(params, batch.pixels.shape[1]))
            return params
        parts = []
        for sl in self._chunks(batch):
            est = self._estimate(optical_density(batch.pixels[sl], self.Io))
            parts.append(self._params(est))
        params = StainParams.concat(parts)
        enforce_policy(self.policy, params.status, self._details(params, batch.pixels.shape[1]))
        return params

    def apply(self, images: Any, params: StainParams) -> NormalizeResult:
        """Normalize with stored per-image parameters (from :meth:`fit_stains`).

        Only a 3×3 matrix product and an exponential per pixel: concentrations are
        solved with each image's stored stain-matrix pseudo-inverse, scaled by the
        stored max concentrations, and reconstructed with the target.
        """
        batch = to_batch(images, self.device)
        if len(params) != batch.n:
            raise ValueError(f"apply: {batch.n} images but stain parameters for {len(params)}")
        if abs(params.Io - self.Io) > 1e-9:
            raise ValueError(f"apply: parameters were fitted with Io={params.Io:g}, this normalizer uses Io={self.Io:g}")
        dev = batch.pixels.device
        sm_all = torch.as_tensor(params.stain_matrix, device=dev)
        mc_all = torch.as_tensor(params.max_conc, device=dev)
        ok_all = torch.as_tensor(params.ok, device=dev)
        status = list(params.status)
        if self._use_numba(batch):
            enforce_policy(self.policy, status, self._details(params, batch.pixels.shape[1]))
            out = self._numba_apply(batch.pixels, params)
            return NormalizeResult(images=batch.restore(out), status=status, params=params)
        outs = []
        for sl in self._chunks(batch):
            px = batch.pixels[sl]
            out, finite = self._apply_chunk(px, optical_density(px, self.Io), sm_all[sl], mc_all[sl], ok_all[sl])
            outs.append(out)
            for j in torch.nonzero(~finite & ok_all[sl]).flatten().tolist():
                status[sl.start + j] = "nonfinite"
        enforce_policy(self.policy, status, self._details(params, batch.pixels.shape[1]))
        return NormalizeResult(images=batch.restore(torch.cat(outs)), status=status, params=params)

    def normalize(self, images: Any) -> NormalizeResult:
        """Fit and apply in one pass. ``images``: see :mod:`exaonepath_lab.stain.layout`.

        A list of (H, W, 3) images of different sizes is accepted too (grouped by size);
        then ``images`` in the result is a list.
        """
        if isinstance(images, (list, tuple)):
            return self._normalize_list(images)
        batch = to_batch(images, self.device)
        if self._use_numba(batch):
            out, params = self._numba_fit(batch.pixels, do_apply=True)
            enforce_policy(self.policy, params.status, self._details(params, batch.pixels.shape[1]))
            return NormalizeResult(images=batch.restore(out), status=params.status, params=params)
        outs, parts = [], []
        for sl in self._chunks(batch):
            px = batch.pixels[sl]
            od = optical_density(px, self.Io)
            est = self._estimate(od)
            ok = est["code"] == OK_CODE
            est.pop("conc")
            out, finite = self._apply_chunk(px, od, est["stain_matrix"], est["max_conc"], ok)
            est["code"] = torch.where(ok & ~finite, 3, est["code"])
            outs.append(out)
            parts.append(self._params(est))
        params = StainParams.concat(parts)
        enforce_policy(self.policy, params.status, self._details(params, batch.pixels.shape[1]))
        return NormalizeResult(images=batch.restore(torch.cat(outs)), status=params.status, params=params)

    def _normalize_list(self, images: Sequence[Any]) -> NormalizeResult:
        if not images:
            raise ValueError("normalize: empty list of images")
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(np.shape(im)), []).append(i)
        out: list[Any] = [None] * len(images)
        status: list[str] = [""] * len(images)
        parts: list[tuple[list[int], StainParams]] = []
        for idx in groups.values():
            if isinstance(images[idx[0]], torch.Tensor):
                res = self.normalize(torch.stack([images[i] for i in idx]))
            else:
                res = self.normalize(np.stack([np.asarray(images[i]) for i in idx]))
            for j, i in enumerate(idx):
                out[i] = res.images[j]
                status[i] = res.status[j]
            parts.append((idx, res.params))
        order = np.argsort(np.concatenate([np.array(idx) for idx, _ in parts]))
        params = StainParams.concat([p for _, p in parts])[order]
        return NormalizeResult(images=out, status=status, params=params)

    def __call__(self, images: Any) -> Any:
        """Shortcut: ``normalize(images).images``."""
        return self.normalize(images).images
