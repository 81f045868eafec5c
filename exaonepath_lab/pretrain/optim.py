"""Optimiser pieces of DINO: AdamW with two parameter groups, clipping, last-layer freeze.

- No weight decay on biases and normalisation parameters (1-d tensors), DINO
  ``utils.get_params_groups``; the decayed group's weight decay follows the cosine
  schedule (0.04 -> 0.4 for ViT-B), set every iteration by :func:`apply_schedules`.
- Gradient clipping per parameter to norm 3.0 (DINO ``clip_gradients``: each
  parameter's gradient is rescaled separately, not the global norm).
- The head's output layer gets no update during the first epoch
  (``freeze_last_layer``), which DINO found stabilises the start.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module) -> list[dict]:
    """``[{"params": decayed}, {"params": not decayed, "weight_decay": 0}]`` (trainable only)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # 1-d parameters are biases, LayerNorm/BatchNorm weights, and the weight-norm gain.
        if name.endswith(".bias") or p.ndim <= 1 or name.endswith("last_layer_g"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


def build_optimizer(model: nn.Module, *, lr: float = 0.0, weight_decay: float = 0.04) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (lr and wd are overwritten by the schedules each step)."""
    groups = param_groups(model)
    groups[0]["weight_decay"] = weight_decay
    return torch.optim.AdamW(groups, lr=lr)


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Set this iteration's lr on every group and wd on the decayed group."""
    for g in optimizer.param_groups:
        g["lr"] = lr
        if g.get("apply_wd", True):
            g["weight_decay"] = wd


@torch.no_grad()
def clip_gradients(params: Iterable[nn.Parameter], clip: float) -> list[float]:
    """Rescale each parameter's gradient to norm <= ``clip`` (DINO); returns the norms before clipping."""
    norms = []
    for p in params:
        if p.grad is None:
            continue
        n = float(p.grad.detach().norm(2))
        norms.append(n)
        ratio = clip / (n + 1e-6)
        if ratio < 1:
            p.grad.mul_(ratio)
    return norms


def cancel_last_layer_gradients(head_last_layer: Iterable[nn.Parameter], epoch: float, freeze_epochs: float) -> None:
    """Drop the output layer's gradients while ``epoch < freeze_epochs`` (fractional epochs allowed)."""
    if epoch >= freeze_epochs:
        return
    for p in head_last_layer:
        p.grad = None
