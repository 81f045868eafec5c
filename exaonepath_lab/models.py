"""Backbone construction and the kit's checkpoint format, shared by pretraining and encoders.

Checkpoint format written by :mod:`exaonepath_lab.pretrain` (a ``torch.save`` dict):

- ``format``: ``"exaonepath-lab/dino-v1"``
- ``model``: ``{"timm_name": str, "timm_kwargs": dict}`` — enough to rebuild the backbone
  with :func:`build_backbone`;
- ``teacher_backbone``: state dict of the teacher backbone (timm key names) — what
  feature extraction uses, as in DINO;
- ``student``, ``teacher``, ``optimizer``, ``center``, ``iteration``, ``epoch``,
  ``rng``, ``config`` ... — everything needed to resume (see ``pretrain.checkpoint``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "exaonepath-lab/dino-v1"

#: ImageNet channel mean/std (RGB, on 0-1 pixels) = timm's IMAGENET_DEFAULT_MEAN/STD: what DINO and
#: EXAONEPath normalize with, in training views and at evaluation. Defined here, once, because both
#: ``pretrain`` and ``encoders`` need them and neither may import the other.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def build_backbone(timm_name: str, **timm_kwargs: Any) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``), never downloading weights.

    ``forward(x)`` returns the pooled embedding (CLS token after the final norm for
    ViTs, as DINO and EXAONEPath use).
    """
    import timm

    kwargs = {"num_classes": 0, **timm_kwargs}
    kwargs["pretrained"] = False
    return timm.create_model(timm_name, **kwargs)


def embed_dim_of(model: nn.Module) -> int:
    """Feature dimension of a timm backbone."""
    for attr in ("num_features", "embed_dim"):
        if hasattr(model, attr):
            return int(getattr(model, attr))
    raise AttributeError(f"cannot tell the feature dimension of {type(model).__name__}")


def load_kit_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by our DINO training, with a clear error for other files."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as e:  # corrupt / truncated file
        raise ValueError(f"cannot read checkpoint {path}: {e}. Is the file complete?") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not an exaonepath-lab DINO checkpoint (missing format={CHECKPOINT_FORMAT!r}); "
            "for published models use exaonepath_lab.encoders.create_encoder(name, checkpoint=...)"
        )
    return ckpt
