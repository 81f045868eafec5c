"""Does the ``cpu-demo`` DINO preset really learn? One JSON line with the evidence.

Synthesises a small multi-site cohort (``exaonepath_lab.slides.synthetic``), tiles it
(256 px at 0.5 µm/px), trains the ``cpu-demo`` preset twice — on raw patches and on
Macenko-normalised patches (EXAONEPath) — and compares each trained teacher with the
random-init twin it started from on slide-grouped k-NN balanced accuracy of the
tissue classes. Also reports the final teacher entropy against ln(out_dim) and the
collapse monitor's warnings.

    .venv/bin/python benchmarks/dino_learning.py [--slides 10] [--workdir DIR] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slides", type=int, default=10, help="synthetic slides (one staining 'site' each)")
    p.add_argument("--seed", type=int, default=1, help="cohort seed")
    p.add_argument("--workdir", default=None, help="where the cohort, tiles and runs go (default: a temp dir); "
                                                   "reused on reruns (cohort and tiling resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="PretrainConfig overrides on top of the cpu-demo preset (JSON values)")
    p.add_argument("--only", choices=["raw", "norm"], default=None, help="run one of the two trainings")
    args = p.parse_args(argv)

    import torch

    from exaonepath_lab.commands._args import parse_key_values
    from exaonepath_lab.pretrain.data import ArrayDataset
    from exaonepath_lab.pretrain.evaluate import dataset_arrays
    from exaonepath_lab.probing.learning import learning_check
    from exaonepath_lab.pretrain.presets import get_preset
    from exaonepath_lab.slides.dataset import TiledPatchDataset
    from exaonepath_lab.slides.synthetic import make_cohort
    from exaonepath_lab.tiling.config import TileConfig
    from exaonepath_lab.tiling.run import run_tiling

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dino_learning_"))
    t0 = time.perf_counter()
    make_cohort(work / "cohort", n_slides=args.slides, seed=args.seed, mpps=(0.5,), workers=1, progress=False)
    run_tiling(work / "cohort", work / "tiles", TileConfig(), progress=False)
    ds = TiledPatchDataset(work / "tiles")
    images, labels, slides = dataset_arrays(ds)
    labels = np.where(labels >= 1, labels, -1)  # tissue classes only: background (0) is not one
    prep_s = time.perf_counter() - t0
    over = parse_key_values(args.overrides, "--set")
    out: dict = {"bench": "dino_learning", "slides": args.slides, "patches": int(len(images)),
                 "tissue_classes": int(len(np.unique(labels[labels >= 1]))), "prep_s": round(prep_s, 1),
                 "torch_threads": torch.get_num_threads()}
    for name, normalize in (("raw", False), ("norm", True)):
        if args.only and args.only != name:
            continue
        cfg = get_preset("cpu-demo", out_dir=str(work / f"run_{name}"), normalize=normalize, **over)
        r = learning_check(cfg, ArrayDataset(images, ds.meta), eval_images=images, labels=labels, groups=slides)
        out[f"knn_trained_{name}"] = round(r["knn_trained"], 3)
        out[f"knn_random_{name}"] = round(r["knn_random"], 3)
        out[f"margin_{name}"] = round(r["margin"], 3)
        out[f"teacher_entropy_{name}"] = round(r["teacher_entropy"], 3)
        out[f"collapse_warnings_{name}"] = len(r["collapse_warnings"])
        out[f"train_s_{name}"] = round(r["train_seconds"], 1)
        out["iterations"] = r["iterations"]
        out["ln_out_dim"] = round(r["ln_out_dim"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
