"""The feature cache never returns features of other inputs (issue 12.3): every input that changes
the pixels the encoder sees is in the key, and changing it recomputes."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.datasets import ImageFolderDataset
from exaonepath_lab.encoders import create_encoder
from exaonepath_lab.features import extract_features, load_features
from exaonepath_lab.slides.dataset import TiledPatchDataset

torch.set_num_threads(2)
TINY = {"img_size": 32, "patch_size": 8, "depth": 2}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic 0.5 µm/px slide, tiled by the kit (256 px patches)."""
    from exaonepath_lab.slides.synthetic import make_cohort
    from exaonepath_lab.tiling import TileConfig, run_tiling

    root = tmp_path_factory.mktemp("cachekey")
    make_cohort(root / "cohort", n_slides=1, seed=3, workers=1, progress=False, size_um=(600.0, 600.0))
    run_tiling(root / "cohort", root / "tiles", TileConfig(), workers=1, progress=False)
    return root / "tiles"


@pytest.fixture(scope="module")
def enc():
    return create_encoder("random:vit_tiny_patch16_224", seed=0, **TINY)


def test_extract_cli_out_px_32_then_64_recomputes(tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The reported bug: --out-px 32 then --out-px 64 into one file said "reused" and gave the 32 px features."""
    from exaonepath_lab.cli import main

    out = tmp_path / "f.h5"
    base = ["extract", "--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=32", "patch_size=8",
            "depth=2", "--tiles", str(tiles), "--max-per-slide", "6", "--out", str(out), "--quiet"]
    assert main([*base, "--out-px", "32"]) == 0
    f32 = load_features(out).features
    assert main([*base, "--out-px", "64"]) == 0
    said = capsys.readouterr().out
    assert "reused" not in said and "recomputed (cache differs in: dataset)" in said
    f64 = load_features(out)
    assert f64.key["dataset"]["out_px"] == 64
    assert not np.allclose(f64.features, f32, atol=1e-4)
    # what a fresh extraction at 64 px gives, without any cache
    ds = TiledPatchDataset(tiles, out_px=64, max_per_slide=6, seed=0)
    enc = create_encoder("random:vit_tiny_patch16_224", seed=0, **TINY)
    np.testing.assert_allclose(f64.features, extract_features(enc, ds, progress=False).features, atol=1e-5)
    assert main([*base, "--out-px", "64"]) == 0
    assert "reused" in capsys.readouterr().out
    # --no-resize changes the preprocessing: recomputed too
    assert main([*base, "--out-px", "32", "--no-resize"]) == 0
    assert "recomputed (cache differs in: dataset, preprocessing)" in capsys.readouterr().out


def test_mpp_used_to_read_is_in_the_key(tiles: Path, tmp_path: Path, enc) -> None:
    cache = tmp_path / "f.h5"
    ds = TiledPatchDataset(tiles, out_px=32, max_per_slide=4)
    assert extract_features(enc, ds, cache_path=cache, progress=False).cache_status == "computed"
    sid = str(ds.meta["slide_id"].iloc[0])
    other = TiledPatchDataset(tiles, out_px=32, max_per_slide=4, mpp_overrides={sid: 0.46})
    r = extract_features(enc, other, cache_path=cache, progress=False)
    assert r.cache_status == "recomputed (cache differs in: dataset, patch_list_sha256)"
    assert r.key["dataset"]["mpp_overrides"] == {sid: 0.46}


def test_dataset_transform_is_in_the_key(sample_tiles: Path, tmp_path: Path, enc) -> None:
    root = sample_tiles  # 10 real H&E tiles of three sizes
    cache = tmp_path / "f.h5"

    def darker(im: np.ndarray, f: float) -> np.ndarray:
        return (im * f).astype(np.uint8)

    from exaonepath_lab.stain import MacenkoNormalizer, MacenkoTransform, StainTarget

    fitted = StainTarget.fit(ImageFolderDataset(root, labels_from_dirs=False)[0]["image"], source="first tile")
    runs = [None, functools.partial(darker, f=0.5), functools.partial(darker, f=0.8), lambda im: im[::-1].copy(),
            lambda im: im[:, ::-1].copy(), MacenkoTransform(MacenkoNormalizer(backend="torch")),
            MacenkoTransform(MacenkoNormalizer(fitted, backend="torch"))]
    feats = []
    for i, tf in enumerate(runs):
        ds = ImageFolderDataset(root, labels_from_dirs=False, transform=tf)
        r = extract_features(enc, ds, batch_size=16, cache_path=cache, progress=False)
        assert r.cache_status == ("computed" if i == 0 else "recomputed (cache differs in: dataset)"), i
        feats.append(r.features)
        again = extract_features(enc, ImageFolderDataset(root, labels_from_dirs=False, transform=tf), batch_size=16,
                                 cache_path=cache, progress=False)  # after use: a MacenkoTransform's counts changed
        assert again.cache_status == "reused"  # the same transform, a new object: its identity is stable
    for a in range(len(feats)):
        for b in range(a + 1, len(feats)):
            assert not np.allclose(feats[a], feats[b], atol=1e-4)


def test_macenko_target_and_policy_are_in_the_key(sample_tiles: Path, tmp_path: Path, enc) -> None:
    from exaonepath_lab.stain import MacenkoNormalizer, StainTarget

    root = sample_tiles  # 10 real H&E tiles of three sizes
    ds = ImageFolderDataset(root, labels_from_dirs=False)
    cache = tmp_path / "f.h5"
    base = extract_features(enc, ds, normalizer=MacenkoNormalizer(backend="torch"), cache_path=cache, progress=False)
    target = StainTarget.fit(ds[0]["image"], source="first tile")
    r = extract_features(enc, ds, normalizer=MacenkoNormalizer(target, backend="torch"), cache_path=cache,
                         progress=False)
    assert r.cache_status == "recomputed (cache differs in: normalizer)"
    assert not np.allclose(r.features, base.features, atol=1e-4)
    r = extract_features(enc, ds, normalizer=MacenkoNormalizer(target, policy="flag", backend="torch"),
                         cache_path=cache, progress=False)
    assert r.cache_status == "recomputed (cache differs in: normalizer)"
    assert r.key["normalizer"]["config"]["policy"] == "flag"
