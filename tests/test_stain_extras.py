"""Reinhard, stain augmentation and the torchvision transforms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.stain import (
    MacenkoNormalizer,
    MacenkoStainAugment,
    MacenkoTransform,
    ReinhardNormalizer,
    StainNormalizationError,
)
from exaonepath_lab.stain.reinhard import lab_to_rgb, rgb_to_lab



@pytest.fixture(scope="module")
def src(sample_he: dict[str, Path]) -> np.ndarray:
    im = read_rgb(sample_he["tiatoolbox-target.png"])
    return np.stack([im[:224, :224], im[200:424, 300:524]])


@pytest.fixture(scope="module")
def tgt(sample_he: dict[str, Path]) -> np.ndarray:
    return read_rgb(sample_he["stardist-histo.jpg"])  # another lab's staining


@pytest.fixture(scope="module")
def torchstain_pair(real_he: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchstain's own source crops and target (the wider set): where OpenCV's Lab reference is tight."""
    im = read_rgb(real_he / "stain_refs" / "torchstain_source.png")
    return np.stack([im[:224, :224], im[200:424, 300:524]]), read_rgb(real_he / "stain_refs" / "torchstain_target.png")


# ---- Reinhard --------------------------------------------------------------------------------
def _lab_reference(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) of float64 sRGB in [0, 1], straight from the published formulas."""
    c = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    x = 0.412453 * c[..., 0] + 0.357580 * c[..., 1] + 0.180423 * c[..., 2]
    y = 0.212671 * c[..., 0] + 0.715160 * c[..., 1] + 0.072169 * c[..., 2]
    z = 0.019334 * c[..., 0] + 0.119193 * c[..., 1] + 0.950227 * c[..., 2]

    def f(t: np.ndarray) -> np.ndarray:
        return np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)

    fx, fy, fz = f(x / 0.950456), f(y), f(z / 1.088754)
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def test_lab_matches_formula_and_opencv_and_inverts(src: np.ndarray) -> None:
    import cv2

    rgb = src[0].astype(np.float32) / 255
    ours = rgb_to_lab(torch.from_numpy(rgb)).numpy()
    np.testing.assert_allclose(ours, _lab_reference(rgb.astype(np.float64)), atol=2e-3)
    # OpenCV's float RGB→Lab interpolates lookup tables (errors up to ~0.3 Lab units)
    np.testing.assert_allclose(ours, cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab), atol=0.35)
    back = lab_to_rgb(torch.from_numpy(ours)).numpy()
    np.testing.assert_allclose(back, rgb, atol=1e-4)


def _reinhard_reference(img: np.ndarray, t_mu: np.ndarray, t_sd: np.ndarray) -> np.ndarray:
    """The published formula with OpenCV's Lab, one image, numpy."""
    import cv2

    lab = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64)
    out = (lab - lab.mean(0)) / lab.std(0, ddof=1) * t_sd + t_mu
    rgb = cv2.cvtColor(out.reshape(img.shape).astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def test_reinhard_batched_matches_reference(torchstain_pair: tuple[np.ndarray, np.ndarray]) -> None:
    src, tgt = torchstain_pair
    rn = ReinhardNormalizer().fit(tgt)
    res = rn.normalize(src)
    assert res.status == ["ok", "ok"] and res.params is None
    for i in range(2):
        ref = _reinhard_reference(src[i], rn.target_means, rn.target_stds)
        d = np.abs(ref.astype(int) - res.images[i])
        assert d.mean() < 0.1 and d.max() <= 2


def test_reinhard_batched_hits_target(src: np.ndarray, tgt: np.ndarray) -> None:
    rn = ReinhardNormalizer().fit(tgt)
    res = rn.normalize(src)
    assert res.status == ["ok", "ok"] and res.params is None
    # the output's Lab statistics are the target's (up to uint8 quantization and clipping)
    lab = rgb_to_lab(torch.from_numpy(res.images[0]).float().reshape(-1, 3) / 255)
    np.testing.assert_allclose(lab.mean(0).numpy(), rn.target_means, atol=1.0)
    # same answer one at a time (batched statistics are per image)
    np.testing.assert_array_equal(rn.normalize(src[1]).images, res.images[1])


def test_reinhard_close_to_torchstain(src: np.ndarray, tgt: np.ndarray) -> None:
    import torchstain

    ts = torchstain.normalizers.ReinhardNormalizer(backend="torch")
    ts.fit(torch.from_numpy(tgt.copy()).permute(2, 0, 1))
    ref = ts.normalize(torch.from_numpy(src[0].copy()).permute(2, 0, 1)).numpy()  # torchstain returns HWC
    ours = ReinhardNormalizer().fit(tgt).normalize(src[0]).images
    # torchstain truncates where we round, and uses slightly different white-point constants
    assert np.abs(ref.astype(int) - ours).mean() < 1.0


def test_reinhard_policy_and_errors(src: np.ndarray, tgt: np.ndarray) -> None:
    flat = np.full((2, 32, 32, 3), 200, np.uint8)
    res = ReinhardNormalizer().fit(tgt).normalize(flat)
    assert res.status == ["degenerate", "degenerate"]
    np.testing.assert_array_equal(res.images, flat)
    with pytest.raises(StainNormalizationError, match="degenerate"):
        ReinhardNormalizer(policy="raise").fit(tgt).normalize(flat)
    with pytest.raises(ValueError, match="no target"):
        ReinhardNormalizer().normalize(src)
    d = ReinhardNormalizer().fit(tgt).to_dict()
    again = ReinhardNormalizer(d["target_means"], d["target_stds"]).normalize(src[0]).images
    np.testing.assert_array_equal(again, ReinhardNormalizer().fit(tgt).normalize(src[0]).images)


# ---- augmentation ----------------------------------------------------------------------------
def test_augment_is_seeded_and_perturbs(src: np.ndarray) -> None:
    a = MacenkoStainAugment(seed=3).augment(src)
    b = MacenkoStainAugment(seed=3).augment(src)
    c = MacenkoStainAugment(seed=4).augment(src)
    np.testing.assert_array_equal(a.images, b.images)
    assert np.abs(a.images.astype(int) - c.images).mean() > 1
    assert np.abs(a.images.astype(int) - src).mean() > 1
    assert a.status == ["ok", "ok"]
    # no jitter = the image rebuilt from its own two stains (the part of the OD outside the
    # stain plane is lost, as in torchstain); jitter moves further away from the input
    ident = MacenkoStainAugment(sigma1=0, sigma2=0, seed=0)(src)
    assert np.abs(ident.astype(int) - src).mean() < np.abs(a.images.astype(int) - src).mean()
    # stain-vector jitter changes hue on top of the concentrations
    v = MacenkoStainAugment(sigma1=0, sigma2=0, sigma_vec=0.1, seed=0)(src)
    assert np.abs(v.astype(int) - ident).mean() > 1


def test_augment_passes_background_through() -> None:
    white = np.full((2, 64, 64, 3), 250, np.uint8)
    res = MacenkoStainAugment(seed=0).augment(white)
    assert res.status == ["too_few_tissue_pixels"] * 2
    np.testing.assert_array_equal(res.images, white)
    with pytest.raises(ValueError, match="sigmas"):
        MacenkoStainAugment(sigma1=-1)


# ---- transforms ------------------------------------------------------------------------------
def test_macenko_transform_in_a_torchvision_pipeline(src: np.ndarray) -> None:
    from PIL import Image
    from torchvision import transforms as T

    mt = MacenkoTransform(MacenkoNormalizer())
    pipe = T.Compose([mt, T.ToPILImage(), T.RandomHorizontalFlip(p=1.0), T.ToTensor()])
    out = pipe(Image.fromarray(src[0]))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = MacenkoNormalizer().normalize(src[0]).images[:, ::-1]
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)
    mt(np.full((64, 64, 3), 255, np.uint8))
    assert mt.counts == {"ok": 1, "too_few_tissue_pixels": 1}
    with pytest.raises(StainNormalizationError):
        MacenkoTransform(MacenkoNormalizer(policy="raise"))(np.full((64, 64, 3), 255, np.uint8))
