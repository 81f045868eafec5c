"""``exaonepath-lab train``: DINO pretraining (paper §3.3, §4.2) from a preset plus overrides."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ._args import STAIN_TARGET_HELP, parse_key_values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="DINO pretraining on tiles or an image folder (cpu-demo in minutes, paper = ViT-B/16 on 80 GPUs)",
        description=(
            "Train DINO (student/teacher ViT, multi-crop, centring + sharpening) on the patches of a tiling "
            "output folder or an image folder, with Macenko normalisation once per image before cropping "
            "(EXAONEPath) or without it. Writes OUT/config.json (resolved), OUT/checkpoint.pt (atomic, "
            "resumable; teacher_backbone is what `extract` uses), OUT/log.jsonl (per-iteration metrics), "
            "OUT/curves.png/.html and OUT/run_report.json. Single process on CPU/GPU; for several GPUs run "
            "it under torchrun (`torchrun --nproc_per_node 8 -m exaonepath_lab train ...`) or use "
            "`exaonepath-lab launch`. SIGTERM/SIGUSR1 checkpoint and exit 0; rerun with --resume."
        ),
    )
    from ..pretrain.presets import PRESET_HELP

    p.add_argument("--preset", default="cpu-demo", choices=["cpu-demo", "paper"],
                   help="starting configuration (default cpu-demo). " + "; ".join(
                       f"{name}: {text}" for name, text in PRESET_HELP.items()).replace("%", "%%"))
    p.add_argument("--data", required=True, metavar="TILE_DIR_OR_IMAGE_FOLDER",
                   help="tiling output folder (exaonepath-lab tile ... --out DIR) or a folder of images")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder for checkpoint, logs and curves")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--normalize", dest="normalize", action="store_true", default=None,
                   help="Macenko-normalise every image before cropping (EXAONEPath; both presets default to it)")
    g.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="train on raw colours (the paper's baseline that shows WSI-specific feature collapse)")
    p.add_argument("--stain-target", default=None, metavar="JSON_OR_IMAGE", help=STAIN_TARGET_HELP.replace("%", "%%")
                   + ". Whatever is used is written to RUN_DIR/stain_target.json (name + sha256) and config.json points to it")
    p.add_argument("--init", dest="init_checkpoint", default=None, metavar="WEIGHTS|none",
                   help="local ImageNet weights for the backbone (timm .safetensors/.pth); loaded strictly with a "
                        "report. The paper starts from ImageNet; nothing is downloaded. The paper preset refuses to "
                        "start without it; 'none' trains from random weights on purpose (also --set init_checkpoint=none)")
    p.add_argument("--max-iters", type=int, default=None,
                   help="total iterations (default: the preset's; paper: 10 epochs). Also sets the schedules' length")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default auto: CUDA when present)")
    p.add_argument("--workers", dest="num_workers", type=int, default=None,
                   help="DataLoader worker processes reading tiles (default: preset's; 0 = main process)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any PretrainConfig field, e.g. --set lr=5e-4 --set out_dim=4096 "
                        "--set global_crop_scale=[0.25,1]; VALUE is parsed as JSON when it can be (see --list-keys)")
    p.add_argument("--list-keys", action=_ListKeys, help="print every PretrainConfig field --set accepts, with its "
                   "type, default and why that default was chosen, and exit")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt when it exists (requeue-safe: starts fresh when absent). "
                        "Without it an existing checkpoint is an error, so a run is never continued by accident")
    p.add_argument("--show-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (batch logs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


class _ListKeys(argparse.Action):
    """``--list-keys``: print the keys and exit at once, like ``--version`` (before --data/--out are demanded)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from ..pretrain.config import PretrainConfig

        print(PretrainConfig.describe_keys())
        parser.exit()


def run(args: argparse.Namespace) -> int:
    from ..pretrain.checkpoint import refuse_existing_checkpoint
    from ..pretrain.data import record_stain_target
    from ..pretrain.config import PretrainConfig
    from ..pretrain.presets import check_init, get_preset

    over = parse_key_values(args.overrides, "--set")
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(over) - known)
    if unknown:
        raise ValueError(f"--set: unknown keys {unknown}; known: {sorted(known)}")
    for key in ("normalize", "stain_target", "init_checkpoint", "max_iters", "device", "num_workers"):
        v = getattr(args, key)
        if v is not None:
            over[key] = v
    init = over.get("init_checkpoint")
    random_init = isinstance(init, str) and init.strip().lower() == "none"
    if random_init:
        over["init_checkpoint"] = None
    cfg = get_preset(args.preset, data=args.data, out_dir=args.out, **over)
    if args.show_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    check_init(cfg, explicit_none=random_init)
    if not args.resume:
        refuse_existing_checkpoint(args.out)
    if cfg.normalize:
        cfg = record_stain_target(cfg, args.out)
    from ..pretrain.trainer import train

    res = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(res.summary())
    if res.stain_counts:
        print(f"Macenko statuses: {res.stain_counts}")
    for w in res.collapse_warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if res.status == "preempted":
        print("stopped by a signal after checkpointing; rerun the same command with --resume", file=sys.stderr)
    return 0
