"""Atomic DINO checkpoints that resume a run exactly.

Format (:mod:`exaonepath_lab.models`): a ``torch.save`` dict with ``format``,
``model = {"timm_name", "timm_kwargs"}`` (the teacher's; rebuild it with
``build_backbone``), ``teacher_backbone`` (timm key names, what feature extraction
loads strictly), and the resume state: ``student`` / ``teacher`` (backbone + head),
``optimizer``, ``center``, ``iteration`` (next iteration to run), ``epoch`` and
``batch_in_epoch`` (data position), ``rng`` (torch CPU/CUDA, numpy, python),
``config`` (resolved :class:`PretrainConfig` dict), ``stain_counts``.

Files are written to a temporary name and renamed, so a job killed while saving
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path
from ..models import CHECKPOINT_FORMAT, load_kit_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Global RNG states of torch (CPU and CUDA), numpy and python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``format``) atomically to ``path``; returns the path."""
    path = Path(path)
    missing = [k for k in ("model", "teacher_backbone") if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}; see exaonepath_lab.models for the format")
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a kit checkpoint (clear errors for missing, truncated or foreign files)."""
    return load_kit_checkpoint(str(path), map_location=map_location)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``run_dir/checkpoint.pt`` if present."""
    p = Path(run_dir) / CHECKPOINT_NAME
    return p if p.is_file() else None


def refuse_existing_checkpoint(run_dir: str | Path) -> None:
    """Raise if ``run_dir`` holds a checkpoint: a run is continued only on purpose (``--resume``)."""
    prev = latest_checkpoint(run_dir)
    if prev is not None:
        raise ValueError(f"{prev} exists: pass --resume to continue that run, or choose another --out")
