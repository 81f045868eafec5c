"""DINO multi-crop augmentation, batched on tensors (Caron et al. 2021, §3.1 and App. D).

Two global crops and ``n_local`` local crops per image, each with per-sample random
parameters but computed for the whole batch at once (on the GPU when the batch is
there), instead of DINO's per-image PIL pipeline:

- random resized crop (torchvision's algorithm: scale in ``scale``, aspect ratio in
  [3/4, 4/3], 10 tries then a centre crop), bilinear via ``roi_align`` so that
  images of different sizes (512 px tiles at 0.25 µm/px beside 256 px tiles at
  0.5 µm/px, paper §4.1) share one padded batch without being resized first. The
  padding of each smaller tile is refilled with copies of its own last row and column
  (:func:`replicate_padding`), so a crop touching its right or bottom edge samples
  exactly what the tile alone gives (``roi_align`` clamps at the border) and never the
  padding, which would darken the edges of small tiles only: a shortcut tied to the
  source slide's µm/px;
- horizontal flip p=0.5;
- colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with p=0.8,
  the four operations in a random order per sample (as ``torchvision.ColorJitter``);
- grayscale p=0.2;
- Gaussian blur, sigma in [0.1, 2.0] px, p = 1.0 / 0.1 / 0.5 for global-1 / global-2 /
  local crops;
- solarization (threshold 0.5) p=0.2 on global-2 only;
- ImageNet mean/std normalisation.

Macenko normalisation is *not* here: the paper applies it once per image, before
cropping (§3.3), which :mod:`exaonepath_lab.pretrain.data` does when loading.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import IMAGENET_MEAN, IMAGENET_STD


# ----------------------------------------------------------------------------- geometry
def random_resized_crop_boxes(
    sizes: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> torch.Tensor:
    """Per-image crop boxes ``(B, 4)`` as ``x0, y0, x1, y1`` (px, float) — torchvision's RandomResizedCrop.

    ``sizes``: ``(B, 2)`` image ``(H, W)``. For each image, up to ``tries`` candidate
    boxes of area ``U(scale) * H * W`` and log-uniform aspect ratio; the first that
    fits is taken, else a centre crop of the largest box with a ratio in range.
    """
    b = sizes.shape[0]
    h_img = sizes[:, 0].double()
    w_img = sizes[:, 1].double()
    area = (h_img * w_img)[:, None]
    dev = sizes.device
    u = torch.rand(b, tries, 2, generator=generator, dtype=torch.float64).to(dev)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    ar = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * ar))
    h = torch.round(torch.sqrt(target / ar))
    ok = (w > 0) & (h > 0) & (w <= w_img[:, None]) & (h <= h_img[:, None])
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.full((b,), -1, device=dev))
    idx = first.clamp_min(0)[:, None]
    w_sel = w.gather(1, idx)[:, 0]
    h_sel = h.gather(1, idx)[:, 0]
    # Fallback (torchvision): whole image clipped to the ratio range, centred.
    in_ratio = w_img / h_img
    fw = torch.where(in_ratio < ratio[0], w_img, torch.where(in_ratio > ratio[1], torch.round(h_img * ratio[1]), w_img))
    fh = torch.where(in_ratio < ratio[0], torch.round(w_img / ratio[0]), h_img)
    fb = first < 0
    w_sel = torch.where(fb, fw, w_sel)
    h_sel = torch.where(fb, fh, h_sel)
    v = torch.rand(b, 2, generator=generator, dtype=torch.float64).to(dev)
    # torchvision draws integer offsets in [0, W - w]; the continuous version is equivalent in law.
    x0 = torch.where(fb, (w_img - w_sel) / 2, torch.floor(v[:, 0] * (w_img - w_sel + 1)))
    y0 = torch.where(fb, (h_img - h_sel) / 2, torch.floor(v[:, 1] * (h_img - h_sel + 1)))
    return torch.stack([x0, y0, x0 + w_sel, y0 + h_sel], 1).float()


def replicate_padding(images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Fill each image's padding (right of column ``W_i - 1``, below row ``H_i - 1``) with its edge pixels, in place.

    ``images``: ``(B, C, H, W)`` float; ``sizes``: ``(B, 2)`` each image's own ``(H_i, W_i)``.
    Bilinear sampling near ``W_i`` then blends the edge pixel with a copy of itself,
    which is what ``roi_align`` does at a real image border (it clamps), so a crop of a
    tile in a padded batch equals the crop of that tile alone.
    """
    hh, ww = images.shape[-2:]
    for h, w in torch.unique(sizes.cpu(), dim=0).tolist():
        if h > hh or w > ww or h < 1 or w < 1:
            raise ValueError(f"image size {(h, w)} does not fit the batch tensor {(hh, ww)}")
        if h == hh and w == ww:
            continue
        idx = ((sizes[:, 0].cpu() == h) & (sizes[:, 1].cpu() == w)).nonzero(as_tuple=True)[0].to(images.device)
        sub = images[idx]
        sub[:, :, :h, w:] = sub[:, :, :h, w - 1:w]
        sub[:, :, h:, :] = sub[:, :, h - 1:h, :]
        images[idx] = sub
    return images


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crops ``(B, C, size, size)`` of ``images`` ``(B, C, H, W)`` float at ``boxes`` ``(B, 4)``.

    ``roi_align`` averages ``ceil(box/size)`` samples per output pixel (``sampling_ratio=-1``
    adapts), which anti-aliases large downscales such as 512 px tiles -> 96 px crops.
    """
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], 1)
    return roi_align(images, rois.to(images.dtype), output_size=(size, size), spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


# ----------------------------------------------------------------------------- colour
def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``(B, 1, H, W)``, as torchvision's ``rgb_to_grayscale``."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``x * f`` clipped to [0, 1]; ``f``: ``(B,)``."""
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the mean gray level of each image."""
    m = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * m).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image."""
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * _gray(x)).clamp(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc = (maxc - r) / crd
    gc = (maxc - g) / crd
    bc = (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    # Closed form f(n) = V - V*S*max(0, min(k, 4 - k, 1)), k = (n + 6H) mod 6, n = 5, 3, 1 for R, G, B:
    # elementwise, equal to the sector table of colorsys/torchvision.
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``f`` (fraction of the circle, in [-0.5, 0.5]) in HSV space."""
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` ``(B,)`` (px), reflect padding."""
    b, c, hh, ww = x.shape
    radius = int(math.ceil(3.0 * float(sigma.max())))
    radius = max(1, min(radius, (min(hh, ww) - 1)))  # reflect padding needs radius < size
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None].to(x.dtype)) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, K)
    k = k.repeat_interleave(c, 0)  # one kernel per (sample, channel)
    y = x.reshape(1, b * c, hh, ww)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, hh, ww)


def _apply_where(x: torch.Tensor, mask: torch.Tensor, fn, *params: torch.Tensor) -> torch.Tensor:
    """Apply ``fn(x[mask], *params[mask])`` to the selected samples only."""
    idx = mask.nonzero(as_tuple=True)[0]
    if idx.numel() == 0:
        return x
    out = x.clone()
    out[idx] = fn(x[idx], *(p[idx] for p in params))
    return out


# ----------------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class ViewSpec:
    """Augmentation of one kind of view (global-1, global-2 or local)."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float = 0.0


class MultiCropAugment:
    """``(images uint8 (B, 3, H, W), sizes (B, 2)) -> list of 2 + n_local float tensors (B, 3, s, s)``.

    Order: global-1, global-2, local-1..n (the teacher sees the first two).
    ``sizes`` holds each image's own ``(H, W)`` inside a padded batch (the padding's
    values are never sampled: :func:`replicate_padding`); pass ``None`` when all
    images fill the batch tensor. Randomness comes only from
    ``generator``, so a batch's crops are reproducible from a seed (exact resume).
    """

    def __init__(
        self,
        *,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: float = 0.2,
        flip_p: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        self.views = [
            ViewSpec(global_size, global_scale, blur_p[0]),
            ViewSpec(global_size, global_scale, blur_p[1], solarize_p),
        ] + [ViewSpec(local_size, local_scale, blur_p[2]) for _ in range(n_local)]
        self.color_jitter = color_jitter
        self.color_jitter_p = color_jitter_p
        self.grayscale_p = grayscale_p
        self.blur_sigma = blur_sigma
        self.flip_p = flip_p
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @property
    def n_crops(self) -> int:
        return len(self.views)

    def color_jitter_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Colour jitter with per-sample factors; the order of the 4 operations is drawn per call.

        ``torchvision.ColorJitter`` draws the order per image; drawing it per batch and
        view (each view of each batch gets its own order) keeps the 4 operations
        vectorised. Brightness, contrast and saturation commute up to clipping, so
        only the position of the hue shift really matters.
        """
        b = x.shape[0]
        dev = x.device
        bri, con, sat, hue = self.color_jitter
        # Random numbers are drawn on the CPU generator and moved: one stream for CPU and GPU runs.
        u = torch.rand(b, 4, generator=generator).to(dev)
        factors = [
            1 - bri + 2 * bri * u[:, 0],
            1 - con + 2 * con * u[:, 1],
            1 - sat + 2 * sat * u[:, 2],
            -hue + 2 * hue * u[:, 3],
        ]
        ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
        for op in torch.randperm(4, generator=generator).tolist():
            x = ops[op](x, factors[op])
        return x

    def augment_view(self, images: torch.Tensor, sizes: torch.Tensor, view: ViewSpec, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """One view for the whole batch: ``(B, 3, H, W)`` float [0, 1] -> ``(B, 3, s, s)`` normalised."""
        b = images.shape[0]
        dev = images.device
        boxes = random_resized_crop_boxes(sizes.cpu(), view.scale, generator=generator).to(dev)
        x = crop_and_resize(images, boxes, view.size).clamp(0, 1)
        r = torch.rand(b, 6, generator=generator).to(dev)
        flip = r[:, 0] < self.flip_p
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        jit = (r[:, 1] < self.color_jitter_p).nonzero(as_tuple=True)[0]
        if jit.numel():
            x = x.clone()
            x[jit] = self.color_jitter_batch(x[jit], generator)
        gray = r[:, 2] < self.grayscale_p
        x = torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        blur = r[:, 3] < view.blur_p
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * r[:, 4]
        x = _apply_where(x, blur, gaussian_blur, sigma)
        if view.solarize_p > 0:
            sol = r[:, 5] < view.solarize_p
            x = torch.where(sol.view(-1, 1, 1, 1), torch.where(x >= 0.5, 1.0 - x, x), x)
        return (x - self.mean.to(dev)) / self.std.to(dev)

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}; "
                             "convert HWC uint8 with images.permute(0, 3, 1, 2)")
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float().clone()
        if sizes is None:
            sizes = torch.tensor([[x.shape[2], x.shape[3]]] * x.shape[0])
        else:
            replicate_padding(x, sizes)
        return [self.augment_view(x, sizes, v, generator=generator) for v in self.views]
