"""DINO loss with centering and sharpening (Caron et al. 2021, §3.1, Algorithm 1).

``L = 1/P * sum_{t in global} sum_{s != t} H(P_t, P_s)`` with
``P_t = softmax((g_t - c) / tau_t)`` (teacher, centred and sharpened) and
``P_s = softmax(g_s / tau_s)`` (student), ``H(a, b) = -sum a log b``; ``P`` is the
number of (teacher, student) pairs. The centre ``c`` is an EMA (momentum 0.9) of the
batch mean of the teacher logits; in a distributed run the batch mean is
all-reduced, but **only when a process group is initialised** — DINO's original
code always all-reduces and crashes in a single process.

``centering="sinkhorn"`` replaces centre-and-sharpen by DINOv2's Sinkhorn-Knopp
normalisation of the teacher (Oquab et al. 2023, §4; Caron et al. 2020, SwAV): the
sharpened teacher scores of the batch are rescaled, in 3 alternating passes, so that
every prototype receives the same total mass over the batch and every sample a
distribution. Neither collapse mode (uniform, one prototype) can then form, which
matters for small batches and short runs where the EMA centre lags.
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

    def __init__(self, out_dim: int, *, n_crops: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "ema", sinkhorn_iters: int = 3) -> None:
        super().__init__()
        if centering not in ("ema", "sinkhorn"):
            raise ValueError(f"centering={centering!r}; use 'ema' (DINO) or 'sinkhorn' (DINOv2)")
        self.centering = centering
        self.sinkhorn_iters = int(sinkhorn_iters)
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
        if self.centering == "sinkhorn":
            t_p = sinkhorn_knopp(teacher_out.float().detach(), teacher_temp, n_iters=self.sinkhorn_iters)
        else:
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


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, *, n_iters: int = 3) -> torch.Tensor:
    """``(N, K)`` teacher logits -> ``(N, K)`` targets: rows sum to 1, columns to ``N / K`` (DINOv2).

    ``Q = exp(logits / temp)`` is alternately normalised over samples (each prototype gets
    mass ``1/K``) and over prototypes (each sample ``1/N``), ``n_iters`` times as in
    DINOv2/SwAV. Computed in log space: at a sharp temperature ``exp`` underflows to 0
    for all but the top prototype of each sample and the plain iteration divides 0 by 0.
    Sums over samples are all-reduced when a process group is initialised, so the
    equipartition holds for the global batch.
    """
    import torch.distributed as dist

    dist_on = dist.is_available() and dist.is_initialized()

    def lse_over_samples(x: torch.Tensor) -> torch.Tensor:  # (N, K) -> (1, K), over all ranks
        m = x.max(dim=0, keepdim=True).values
        if dist_on:
            dist.all_reduce(m, op=dist.ReduceOp.MAX)
        ssum = torch.exp(x - m).sum(dim=0, keepdim=True)
        if dist_on:
            dist.all_reduce(ssum)
        return m + torch.log(ssum)

    lq = logits.double() / temp
    n = torch.tensor([float(lq.shape[0])], dtype=torch.float64, device=lq.device)
    if dist_on:
        dist.all_reduce(n)
    log_k = math.log(lq.shape[1])
    for _ in range(n_iters):
        lq = lq - lse_over_samples(lq) - log_k  # every prototype: mass 1/K
        lq = lq - torch.logsumexp(lq, dim=1, keepdim=True) - torch.log(n)  # every sample: mass 1/N
    return torch.exp(lq + torch.log(n)).to(logits.dtype)
