"""The cpu-demo preset really learns: trained teacher vs its random-init twin on tissue classes.

A small synthetic multi-site cohort (each slide its own staining) is synthesised and
tiled with the kit's own tools; the preset trains on Macenko-normalised patches (the
EXAONEPath setting, and the one where a naive run collapsed to a uniform output),
and a slide-grouped k-NN over the tissue classes must prefer the trained teacher by a
clear margin while the collapse monitor stays silent. The raw-patch twin of this
check, on a bigger cohort, is ``benchmarks/dino_learning.py``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.pretrain.data import ArrayDataset
from exaonepath_lab.pretrain.evaluate import dataset_arrays, learning_check
from exaonepath_lab.pretrain.presets import get_preset


@pytest.fixture(scope="module")
def cohort_tiles(tmp_path_factory: pytest.TempPathFactory):
    from exaonepath_lab.slides.dataset import TiledPatchDataset
    from exaonepath_lab.slides.synthetic import make_cohort
    from exaonepath_lab.tiling.config import TileConfig
    from exaonepath_lab.tiling.run import run_tiling

    root = tmp_path_factory.mktemp("dino_cohort")
    make_cohort(root / "cohort", n_slides=6, seed=1, mpps=(0.5,), size_um=(1500.0, 1700.0), workers=1,
                progress=False)
    run_tiling(root / "cohort", root / "tiles", TileConfig(), progress=False)
    ds = TiledPatchDataset(root / "tiles")
    images, labels, slides = dataset_arrays(ds)
    return root, ArrayDataset(images, ds.meta), images, labels, slides


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xfail(strict=False, reason=(
    "known weak (benchmarks/dino_learning.md): on a loaded 2-core machine 150 cpu-demo iterations gave "
    "k-NN 0.437 vs 0.410 for the random twin (normalised) and 0.210 vs 0.213 (raw), no collapse; the margin "
    "asserted here is the issue's goal, not yet reached"))
def test_cpu_demo_beats_random_init_on_tissue_classes_without_collapse(cohort_tiles) -> None:
    root, ds, images, labels, slides = cohort_tiles
    assert len(np.unique(labels[labels > 0])) >= 3 and len(np.unique(slides)) >= 4
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = get_preset("cpu-demo", out_dir=str(root / "run_norm"), normalize=True)
    r = learning_check(cfg, ds, eval_images=images, labels=labels, groups=slides)
    assert r["collapse_warnings"] == []
    assert r["teacher_entropy"] < 0.9 * math.log(cfg.out_dim)  # far from the uniform output
    assert r["margin"] >= 0.05, r  # a clear margin over the random-init twin (balanced accuracy)
