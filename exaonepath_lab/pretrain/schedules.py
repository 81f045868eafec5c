"""Per-iteration schedules, precomputed as arrays (DINO ``utils.cosine_scheduler``).

Everything is counted in **iterations**: the paper warms the lr up over the first
1,000 iterations (EXAONEPath §4.2), and schedules written per epoch break when
warm-up is in iterations or exceeds the run. Warm-up is clipped to the run length,
so a 50-iteration demo with ``warmup_iters=1000`` still reaches (and decays from)
its peak.
"""
from __future__ import annotations

import numpy as np


def cosine_schedule(
    base: float, final: float, total_iters: int, *, warmup_iters: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Linear warm-up ``warmup_start -> base`` then half-cosine ``base -> final``.

    Returns a float64 array of length ``total_iters``: value ``v[i]`` is used at
    iteration ``i``. With ``warmup_iters >= total_iters`` the warm-up is shortened to
    half the run, so the peak is always reached.
    """
    if total_iters < 1:
        raise ValueError(f"total_iters must be >= 1, got {total_iters}")
    warmup_iters = max(0, int(warmup_iters))
    if warmup_iters >= total_iters:
        warmup_iters = total_iters // 2
    warm = np.linspace(warmup_start, base, warmup_iters, endpoint=False) if warmup_iters else np.zeros(0)
    n = total_iters - warmup_iters
    i = np.arange(n)
    # n == 1 -> a single value at ``base``.
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / max(n - 1, 1))) if n > 1 else np.full(1, base)
    out = np.concatenate([warm, cos]).astype(np.float64)
    assert len(out) == total_iters
    return out


def teacher_temp_schedule(
    warmup_temp: float, temp: float, total_iters: int, *, warmup_iters: int, mode: str = "fit"
) -> np.ndarray:
    """Teacher temperature: linear ``warmup_temp -> temp`` over ``warmup_iters``, then flat.

    DINO warms 0.04 -> 0.07 (its ViT-B/16 run: over 50 epochs); sharpening early (low
    temperature) is what keeps the centred teacher from collapsing to the uniform output.
    A warm-up longer than the run is handled by ``mode``:

    - ``"fit"``: the ramp is shortened to the run, so the run still ends at ``temp``;
    - ``"dino"``: the ramp keeps its length and is cut where the run ends, as DINO's
      per-epoch schedule would be (a 10-epoch run with a 50-epoch warm-up ends at
      ``warmup_temp + (temp - warmup_temp) * 10 / 50``).
    """
    if total_iters < 1:
        raise ValueError(f"total_iters must be >= 1, got {total_iters}")
    if mode not in ("fit", "dino"):
        raise ValueError(f"teacher temperature warm-up mode {mode!r}; use 'dino' or 'fit'")
    w = max(0, int(warmup_iters))
    if mode == "fit":
        w = min(w, total_iters)
    ramp = np.linspace(warmup_temp, temp, w)[:total_iters] if w else np.zeros(0)
    return np.concatenate([ramp, np.full(total_iters - len(ramp), temp)]).astype(np.float64)


def build_schedules(
    *,
    total_iters: int,
    peak_lr: float,
    min_lr: float,
    warmup_iters: int,
    weight_decay: float,
    weight_decay_end: float,
    momentum: float,
    momentum_end: float,
    warmup_teacher_temp: float,
    teacher_temp: float,
    warmup_teacher_temp_iters: int,
    teacher_temp_warmup: str = "fit",
) -> dict[str, np.ndarray]:
    """All per-iteration schedules of a run: ``lr``, ``wd``, ``momentum``, ``teacher_temp``."""
    return {
        "lr": cosine_schedule(peak_lr, min_lr, total_iters, warmup_iters=warmup_iters),
        "wd": cosine_schedule(weight_decay, weight_decay_end, total_iters),
        "momentum": cosine_schedule(momentum, momentum_end, total_iters),
        "teacher_temp": teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, total_iters, warmup_iters=warmup_teacher_temp_iters,
            mode=teacher_temp_warmup,
        ),
    }
