"""Initialise a backbone from a local ImageNet state dict, strictly, with a readable report.

The paper initialises ViT-B/16 from ImageNet weights (§4.2). Weights come from a
file the user supplies (timm ``.safetensors`` / ``.bin`` / ``.pth``, a DINO
checkpoint, or a kit checkpoint); nothing is downloaded. Unlike the reference
loaders (``strict=False``, which hides mismatches), every key must match except
the ImageNet classifier (``head.*`` / ``fc.*``), which a backbone built with
``num_classes=0`` does not have. A position embedding for another grid size (e.g.
weights at 224 px, model at 256 px) is resampled and reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

_CLASSIFIER_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.")
_WRAPPER_KEYS = ("teacher_backbone", "state_dict", "model", "teacher", "module")
_STRIP_PREFIXES = ("module.", "backbone.", "_orig_mod.", "encoder.")


@dataclass
class InitReport:
    """What :func:`load_init_weights` did: key lists and a printable summary."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    ignored_classifier: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        lines = [f"init from {self.path}: {self.loaded} tensors loaded"]
        for name in ("missing", "unexpected", "shape_mismatch", "ignored_classifier", "resampled"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"  {name} ({len(keys)}): {shown}")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file, unwrapped from common containers and prefixes."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"init weights not found: {p}. Download them yourself and pass the local path.")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ValueError(f"cannot read init weights {p}: {e}. Expected a .safetensors/.pth/.bin state dict.") from e
    for _ in range(3):  # nested containers, e.g. {"teacher": {"state_dict": ...}}
        if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            key = next((k for k in _WRAPPER_KEYS if k in sd and isinstance(sd[k], dict)), None)
            if key is None:
                break
            sd = sd[key]
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p} holds no state dict (looked inside {list(_WRAPPER_KEYS)})")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        for pre in _STRIP_PREFIXES:
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def load_init_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> InitReport:
    """Copy weights from ``path`` into ``model``; raise (strict) on any mismatch, naming the keys."""
    sd = read_state_dict(path)
    own = model.state_dict()
    rep = InitReport(path=str(path))
    filtered: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in own:
            (rep.ignored_classifier if k.startswith(_CLASSIFIER_PREFIXES) else rep.unexpected).append(k)
            continue
        if v.shape != own[k].shape:
            if k == "pos_embed" and v.ndim == 3 and v.shape[-1] == own[k].shape[-1]:
                v = _resample_pos_embed(model, v, own[k])
                rep.resampled.append(f"{k} {tuple(sd[k].shape)}->{tuple(v.shape)}")
            else:
                rep.shape_mismatch.append(f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}")
                continue
        filtered[k] = v
    rep.missing = [k for k in own if k not in filtered and not any(k in s for s in rep.shape_mismatch)]
    if strict and not rep.ok:
        raise ValueError(
            rep.summary() + "\nThe weights do not match the backbone: check timm_name/timm_kwargs "
            "(patch size, embed dim, depth, qkv bias) against the file."
        )
    model.load_state_dict(filtered, strict=False)
    rep.loaded = len(filtered)
    return rep


def _resample_pos_embed(model: nn.Module, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None:
        side = int(round((dst.shape[1] - n_prefix) ** 0.5))
        grid = (side, side)
    return resample_abs_pos_embed(src, new_size=list(grid), num_prefix_tokens=n_prefix)
