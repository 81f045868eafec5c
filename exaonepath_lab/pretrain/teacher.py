"""EMA teacher (Caron et al. 2021, §3.1): ``theta_t <- m * theta_t + (1 - m) * theta_s``.

``m`` follows a cosine from 0.996 to 1 (:func:`schedules.cosine_schedule`). Buffers
(none in ViTs; BN statistics in ResNets) are copied, not averaged.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module, twin: nn.Module | None = None) -> nn.Module:
    """Frozen teacher starting from the student's weights.

    ``twin``: a freshly built module of the same architecture but without the
    student's stochastic depth (DINO builds its teacher without drop path); when
    omitted, a deep copy of the student is used. The teacher stays in train mode, as
    in DINO: a batch-norm head (``use_bn_in_head``) then normalises with the batch's
    own statistics; it has no stochastic layer since it is built without drop path.
    """
    teacher = twin if twin is not None else copy.deepcopy(student)
    teacher.load_state_dict(student.state_dict(), strict=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.train()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In-place EMA of matching parameters; ``student`` may be wrapped in DDP."""
    s = student.module if hasattr(student, "module") else student
    t_params = list(teacher.parameters())
    s_params = list(s.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1.0 - momentum)
    for bt, bs in zip(teacher.buffers(), s.buffers()):
        bt.copy_(bs)
