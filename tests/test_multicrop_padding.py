"""Mixed-size batches: crops never sample the padding of a smaller tile (issue 12.2)."""
from __future__ import annotations

import pytest
import torch

from exaonepath_lab.pretrain import multicrop as mc


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform grey 256 px tile (0.5 µm/px) zero-padded beside a 512 px textured tile (0.25 µm/px)."""
    g = torch.Generator().manual_seed(0)
    batch = torch.zeros(4, 3, 512, 512, dtype=torch.uint8)
    batch[0, :, :256, :256] = 160
    batch[1, :, :256, :200] = 160  # a non-square one too
    batch[2:] = torch.randint(0, 256, (2, 3, 512, 512), generator=g, dtype=torch.uint8)
    sizes = torch.tensor([[256, 256], [256, 200], [512, 512], [512, 512]])
    return batch, sizes


def test_grey_tile_batched_with_a_larger_one_gives_crops_without_a_dark_border() -> None:
    batch, sizes = _batch()
    # geometry only (no colour, blur, solarisation), the paper preset's scales and sizes
    aug = mc.MultiCropAugment(global_size=224, local_size=96, n_local=8, global_scale=(0.25, 1.0),
                              local_scale=(0.05, 0.25), mean=(0, 0, 0), std=(1, 1, 1), color_jitter_p=0,
                              grayscale_p=0, blur_p=(0, 0, 0), solarize_p=0)
    touched = 0
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        views = aug(batch, sizes, generator=gen)
        for v in views:
            grey = v[:2]
            # every pixel of every crop of the grey tiles is the tile's grey, last row and column included
            torch.testing.assert_close(grey, torch.full_like(grey, 160 / 255), atol=1e-5, rtol=0)
        gen = torch.Generator().manual_seed(seed)
        for view in aug.views:  # the same boxes the augmentation drew: count crops that reach the edge
            boxes = mc.random_resized_crop_boxes(sizes, view.scale, generator=gen)
            touched += int(((boxes[:2, 2] >= sizes[:2, 1] - 0.5) | (boxes[:2, 3] >= sizes[:2, 0] - 0.5)).sum())
            torch.rand(4, 6, generator=gen)  # the flip/jitter/... draws that follow each view's boxes
    assert touched >= 1  # the check above saw a crop that reaches the right/bottom edge
    # whole-tile crops always reach the edge
    whole = mc.MultiCropAugment(global_size=224, local_size=96, n_local=2, global_scale=(1.0, 1.0),
                                local_scale=(0.9, 1.0), mean=(0, 0, 0), std=(1, 1, 1), color_jitter_p=0,
                                grayscale_p=0, blur_p=(0, 0, 0), solarize_p=0)
    for v in whole(batch, sizes, generator=torch.Generator().manual_seed(0)):
        torch.testing.assert_close(v[:2], torch.full_like(v[:2], 160 / 255), atol=1e-5, rtol=0)


def test_crop_in_a_padded_batch_equals_the_crop_of_the_tile_alone() -> None:
    batch, sizes = _batch()
    small = torch.randint(0, 256, (3, 256, 200), generator=torch.Generator().manual_seed(1)).float()
    x = batch.float()
    x[1] = 0
    x[1, :, :256, :200] = small
    mc.replicate_padding(x, sizes)
    boxes = torch.tensor([[100.0, 150.0, 200.0, 256.0], [0.0, 0.0, 200.0, 256.0], [37.0, 10.0, 199.0, 190.0]])
    for box in boxes:
        in_batch = mc.crop_and_resize(x[1:2], box[None], 96)
        alone = mc.crop_and_resize(small[None], box[None], 96)
        torch.testing.assert_close(in_batch, alone, atol=1e-4, rtol=0)
    # the big tiles are untouched
    torch.testing.assert_close(x[2:], batch[2:].float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_padding_is_refilled_on_the_gpu_too() -> None:
    batch, sizes = _batch()
    aug = mc.MultiCropAugment(global_size=64, local_size=32, n_local=2, global_scale=(1.0, 1.0),
                              local_scale=(0.9, 1.0), mean=(0, 0, 0), std=(1, 1, 1), color_jitter_p=0,
                              grayscale_p=0, blur_p=(0, 0, 0), solarize_p=0)
    for v in aug(batch.cuda(), sizes, generator=torch.Generator().manual_seed(0)):
        torch.testing.assert_close(v[:2].cpu(), torch.full_like(v[:2].cpu(), 160 / 255), atol=1e-5, rtol=0)
