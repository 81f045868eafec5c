"""Frozen encoders by name, with their preprocessing and strict checkpoint loading.

>>> from exaonepath_lab.encoders import create_encoder
>>> enc = create_encoder("exaonepath", checkpoint="EXAONEPath.ckpt")   # doctest: +SKIP
>>> pre = Preprocessing.for_encoder(enc)       # the encoder's own resize -> crop -> mean/std
>>> enc(pre(list_of_uint8_patches)).shape  # -> N×768                      # doctest: +SKIP
"""
from __future__ import annotations

from .checkpoint import CheckpointMismatchError, LoadReport, hf_vit_to_timm, load_strict, load_weights_file, read_weight_file
from .preprocess import Preprocessing
from .registry import (
    ENCODERS,
    Encoder,
    EncoderSpec,
    create_encoder,
    encoder_spec,
    list_encoders,
    random_like,
    register_encoder,
)

__all__ = [
    "ENCODERS",
    "CheckpointMismatchError",
    "Encoder",
    "EncoderSpec",
    "LoadReport",
    "Preprocessing",
    "create_encoder",
    "encoder_spec",
    "hf_vit_to_timm",
    "list_encoders",
    "random_like",
    "register_encoder",
    "load_strict",
    "load_weights_file",
    "read_weight_file",
]
