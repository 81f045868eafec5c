"""Benchmark: the paper's 12,500-iteration linear probe on cached 768-d features of 100,000 items.

Prints ONE JSON line. Data: random but structured features (class means in a 32-d subspace plus
isotropic noise, scaled like a ViT CLS token after LayerNorm), split train / val / test. Reference,
measured in the same run on the same data: scikit-learn's SGDClassifier (log loss, constant lr,
the same number of epochs as 12,500 x 128 samples) and LogisticRegression (lbfgs, L2).

    nice -n 10 .venv/bin/python benchmarks/bench_probe.py [--n 100000] [--classes 9] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def make_features(n: int, d: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, 32)))[0]  # d x 32 orthonormal
    means = rng.standard_normal((c, 32)) * 0.07  # Bayes top-1 ~0.8 at 9 classes: not trivially separable
    y = rng.integers(0, c, n)
    x = (means[y] @ basis.T) * np.sqrt(d) / 4 + rng.standard_normal((n, d)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="train items (val and test: n/10 each)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=9, help="9 = CRC-100K, the widest task of Table 1")
    ap.add_argument("--iterations", type=int, default=12_500)
    ap.add_argument("--threads", type=int, default=2, help="threads for scikit-learn and torch outside the probe loop")
    ap.add_argument("--skip-lbfgs", action="store_true", help="skip LogisticRegression (slowest reference)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from exaonepath_lab.probing.config import ProbeConfig
    from exaonepath_lab.probing.linear import train_linear_probe
    from exaonepath_lab.probing.metrics import top1_accuracy

    n_val = args.n // 10
    x, y = make_features(args.n + 2 * n_val, args.dim, args.classes)
    xtr, ytr = x[: args.n], y[: args.n]
    xva, yva = x[args.n : args.n + n_val], y[args.n : args.n + n_val]
    xte, yte = x[args.n + n_val :], y[args.n + n_val :]

    cfg = ProbeConfig(iterations=args.iterations, seeds=(0,))
    t = time.perf_counter()
    sel, last, curve = train_linear_probe(xtr, ytr, n_classes=args.classes, config=cfg, seed=0, x_val=xva, y_val=yva)
    probe_s = time.perf_counter() - t
    pred = last.scores(xte).argmax(1)
    out: dict = {
        "bench": "linear_probe",
        "n_train": args.n, "dim": args.dim, "classes": args.classes, "iterations": args.iterations,
        "batch": cfg.batch_size, "val_evals": len(curve),
        "probe_s": round(probe_s, 2), "probe_us_per_iter": round(1e6 * probe_s / args.iterations, 1),
        "probe_top1_last": round(top1_accuracy(yte, pred), 4),
        "probe_top1_selected": round(top1_accuracy(yte, sel.scores(xte).argmax(1)), 4),
    }

    from sklearn.linear_model import LogisticRegression, SGDClassifier

    epochs = max(1, round(args.iterations * cfg.batch_size / args.n))
    t = time.perf_counter()
    sgd = SGDClassifier(loss="log_loss", penalty=None, learning_rate="constant", eta0=0.01, max_iter=epochs, tol=None,
                        random_state=0, n_jobs=args.threads).fit(xtr, ytr)
    sgd_s = time.perf_counter() - t
    out |= {"sklearn_sgd_epochs": epochs, "sklearn_sgd_s": round(sgd_s, 2),
            "sklearn_sgd_top1": round(top1_accuracy(yte, sgd.predict(xte)), 4),
            "speedup_vs_sklearn_sgd": round(sgd_s / probe_s, 2)}
    if not args.skip_lbfgs:
        t = time.perf_counter()
        lr = LogisticRegression(max_iter=200).fit(xtr, ytr)
        lr_s = time.perf_counter() - t
        ref = lr.predict(xte)
        out |= {"sklearn_lbfgs_s": round(lr_s, 2), "sklearn_lbfgs_top1": round(top1_accuracy(yte, ref), 4),
                "speedup_vs_sklearn_lbfgs": round(lr_s / probe_s, 2),
                "agreement_with_lbfgs": round(float(np.mean(pred == ref)), 4)}
    out |= {"cpu_count": os.cpu_count(), "torch_threads_probe": 1, "threads_reference": args.threads,
            "load_avg_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "torch": torch.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
