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
                    Gaussian neighbourhood of perplexity 30 (90 NN),               permuted
                    fixed (``lisi_perplexity``; not the t-SNE's)
slide_silhouette    mean silhouette with slide as the label          higher        0
slide_probe_bacc    balanced accuracy of a cross-validated           higher        1/S
                    logistic regression predicting the slide
so_share            SO/(SO+OS) over k-NN pairs with known labels     lower         from the
                    (SO: same label, other slide; OS: other label,                 label×slide
                    same slide)                                                    table
==================  =============================================  ============  =========

``so_share`` is the kit's *slide-level* variant of a robustness index. It is **not** PathoROB's
robustness index (de Jong et al. 2025; Kömen et al., PathoROB), which contrasts biological class
with *medical centre* on balanced class × centre subsets; the kit uses slide instead of centre and
all labelled points at once, so its values are not comparable with PathoROB's. It is computed only
when some class occurs on ≥ 2 slides (otherwise SO pairs cannot exist and the number would be a
meaningless 0); else its row says ``n/a`` with the reason in ``note``.

A metric that cannot be computed on the input (no labels, one patch per slide for the probe) is a
row with ``value`` NaN and the reason in ``note``, never a number.

Bootstrap: per-point scores are computed once on the full sample (neighbourhoods fixed);
the CI resamples **slides** with replacement (cluster bootstrap: patches of one slide are
not independent, so resampling points would give too-narrow intervals) and recomputes each
statistic from the per-point scores of the drawn slides; a slide drawn twice counts twice
(also as two classes of the slide-probe's balanced accuracy). ``bootstrap="points"`` resamples
points instead. Percentile interval, seeded. :func:`paired_differences` draws the *same* slides
for two feature sets of the same patches and gives each difference with its interval.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..probing.knn import nearest_neighbours
from ..probing.metrics import balanced_accuracy

COLUMNS = ["features", "metric", "value", "ci_low", "ci_high", "chance", "n", "n_slides", "params", "note"]
DIFF_COLUMNS = ["a", "b", "metric", "difference", "ci_low", "ci_high", "n_slides", "n_boot", "note"]
#: metric -> (short label, direction that means *less* slide clustering).
METRICS = {
    "knn_slide_purity": ("k-NN slide purity", "↓"),
    "ilisi": ("iLISI", "↑"),
    "slide_silhouette": ("slide silhouette", "↓"),
    "slide_probe_bacc": ("slide-ID probe bacc", "↓"),
    "so_share": ("SO share (class vs slide; not PathoROB's RI)", "↑"),
}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(features: np.ndarray, k: int, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) neighbour indices and Euclidean distances on L2-normalised rows, self excluded.

    The search is the kit's one (:func:`exaonepath_lab.probing.knn.nearest_neighbours`); distances
    are ``sqrt(2 − 2·cos)``.
    """
    idx, sim = nearest_neighbours(features, k, chunk=chunk)
    return idx, np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, None)).astype(np.float32)


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


def lisi_weights(dist: np.ndarray, perplexity: float = 30.0, *, n_iter: int = 50, tol: float = 1e-5) -> np.ndarray:
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


def so_os_counts(nbrs: np.ndarray, slides: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point: (SO, OS) counts over its k-NN pairs where both labels are known (≥ 0)."""
    known = (labels[:, None] >= 0) & (labels[nbrs] >= 0)
    same_lab = labels[nbrs] == labels[:, None]
    same_sl = slides[nbrs] == slides[:, None]
    so = (known & same_lab & ~same_sl).sum(1)
    os_ = (known & ~same_lab & same_sl).sum(1)
    return so, os_


def so_share_chance(slides: np.ndarray, labels: np.ndarray) -> float:
    """SO share of random pairs: SO and OS counted over all ordered pairs of labelled points."""
    m = labels >= 0
    t = pd.crosstab(slides[m], labels[m]).to_numpy().astype(float)
    so = ((t.sum(0) ** 2) - (t ** 2).sum(0)).sum()
    os_ = ((t.sum(1) ** 2) - (t ** 2).sum(1)).sum()
    return float(so / (so + os_)) if so + os_ > 0 else float("nan")


def so_share_applicable(slides: np.ndarray, labels: np.ndarray | None) -> str:
    """'' when the SO share can be computed, else the reason it cannot (for the ``note`` column)."""
    if labels is None or not (labels >= 0).any():
        return "no class labels (needs a 'label' column with classes ≥ 0, e.g. extract --class-dirs)"
    m = labels >= 0
    if len(np.unique(labels[m])) < 2:
        return "only one class is labelled; needs ≥ 2 classes"
    t = pd.crosstab(slides[m], labels[m])
    if not ((t > 0).sum(axis=0) >= 2).any():
        return "no class occurs on ≥ 2 slides, so same-class-other-slide pairs cannot exist"
    return ""


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


def slide_bacc_stat(slides: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray, np.ndarray | None], float]:
    """Balanced accuracy of slide predictions as a bootstrap statistic ``f(ix, draw)``.

    With a slide-bootstrap ``draw`` (indices of the slide groups drawn, sorted slide order), each
    drawn copy of a slide is a class of its own: the statistic is the mean per-slide recall over the
    draws, so a slide drawn twice weighs twice (``np.unique`` over the resampled labels would count it
    once and make the interval ~20 % too narrow). Without a draw: balanced accuracy of rows ``ix``.
    """
    slides = np.asarray(slides).astype(str)
    pred = np.asarray(pred).astype(str)
    uniq, codes = np.unique(slides, return_inverse=True)
    recall = np.array([np.mean(pred[codes == g] == uniq[g]) for g in range(len(uniq))])

    def f(ix: np.ndarray, draw: np.ndarray | None) -> float:
        return float(recall[draw].mean()) if draw is not None else balanced_accuracy(slides[ix], pred[ix])

    return f


@dataclasses.dataclass
class CollapseScores:
    """Per-point scores of one feature set and the statistics over them (see :func:`collapse_scores`).

    ``stats`` maps metric -> ``f(ix, draw)``: the statistic over rows ``ix`` (``draw``: the slide
    groups drawn, or None for the full sample / a point bootstrap). ``notes`` maps a metric that
    cannot be computed to its reason.
    """

    name: str
    slides: np.ndarray
    groups: list[np.ndarray]
    stats: dict[str, Callable[[np.ndarray, np.ndarray | None], float]]
    chance: dict[str, float]
    notes: dict[str, str]
    params: dict[str, Any]

    @property
    def n_slides(self) -> int:
        return len(self.groups)

    def draws(self, n_boot: int, seed: int, bootstrap: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``n_boot`` seeded replicates as (rows, slide groups drawn) pairs."""
        rng = np.random.default_rng(seed)
        out = []
        n_sl, n = self.n_slides, len(self.slides)
        for _ in range(int(n_boot)):
            if bootstrap == "slides":
                draw = rng.integers(0, n_sl, n_sl)
                out.append((np.concatenate([self.groups[g] for g in draw]), draw))
            else:
                out.append((rng.integers(0, n, n), None))
        return out

    def value(self, metric: str) -> float:
        return float(self.stats[metric](np.arange(len(self.slides)), None))


def collapse_scores(
    features: np.ndarray,
    meta: pd.DataFrame,
    *,
    name: str = "features",
    k: int = 15,
    lisi_perplexity: float = 30.0,
    seed: int = 0,
    slide_col: str = "slide_id",
    label_col: str = "label",
    probe: bool = True,
    silhouette_max_n: int = 10000,
) -> CollapseScores:
    """Per-point scores and statistic functions of one feature set (the part of the work done once)."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) != len(meta):
        raise ValueError(f"collapse_metrics({name}): {len(x)} feature rows but {len(meta)} meta rows")
    if slide_col not in meta.columns:
        raise ValueError(f"collapse_metrics({name}): meta lacks {slide_col!r}")
    slides = meta[slide_col].astype(str).to_numpy()
    uniq, codes, n_s = np.unique(slides, return_inverse=True, return_counts=True)
    n_sl = len(uniq)
    if n_sl < 2:
        raise ValueError(f"collapse_metrics({name}): need ≥ 2 slides, got {n_sl}; every metric compares slides")
    m = max(k, int(3 * lisi_perplexity))
    nbrs_all, dist_all = knn(x, m)
    nbrs = nbrs_all[:, :k]
    stat: dict[str, Callable[[np.ndarray, np.ndarray | None], float]] = {}
    chance: dict[str, float] = {}
    notes: dict[str, str] = {}

    e = purity_chance(slides)
    pur = knn_purity_per_point(nbrs, slides)
    stat["knn_slide_purity"] = lambda ix, d: normalized_purity(pur[ix].mean(), e)
    chance["knn_slide_purity"] = 0.0

    w = lisi_weights(dist_all, perplexity=min(lisi_perplexity, nbrs_all.shape[1] / 3.0))
    lisi = (inverse_simpson(w, nbrs_all, codes) - 1.0) / (n_sl - 1.0)
    stat["ilisi"] = lambda ix, d: float(np.median(lisi[ix]))
    # Chance = perfectly mixed slides *for these neighbourhood weights*: slide labels permuted,
    # weights fixed (a finite, peaked neighbourhood never reaches the population's 1/Σp²).
    prng = np.random.default_rng(seed + 1)
    chance["ilisi"] = float(np.mean([np.median((inverse_simpson(w, nbrs_all, prng.permutation(codes)) - 1.0)
                                               / (n_sl - 1.0)) for _ in range(5)]))

    if len(x) <= silhouette_max_n:
        sil = silhouette_per_point(x, slides)
        stat["slide_silhouette"] = lambda ix, d: float(sil[ix].mean())
        chance["slide_silhouette"] = 0.0

    groups = [np.flatnonzero(codes == g) for g in range(n_sl)]
    if probe:
        chance["slide_probe_bacc"] = 1.0 / n_sl
        if n_s.min() < 2:
            few = uniq[n_s < 2].tolist()
            notes["slide_probe_bacc"] = (f"needs ≥ 2 patches per slide for cross-validation; {len(few)} slide(s) have 1 "
                                         f"({', '.join(few[:5])}); sample with min_per_slide ≥ 2")
        else:
            stat["slide_probe_bacc"] = slide_bacc_stat(slides, probe_predictions(x, slides, seed=seed))

    labels = (pd.to_numeric(meta[label_col], errors="coerce").fillna(-1).astype(int).to_numpy()
              if label_col in meta.columns else None)
    why = so_share_applicable(slides, labels)
    if why:
        notes["so_share"] = why
        chance["so_share"] = float("nan")
    else:
        so, os_ = so_os_counts(nbrs, slides, labels)
        stat["so_share"] = lambda ix, d: float(so[ix].sum() / max(so[ix].sum() + os_[ix].sum(), 1))
        chance["so_share"] = so_share_chance(slides, labels)
    params = {"k": k, "lisi_perplexity": lisi_perplexity, "seed": seed}
    return CollapseScores(name, slides, groups, stat, chance, notes, params)


def _interval(values: list[float]) -> tuple[float, float]:
    b = np.asarray(values, dtype=float)
    b = b[np.isfinite(b)]
    if not len(b):
        return float("nan"), float("nan")
    lo, hi = np.percentile(b, [2.5, 97.5])
    return float(lo), float(hi)


def metrics_from_scores(scores: CollapseScores, *, n_boot: int = 200, seed: int = 0,
                        bootstrap: str = "slides") -> pd.DataFrame:
    """The tidy metrics table (see :func:`collapse_metrics`) from precomputed :class:`CollapseScores`."""
    if bootstrap not in ("slides", "points"):
        raise ValueError(f"bootstrap must be 'slides' or 'points', got {bootstrap!r}")
    draws = scores.draws(n_boot, seed, bootstrap)
    params = {**scores.params, "n_boot": n_boot, "bootstrap": bootstrap}
    rows = []
    for metric in [m for m in METRICS if m in scores.stats or m in scores.notes]:
        base = {"features": scores.name, "metric": metric, "chance": scores.chance.get(metric, float("nan")),
                "n": len(scores.slides), "n_slides": scores.n_slides, "params": str(params)}
        if metric in scores.notes:
            rows.append({**base, "value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "note": scores.notes[metric]})
            continue
        f = scores.stats[metric]
        lo, hi = _interval([f(ix, d) for ix, d in draws])
        rows.append({**base, "value": scores.value(metric), "ci_low": lo, "ci_high": hi, "note": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


def collapse_metrics(
    features: np.ndarray,
    meta: pd.DataFrame,
    *,
    name: str = "features",
    k: int = 15,
    lisi_perplexity: float = 30.0,
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
        features: (N, D) float; meta: N rows with ``slide_col`` (and ``label_col`` for the SO share).
        k: neighbours for purity and the SO share (15: local structure, robust at 1,000 patches per slide).
        lisi_perplexity: iLISI's own neighbourhood (30, Harmony's LISI default; uses 3·perplexity NN). Not
            tied to the t-SNE perplexity of a figure, so a picture drawn at another perplexity keeps the number.
        n_boot: bootstrap replicates (0 = no CI); bootstrap: ``"slides"`` (cluster) or ``"points"``.

    Columns: ``features, metric, value, ci_low, ci_high, chance, n, n_slides, params, note`` (``note``
    holds why a metric is n/a; its value is then NaN).
    """
    if bootstrap not in ("slides", "points"):
        raise ValueError(f"bootstrap must be 'slides' or 'points', got {bootstrap!r}")
    sc = collapse_scores(features, meta, name=name, k=k, lisi_perplexity=lisi_perplexity, seed=seed,
                         slide_col=slide_col, label_col=label_col, probe=probe, silhouette_max_n=silhouette_max_n)
    return metrics_from_scores(sc, n_boot=n_boot, seed=seed, bootstrap=bootstrap)


def paired_differences(a: CollapseScores, b: CollapseScores, *, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Metric(a) − metric(b) for two feature sets **of the same patches**, each with a paired 95 % CI.

    Paired bootstrap over slides: every replicate draws one set of slides and evaluates both
    feature sets on it, so the slide-to-slide variation both share cancels (the marginal CIs
    overlapping says little about the difference). Rows: ``a, b, metric, difference, ci_low,
    ci_high, n_slides, n_boot, note``; a metric n/a for either side has NaN and the reason.
    """
    if len(a.slides) != len(b.slides) or not np.array_equal(a.slides, b.slides):
        raise ValueError(f"paired_differences: {a.name!r} and {b.name!r} are not of the same patches in the same "
                         "order; pair only feature sets of one sample")
    draws = a.draws(n_boot, seed, "slides")
    rows = []
    for metric in [m for m in METRICS if m in a.stats or m in a.notes or m in b.notes]:
        base = {"a": a.name, "b": b.name, "metric": metric, "n_slides": a.n_slides, "n_boot": int(n_boot)}
        why = a.notes.get(metric) or b.notes.get(metric) or ("" if metric in b.stats else "not computed for b")
        if why or metric not in a.stats:
            rows.append({**base, "difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "note": why})
            continue
        fa, fb = a.stats[metric], b.stats[metric]
        lo, hi = _interval([fa(ix, d) - fb(ix, d) for ix, d in draws])
        rows.append({**base, "difference": a.value(metric) - b.value(metric), "ci_low": lo, "ci_high": hi,
                     "note": ""})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def metrics_wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per feature set, one column per metric (values only; NaN = n/a), for captions and printing."""
    return table.pivot_table(index="features", columns="metric", values="value", sort=False, dropna=False)


def format_value(value: float, ci_low: float, ci_high: float, *, note: str = "") -> str:
    """'0.62 [0.55, 0.70]', or 'n/a' when the value is NaN (the reason is in the note)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return f"{value:.2f}"
    return f"{value:.2f} [{ci_low:.2f}, {ci_high:.2f}]"


def format_metrics(table: pd.DataFrame, features: str) -> str:
    """Short caption text for one feature set: 'k-NN purity 0.62 [0.55, 0.70] · iLISI ...' (n/a rows say so)."""
    short = {"knn_slide_purity": "k-NN purity", "ilisi": "iLISI", "slide_silhouette": "silhouette",
             "slide_probe_bacc": "slide probe", "so_share": "SO share"}
    rows = table[table["features"] == features]
    return " · ".join(f"{short.get(r.metric, r.metric)} {format_value(r.value, r.ci_low, r.ci_high)}"
                      for r in rows.itertuples())
