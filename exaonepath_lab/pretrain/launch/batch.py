"""Batch arithmetic of a launch, and the training configuration it resolves to."""
from __future__ import annotations

from pathlib import Path

from ...config import parse_key_values
from ..config import PretrainConfig
from .config import PAPER_GLOBAL_BATCH, LaunchConfig


def split_batch(
    world_size: int, *, global_batch: int | None, batch_per_gpu: int | None, preset_batch_per_gpu: int
) -> tuple[int, int]:
    """``(batch_per_gpu, global_batch)`` with ``batch_per_gpu × world_size == global_batch``.

    ``global_batch`` wins when given (the paper fixes 5,120); it must divide evenly among
    the GPUs. Otherwise ``batch_per_gpu`` (or the preset's) times the GPUs is the global batch.
    """
    if global_batch is not None and batch_per_gpu is not None:
        if batch_per_gpu * world_size != global_batch:
            raise ValueError(
                f"batch per GPU {batch_per_gpu} × {world_size} GPUs = {batch_per_gpu * world_size}, "
                f"not the global batch {global_batch}; give only one of the two"
            )
        return batch_per_gpu, global_batch
    if global_batch is not None:
        if global_batch % world_size:
            divisors = [g for g in range(1, min(global_batch, 4096) + 1) if global_batch % g == 0]
            near = sorted(divisors, key=lambda g: abs(g - world_size))[:4]
            raise ValueError(
                f"global batch {global_batch} does not split evenly over {world_size} GPUs "
                f"({global_batch} / {world_size} = {global_batch / world_size:.2f} per GPU); use a GPU count "
                f"that divides it (e.g. {', '.join(map(str, sorted(near)))}), or change the global batch "
                f"(--global-batch) or give --batch-per-gpu instead"
            )
        return global_batch // world_size, global_batch
    per = batch_per_gpu if batch_per_gpu is not None else preset_batch_per_gpu
    return per, per * world_size


#: Training fields naming a file the user gives relative to here; made absolute like --data and --out.
PATH_FIELDS = ("init_checkpoint", "stain_target")


def resolve_train_config(config: LaunchConfig) -> PretrainConfig:
    """The ``PretrainConfig`` every process of the launch trains with (preset + overrides + batch split).

    Run before anything is submitted, so that a typo in a key or value fails in seconds
    rather than after hours in a queue. ``batch_size`` is the per-GPU batch and
    ``world_batch_size`` the global one; data and output folders, the init checkpoint and the
    stain target are absolute, since jobs start in another working directory on other machines.
    """
    from ..presets import check_init, get_preset

    if not config.data or not config.out:
        raise ValueError("launch needs the training data folder and an output folder (--data, --out)")
    over = parse_key_values(config.overrides, "override")
    init = over.get("init_checkpoint")
    random_init = isinstance(init, str) and init.strip().lower() == "none"  # as `train --set init_checkpoint=none`
    if random_init:
        over["init_checkpoint"] = None
    preset = get_preset(config.preset, **over)
    check_init(preset, explicit_none=random_init)  # the paper preset without ImageNet weights: refused before queueing
    per_gpu = config.batch_per_gpu
    if per_gpu is None and "batch_size" in over:
        per_gpu = int(preset.batch_size)  # `--set batch_size=N` is the per-process batch, as in `train`
    target = config.global_batch
    if target is None and per_gpu is None and config.preset == "paper":
        target = PAPER_GLOBAL_BATCH  # the recipe fixes the global batch, not the per-GPU one
    per, glob = split_batch(config.world_size, global_batch=target, batch_per_gpu=per_gpu,
                            preset_batch_per_gpu=int(preset.batch_size))
    files = {k: str(Path(v).absolute()) for k in PATH_FIELDS if (v := getattr(preset, k))}
    return preset.replace(batch_size=per, world_batch_size=glob, data=str(Path(config.data).absolute()),
                          out_dir=str(Path(config.out).absolute()), **files)
