"""Collapse metrics against hand-worked cases and independent implementations (scikit-learn)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exaonepath_lab.analysis import collapse as C
from exaonepath_lab.analysis import collapse_metrics


def _circle(deg: list[float]) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


# Six points on the unit circle with gaps 10, 15, 20, 25, 30 degrees: nearest neighbour of each is
# unambiguous: 0->1, 1->0, 2->1, 3->2, 4->3, 5->4.
HAND = _circle([0, 10, 25, 45, 70, 100])
HAND_SLIDES = np.array(list("AAABBA"))
HAND_LABELS = np.array([0, 1, 1, 1, 0, 0])


def test_knn_purity_and_robustness_index_worked_by_hand() -> None:
    nbrs, _ = C.knn(HAND, 1)
    assert nbrs[:, 0].tolist() == [1, 0, 1, 2, 3, 4]
    # same-slide neighbours: A-A, A-A, A-A, B-A (no), B-B, A-B (no) -> P = 4/6
    # chance E = (4·3 + 2·1)/(6·5) = 14/30 -> (4/6 - 14/30)/(1 - 14/30) = 6/16
    meta = pd.DataFrame({"slide_id": HAND_SLIDES, "label": HAND_LABELS})
    t = collapse_metrics(HAND, meta, k=1, n_boot=0, probe=False).set_index("metric")
    assert t.loc["knn_slide_purity", "value"] == pytest.approx(6 / 16)
    # pairs: (0,1) OS, (1,0) OS, (2,1) same/same, (3,2) SO, (4,3) OS, (5,4) SO -> RI = 2/5
    assert t.loc["robustness_index", "value"] == pytest.approx(0.4)
    # chance RI from the label × slide table: A:{0:2,1:2}, B:{0:1,1:1}
    # SO pairs = Σ_c n_c² - Σ n_sc² = (9+9) - (4+4+1+1) = 8; OS = Σ_s n_s² - Σ n_sc² = (16+4) - 10 = 10
    assert t.loc["robustness_index", "chance"] == pytest.approx(8 / 18)
    assert t.loc["knn_slide_purity", "chance"] == 0.0


def test_knn_purity_matches_scikit_learn_neighbours() -> None:
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    slides = np.repeat(np.array(["s0", "s1", "s2", "s3"]), [50, 80, 40, 30])
    x = rng.normal(size=(200, 16)) + 0.8 * rng.normal(size=(4, 16))[np.unique(slides, return_inverse=True)[1]]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    idx = NearestNeighbors(n_neighbors=11).fit(xn).kneighbors(xn, return_distance=False)[:, 1:]
    p_ref = (slides[idx] == slides[:, None]).mean()
    n_s = np.array([50, 80, 40, 30])
    e_ref = (n_s * (n_s - 1)).sum() / (200 * 199)
    t = collapse_metrics(x, pd.DataFrame({"slide_id": slides}), k=10, n_boot=0, probe=False).set_index("metric")
    assert t.loc["knn_slide_purity", "value"] == pytest.approx((p_ref - e_ref) / (1 - e_ref), abs=1e-9)
    ours, _ = C.knn(x, 10)
    assert (np.sort(ours, 1) == np.sort(idx, 1)).mean() > 0.99  # ties aside, the same neighbour sets


def test_silhouette_matches_scikit_learn() -> None:
    from sklearn.metrics import silhouette_samples

    rng = np.random.default_rng(1)
    slides = np.repeat(np.arange(5), 40).astype(str)
    x = rng.normal(size=(200, 8)) + rng.normal(size=(5, 8))[np.repeat(np.arange(5), 40)]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(C.silhouette_per_point(x, slides, chunk=64), silhouette_samples(xn, slides), atol=1e-5)


def test_lisi_inverse_simpson_by_hand_and_limits() -> None:
    w = np.full((1, 4), 0.25)
    codes = np.array([0, 0, 1, 1])
    assert C.inverse_simpson(w, np.array([[0, 1, 2, 3]]), codes)[0] == pytest.approx(2.0)
    # Weights reach the requested perplexity (entropy = log 30).
    d = np.sort(np.random.default_rng(0).random((5, 90)), axis=1)
    p = C.lisi_weights(d, 30.0)
    assert np.allclose(np.exp(-(p * np.log(p)).sum(1)), 30.0, rtol=1e-3)
    # Separated slides: iLISI 0; slide labels shuffled: iLISI at its chance level.
    rng = np.random.default_rng(2)
    slides = np.repeat(np.arange(4), 60).astype(str)
    sep = rng.normal(size=(240, 8)) * 0.05 + 3 * np.eye(8)[np.repeat(np.arange(4), 60)]
    t = collapse_metrics(sep, pd.DataFrame({"slide_id": slides}), n_boot=0, probe=False).set_index("metric")
    assert t.loc["ilisi", "value"] == pytest.approx(0.0, abs=1e-6) and t.loc["knn_slide_purity", "value"] == 1.0
    mixed = collapse_metrics(sep, pd.DataFrame({"slide_id": rng.permutation(slides)}), n_boot=0,
                             probe=False).set_index("metric")
    assert abs(mixed.loc["ilisi", "value"] - mixed.loc["ilisi", "chance"]) < 0.05
    assert abs(mixed.loc["knn_slide_purity", "value"]) < 0.1


def test_probe_bootstrap_and_chance_levels() -> None:
    rng = np.random.default_rng(3)
    slides = np.repeat(np.arange(6), 50).astype(str)
    noise = rng.normal(size=(300, 32)).astype(np.float32)
    sep = noise + 6 * np.eye(32)[np.repeat(np.arange(6), 50)]
    meta = pd.DataFrame({"slide_id": slides})
    a = collapse_metrics(sep, meta, name="sep", n_boot=50, seed=0)
    b = collapse_metrics(sep, meta, name="sep", n_boot=50, seed=0)
    pd.testing.assert_frame_equal(a, b)  # seeded
    assert list(a.columns) == ["features", "metric", "value", "ci_low", "ci_high", "chance", "n", "n_slides", "params"]
    t = a.set_index("metric")
    assert t.loc["slide_probe_bacc", "value"] > 0.95 and t.loc["slide_probe_bacc", "chance"] == pytest.approx(1 / 6)
    assert "robustness_index" not in t.index  # no labels, no RI
    r = collapse_metrics(noise, meta, n_boot=100, seed=0).set_index("metric")
    assert abs(r.loc["slide_probe_bacc", "value"] - 1 / 6) < 0.12
    for m in ("knn_slide_purity", "slide_silhouette"):
        assert r.loc[m, "ci_low"] <= r.loc[m, "value"] <= r.loc[m, "ci_high"]
        assert r.loc[m, "ci_low"] < r.loc[m, "chance"] + 0.05  # noise: the CI reaches chance
    with pytest.raises(ValueError, match="≥ 2 slides"):
        collapse_metrics(noise, pd.DataFrame({"slide_id": ["x"] * 300}))
    with pytest.raises(ValueError, match="meta rows"):
        collapse_metrics(noise[:10], meta)
