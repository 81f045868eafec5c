"""``exaonepath-lab launch``: render (default) or submit a DINO pretraining job to a cluster."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "launch",
        help="render or submit DINO pretraining on SLURM (submitit or sbatch) or torchrun",
        description="Launch `exaonepath-lab train` on several GPUs. By default only renders the job "
        "(sbatch script, torchrun command, submitit parameters) into <out>/launch for inspection; "
        "--submit sends it. Defaults are the paper's run: 10 nodes x 8 A100, global batch 5,120 "
        "(64 per GPU), EXAONEPath §4.2.",
    )
    p.add_argument("--preset", default="paper",
                   help="pretraining preset passed to `train` (default: paper, the published recipe)")
    p.add_argument("--data", required=True,
                   help="tiling output folder or image folder, as seen from the compute nodes")
    p.add_argument("--out", required=True,
                   help="training output folder (checkpoints, config.json, logs); must be on a shared "
                   "filesystem so that a requeued job finds its checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, passed on to `train --set` (repeatable); checked here, "
                   "before queueing. batch_size=N is the per-GPU batch, as in `train`")
    p.add_argument("--init", dest="init_checkpoint", default=None,
                   help="ImageNet weights for the backbone as seen from the nodes (timm .safetensors/.pth), passed "
                   "to `train --set init_checkpoint=`; the paper preset needs one (EXAONEPath §4.2) or 'none' for "
                   "random weights on purpose: checked here, before queueing")
    p.add_argument("--engine", choices=["submitit", "sbatch", "torchrun"], default="submitit",
                   help="submitit (default: Python-side requeue on pre-emption), sbatch (a plain script "
                   "for clusters without submitit) or torchrun (one machine, or per-node commands)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="submit", action="store_false",
                      help="render the job files and submit nothing (default: safe to run anywhere)")
    mode.add_argument("--submit", dest="submit", action="store_true",
                      help="render, then submit with --engine (torchrun runs in the foreground)")
    p.set_defaults(submit=False)
    p.add_argument("--nodes", type=int, default=10, help="number of nodes (default 10, as the paper)")
    p.add_argument("--gpus-per-node", type=int, default=8,
                   help="GPUs per node; one training process each (default 8, as the paper's A100 nodes)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--global-batch", type=int, default=None,
                       help="global batch, split evenly over the GPUs (default: 5120 for the paper preset, "
                       "as published; else the preset's per-GPU batch x GPUs); an uneven split is an error")
    batch.add_argument("--batch-per-gpu", type=int, default=None,
                       help="images per GPU instead of a fixed global batch (global = this x GPUs); "
                       "the lr is not rescaled, see PretrainConfig.lr_scaling")
    p.add_argument("--cpus-per-task", type=int, default=10,
                   help="CPU cores per GPU process, for data-loader workers (default 10: tile decoding "
                   "and Macenko run on the CPU)")
    p.add_argument("--mem-gb", type=int, default=None,
                   help="memory per node in GiB (default: the partition's default)")
    p.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    p.add_argument("--account", default=None, help="SLURM account to charge (default: yours)")
    p.add_argument("--qos", default=None, help="SLURM quality of service (default: none)")
    p.add_argument("--constraint", default=None,
                   help="SLURM node features, e.g. a100 to match the paper's GPUs (default: none)")
    p.add_argument("--time", default="2-00:00:00",
                   help="time limit per allocation, SLURM format (default 2 days, a common partition "
                   "limit; the job requeues itself and resumes until the run is done)")
    p.add_argument("--signal-delay", type=int, default=120,
                   help="seconds between SLURM's warning signal and the kill (default 120: enough to "
                   "write a ViT-B checkpoint with optimizer state)")
    p.add_argument("--max-requeues", type=int, default=20,
                   help="time-outs to survive before giving up (default 20; the paper's 10 epochs take "
                   "several 2-day allocations)")
    p.add_argument("--job-name", default="exaonepath-dino", help="SLURM job name")
    p.add_argument("--port", type=int, default=29500,
                   help="rendezvous port on the first node (default 29500, torchrun's)")
    p.add_argument("--setup", action="append", default=[], metavar="SHELL_LINE",
                   help="shell line run on the nodes before training, e.g. 'source ~/venv/bin/activate' "
                   "so that torchrun and the kit are on PATH (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (e.g. after its job ended: node failure, "
                   "--max-requeues reached); without it --submit refuses an --out that holds a checkpoint")
    p.add_argument("--launch-dir", default=None,
                   help="folder for the rendered job and SLURM logs (default: <out>/launch)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pretrain.launch import LaunchConfig, parse_slurm_time, plan_launch, render_launch, submit

    cfg = LaunchConfig(
        preset=args.preset, data=args.data, out=args.out, engine=args.engine,
        overrides=tuple(args.overrides) + ((f"init_checkpoint={args.init_checkpoint}",) if args.init_checkpoint else ()),
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, global_batch=args.global_batch,
        batch_per_gpu=args.batch_per_gpu, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
        partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
        time_min=parse_slurm_time(args.time), signal_delay_s=args.signal_delay, max_requeues=args.max_requeues,
        job_name=args.job_name, rdzv_port=args.port, setup=tuple(args.setup),
        launch_dir=args.launch_dir, resume=args.resume,
    )
    plan = plan_launch(cfg)
    print(f"{cfg.nodes} node(s) x {cfg.gpus_per_node} GPU(s) = {cfg.world_size} processes; "
          f"{plan.batch_per_gpu} images per GPU, global batch {plan.global_batch}")
    if not args.submit:
        paths = render_launch(cfg)
        for name, path in paths.items():
            print(f"{name:>13}: {path}")
        print(f"dry run: nothing submitted; add --submit to send it with --engine {cfg.engine}")
        return 0
    result = submit(cfg)
    if cfg.engine == "torchrun":
        print(f"torchrun finished: {result}")
        return int(result.split()[-1])
    where = (f"{cfg.log_folder}/{cfg.job_name}-{result}.out|.err" if cfg.engine == "sbatch"
             else f"{(cfg.folder / 'submitit' / result).absolute()}/{result}_<task>_log.out|.err")
    print(f"submitted SLURM job {result} ({cfg.engine}); training output in {Path(cfg.out).absolute()}, "
          f"job output in {where}")
    return 0
