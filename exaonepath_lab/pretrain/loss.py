"""DINO loss with centering and sharpening (Caron et al. 2021, §3.1, Algorithm 1).

``L = 1/P * sum_{t in global} sum_{s != t} H(P_t, P_s)`` with
``P_t = softmax((g_t - c) / tau_t)`` (teacher, centred and sharpened) and
``P_s = softmax(g_s / tau_s)`` (student), ``H(a, b) = -sum a log b``; ``P`` is the
number of (teacher, student) pairs. The centre ``c`` is an EMA (momentum 0.9) of the
batch mean of the teacher logits; in a distributed run the batch mean is
all-reduced, but **only when a process group is initialised** — DINO's original
code always all-reduces and crashes in a single process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DINOLossStats:
    """Diagnostics of one loss evaluation (floats, averaged over pairs and samples).

    - ``teacher_entropy``: mean per-sample entropy of the teacher distribution (nats);
      ``-> ln(out_dim)``: uniform collapse; ``-> 0``: sharp teacher.
    - ``batch_entropy``: entropy of the batch-mean teacher distribution;
      ``-> 0``: every sample on one prototype (dominant-dimension collapse).
    - ``kl``: mean KL(P_t || P_s) = cross-entropy - teacher entropy.
    """

    loss: float
    teacher_entropy: float
    batch_entropy: float
    kl: float


class DINOLoss(nn.Module):
    """Cross-entropy between centred/sharpened teacher and student views.

    ``forward(student_out (n_crops*B, K), teacher_out (2*B, K), teacher_temp) -> scalar``,
    rows in crop-major order (all images of crop 0, then crop 1, ...), the first two
    crops being the global views seen by the teacher.
    """

    def __init__(self, out_dim: int, *, n_crops: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.n_crops = n_crops
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.last_stats: DINOLossStats | None = None

    @property
    def collapse_loss(self) -> float:
        """ln(out_dim): the loss when teacher and student are both uniform."""
        return math.log(self.out_dim)

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        n_t = teacher_out.shape[0] // 2
        if student_out.shape[0] != n_t * self.n_crops:
            raise ValueError(
                f"student_out has {student_out.shape[0]} rows, expected n_crops*B = {self.n_crops}*{n_t}"
            )
        s_logp = F.log_softmax(student_out.float() / self.student_temp, dim=-1).chunk(self.n_crops)
        t_p = F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1).detach()
        t_chunks = t_p.chunk(2)
        total = student_out.new_zeros((), dtype=torch.float32)
        n_pairs = 0
        for iq, q in enumerate(t_chunks):
            for v in range(self.n_crops):
                if v == iq:
                    continue  # a teacher view is never compared with the same student view
                total = total + torch.sum(-q * s_logp[v], dim=-1).mean()
                n_pairs += 1
        loss = total / n_pairs
        with torch.no_grad():
            t_ent = -(t_p * torch.log(t_p.clamp_min(1e-30))).sum(-1).mean()
            mean_p = t_p.mean(0)
            b_ent = -(mean_p * torch.log(mean_p.clamp_min(1e-30))).sum()
            self.last_stats = DINOLossStats(
                loss=float(loss), teacher_entropy=float(t_ent), batch_entropy=float(b_ent), kl=float(loss - t_ent)
            )
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the (global, all-reduced when distributed) batch mean of teacher logits."""
        import torch.distributed as dist

        batch_sum = teacher_out.float().sum(dim=0, keepdim=True)
        n = torch.tensor([teacher_out.shape[0]], dtype=torch.float32, device=teacher_out.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(n)
        batch_center = batch_sum / n
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
