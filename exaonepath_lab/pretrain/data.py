"""Pretraining data: datasets over tiling output or image folders, a resumable sampler, collation.

- :func:`open_pretrain_dataset` picks :class:`~exaonepath_lab.slides.dataset.TiledPatchDataset`
  for a tiling output folder (``manifest.csv`` + ``patches/*.h5``; patches are read
  from the slides in the loader workers) and
  :class:`~exaonepath_lab.datasets.ImageFolderDataset` otherwise.
- :class:`EpochSampler`: a permutation fixed by ``(seed, epoch)``, sharded over ranks,
  that can start mid-epoch (``set_epoch(epoch, start_batch)``) so a resumed run sees
  exactly the images the uninterrupted run would have seen.
- :class:`PretrainCollate`: Macenko-normalises each image once, before any crop
  (paper §3.3, probability 1, when enabled), and pads images of different sizes into
  one uint8 batch ``(B, 3, H_max, W_max)`` with their true ``(H, W)``; patches are
  never resized (paper §4.1) unless ``load_px`` asks for it (small-crop CPU runs),
  and then only after normalisation. Normalisation statuses travel with the batch so the
  trainer can count failures.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .config import PretrainConfig


def open_pretrain_dataset(path: str | Path, *, out_px: int | None = None, **kwargs: Any) -> Dataset:
    """Dataset over a tiling output folder (has ``manifest.csv``) or an image folder.

    ``out_px``: read tiled patches area-resized to ``out_px`` (from a coarser pyramid level when
    one covers it); image folders are read at their own size (the collate resizes them).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"pretraining data not found: {p}. Pass a tiling output folder (exaonepath-lab tile ... --out DIR) "
            "or a folder of images."
        )
    if (p / "manifest.csv").is_file() or (p / "patches").is_dir():
        from ..slides.dataset import TiledPatchDataset

        return TiledPatchDataset(p, out_px=out_px, **kwargs)
    from ..datasets import ImageFolderDataset

    return ImageFolderDataset(p, **kwargs)


def record_stain_target(cfg: PretrainConfig, out: str | Path) -> PretrainConfig:
    """Write the Macenko target the run uses to OUT/stain_target.json (name, sha256, numbers).

    A target *image* (the authors' PNG) is fitted here, once, and the run then loads the fitted JSON
    (``stain_target`` points to it; reruns reuse it while the image's sha256 is unchanged). A JSON
    target or the HERef default is used as given and only recorded.
    """
    from ..stain.target import IMAGE_SUFFIXES, resolve_target

    # Absolute: the run's config (compared on --resume) must not depend on the working directory.
    cached = Path(out).absolute() / "stain_target.json"
    spec = cfg.stain_target
    if spec and Path(spec).resolve() == cached.resolve():
        return cfg
    target = resolve_target(spec, cache_path=cached)
    if spec and Path(spec).suffix.lower() in IMAGE_SUFFIXES:
        cfg = cfg.replace(stain_target=str(cached))
    else:
        target.save(cached)
    prov = target.provenance()
    print(f"Macenko target: {prov['name']} (sha256 {prov['sha256'][:16]}...) recorded in {cached}", file=sys.stderr)
    return cfg


class EpochSampler(Sampler[int]):
    """Deterministic per-epoch shuffling, sharded over ``world_size`` ranks, resumable mid-epoch.

    Every epoch uses ``num_batches * batch_size * world_size`` indices of a permutation
    seeded by ``(seed, epoch)`` (the tail that does not fill a global batch is left
    out of that epoch only; the next permutation differs). Rank ``r`` takes every
    ``world_size``-th index starting at ``r``, as ``DistributedSampler`` does.
    """

    def __init__(self, n: int, *, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if n < batch_size * world_size:
            raise ValueError(
                f"dataset has {n} images but one global batch needs batch_size × world_size = "
                f"{batch_size} × {world_size}; lower batch_size or add data"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def num_batches(self) -> int:
        """Batches per epoch on each rank."""
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_batch`` batches (resume)."""
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.num_batches}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for the whole epoch, ``(num_batches * batch_size,)`` int64."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.n)
        else:
            perm = np.arange(self.n)
        used = perm[: self.num_batches * self.batch_size * self.world_size]
        return used[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        idx = self.epoch_indices(self.epoch)[self.start_batch * self.batch_size :]
        return iter(idx.tolist())

    def __len__(self) -> int:
        return (self.num_batches - self.start_batch) * self.batch_size


class PretrainCollate:
    """Items ``{"image": uint8 (H, W, 3), "index": i}`` -> padded batch dict.

    Returns ``{"images": uint8 (B, 3, H_max, W_max), "sizes": int64 (B, 2), "index":
    int64 (B,), "stain_status": list[str]}``; ``stain_status`` is ``"off"`` when
    normalisation is disabled. Picklable, so it runs inside DataLoader workers.
    """

    def __init__(self, normalize: bool = False, *, stain_target: str | None = None,
                 stain_policy: str = "passthrough", load_px: int | None = None) -> None:
        self.normalize = normalize
        self.load_px = int(load_px) if load_px else None
        self.stain_target = stain_target
        self.stain_policy = stain_policy
        self._normalizer = None

    def _get_normalizer(self):
        if self._normalizer is None:
            from ..stain import MacenkoNormalizer

            target = None
            if self.stain_target is not None:
                from ..stain.target import StainTarget

                target = StainTarget.load(self.stain_target)  # a target fitted with the stain tools
            self._normalizer = MacenkoNormalizer(target=target, policy=self.stain_policy)
        return self._normalizer

    def normalize_images(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
        """Macenko each image once (grouped by size for the batched normaliser)."""
        out: list[np.ndarray] = list(images)
        status = ["ok"] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        norm = self._get_normalizer()
        for _, idx in groups.items():
            res = norm.normalize(np.stack([images[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = np.asarray(res.images[j], dtype=np.uint8)
                status[i] = str(res.status[j])
        return out, status

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        images = []
        for it in items:
            im = np.asarray(it["image"])
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(
                    f"item {it.get('index')}: expected uint8 (H, W, 3) RGB, got {im.dtype} {im.shape}; "
                    "pretraining datasets must return raw images (augmentation happens on the batch)"
                )
            images.append(im)
        if self.normalize:
            images, status = self.normalize_images(images)
        else:
            status = ["off"] * len(images)
        if self.load_px is not None:
            images = [_area_resize(im, self.load_px) for im in images]
        hmax = max(im.shape[0] for im in images)
        wmax = max(im.shape[1] for im in images)
        batch = np.zeros((len(images), hmax, wmax, 3), dtype=np.uint8)
        for i, im in enumerate(images):
            batch[i, : im.shape[0], : im.shape[1]] = im
        return {
            "images": torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(),
            "sizes": torch.tensor([im.shape[:2] for im in images], dtype=torch.int64),
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.int64),
            "stain_status": status,
        }


def _area_resize(image: np.ndarray, px: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(px, px, 3)`` (PIL box filter = area average when shrinking)."""
    if image.shape[0] == px and image.shape[1] == px:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((px, px), Image.BOX if min(image.shape[:2]) >= px
                                                    else Image.BICUBIC))


class ArrayDataset(Dataset):
    """Item-protocol dataset over images already in memory: ``(N, H, W, 3)`` uint8 plus a ``meta`` table.

    Used to cache a small cohort's patches once (demo, tests, benchmarks) so that
    every epoch does not re-read the slides.
    """

    def __init__(self, images: np.ndarray, meta: Any | None = None) -> None:
        import pandas as pd

        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images = images
        self.meta = meta.reset_index(drop=True) if meta is not None else pd.DataFrame({"label": [-1] * len(images)})
        if len(self.meta) != len(images):
            raise ValueError(f"meta has {len(self.meta)} rows for {len(images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[int(i)], "index": int(i)}
