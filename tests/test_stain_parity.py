"""Parity with torchstain 1.4 (torch backend) on real H&E patches: same target, same constants.

Measured here (on the patches below): mean absolute pixel difference ~1e-4 levels, 99th
percentile 0, max 1; stain vectors within ~1e-3 degrees. The residual is float32
rounding: batched covariance and matmul summation order, closed-form least squares
instead of QR (``torch.linalg.lstsq``), Jacobi vs LAPACK eigenvectors, and a
factorized exponential in the CPU kernels. Because the output is truncated to uint8
(torchstain's ``.int()``), a value within 1e-5 of an integer can flip a whole level,
which is why the maximum is 1, on a handful of pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.stain import MacenkoNormalizer, StainTarget

SOURCES = [
    "stain_refs/torchstain_source.png",
    "stain_refs/tiatoolbox_target_image.png",
    "stain_refs/henorm_amida13_example2.png",
    "stain_refs/instanseg_HE_example.ome.tif",
    "stain_refs/stardist_histo.jpg",
    "multi_source/histolab_tiles/tcga-lung-rgb.png",
    "multi_source/histolab_tiles/high-nuclei-score-red-pen-level1.png",
    "multi_source/mopadi/CRC-VAL-HE-7K-NORM-TCGA-YLVCMEHK.tif",
    "multi_source/mopadi/TCGA-AD-6964-01Z-00-DX1/Tile_(16896,20480).jpg",
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """torchstain's small per-image ops only get slower with several threads on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=["sample_he", "real_he"])
def he_set(request) -> dict:
    """Real H&E patches and a reference image, from the fetched sample data or from the wider set.

    Wider set: up to 3 non-overlapping 224² crops per source of SOURCES (different labs/stains), the
    torchstain target as reference. Sample data: up to 10 tissue crops (224², tissue fraction >= 0.5)
    per sample file, TIAToolbox's stain target as reference.
    """
    if request.param == "real_he":
        root = request.getfixturevalue("real_he")
        out = []
        for rel in SOURCES:
            im = read_rgb(root / rel)
            crops = [im[y : y + 224, x : x + 224] for y in range(0, im.shape[0] - 223, 224) for x in range(0, im.shape[1] - 223, 224)]
            out.extend(crops[:3])
        return {"patches": np.stack(out), "reference": read_rgb(root / "stain_refs" / "torchstain_target.png")}
    from exaonepath_lab.features.patch_grid import GridPatchDataset

    he = request.getfixturevalue("sample_he")
    ds = GridPatchDataset({n: [p] for n, p in he.items()}, patch_px=224, max_per_slide=10, seed=0)
    return {"patches": np.stack([ds[i]["image"] for i in range(len(ds))]),
            "reference": read_rgb(he["tiatoolbox-target.png"])}


@pytest.fixture(scope="module")
def patches(he_set: dict) -> np.ndarray:
    return he_set["patches"]


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.sum(a * b, axis=0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _torchstain(target: StainTarget | None = None):
    import torchstain

    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    if target is not None:
        ts.HERef = torch.tensor(target.stain_matrix, dtype=torch.float32)
        ts.maxCRef = torch.tensor(target.max_conc, dtype=torch.float32)
    return ts


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_pixels_and_stain_vectors_match_torchstain(patches: np.ndarray, backend: str) -> None:
    ts = _torchstain()
    res = MacenkoNormalizer(backend=backend).normalize(patches)
    diffs, angles, compared = [], [], 0
    both_refuse, kit_only_refuses = [], []
    for i, p in enumerate(patches):
        chw = torch.from_numpy(p).permute(2, 0, 1).contiguous()
        try:
            ref, _, _ = ts.normalize(I=chw, Io=240, alpha=1, beta=0.15, stains=False)
            he, _, max_c = ts._TorchMacenkoNormalizer__compute_matrices(chw, 240, 1, 0.15)
        except (RuntimeError, IndexError):  # torchstain's kthvalue on an empty tissue mask
            both_refuse.append((i, res.status[i]))
            continue
        if res.status[i] != "ok":
            kit_only_refuses.append((i, res.status[i]))
            continue
        compared += 1
        diffs.append(np.abs(ref.numpy().astype(np.int64) - res.images[i].astype(np.int64)).ravel())
        angles.append(_angle_deg(he.numpy(), res.params.stain_matrix[i]))
        np.testing.assert_allclose(res.params.max_conc[i], max_c.numpy(), rtol=1e-3)
    # Every patch is accounted for. Where torchstain fails (no tissue) the kit says why; a patch the kit
    # refuses but torchstain normalizes would be a divergence to explain, so none may pass unseen.
    assert compared + len(both_refuse) + len(kit_only_refuses) == len(patches)
    assert not kit_only_refuses, f"the kit refuses patches torchstain normalizes: {kit_only_refuses}"
    assert all(st == "too_few_tissue_pixels" for _, st in both_refuse), both_refuse
    assert compared >= 20, f"only {compared} patches compared"
    d = np.concatenate(diffs)
    ang = np.concatenate(angles)
    mean, p99 = d.mean(), np.percentile(d, 99)
    print(f"\n[{backend}] {compared} patches: mean |Δ| {mean:.2e}, p99 {p99}, max {d.max()}, angle max {ang.max():.2e}°")
    assert mean < 0.01  # the issue asks < 1 level
    assert p99 == 0 and d.max() <= 1
    assert ang.max() < 0.05


def test_fitted_target_matches_torchstain_fit(patches: np.ndarray, he_set: dict) -> None:
    ref_img = he_set["reference"]
    ts = _torchstain()
    ts.fit(torch.from_numpy(ref_img.copy()).permute(2, 0, 1).contiguous(), Io=240, alpha=1, beta=0.15)
    ours = StainTarget.fit(ref_img)
    assert _angle_deg(ts.HERef.numpy(), ours.stain_matrix).max() < 0.01
    np.testing.assert_allclose(ours.max_conc, ts.maxCRef.numpy(), rtol=1e-4)
    # and normalizing to it agrees too
    res = MacenkoNormalizer(ours).normalize(patches[:6])
    for i in range(6):
        out, _, _ = ts.normalize(I=torch.from_numpy(patches[i]).permute(2, 0, 1).contiguous(), stains=False)
        assert np.abs(out.numpy().astype(int) - res.images[i]).mean() < 0.01
