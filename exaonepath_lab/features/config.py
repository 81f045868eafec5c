"""The frozen config of an extraction job, saved as ``FEATURES.h5.config.json`` beside the cache."""
from __future__ import annotations

import dataclasses

from ..config import JobConfig


@dataclasses.dataclass(frozen=True)
class ExtractConfig(JobConfig):
    """Everything `exaonepath-lab extract` was asked to do (the cache key records what it did)."""

    encoder: str
    checkpoint: str | None = None
    tiles: str | None = None
    images: str | None = None
    out: str = "features.h5"
    normalize: bool = False
    stain_target: str | None = None
    stain_policy: str = "passthrough"
    stain_backend: str = "auto"
    resize: bool = True
    crop: bool = True
    batch_size: int = 64
    num_workers: int = 0
    device: str = "cpu"
    max_per_slide: int | None = None
    out_px: int | None = None
    seed: int = 0
    encoder_kw: tuple[str, ...] = ()
