"""DINO building blocks against plain implementations of the published formulas (Caron et al. 2021)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from exaonepath_lab.pretrain import multicrop as mc
from exaonepath_lab.pretrain.head import DINOHead, MultiCropWrapper
from exaonepath_lab.pretrain.loss import DINOLoss
from exaonepath_lab.pretrain.optim import (apply_schedules, build_optimizer, cancel_last_layer_gradients,
                                           clip_gradients, param_groups)
from exaonepath_lab.pretrain.schedules import build_schedules, cosine_schedule, teacher_temp_schedule
from exaonepath_lab.pretrain.teacher import ema_update, make_teacher

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ loss
def _ref_dino_loss(s: np.ndarray, t: np.ndarray, center: np.ndarray, n_crops: int, tau_s: float, tau_t: float,
                   m: float) -> tuple[float, np.ndarray]:
    """Algorithm 1 of the DINO paper, written out with numpy loops."""
    def softmax(z):
        z = z - z.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)

    b = t.shape[0] // 2
    total, n = 0.0, 0
    for iq in range(2):
        pt = softmax((t[iq * b:(iq + 1) * b] - center) / tau_t)
        for v in range(n_crops):
            if v == iq:
                continue
            ps = softmax(s[v * b:(v + 1) * b] / tau_s)
            total += float(np.mean(np.sum(-pt * np.log(ps), axis=-1)))
            n += 1
    new_center = center * m + t.mean(0, keepdims=True) * (1 - m)
    return total / n, new_center


def test_dino_loss_matches_reference_and_updates_center_without_process_group() -> None:
    rng = np.random.default_rng(0)
    b, k, n_crops = 5, 17, 4
    s = rng.normal(size=(n_crops * b, k)).astype(np.float32)
    t = rng.normal(size=(2 * b, k)).astype(np.float32)
    loss_fn = DINOLoss(k, n_crops=n_crops, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.from_numpy(rng.normal(size=(1, k)).astype(np.float32)))
    c0 = loss_fn.center.numpy().copy()
    got = float(loss_fn(torch.from_numpy(s), torch.from_numpy(t), 0.04))
    want, c1 = _ref_dino_loss(s.astype(np.float64), t.astype(np.float64), c0, n_crops, 0.1, 0.04, 0.9)
    assert got == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(loss_fn.center.numpy(), c1, rtol=1e-5, atol=1e-6)
    st = loss_fn.last_stats
    assert st.kl == pytest.approx(st.loss - st.teacher_entropy, abs=1e-5)
    assert 0 <= st.teacher_entropy <= math.log(k) + 1e-5 and 0 <= st.batch_entropy <= math.log(k) + 1e-5


def test_dino_loss_uniform_outputs_give_ln_out_dim() -> None:
    k = 64
    loss_fn = DINOLoss(k, n_crops=3)
    loss = loss_fn(torch.zeros(3 * 4, k), torch.zeros(2 * 4, k), 0.04)
    assert float(loss) == pytest.approx(math.log(k), rel=1e-6)
    assert loss_fn.collapse_loss == pytest.approx(math.log(k))


def test_dino_loss_rejects_wrong_crop_count() -> None:
    with pytest.raises(ValueError, match="n_crops"):
        DINOLoss(8, n_crops=4)(torch.zeros(9, 8), torch.zeros(6, 8), 0.04)


def _ref_sinkhorn(logits: np.ndarray, temp: float, n_iters: int) -> np.ndarray:
    # SwAV/DINOv2 written out in float64 numpy: Q = exp(l/T)^T, alternate row/column scaling.
    q = np.exp(logits / temp).T
    k, n = q.shape
    q /= q.sum()
    for _ in range(n_iters):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * n
    return (q * n).T


def test_sinkhorn_knopp_matches_reference_and_equipartitions() -> None:
    from exaonepath_lab.pretrain.loss import sinkhorn_knopp

    rng = np.random.default_rng(1)
    n, k = 24, 16
    logits = rng.normal(scale=0.3, size=(n, k))
    got = sinkhorn_knopp(torch.from_numpy(logits).float(), 0.1, n_iters=3).double().numpy()
    np.testing.assert_allclose(got, _ref_sinkhorn(logits, 0.1, 3), rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # each sample: a distribution
    many = sinkhorn_knopp(torch.from_numpy(logits).float(), 0.1, n_iters=50).double().numpy()
    np.testing.assert_allclose(many.sum(0), n / k, rtol=1e-3)  # each prototype: the same mass
    # A sharp temperature overflows a naive exp(l / T) in fp32; the kernel subtracts the max first.
    sharp = sinkhorn_knopp(torch.from_numpy(logits * 100).float(), 0.02)
    assert torch.isfinite(sharp).all() and float(sharp.sum(1).sub(1).abs().max()) < 1e-4


def test_dino_loss_sinkhorn_centering_prevents_one_prototype_collapse() -> None:
    # Every teacher output points at prototype 0: EMA centring (fresh centre) keeps the sharp
    # one-hot target, Sinkhorn-Knopp spreads the batch over prototypes (batch entropy > 0).
    k, b = 8, 16
    t = torch.zeros(2 * b, k)
    t[:, 0] = 5.0
    t += 0.01 * torch.randn(2 * b, k, generator=torch.Generator().manual_seed(0))
    s = torch.zeros(4 * b, k)
    ema = DINOLoss(k, n_crops=4)
    ema(s, t, 0.04)
    sk = DINOLoss(k, n_crops=4, centering="sinkhorn")
    sk(s, t, 0.04)
    assert ema.last_stats.batch_entropy < 0.01
    assert sk.last_stats.batch_entropy > 0.9 * math.log(k)
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(k, n_crops=4, centering="mean")


# ------------------------------------------------------------------------------------------------ head
def test_head_is_cosine_to_normalised_prototypes() -> None:
    torch.manual_seed(0)
    head = DINOHead(12, 40, hidden_dim=16, bottleneck_dim=8, norm_last_layer=True)
    x = torch.randn(6, 12)
    out = head(x)
    assert out.shape == (6, 40)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    w = head.last_layer_v / head.last_layer_v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, z @ w.t())
    assert out.abs().max() <= 1 + 1e-5
    assert not head.last_layer_g.requires_grad
    assert len([m for m in head.mlp if isinstance(m, torch.nn.Linear)]) == 3  # 3-layer MLP
    free = DINOHead(12, 40, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False)
    assert free.last_layer_g.requires_grad


def test_multicrop_wrapper_groups_equal_resolutions_and_keeps_order() -> None:
    calls = []

    class Bb(torch.nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return x.mean(dim=(2, 3))

    w = MultiCropWrapper(Bb(), torch.nn.Identity())
    crops = [torch.full((2, 3, 8, 8), 1.0), torch.full((2, 3, 8, 8), 2.0), torch.full((2, 3, 4, 4), 3.0)]
    out = w(crops)
    assert calls == [(4, 3, 8, 8), (2, 3, 4, 4)]
    assert out[:, 0].tolist() == [1, 1, 2, 2, 3, 3]


# ------------------------------------------------------------------------------------------------ schedules
def test_cosine_schedule_formula_and_iteration_warmup() -> None:
    v = cosine_schedule(1.0, 0.1, 110, warmup_iters=10)
    assert len(v) == 110
    np.testing.assert_allclose(v[:10], np.linspace(0, 1, 10, endpoint=False))
    i = np.arange(100)
    np.testing.assert_allclose(v[10:], 0.1 + 0.45 * (1 + np.cos(np.pi * i / 99)))
    assert v[10] == pytest.approx(1.0) and v[-1] == pytest.approx(0.1)


def test_warmup_longer_than_run_is_clipped_and_peak_reached() -> None:
    v = cosine_schedule(5e-3, 1e-6, 40, warmup_iters=1000)  # paper's 1,000 iterations on a 40-iteration run
    assert len(v) == 40 and v.max() == pytest.approx(5e-3) and v[-1] == pytest.approx(1e-6)
    t = teacher_temp_schedule(0.04, 0.07, 10, warmup_iters=30)
    np.testing.assert_allclose(t, np.linspace(0.04, 0.07, 10))
    t2 = teacher_temp_schedule(0.04, 0.07, 50, warmup_iters=30)
    assert t2[29] == pytest.approx(0.07) and np.all(t2[30:] == 0.07)
    s = build_schedules(total_iters=20, peak_lr=1e-3, min_lr=0, warmup_iters=5, weight_decay=0.04,
                        weight_decay_end=0.4, momentum=0.996, momentum_end=1.0, warmup_teacher_temp=0.04,
                        teacher_temp=0.07, warmup_teacher_temp_iters=10)
    assert s["wd"][0] == pytest.approx(0.04) and s["wd"][-1] == pytest.approx(0.4)
    assert s["momentum"][0] == pytest.approx(0.996) and s["momentum"][-1] == pytest.approx(1.0)
    assert all(len(a) == 20 for a in s.values())


# ------------------------------------------------------------------------------------------------ optimiser, EMA
def test_param_groups_exclude_biases_and_norms_from_weight_decay() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), DINOHead(4, 8, hidden_dim=8, bottleneck_dim=4))
    decay, no_decay = param_groups(m)
    dec_names = {n for n, p in m.named_parameters() if any(p is q for q in decay["params"])}
    assert dec_names == {"0.weight", "2.mlp.0.weight", "2.mlp.2.weight", "2.mlp.4.weight", "2.last_layer_v"}
    assert no_decay["weight_decay"] == 0.0
    opt = build_optimizer(m)
    apply_schedules(opt, lr=0.5, wd=0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]


def test_clip_gradients_per_parameter_and_last_layer_freeze() -> None:
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5
    norms = clip_gradients([a, b], 1.0)
    assert norms == pytest.approx([5.0, 0.5])
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))
    cancel_last_layer_gradients([a], epoch=0.5, freeze_epochs=1)
    assert a.grad is None
    cancel_last_layer_gradients([b], epoch=1.0, freeze_epochs=1)
    assert b.grad is not None


def test_ema_teacher_formula() -> None:
    torch.manual_seed(0)
    s = torch.nn.Linear(3, 2)
    t = make_teacher(s, torch.nn.Linear(3, 2))
    assert all(not p.requires_grad for p in t.parameters())
    torch.testing.assert_close(t.weight, s.weight)
    t0 = t.weight.clone()
    with torch.no_grad():
        s.weight.add_(1.0)
    ema_update(t, s, 0.9)
    torch.testing.assert_close(t.weight, 0.9 * t0 + 0.1 * s.weight)


# ------------------------------------------------------------------------------------------------ augmentation
@pytest.fixture(scope="module")
def imgs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(5, 3, 20, 24, generator=g)


@pytest.mark.parametrize("name,ref", [
    ("brightness", TF.adjust_brightness), ("contrast", TF.adjust_contrast),
    ("saturation", TF.adjust_saturation), ("hue", TF.adjust_hue)])
def test_colour_ops_match_torchvision_per_image(imgs: torch.Tensor, name: str, ref) -> None:
    factors = torch.tensor([0.6, 1.0, 1.4, 0.8, 1.2]) if name != "hue" else torch.tensor([-0.1, 0.0, 0.05, 0.1, -0.3])
    got = getattr(mc, f"adjust_{name}")(imgs, factors)
    want = torch.stack([ref(x, float(f)) for x, f in zip(imgs, factors)])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_gray_blur_solarize_match_torchvision(imgs: torch.Tensor) -> None:
    torch.testing.assert_close(mc._gray(imgs).expand_as(imgs), TF.rgb_to_grayscale(imgs, 3), atol=1e-6, rtol=0)
    sig = torch.tensor([0.5, 1.0, 1.5, 0.2, 1.2])
    got = mc.gaussian_blur(imgs, sig)
    r = math.ceil(3 * 1.5)
    want = torch.stack([TF.gaussian_blur(x, [2 * r + 1] * 2, [float(s)] * 2) for x, s in zip(imgs, sig)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    aug = mc.MultiCropAugment(global_size=8, local_size=4, n_local=0, solarize_p=1.0, blur_p=(0, 0, 0),
                              color_jitter_p=0, grayscale_p=0, flip_p=0, global_scale=(1, 1), mean=(0, 0, 0),
                              std=(1, 1, 1))
    x = torch.rand(2, 3, 8, 8)
    g1, g2 = aug(x)
    torch.testing.assert_close(g2, TF.solarize(x, 0.5), atol=1e-5, rtol=0)  # solarised global-2
    torch.testing.assert_close(g1, x, atol=1e-5, rtol=0)  # full-image crop at the same size = identity


def test_random_resized_crop_boxes_follow_torchvision_law() -> None:
    g = torch.Generator().manual_seed(1)
    sizes = torch.tensor([[100, 150]] * 4000)
    boxes = mc.random_resized_crop_boxes(sizes, (0.1, 0.6), generator=g)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    area = (w * h) / (100 * 150)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 150).all() and (boxes[:, 3] <= 100).all()
    assert area.min() > 0.09 and area.max() < 0.62
    ratio = w / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    assert abs(float(area.mean()) - 0.35) < 0.02  # uniform scale (0.1, 0.6) -> mean ~0.35


def test_multicrop_shapes_determinism_and_padding_never_leaks() -> None:
    aug = mc.MultiCropAugment(global_size=16, local_size=8, n_local=3, mean=(0, 0, 0), std=(1, 1, 1),
                              color_jitter_p=0, grayscale_p=0, blur_p=(0, 0, 0), solarize_p=0)
    # two images of different sizes in one zero-padded batch: a 40x40 and a 20x30 image of value 200
    batch = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)
    batch[0] = 200
    batch[1, :, :20, :30] = 200
    sizes = torch.tensor([[40, 40], [20, 30]])
    out = aug(batch, sizes, generator=torch.Generator().manual_seed(3))
    assert [tuple(o.shape) for o in out] == [(2, 3, 16, 16)] * 2 + [(2, 3, 8, 8)] * 3
    for o in out:
        torch.testing.assert_close(o, torch.full_like(o, 200 / 255), atol=1e-5, rtol=0)  # no padding inside
    again = aug(batch, sizes, generator=torch.Generator().manual_seed(3))
    full = mc.MultiCropAugment(global_size=16, local_size=8, n_local=3)
    x = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    a = full(x, generator=torch.Generator().manual_seed(5))
    b = full(x, generator=torch.Generator().manual_seed(5))
    c = full(x, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])
    assert all(torch.equal(u, v) for u, v in zip(out, again))
    with pytest.raises(ValueError, match="expected images"):
        full(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


def test_augmentation_probabilities_per_view() -> None:
    """Blur p = 1.0 / 0.1 / 0.5 and solarisation only on global-2, measured on a flat-edge image."""
    aug = mc.MultiCropAugment(global_size=16, local_size=16, n_local=1, global_scale=(1, 1), local_scale=(1, 1),
                              color_jitter_p=0, grayscale_p=0, flip_p=0, mean=(0, 0, 0), std=(1, 1, 1),
                              blur_sigma=(1.0, 1.0))
    x = torch.zeros(800, 3, 16, 16)
    x[..., 8:] = 0.4  # a vertical edge; blur smooths it, solarisation (>= 0.5) never triggers
    g1, g2, loc = aug(x, generator=torch.Generator().manual_seed(0))
    blurred = [float((v[:, 0, 8, 7] > 1e-3).float().mean()) for v in (g1, g2, loc)]
    assert blurred[0] == 1.0
    assert 0.05 < blurred[1] < 0.16
    assert 0.42 < blurred[2] < 0.58
    y = torch.full((800, 3, 16, 16), 0.8)
    aug2 = mc.MultiCropAugment(global_size=16, local_size=16, n_local=1, global_scale=(1, 1), local_scale=(1, 1),
                               color_jitter_p=0, grayscale_p=0, flip_p=0, blur_p=(0, 0, 0), mean=(0, 0, 0),
                               std=(1, 1, 1))
    h1, h2, hl = aug2(y, generator=torch.Generator().manual_seed(0))
    sol = [float((v[:, 0, 0, 0] < 0.5).float().mean()) for v in (h1, h2, hl)]
    assert sol[0] == 0 and sol[2] == 0 and 0.15 < sol[1] < 0.25
