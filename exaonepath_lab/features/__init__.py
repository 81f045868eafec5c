"""Batched feature extraction and the HDF5 feature cache keyed by what produced it."""
from __future__ import annotations

from .cache import FeatureSet, load_features, patch_list_sha256, read_key, save_features
from .config import ExtractConfig
from .extract import extract_features, make_key
from .preprocess import normalize_stain, normalizer_identity

__all__ = [
    "ExtractConfig",
    "FeatureSet",
    "extract_features",
    "load_features",
    "make_key",
    "normalize_stain",
    "normalizer_identity",
    "patch_list_sha256",
    "read_key",
    "save_features",
]
