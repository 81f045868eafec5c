"""Feature extraction on real H&E: preprocessing vs torchvision, cache keys, resumption, stain statuses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.datasets import ImageFolderDataset, read_rgb
from exaonepath_lab.encoders import Preprocessing, create_encoder
from exaonepath_lab.features import FeatureSet, extract_features, load_features

torch.set_num_threads(2)
TINY = {"img_size": 32, "patch_size": 8, "depth": 2}


@pytest.fixture(scope="module")
def tiles(sample_tiles: Path) -> ImageFolderDataset:
    """10 real tiles of 3 sizes (224, 256, 448 px) cut from the fetched sample data (CMU-1, TIAToolbox, StarDist)."""
    return ImageFolderDataset(sample_tiles, labels_from_dirs=False)


@pytest.fixture(scope="module")
def enc():
    return create_encoder("random:vit_tiny_patch16_224", seed=0, **TINY)


def test_preprocessing_matches_torchvision() -> None:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = Preprocessing(mean, std, 256, 224)(imgs)
    ref = []
    for im in imgs:
        t = torch.from_numpy(im).permute(2, 0, 1).float()
        t = TF.resize(t, 256, interpolation=InterpolationMode.BICUBIC, antialias=True).clamp(0, 255)
        ref.append(TF.normalize(TF.center_crop(t, 224) / 255.0, mean, std))
    assert got.shape == (2, 3, 224, 224)
    assert torch.allclose(got, torch.stack(ref), atol=1e-4)
    with pytest.raises(ValueError, match="different sizes"):
        Preprocessing(mean, std, None, None)(imgs)


def test_extract_matches_manual_forward_and_round_trips(tmp_path: Path, tiles, enc) -> None:
    cache = tmp_path / "f.h5"
    fs = extract_features(enc, tiles, batch_size=4, cache_path=cache, progress=False)
    assert fs.features.shape == (10, 192) and fs.features.dtype == np.float32 and fs.cache_status == "computed"
    pre = Preprocessing.for_encoder(enc)
    manual = enc(pre([tiles[i]["image"] for i in range(len(tiles))])).numpy()
    np.testing.assert_allclose(fs.features, manual, atol=1e-5)
    assert list(fs.norm_status) == ["none"] * 10
    back = load_features(cache)
    np.testing.assert_array_equal(back.features, fs.features)
    assert back.meta.equals(tiles.meta) and back.key == fs.key
    assert back.key["encoder"]["checkpoint_sha256"] == "random-seed-0"
    assert back.key["preprocessing"]["resize_size"] == 32 and back.key["normalizer"] is None
    assert not Path(str(cache) + ".parts").exists()
    again = extract_features(enc, tiles, batch_size=4, cache_path=cache, progress=False)
    assert again.cache_status == "reused"


def test_cache_is_recomputed_when_any_part_of_the_key_changes(tmp_path: Path, tiles, enc) -> None:
    cache = tmp_path / "f.h5"
    extract_features(enc, tiles, batch_size=10, cache_path=cache, progress=False)
    other = create_encoder("random:vit_tiny_patch16_224", seed=1, **TINY)
    r = extract_features(other, tiles, batch_size=10, cache_path=cache, progress=False)
    assert r.cache_status == "recomputed (cache differs in: encoder)"
    r = extract_features(other, tiles, batch_size=10, cache_path=cache, progress=False, resize=False, crop=True)
    assert r.cache_status == "recomputed (cache differs in: preprocessing)"
    sub = ImageFolderDataset(tiles.root, labels_from_dirs=False, paths=tiles.meta["path"][:6])
    r = extract_features(other, sub, batch_size=10, cache_path=cache, progress=False, resize=False)
    assert r.cache_status == "recomputed (cache differs in: n_items, patch_list_sha256)"
    cache.write_bytes(b"not hdf5")
    r = extract_features(other, sub, batch_size=10, cache_path=cache, progress=False)
    assert r.cache_status.startswith("recomputed (existing file is not")


def test_interrupted_extraction_resumes_from_finished_chunks(tmp_path: Path, tiles, enc) -> None:
    cache = tmp_path / "f.h5"
    with pytest.raises(InterruptedError, match="rerun to resume"):
        extract_features(enc, tiles, batch_size=2, chunk_size=4, max_chunks=1, cache_path=cache, progress=False)
    parts = Path(str(cache) + ".parts")
    assert not cache.exists() and sorted(p.name for p in parts.glob("chunk_*.npz")) == ["chunk_00000.npz"]
    (parts / ".chunk_00001.part.npz").write_bytes(b"half-written by a killed process")  # ignored
    fs = extract_features(enc, tiles, batch_size=2, chunk_size=4, cache_path=cache, progress=False)
    assert fs.cache_status == "resumed (1/3 chunks on disk)"
    fresh = extract_features(enc, tiles, batch_size=5, progress=False)
    np.testing.assert_allclose(fs.features, fresh.features, atol=1e-5)
    assert cache.exists() and not parts.exists()
    # A different key discards stale parts instead of mixing them in.
    with pytest.raises(InterruptedError):
        extract_features(enc, tiles, batch_size=2, chunk_size=4, max_chunks=1, cache_path=tmp_path / "g.h5",
                         progress=False)
    fs2 = extract_features(enc, tiles, batch_size=2, chunk_size=5, cache_path=tmp_path / "g.h5", progress=False)
    assert fs2.cache_status == "computed"


def test_stain_failures_are_kept_with_their_status(tmp_path: Path, enc, real_he: Path) -> None:
    names = ["no-tissue.png", "almost-white-2.png", "tcga-lung-rgb.png", "tissue-level0-7352-11762-7864-12274.png"]
    root = real_he / "multi_source" / "histolab_tiles"
    _check_stain_failures_kept(ImageFolderDataset(root, labels_from_dirs=False, paths=[root / n for n in names]),
                               "tcga-lung-rgb.png", "no-tissue.png", enc, tmp_path)


def test_stain_failures_are_kept_with_their_status_on_sample_data(tmp_path: Path, enc, sample_he) -> None:
    from PIL import Image

    cmu = read_rgb(sample_he["cmu-small-region.svs"])
    crops = {"glass.png": cmu[:224, 224:448], "speck.png": cmu[2240:2464, 448:672],  # blank / 148 tissue pixels
             "tissue-a.png": cmu[896:1120, 1120:1344], "tissue-b.png": cmu[1792:2016, 1120:1344]}
    for name, im in crops.items():
        Image.fromarray(im).save(tmp_path / name)
    ds = ImageFolderDataset(tmp_path, labels_from_dirs=False, paths=[tmp_path / n for n in crops])
    _check_stain_failures_kept(ds, "tissue-a.png", "glass.png", enc, tmp_path)


def _check_stain_failures_kept(ds: ImageFolderDataset, ok_name: str, failed_name: str, enc, tmp_path: Path) -> None:
    from exaonepath_lab.stain import MacenkoNormalizer

    norm = MacenkoNormalizer(policy="passthrough", backend="torch")
    fs = extract_features(enc, ds, normalizer=norm, batch_size=4, cache_path=tmp_path / "n.h5", progress=False)
    assert len(fs) == 4  # nothing dropped
    st = dict(zip([Path(p).name for p in fs.meta["path"]], fs.norm_status))
    assert st[ok_name] == "ok" and st[failed_name] != "ok"
    raw = extract_features(enc, ds, batch_size=4, progress=False)
    failed = fs.norm_status != "ok"
    ok = ~failed
    # passthrough: failed patches are encoded raw, normalized ones differ from raw
    np.testing.assert_allclose(fs.features[failed], raw.features[failed], atol=1e-5)
    assert not np.allclose(fs.features[ok], raw.features[ok], atol=1e-3)
    assert load_features(tmp_path / "n.h5").status_counts() == fs.status_counts()
    assert fs.key["normalizer"]["class"] == "MacenkoNormalizer"


def test_bad_items_and_files_name_the_fix(tmp_path: Path, tiles, enc) -> None:
    ds = ImageFolderDataset(tiles.root, labels_from_dirs=False, transform=lambda im: im.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="transform=None"):
        extract_features(enc, ds, progress=False)
    with pytest.raises(FileNotFoundError, match="exaonepath-lab extract"):
        load_features(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="rows"):
        FeatureSet(np.zeros((3, 2)), tiles.meta, {}, np.array(["none"] * 3))
