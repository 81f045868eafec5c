"""WSI-specific feature collapse, measured in feature space (PROTOCOL §5).

All metrics use L2-normalised features with Euclidean distance (= cosine ranking), the
geometry DINO features are compared in. Each comes with a chance level from the slide
(and label) proportions, and a bootstrap confidence interval.

==================  =============================================  ============  =========
metric              definition                                      collapse ->   chance
==================  =============================================  ============  =========
knn_slide_purity    (P − E)/(1 − E); P = mean share of a point's     higher        0
                    k nearest neighbours from its own slide,
                    E = Σ n_s(n_s−1) / (N(N−1))
ilisi               median over points of (LISI − 1)/(S − 1);        lower         same with
                    LISI = inverse Simpson index of slides in a                    slide labels
                    Gaussian neighbourhood of perplexity 30 (90 NN)                permuted
slide_silhouette    mean silhouette with slide as the label          higher        0
slide_probe_bacc    balanced accuracy of a cross-validated           higher        1/S
                    logistic regression predicting the slide
robustness_index    SO/(SO+OS) over k-NN pairs with known labels     lower         from the
                    (SO: same label other slide; OS: other label                   label×slide
                    same slide; PathoROB)                                          table
==================  =============================================  ============  =========

Bootstrap: per-point scores are computed once on the full sample (neighbourhoods fixed);
the CI resamples **slides** with replacement (cluster bootstrap: patches of one slide are
not independent, so resampling points would give too-narrow intervals) and recomputes each
statistic from the per-point scores of the drawn slides. ``bootstrap="points"`` resamples
points instead. Percentile interval, seeded.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ["features", "metric", "value", "ci_low", "ci_high", "chance", "n", "n_slides", "params"]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(features: np.ndarray, k: int, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) neighbour indices and Euclidean distances on L2-normalised rows, self excluded.

    Exact brute force in chunks of ``chunk`` rows (torch matmul; ~1 s for 10,000 × 768 on 2
    cores). The point itself is excluded by index, so exact duplicates still count as neighbours.
    """
    import torch

    x = torch.from_numpy(l2_normalize(features))
    n = len(x)
    k = int(min(k, n - 1))
    chunk = max(64, min(chunk, 100_000_000 // max(n, 1)))  # a chunk × N similarity block stays ≤ 400 MB
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, chunk):
        sim = x[lo:lo + chunk] @ x.T
        r = torch.arange(sim.shape[0])
        sim[r, r + lo] = -float("inf")
        val, ind = sim.topk(k, dim=1)
        idx[lo:lo + chunk] = ind.numpy()
        dist[lo:lo + chunk] = (2.0 - 2.0 * val).clamp_min(0).sqrt().numpy()
    return idx, dist


def silhouette_per_point(features: np.ndarray, slides: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
    """(N,) silhouette values with ``slides`` as clusters, Euclidean on L2-normalised rows.

    Same definition as ``sklearn.metrics.silhouette_samples`` (0 for singleton clusters),
    computed with chunked torch matmuls instead of a pairwise-distance pass.
    """
    import torch

    x = torch.from_numpy(l2_normalize(features))
    codes = np.unique(np.asarray(slides).astype(str), return_inverse=True)[1]
    n, c = len(x), int(codes.max()) + 1
    chunk = max(64, min(chunk, 50_000_000 // max(n, 1)))
    onehot = torch.zeros(n, c)
    onehot[torch.arange(n), torch.from_numpy(codes)] = 1.0
    size = onehot.sum(0)
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, chunk):
        d = (2.0 - 2.0 * (x[lo:lo + chunk] @ x.T)).clamp_min(0).sqrt()
        r = torch.arange(d.shape[0])
        d[r, r + lo] = 0.0
        sums = (d.double() @ onehot.double())
        own = torch.from_numpy(codes[lo:lo + chunk])
        n_own = size[own].double()
        a = sums[r, own] / (n_own - 1).clamp_min(1)
        means = sums / size.double()
        means[r, own] = float("inf")
        b = means.min(1).values
        sil = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
        sil[n_own <= 1] = 0.0
        out[lo:lo + chunk] = sil.numpy()
    return out


def knn_purity_per_point(nbrs: np.ndarray, slides: np.ndarray) -> np.ndarray:
    """(N,) share of each point's neighbours (``nbrs`` N×k) from its own slide."""
    return (slides[nbrs] == slides[:, None]).mean(1)


def purity_chance(slides: np.ndarray) -> float:
    """E = Σ_s n_s(n_s−1) / (N(N−1)): expected same-slide share of a random other point."""
    _, n_s = np.unique(slides, return_counts=True)
    n = n_s.sum()
    return float((n_s * (n_s - 1)).sum() / (n * (n - 1)))


def normalized_purity(p: float, e: float) -> float:
    return float((p - e) / (1.0 - e)) if e < 1 else float("nan")


def lisi_weights(dist: np.ndarray, perplexity: float = 30.0, n_iter: int = 50, tol: float = 1e-5) -> np.ndarray:
    """(N, m) Gaussian neighbour weights exp(−β·d), rows summing to 1, each of given perplexity.

    As Harmony's ``compute_lisi``: β per point by binary search so that the entropy of the
    weights over the m neighbours is log(perplexity).
    """
    n = len(dist)
    target = np.log(perplexity)
    beta = np.ones(n)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    d = (dist - dist[:, :1]).astype(np.float64)  # shift for stability; the weights are invariant to it
    for _ in range(n_iter):
        p = np.exp(-d * beta[:, None])
        s = p.sum(1)
        diff = np.log(s) + beta * (d * p).sum(1) / s - target
        if np.all(np.abs(diff) < tol):
            break
        up = diff > 0  # entropy too high -> sharpen (larger beta)
        lo = np.where(up, beta, lo)
        hi = np.where(up, hi, beta)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2, (beta + hi) / 2),
                        np.where(np.isinf(lo), beta / 2, (beta + lo) / 2))
    p = np.exp(-d * beta[:, None])
    return p / p.sum(1, keepdims=True)


def inverse_simpson(weights: np.ndarray, nbrs: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N,) 1 / Σ_s (Σ_{j∈s} w_j)²: effective number of slides (``codes`` ints) around each point."""
    lab = codes[nbrs]
    simpson = np.zeros(len(nbrs))
    for c in range(int(codes.max()) + 1):
        simpson += ((lab == c) * weights).sum(1) ** 2
    return 1.0 / simpson


def lisi_per_point(dist: np.ndarray, nbrs: np.ndarray, slides: np.ndarray, perplexity: float = 30.0) -> np.ndarray:
    """(N,) LISI of ``slides`` over the neighbours ``nbrs`` (N×m) at distances ``dist``."""
    codes = np.unique(np.asarray(slides).astype(str), return_inverse=True)[1]
    return inverse_simpson(lisi_weights(dist, perplexity), nbrs, codes)


def robustness_counts(nbrs: np.ndarray, slides: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point: (SO, OS) counts over its k-NN pairs where both labels are known (≥ 0)."""
    known = (labels[:, None] >= 0) & (labels[nbrs] >= 0)
    same_lab = labels[nbrs] == labels[:, None]
    same_sl = slides[nbrs] == slides[:, None]
    so = (known & same_lab & ~same_sl).sum(1)
    os_ = (known & ~same_lab & same_sl).sum(1)
    return so, os_


def robustness_chance(slides: np.ndarray, labels: np.ndarray) -> float:
    """RI of random pairs: SO and OS counted over all ordered pairs of labelled points."""
    m = labels >= 0
    t = pd.crosstab(slides[m], labels[m]).to_numpy().astype(float)
    so = ((t.sum(0) ** 2) - (t ** 2).sum(0)).sum()
    os_ = ((t.sum(1) ** 2) - (t ** 2).sum(1)).sum()
    return float(so / (so + os_)) if so + os_ > 0 else float("nan")


def probe_predictions(features: np.ndarray, slides: np.ndarray, *, folds: int = 5, seed: int = 0,
                      pca_dims: int | None = 128, weight_decay: float = 1e-4, max_iter: int = 100) -> np.ndarray:
    """Out-of-fold slide predictions of a linear softmax probe (stratified K-fold, seeded).

    Features are standardised and projected on their leading ``pca_dims`` principal components
    (label-free, fitted once; keeps 10,000 × 768 at seconds on 2 cores; None = full features); per fold a
    multinomial logistic regression with L2 penalty ``weight_decay`` by full-batch L-BFGS (scipy;
    scikit-learn's LogisticRegression fits the same model but was several times slower on 2 shared cores).
    """
    from sklearn.model_selection import StratifiedKFold

    uniq, y = np.unique(np.asarray(slides).astype(str), return_inverse=True)
    counts = np.bincount(y)
    folds = int(min(folds, counts.min()))
    if folds < 2:
        raise ValueError(f"slide probe: a slide has {counts.min()} patch(es); need ≥ 2 per slide for cross-validation")
    x_all = np.asarray(features, dtype=np.float64)
    # Label-free preprocessing, fitted once on all points (no slide labels involved, so no leakage):
    # standardise, then project on the top principal axes from the D×D covariance (one matmul).
    x_all = (x_all - x_all.mean(0)) / np.maximum(x_all.std(0), 1e-6)
    if pca_dims is not None and x_all.shape[1] > pca_dims:
        _, vecs = np.linalg.eigh(x_all.T @ x_all)
        x_all = x_all @ vecs[:, ::-1][:, : int(pca_dims)]
    pred = np.empty(len(y), dtype=np.int64)
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        w, b = _fit_softmax(x_all[tr], y[tr], len(uniq), weight_decay, max_iter)
        pred[te] = (x_all[te] @ w + b).argmax(1)
    return uniq[pred]


def _fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float,
                 max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (D×C weights, C bias) by scipy L-BFGS from zero init.

    (numpy + scipy rather than torch.optim, whose first use imports torch._dynamo: seconds per process.)
    """
    from scipy.optimize import minimize

    n, d = x.shape
    onehot = np.eye(n_classes)[y]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes:]
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        lse = np.log(np.exp(z).sum(1, keepdims=True))
        p = np.exp(z - lse)
        loss = -(onehot * (z - lse)).sum() / n + weight_decay * (w ** 2).sum()
        g = (p - onehot) / n
        return loss, np.concatenate([(x.T @ g + 2 * weight_decay * w).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(d * n_classes + n_classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter})
    return res.x[: d * n_classes].reshape(d, n_classes), res.x[d * n_classes:]


def _balanced_acc(y: np.ndarray, p: np.ndarray) -> float:
    classes = np.unique(y)
    return float(np.mean([(p[y == c] == c).mean() for c in classes]))


def collapse_metrics(
    features: np.ndarray,
    meta: pd.DataFrame,
    *,
    name: str = "features",
    k: int = 15,
    perplexity: float = 30.0,
    n_boot: int = 200,
    seed: int = 0,
    bootstrap: str = "slides",
    slide_col: str = "slide_id",
    label_col: str = "label",
    probe: bool = True,
    silhouette_max_n: int = 10000,
) -> pd.DataFrame:
    """Tidy table of collapse metrics for one feature set (rows: metric; see module docstring).

    Args:
        features: (N, D) float; meta: N rows with ``slide_col`` (and ``label_col`` for RI).
        k: neighbours for purity and RI (15: local structure, robust at 1,000 patches per slide).
        perplexity: iLISI neighbourhood (30, as the paper's t-SNE and Harmony's LISI); uses 3·perplexity NN.
        n_boot: bootstrap replicates (0 = no CI); bootstrap: ``"slides"`` (cluster) or ``"points"``.
    """
    x = np.asarray(features, dtype=np.float32)
    if len(x) != len(meta):
        raise ValueError(f"collapse_metrics({name}): {len(x)} feature rows but {len(meta)} meta rows")
    if slide_col not in meta.columns:
        raise ValueError(f"collapse_metrics({name}): meta lacks {slide_col!r}")
    if bootstrap not in ("slides", "points"):
        raise ValueError(f"bootstrap must be 'slides' or 'points', got {bootstrap!r}")
    slides = meta[slide_col].astype(str).to_numpy()
    uniq, n_s = np.unique(slides, return_counts=True)
    n_sl = len(uniq)
    if n_sl < 2:
        raise ValueError(f"collapse_metrics({name}): need ≥ 2 slides, got {n_sl}")
    m = max(k, int(3 * perplexity))
    nbrs_all, dist_all = knn(x, m)
    nbrs = nbrs_all[:, :k]

    per: dict[str, np.ndarray] = {}
    stat: dict[str, Any] = {}
    chance: dict[str, float] = {}

    e = purity_chance(slides)
    per["knn_slide_purity"] = knn_purity_per_point(nbrs, slides)
    stat["knn_slide_purity"] = lambda ix: normalized_purity(per["knn_slide_purity"][ix].mean(), e)
    chance["knn_slide_purity"] = 0.0

    w = lisi_weights(dist_all, perplexity=min(perplexity, nbrs_all.shape[1] / 3.0))
    codes = np.unique(slides, return_inverse=True)[1]
    per["ilisi"] = (inverse_simpson(w, nbrs_all, codes) - 1.0) / (n_sl - 1.0)
    stat["ilisi"] = lambda ix: float(np.median(per["ilisi"][ix]))
    # Chance = perfectly mixed slides *for these neighbourhood weights*: slide labels permuted,
    # weights fixed (a finite, peaked neighbourhood never reaches the population's 1/Σp²).
    prng = np.random.default_rng(seed + 1)
    chance["ilisi"] = float(np.mean([np.median((inverse_simpson(w, nbrs_all, prng.permutation(codes)) - 1.0)
                                               / (n_sl - 1.0)) for _ in range(5)]))

    if len(x) <= silhouette_max_n:
        per["slide_silhouette"] = silhouette_per_point(x, slides)
        stat["slide_silhouette"] = lambda ix: float(per["slide_silhouette"][ix].mean())
        chance["slide_silhouette"] = 0.0

    if probe:
        pred = probe_predictions(x, slides, seed=seed)
        stat["slide_probe_bacc"] = lambda ix: _balanced_acc(slides[ix], pred[ix])
        chance["slide_probe_bacc"] = 1.0 / n_sl

    if label_col in meta.columns:
        labels = pd.to_numeric(meta[label_col], errors="coerce").fillna(-1).astype(int).to_numpy()
        if (labels >= 0).sum() > 1 and len(np.unique(labels[labels >= 0])) > 1:
            so, os_ = robustness_counts(nbrs, slides, labels)
            stat["robustness_index"] = lambda ix: float(so[ix].sum() / max(so[ix].sum() + os_[ix].sum(), 1))
            chance["robustness_index"] = robustness_chance(slides, labels)

    full = np.arange(len(x))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(slides == s) for s in uniq]
    boots: dict[str, list[float]] = {kname: [] for kname in stat}
    for _ in range(int(n_boot)):
        if bootstrap == "slides":
            ix = np.concatenate([groups[g] for g in rng.integers(0, n_sl, n_sl)])
        else:
            ix = rng.integers(0, len(x), len(x))
        for kname, f in stat.items():
            boots[kname].append(f(ix))
    params = {"k": k, "perplexity": perplexity, "n_boot": n_boot, "bootstrap": bootstrap, "seed": seed}
    rows = []
    for kname, f in stat.items():
        b = np.asarray(boots[kname], dtype=float)
        b = b[np.isfinite(b)]
        lo, hi = (np.percentile(b, [2.5, 97.5]) if len(b) else (np.nan, np.nan))
        rows.append({"features": name, "metric": kname, "value": f(full), "ci_low": float(lo), "ci_high": float(hi),
                     "chance": chance[kname], "n": len(x), "n_slides": n_sl, "params": str(params)})
    return pd.DataFrame(rows, columns=COLUMNS)


def metrics_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per feature set, one column per metric (values only), for captions and printing."""
    return table.pivot_table(index="features", columns="metric", values="value", sort=False)


def format_metrics(table: pd.DataFrame, features: str) -> str:
    """Short caption text for one feature set: 'purity 0.62 [0.55, 0.70] · iLISI ...'."""
    short = {"knn_slide_purity": "k-NN purity", "ilisi": "iLISI", "slide_silhouette": "silhouette",
             "slide_probe_bacc": "slide probe", "robustness_index": "RI"}
    rows = table[table["features"] == features]
    return " · ".join(f"{short.get(r.metric, r.metric)} {r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                      for r in rows.itertuples())
