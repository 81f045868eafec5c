"""Fused CPU kernels (numba) for batched Macenko: the fast path on CPU.

Eager torch needs ~25 full passes over an (N, H·W, 3) float tensor for one Macenko
batch, plus full sorts/``kthvalue`` for the percentiles; on a 2-core machine that is
no faster than torchstain's per-image loop. These kernels do the same computation in
four fused passes per image (image ranges in parallel threads, GIL released):

1. OD by a 256-entry lookup table (the exact float32 values torchstain computes),
   tissue test ``max(R, G, B) ≤ T`` (OD is decreasing in intensity, so "OD ≥ beta in
   every channel" is "the brightest channel ≤ T"), float64 sums for the covariance.
2. Projection of tissue pixels on the top-2 eigenvector plane and a *pseudo-angle*
   (monotone in ``atan2``, no trigonometry); the alpha and 100−alpha nearest-rank
   percentiles by quickselect; the stain vector is the selected pixel's normalized
   projection, i.e. ``E·(cos φ, sin φ)``.
3. Concentrations of every pixel (3 table look-ups each) and their 99th percentile by
   quickselect.
4. Reconstruction ``Io·exp(−OD·M)`` factorized per channel into 9 tables of 256
   values (``exp(a+b+c) = exp(a)·exp(b)·exp(c)``), clipped at 255, truncated.

Statuses and thresholds are those of :func:`exaonepath_lab.stain.estimate.estimate_stains`;
``tests/test_stain_macenko.py`` checks both paths agree.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def kernels():  # pragma: no cover - exercised through MacenkoNormalizer
    """Import (compile, or load from numba's cache) and return ``(fit_apply, apply)``."""
    from . import _numba_macenko as k

    return k.fit_apply, k.apply


def run_parallel(kernel, n_images: int, *args) -> None:
    """Call ``kernel(*args, i0, i1)`` over ``range(n_images)`` in chunks, on several threads.

    Threads = ``torch.get_num_threads()`` (the kit's one knob for CPU parallelism); the
    kernels release the GIL, so the chunks run truly in parallel. Chunks (~8 per thread)
    are handed out as threads become free, so a core slowed by another process, or a
    run of tissue-heavy images, does not leave the other cores idle at the end of a batch.
    """
    import itertools
    import threading

    import torch

    n_threads = max(1, min(torch.get_num_threads(), n_images))
    if n_threads == 1:
        kernel(*args, 0, n_images)
        return
    step = max(1, -(-n_images // (8 * n_threads)))
    starts = itertools.count(0, step)  # next() is atomic under the GIL
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while not errors:
                i0 = next(starts)
                if i0 >= n_images:
                    return
                kernel(*args, i0, min(i0 + step, n_images))
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads - 1)]
    for t in threads:
        t.start()
    worker()  # the calling thread works too
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def available() -> bool:
    """True when numba can be imported (it ships with umap-learn, a kit dependency)."""
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=8)
def od_lut(Io: float) -> np.ndarray:
    """(256,) float64 of torchstain's float32 OD per intensity: −log((v + 1) / Io)."""
    import torch

    v = torch.arange(256, dtype=torch.uint8)
    return (-torch.log((v.float() + 1) / Io)).double().numpy()


def tissue_max_intensity(lut: np.ndarray, beta: float) -> int:
    """Largest intensity whose OD ≥ beta (−1 if none): a pixel is tissue iff max(R,G,B) ≤ it."""
    ok = np.nonzero(lut.astype(np.float32) >= np.float32(beta))[0]
    return int(ok.max()) if len(ok) else -1


def rank99(n_px: int) -> int:
    """0-based nearest rank of the 99th percentile over ``n_px`` values (torchstain's rule)."""
    return int(round((0.01 * 99.0) * (n_px - 1)))
