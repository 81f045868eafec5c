"""Linear probe and k-NN against known answers and independent references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from exaonepath_lab.probing.knn import knn_scores, run_knn
from exaonepath_lab.probing.config import ProbeConfig
from exaonepath_lab.probing.linear import run_linear_probe, train_linear_probe
from exaonepath_lab.probing.metrics import classification_metrics, macro_auroc

torch.set_num_threads(1)


def _gaussians(n_per: int, d: int, n_classes: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, d)) * sep
    y = np.repeat(np.arange(n_classes), n_per)
    x = centers[y] + rng.standard_normal((len(y), d))
    return x.astype(np.float32), y


def test_separable_gaussians_reach_accuracy_one_with_paper_defaults() -> None:
    x, y = _gaussians(100, 16, 3, sep=4.0, seed=0)
    splits = np.array(["train", "val", "test", "train", "train"] * (len(y) // 5))
    cfg = ProbeConfig(seeds=(0, 1))  # the paper's 12,500 iterations, lr 0.1, momentum 0.9, batch 128
    res = run_linear_probe(x, y, splits, config=cfg, progress=False)
    assert res["test"]["top1"]["mean"] == 1.0
    assert res["test"]["top1"]["values"] == [1.0, 1.0]
    assert res["test"]["auroc"]["mean"] == 1.0
    assert res["n"] == {"train": 180, "val": 60, "test": 60}
    assert res["protocol"]["iterations"] == 12_500 and res["protocol"]["lr"] == 0.1
    for r in res["per_seed"]:  # selected checkpoint is the best point of the validation curve
        best = max(c["top1"] for c in r["val_curve"])
        chosen = [c for c in r["val_curve"] if c["iteration"] == r["selected_iteration"]]
        assert chosen and chosen[0]["top1"] == best


def test_matches_sklearn_logistic_regression_on_nearly_separable_data() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _gaussians(400, 8, 2, sep=1.2, seed=1)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    xt, yt, xe = x[:600], y[:600], x[600:]
    sel, last, _ = train_linear_probe(xt, yt, n_classes=2, config=ProbeConfig(iterations=4000, selection="last"), seed=0)
    ours = last.scores(xe).argmax(1)
    ref = LogisticRegression(C=np.inf, max_iter=5000).fit(xt, yt).predict(xe)
    assert np.mean(ours == ref) >= 0.97
    assert 0.75 < np.mean(ref == y[600:]) < 1.0  # really not separable, so the test has teeth


def test_updates_equal_hand_written_sgd_with_momentum() -> None:
    """Same init and batch order, numpy SGD-momentum (PyTorch's rule, dampening 0): same weights."""
    x, y = _gaussians(25, 6, 2, sep=1.0, seed=2)  # N=50, batch 16: epochs of 16,16,16,2
    cfg = ProbeConfig(iterations=9, batch_size=16, selection="last")
    _, last, _ = train_linear_probe(x, y, n_classes=2, config=cfg, seed=5)

    gen = torch.Generator().manual_seed(5)
    w = torch.empty(2, 6).normal_(0.0, 0.01, generator=gen).double().numpy()
    b = np.zeros(2)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    perm = torch.randperm(50, generator=gen).numpy()
    pos = 0
    for it in range(9):
        if pos >= 50:
            perm, pos = torch.randperm(50, generator=gen).numpy(), 0
        idx = perm[pos : pos + 16]
        pos += 16
        xb, yb = x[idx].astype(np.float64), y[idx]
        z = xb @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1.0
        gw, gb = p.T @ xb / len(yb), p.sum(0) / len(yb)
        vw, vb = (gw, gb) if it == 0 else (0.9 * vw + gw, 0.9 * vb + gb)
        w, b = w - 0.1 * vw, b - 0.1 * vb
    np.testing.assert_allclose(last.weight, w, atol=1e-5)
    np.testing.assert_allclose(last.bias, b, atol=1e-5)


def test_seeds_change_result_and_same_seed_reproduces() -> None:
    x, y = _gaussians(40, 8, 2, sep=0.5, seed=3)
    cfg = ProbeConfig(iterations=50, selection="last")
    a = train_linear_probe(x, y, n_classes=2, config=cfg, seed=0)[1].weight
    b = train_linear_probe(x, y, n_classes=2, config=cfg, seed=0)[1].weight
    c = train_linear_probe(x, y, n_classes=2, config=cfg, seed=1)[1].weight
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_standardize_uses_train_statistics() -> None:
    x, y = _gaussians(50, 4, 2, sep=3.0, seed=4)
    x = x * 1000 + 5000  # raw scale that makes lr 0.1 unusable without standardization
    cfg = ProbeConfig(iterations=300, feature_norm="standardize", selection="last")
    _, last, _ = train_linear_probe(x, y, n_classes=2, config=cfg, seed=0)
    np.testing.assert_allclose(last.mean, x.mean(0), rtol=1e-5)
    assert np.mean(last.scores(x).argmax(1) == y) > 0.95


def test_bad_inputs_are_named() -> None:
    x, y = _gaussians(10, 4, 2, sep=1.0, seed=0)
    y_bad = y.copy()
    y_bad[:3] = -1
    with pytest.raises(ValueError, match="3 items have label -1"):
        train_linear_probe(x, y_bad, n_classes=2, config=ProbeConfig(iterations=2))
    x_bad = x.copy()
    x_bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_linear_probe(x_bad, y, n_classes=2, config=ProbeConfig(iterations=2))
    with pytest.raises(ValueError, match="selection"):
        ProbeConfig(selection="best")
    with pytest.raises(ValueError, match="need 'train' and 'test'"):
        run_linear_probe(x, y, np.array(["train"] * len(y)), config=ProbeConfig(iterations=2), progress=False)


def test_config_json_round_trip(tmp_path) -> None:
    cfg = ProbeConfig(seeds=(3, 4), feature_norm="l2")
    cfg.save(tmp_path / "probe.json")
    assert ProbeConfig.load(tmp_path / "probe.json") == cfg


def test_knn_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    tr, ty = rng.standard_normal((60, 5)).astype(np.float32), rng.integers(0, 3, 60)
    q = rng.standard_normal((7, 5)).astype(np.float32)
    got = knn_scores(tr, ty, q, n_classes=3, k=20, temperature=0.07, chunk=3)
    for i in range(len(q)):
        sims = [float(np.dot(q[i], t) / np.linalg.norm(q[i]) / np.linalg.norm(t)) for t in tr]
        top = sorted(range(len(tr)), key=lambda j: -sims[j])[:20]
        votes = [sum(np.exp(sims[j] / 0.07) for j in top if ty[j] == c) for c in range(3)]
        np.testing.assert_allclose(got[i], np.array(votes) / sum(votes), rtol=1e-4)


def test_run_knn_on_clusters() -> None:
    x, y = _gaussians(30, 8, 3, sep=5.0, seed=6)
    splits = np.where(np.arange(len(y)) % 3 == 0, "test", "train")
    res = run_knn(x, y, splits)
    assert res["test"]["top1"] == 1.0 and res["n"] == {"bank": 60, "test": 30}


def test_metrics_against_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    s = rng.dirichlet(np.ones(4), 200) + np.eye(4)[y] * 0.3
    s /= s.sum(1, keepdims=True)
    m = classification_metrics(y, s)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, s.argmax(1)))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s, multi_class="ovr", average="macro"))
    assert macro_auroc(y == 1, np.stack([1 - s[:, 1], s[:, 1]], 1))[0] == pytest.approx(roc_auc_score(y == 1, s[:, 1]))
    # a class absent from the test labels is skipped, and the count says so
    keep = y != 3
    auc, used = macro_auroc(y[keep], s[keep])
    assert used == 3 and 0.5 < auc <= 1.0


@pytest.mark.parametrize("wd,schedule", [(0.0, "constant"), (0.01, "constant"), (0.0, "cosine")])
def test_equals_autograd_with_torch_optim_sgd(wd: float, schedule: str) -> None:
    """The written-out update equals nn.Linear + CrossEntropyLoss + torch.optim.SGD (the library);
    lr_schedule="cosine" equals torch's CosineAnnealingLR (DINO eval_linear's scheduler) stepped per iteration."""
    x, y = _gaussians(30, 10, 3, sep=1.0, seed=7)  # N=90, batch 32: partial batches and reshuffles
    cfg = ProbeConfig(iterations=40, batch_size=32, weight_decay=wd, selection="last", lr_schedule=schedule)
    _, last, _ = train_linear_probe(x, y, n_classes=3, config=cfg, seed=11)

    gen = torch.Generator().manual_seed(11)
    layer = torch.nn.Linear(10, 3)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=gen)
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=0) if schedule == "cosine" else None
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    perm, pos = torch.randperm(90, generator=gen), 0
    for _ in range(40):
        if pos >= 90:
            perm, pos = torch.randperm(90, generator=gen), 0
        idx = perm[pos : pos + 32]
        pos += 32
        loss = torch.nn.functional.cross_entropy(layer(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    if schedule == "cosine":
        assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
        const = train_linear_probe(x, y, n_classes=3, config=ProbeConfig(iterations=40, batch_size=32,
                                   selection="last"), seed=11)[1]
        assert not np.allclose(const.weight, last.weight, atol=1e-4)  # the schedule changed the result
    with pytest.raises(ValueError, match="lr_schedule='step'"):
        ProbeConfig(lr_schedule="step")
    np.testing.assert_allclose(last.weight, layer.weight.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(last.bias, layer.bias.detach().numpy(), atol=1e-5)
