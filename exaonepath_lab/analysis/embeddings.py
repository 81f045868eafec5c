"""2-D embeddings of features: t-SNE (openTSNE, the paper's method), UMAP, PCA.

t-SNE defaults: features are L2-normalised and reduced to 50 PCA dimensions first (the
common practice for t-SNE on deep features; it makes 10,000 × 768 take seconds rather than
minutes), PCA initialisation (reproducible global layout), FFT-accelerated gradients,
``n_jobs=2`` (on an oversubscribed machine ``n_jobs=1`` is faster). Below 5,000 points
Barnes-Hut gradients replace FFT (FFT's fixed interpolation grid dominates at small N). The result carries its parameters in :attr:`Embedding.params`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

METHODS = ("tsne", "umap", "pca")


@dataclasses.dataclass
class Embedding:
    """``coords`` (N, 2) float32 and the parameters that produced them."""

    coords: np.ndarray
    params: dict[str, Any]


def _prepare(features: np.ndarray, l2: bool, pca_dims: int | None, seed: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"embed: expected features (N ≥ 3, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embed: features contain NaN/inf; check the extraction (norm_status) before embedding")
    if l2:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if pca_dims is not None and x.shape[1] > pca_dims and len(x) > pca_dims:
        from sklearn.decomposition import PCA

        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x).astype(np.float32)
    return x


def embed(
    features: np.ndarray,
    method: str = "tsne",
    *,
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    pca_dims: int | None = 50,
    l2: bool = True,
    n_jobs: int = 2,
    n_iter: int = 500,
) -> Embedding:
    """Embed (N, D) features in 2-D with ``method`` in ``tsne | umap | pca``; seeded.

    ``perplexity`` (t-SNE) is clipped to (N − 1)/3 for tiny inputs, as openTSNE requires.
    ``n_iter`` is openTSNE's optimisation phase after 250 early-exaggeration iterations.
    """
    if method not in METHODS:
        raise ValueError(f"embed: unknown method {method!r}; choose one of {METHODS}")
    params: dict[str, Any] = {"method": method, "seed": seed, "l2": l2, "n": int(len(features))}
    if method == "pca":
        x = _prepare(features, l2, None, seed)
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        x = _prepare(features, l2, pca_dims, seed)
        from openTSNE import TSNE

        perp = float(min(perplexity, max(1.0, (len(x) - 1) / 3.0)))
        # FFT interpolation costs a fixed grid per iteration: Barnes-Hut is faster below a few thousand points.
        grad = "fft" if len(x) >= 5000 else "bh"
        # Small inputs: threads only add synchronisation (measured 3.7 s with 1 thread vs 50 s with 2 on a
        # busy 2-core machine for 120 points), so parallelism is kept for the large case only.
        n_jobs = n_jobs if len(x) >= 5000 else 1
        params.update(perplexity=perp, pca_dims=pca_dims, initialization="pca", n_iter=n_iter,
                      negative_gradient_method=grad, n_jobs=n_jobs)
        coords = np.asarray(TSNE(perplexity=perp, initialization="pca", n_jobs=n_jobs, random_state=seed,
                                 n_iter=n_iter, negative_gradient_method=grad, verbose=False).fit(x))
    else:
        x = _prepare(features, l2, pca_dims, seed)
        try:
            import umap
        except ImportError as e:  # pragma: no cover - in the environment
            raise ImportError("embed(method='umap') needs umap-learn: pip install umap-learn") from e
        nn_ = int(min(n_neighbors, len(x) - 1))
        params.update(n_neighbors=nn_, min_dist=min_dist, pca_dims=pca_dims)
        # random_state makes UMAP deterministic (and single-threaded); n_jobs is then ignored.
        coords = umap.UMAP(n_neighbors=nn_, min_dist=min_dist, random_state=seed, n_components=2).fit_transform(x)
    return Embedding(np.asarray(coords, dtype=np.float32), params)
