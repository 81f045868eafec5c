"""The frozen config of a linear-probe job (saved beside every probe result).

The paper fixes lr, momentum, weight decay, batch and iterations (§4.4); the rest are the
kit's choices, explained in :mod:`exaonepath_lab.probing.linear`.
"""
from __future__ import annotations

import dataclasses

from ..config import JobConfig


@dataclasses.dataclass(frozen=True)
class ProbeConfig(JobConfig):
    """Linear-probe protocol; defaults are the paper's (§4.4) or, where it is silent, named above."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    iterations: int = 12_500
    feature_norm: str = "none"  # none | standardize | l2
    init: str = "dino"  # dino (N(0, 0.01), bias 0) | torch (nn.Linear default)
    lr_schedule: str = "constant"  # constant (the paper gives one lr) | cosine (DINO eval_linear, to 0)
    selection: str = "best_val"  # best_val | last
    eval_every: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        if self.feature_norm not in ("none", "standardize", "l2"):
            raise ValueError(f"feature_norm={self.feature_norm!r}: use 'none', 'standardize' or 'l2'")
        if self.init not in ("dino", "torch"):
            raise ValueError(f"init={self.init!r}: use 'dino' or 'torch'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r}: use 'constant' (paper) or 'cosine' (DINO eval_linear)")
        if self.selection not in ("best_val", "last"):
            raise ValueError(f"selection={self.selection!r}: use 'best_val' or 'last'")
        if self.iterations < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("iterations, batch_size and eval_every must be >= 1")
