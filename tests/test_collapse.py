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


def test_knn_purity_and_so_share_worked_by_hand() -> None:
    nbrs, _ = C.knn(HAND, 1)
    assert nbrs[:, 0].tolist() == [1, 0, 1, 2, 3, 4]
    # same-slide neighbours: A-A, A-A, A-A, B-A (no), B-B, A-B (no) -> P = 4/6
    # chance E = (4·3 + 2·1)/(6·5) = 14/30 -> (4/6 - 14/30)/(1 - 14/30) = 6/16
    meta = pd.DataFrame({"slide_id": HAND_SLIDES, "label": HAND_LABELS})
    t = collapse_metrics(HAND, meta, k=1, n_boot=0, probe=False).set_index("metric")
    assert t.loc["knn_slide_purity", "value"] == pytest.approx(6 / 16)
    # pairs: (0,1) OS, (1,0) OS, (2,1) same/same, (3,2) SO, (4,3) OS, (5,4) SO -> RI = 2/5
    assert t.loc["so_share", "value"] == pytest.approx(0.4)
    # chance RI from the label × slide table: A:{0:2,1:2}, B:{0:1,1:1}
    # SO pairs = Σ_c n_c² - Σ n_sc² = (9+9) - (4+4+1+1) = 8; OS = Σ_s n_s² - Σ n_sc² = (16+4) - 10 = 10
    assert t.loc["so_share", "chance"] == pytest.approx(8 / 18)
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
    assert list(a.columns) == ["features", "metric", "value", "ci_low", "ci_high", "chance", "n", "n_slides", "params",
                               "note"]
    t = a.set_index("metric")
    assert t.loc["slide_probe_bacc", "value"] > 0.95 and t.loc["slide_probe_bacc", "chance"] == pytest.approx(1 / 6)
    # no labels: the SO share is n/a with the reason, never a number
    assert np.isnan(t.loc["so_share", "value"]) and "no class labels" in t.loc["so_share", "note"]
    r = collapse_metrics(noise, meta, n_boot=100, seed=0).set_index("metric")
    assert abs(r.loc["slide_probe_bacc", "value"] - 1 / 6) < 0.12
    for m in ("knn_slide_purity", "slide_silhouette"):
        assert r.loc[m, "ci_low"] <= r.loc[m, "value"] <= r.loc[m, "ci_high"]
        assert r.loc[m, "ci_low"] < r.loc[m, "chance"] + 0.05  # noise: the CI reaches chance
    with pytest.raises(ValueError, match="≥ 2 slides"):
        collapse_metrics(noise, pd.DataFrame({"slide_id": ["x"] * 300}))
    with pytest.raises(ValueError, match="meta rows"):
        collapse_metrics(noise[:10], meta)


def test_so_share_is_na_not_zero_when_no_class_spans_two_slides() -> None:
    """Image folders whose class is the slide folder: SO pairs cannot exist, so no number (was 0.000 [0, 0])."""
    rng = np.random.default_rng(4)
    slides = np.repeat(np.arange(4), 20).astype(str)
    x = rng.normal(size=(80, 8))
    t = collapse_metrics(x, pd.DataFrame({"slide_id": slides, "label": np.repeat(np.arange(4), 20)}), n_boot=10,
                         probe=False).set_index("metric")
    row = t.loc["so_share"]
    assert np.isnan(row["value"]) and np.isnan(row["ci_low"]) and "2 slides" in row["note"]
    assert C.format_value(row["value"], row["ci_low"], row["ci_high"]) == "n/a"
    # One patch per slide: the probe cannot be cross-validated -> n/a with the fix, the other metrics still computed.
    one = collapse_metrics(x[:8], pd.DataFrame({"slide_id": list("aabbccdd")[:7] + ["e"]}), n_boot=5, k=2)
    one = one.set_index("metric")
    assert np.isnan(one.loc["slide_probe_bacc", "value"]) and "min_per_slide" in one.loc["slide_probe_bacc", "note"]
    assert np.isfinite(one.loc["knn_slide_purity", "value"])


def _old_unique_bacc(slides: np.ndarray, pred: np.ndarray, ix: np.ndarray) -> float:
    """The replaced statistic: np.unique over the resampled labels (a slide drawn twice counts once)."""
    y, p = slides[ix], pred[ix]
    return float(np.mean([(p[y == c] == c).mean() for c in np.unique(y)]))


def test_slide_probe_bootstrap_width_matches_brute_force_sampling_sd() -> None:
    """Simulation: slides drawn from a population with their own recall. The slide bootstrap's SD of the
    balanced accuracy, from one cohort at a time, must match the SD of the statistic over many cohorts
    drawn afresh (brute force) up to the bootstrap's own (S−1)/S factor; counting a repeated slide once
    (np.unique) is ~20 % too narrow."""
    rng = np.random.default_rng(0)
    n_sl, per, n_boot = 10, 40, 300

    def cohort() -> tuple[np.ndarray, np.ndarray]:
        slides = np.repeat(np.array([f"s{i}" for i in range(n_sl)]), per)
        recall = rng.beta(3, 2, n_sl)  # per-slide probe recall, mean 0.6, sd 0.2
        right = rng.random(n_sl * per) < np.repeat(recall, per)
        wrong = np.array([f"s{(int(s[1:]) + 1) % n_sl}" for s in slides])
        return slides, np.where(right, slides, wrong)

    truth = [C.slide_bacc_stat(*cohort())(np.arange(n_sl * per), None) for _ in range(2000)]
    sd_true = float(np.std(truth))
    sd_new, sd_old = [], []
    for _ in range(40):
        slides, pred = cohort()
        f = C.slide_bacc_stat(slides, pred)
        groups = [np.flatnonzero(slides == s) for s in np.unique(slides)]
        new, old = [], []
        for _ in range(n_boot):
            draw = rng.integers(0, n_sl, n_sl)
            ix = np.concatenate([groups[g] for g in draw])
            new.append(f(ix, draw))
            old.append(_old_unique_bacc(slides, pred, ix))
        sd_new.append(np.std(new))
        sd_old.append(np.std(old))
    expected = sd_true * np.sqrt((n_sl - 1) / n_sl)  # the plug-in bootstrap's known shrink
    print(f"bootstrap SD {np.mean(sd_new):.4f} (np.unique: {np.mean(sd_old):.4f}) vs brute force {expected:.4f}")
    assert np.mean(sd_new) == pytest.approx(expected, rel=0.12)
    assert np.mean(sd_old) < 0.85 * expected  # the replaced statistic: too narrow


def test_paired_differences_use_the_same_slides_for_both_sets() -> None:
    rng = np.random.default_rng(5)
    slides = np.repeat(np.arange(8), 25).astype(str)
    centres = rng.normal(size=(8, 16))[np.repeat(np.arange(8), 25)]
    noise = rng.normal(size=(200, 16))
    meta = pd.DataFrame({"slide_id": slides})
    strong = C.collapse_scores(noise * 0.6 + centres, meta, name="strong", k=5, seed=0)
    weak = C.collapse_scores(noise * 1.5 + centres, meta, name="weak", k=5, seed=0)
    d = C.paired_differences(strong, weak, n_boot=100, seed=0).set_index("metric")
    assert list(C.paired_differences(strong, weak, n_boot=5).columns) == C.DIFF_COLUMNS
    # Brute-force reference: the same slide draws, both statistics, difference, percentile interval.
    draws = strong.draws(100, 0, "slides")
    ref = [strong.stats["knn_slide_purity"](ix, dr) - weak.stats["knn_slide_purity"](ix, dr) for ix, dr in draws]
    row = d.loc["knn_slide_purity"]
    assert row["difference"] == pytest.approx(strong.value("knn_slide_purity") - weak.value("knn_slide_purity"))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])))
    assert row["ci_low"] > 0  # stronger slide clustering, clearly
    same = C.paired_differences(strong, strong, n_boot=50).set_index("metric")
    assert (same.loc["ilisi", ["difference", "ci_low", "ci_high"]] == 0).all()  # paired: identical sets differ by 0
    assert d.loc["so_share", "note"] != ""  # no labels: n/a, with the reason
    with pytest.raises(ValueError, match="same patches"):
        C.paired_differences(strong, C.collapse_scores(noise[:100], meta[:100], k=5), n_boot=5)


# ----------------------------------------------------------------------------- the one k-NN, the one twin
def test_knn_accuracy_is_dinos_weighted_vote_with_slide_grouped_folds() -> None:
    from sklearn.model_selection import GroupKFold

    from exaonepath_lab.probing.knn import knn_accuracy

    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 40)
    groups = np.tile(np.repeat(np.arange(4), 10), 3).astype(str)
    x = rng.normal(size=(120, 8)) + 1.5 * np.eye(8)[y]
    got = knn_accuracy(x, y, groups=groups, k=7, temperature=0.07)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    accs = []  # brute force: cosine top-k, votes exp(s / T), per-class recall
    for tr, te in GroupKFold(n_splits=4).split(x, y, groups):
        s = xn[te] @ xn[tr].T
        top = np.argsort(-s, axis=1)[:, :7]
        votes = np.zeros((len(te), 3))
        for i in range(len(te)):
            np.add.at(votes[i], y[tr][top[i]], np.exp(s[i, top[i]] / 0.07))
        pred = votes.argmax(1)
        accs.append(np.mean([np.mean(pred[y[te] == c] == c) for c in np.unique(y[te])]))
    assert got == pytest.approx(np.mean(accs))
    with pytest.raises(ValueError, match="2 classes"):
        knn_accuracy(x, np.zeros(120, dtype=int))


def test_twin_builder_leaves_global_rng_alone_and_matches_random_like(tmp_path) -> None:
    import torch

    from exaonepath_lab.encoders import create_encoder, random_like
    from exaonepath_lab.models import CHECKPOINT_FORMAT, build_backbone
    from exaonepath_lab.probing.learning import teacher_and_random_twin

    kw = {"img_size": 32, "patch_size": 16, "depth": 1}
    net = build_backbone("vit_tiny_patch16_224", **kw)
    ck = tmp_path / "ck.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"timm_name": "vit_tiny_patch16_224", "timm_kwargs": kw},
                "teacher_backbone": net.state_dict()}, ck)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    teacher, twin = teacher_and_random_twin(str(ck), seed=3)
    assert torch.equal(before, torch.get_rng_state())  # the caller's RNG is untouched
    ref = random_like(create_encoder("kit-dino", checkpoint=str(ck)), seed=3).model
    for (n, a), (_, b) in zip(twin.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), n
    assert torch.equal(teacher.state_dict()["cls_token"], net.state_dict()["cls_token"])


def test_learning_check_inputs_follow_the_runs_stain_target(tmp_path, real_he) -> None:
    from exaonepath_lab.datasets import read_rgb
    from exaonepath_lab.pretrain.presets import get_preset
    from exaonepath_lab.probing.learning import eval_inputs
    from exaonepath_lab.stain import MacenkoNormalizer
    from exaonepath_lab.stain.target import StainTarget

    target = StainTarget.fit(read_rgb(real_he / "stain_refs" / "torchstain_target.png"))
    path = target.save(tmp_path / "target.json")
    img = read_rgb(real_he / "stain_refs" / "tiatoolbox_target_image.png")
    imgs = np.stack([img[:64, :64], img[64:128, 64:128]])
    cfg = get_preset("cpu-demo", normalize=True, stain_target=str(path), out_dir=str(tmp_path))
    got = eval_inputs(cfg, imgs)
    np.testing.assert_array_equal(got, np.asarray(MacenkoNormalizer(StainTarget.load(path)).normalize(imgs).images))
    assert not np.array_equal(got, eval_inputs(cfg.replace(stain_target=None), imgs))  # the target matters
    assert eval_inputs(cfg.replace(normalize=False), imgs) is imgs
