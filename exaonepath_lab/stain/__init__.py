"""Stain normalization: batched Macenko, Reinhard, stain augmentation, fitted targets, transforms.

Macenko normalization before every view is the paper's whole intervention
(PROTOCOL.md §2). Everything here works on uint8 batches, on CPU or GPU, with one
explicit failure policy (:mod:`.policy`) instead of exceptions or silently dropped
samples.

- :class:`StainConfig` – the frozen config of a stain job (``exaonepath-lab normalize``)
- :class:`MacenkoNormalizer` – ``normalize`` / ``fit_stains`` + ``apply`` (fit once, apply cheaply)
- :class:`StainTarget`, :func:`default_target` – what images are mapped to; JSON save/load
- :class:`StainParams`, :class:`NormalizeResult` – per-image parameters and statuses
- :class:`ReinhardNormalizer` – Lab mean/std matching, batched
- :class:`MacenkoStainAugment` – random perturbation of stain concentrations/vectors
- :class:`MacenkoTransform` – drop-in torchvision transform (the eval chain: ``features.extract_features``)
"""
from __future__ import annotations

from .augment import MacenkoStainAugment
from .config import StainConfig
from .macenko import MacenkoNormalizer
from .policy import (
    POLICIES,
    STATUSES,
    StainNormalizationError,
    StainNormalizationWarning,
)
from .reinhard import ReinhardNormalizer
from .results import NormalizeResult, StainParams
from .target import StainTarget, default_target
from .transforms import MacenkoTransform

__all__ = [
    "StainConfig",
    "MacenkoNormalizer",
    "StainTarget",
    "StainParams",
    "NormalizeResult",
    "default_target",
    "ReinhardNormalizer",
    "MacenkoStainAugment",
    "MacenkoTransform",
    "StainNormalizationError",
    "StainNormalizationWarning",
    "POLICIES",
    "STATUSES",
]
