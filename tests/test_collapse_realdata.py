"""Real-data check: on real H&E from different labs, Macenko lowers slide purity of colour-sensitive features.

Each source image (or tile folder of one TCGA slide) of the wider real H&E set (fixture ``real_he``,
``$EXAONEPATH_LAB_REAL_HE``) is one "slide";
64 px tissue patches are cut from each. Colour statistics and a random-init tiny ViT see only
the input, so their slide clustering is staining; normalization should remove much of it.
The numbers are printed (run with ``-s``) and recorded in benchmarks/features.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from exaonepath_lab.analysis import collapse_metrics, colour_features_dataset
from exaonepath_lab.encoders import create_encoder
from exaonepath_lab.features import extract_features
from exaonepath_lab.features.patch_grid import GridPatchDataset

torch.set_num_threads(2)


def real_sources(root: Path) -> dict[str, list[Path]]:
    src = {p.stem: [p] for p in sorted((root / "stain_refs").iterdir()) if p.is_file()}
    src["histoprep_slide"] = [root / "multi_source" / "histoprep_slide.jpeg"]
    for d in sorted((root / "multi_source" / "mopadi").iterdir()):
        if d.is_dir():
            src[d.name] = sorted(d.iterdir())
    return src


def test_macenko_lowers_slide_purity_of_colour_features_and_random_vit(real_he: Path) -> None:
    from exaonepath_lab.stain import MacenkoNormalizer

    ds = GridPatchDataset(real_sources(real_he), patch_px=64, max_per_slide=40, seed=0)
    assert ds.meta["slide_id"].nunique() >= 8
    mac = MacenkoNormalizer(policy="passthrough", backend="torch")
    vit = create_encoder("random:vit_tiny_patch16_224", seed=0, img_size=64, patch_size=16, depth=4)
    rows = []
    status = {}
    for label, norm in (("raw", None), ("macenko", mac)):
        cf, st = colour_features_dataset(ds, normalizer=norm)
        status[label] = pd.Series(st).value_counts().to_dict()
        rows.append(collapse_metrics(cf, ds.meta, name=f"colour stats ({label})", n_boot=100, seed=0))
        fs = extract_features(vit, ds, normalizer=norm, resize=False, crop=False, progress=False, batch_size=64)
        rows.append(collapse_metrics(fs.features, ds.meta, name=f"random-init ViT-tiny ({label})", n_boot=100, seed=0))
    t = pd.concat(rows, ignore_index=True)
    with pd.option_context("display.width", 200):
        print(f"\nreal H&E: {len(ds)} patches of 64 px from {ds.meta['slide_id'].nunique()} sources; "
              f"Macenko status {status['macenko']}")
        print(t[["features", "metric", "value", "ci_low", "ci_high", "chance"]].round(3).to_string(index=False))
    v = t.set_index(["features", "metric"])["value"]
    assert status["macenko"].get("ok", 0) >= 0.9 * len(ds)  # tissue patches: Macenko works on nearly all
    for feats in ("colour stats", "random-init ViT-tiny"):
        raw, norm = v[(f"{feats} (raw)", "knn_slide_purity")], v[(f"{feats} (macenko)", "knn_slide_purity")]
        assert raw > 0.3, f"{feats}: raw input should cluster by source ({raw:.2f})"
        assert norm < raw - 0.1, f"{feats}: Macenko should lower slide purity ({raw:.2f} -> {norm:.2f})"
        assert v[(f"{feats} (macenko)", "ilisi")] > v[(f"{feats} (raw)", "ilisi")]  # slides mix more
    computed = t[t["metric"] != "so_share"]
    assert np.isfinite(computed[["value", "ci_low", "ci_high"]].to_numpy()).all()
    so = t[t["metric"] == "so_share"]  # image sources carry no class labels: n/a with the reason, never a number
    assert so["value"].isna().all() and so["note"].str.startswith("no class labels").all()
