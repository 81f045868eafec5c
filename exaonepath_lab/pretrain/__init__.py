"""DINO pretraining (Caron et al. 2021) as EXAONEPath uses it (paper §3.3, §4.2).

One building block per module — :mod:`.multicrop` (batched augmentation),
:mod:`.head`, :mod:`.loss`, :mod:`.schedules`, :mod:`.optim`, :mod:`.teacher` —
and the machinery around them: :mod:`.config` / :mod:`.presets` (``paper``,
``cpu-demo``), :mod:`.data` (datasets, resumable sampler, Macenko-once collation),
:mod:`.checkpoint`, :mod:`.distributed` (torchrun), :mod:`.init` (local ImageNet
weights), :mod:`.monitor` (collapse), :mod:`.curves`, :mod:`.evaluate` (k-NN vs a
random-init twin) and :mod:`.trainer`::

    from exaonepath_lab.pretrain import get_preset, train
    cfg = get_preset("cpu-demo", data="outputs/tiles", out_dir="outputs/dino_norm", normalize=True)
    result = train(cfg)               # resumes from out_dir/checkpoint.pt when present

Heavy pieces are imported lazily so ``import exaonepath_lab.pretrain`` stays cheap.
"""
from __future__ import annotations

from typing import Any

from .config import PretrainConfig
from .presets import PRESETS, get_preset

__all__ = ["PretrainConfig", "PRESETS", "get_preset", "train", "TrainResult"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult", "NonFiniteLossError"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'exaonepath_lab.pretrain' has no attribute {name!r}")
