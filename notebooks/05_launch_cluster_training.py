# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Launching the paper's pretraining on a cluster
#
# EXAONEPath was pretrained (§4.2) with DINO on a ViT-B/16 for 10 epochs over 285 million patches,
# on **10 nodes × 8 A100 = 80 GPUs**, global batch **5,120 = 64 per GPU**, peak lr 0.005 after a
# warm-up of **1,000 iterations**, in bfloat16, with 8 local crops. The kit's `paper` preset encodes
# that recipe; `exaonepath_lab.pretrain.launch` turns it into a job for the standard engines:
#
# - **submitit** (SLURM from Python): one task per GPU; on pre-emption or time-out the trainer
#   writes a checkpoint and the job is requeued with `--resume`;
# - **sbatch**: a generated script that runs `srun torchrun ...` on every node, forwards SLURM's
#   warning signal to the workers (they checkpoint) and requeues itself;
# - **torchrun**: a plain command for one machine (or for every node of a cluster without SLURM).
#
# Every engine runs the same configuration as `exaonepath-lab train`, so a launched job behaves like
# a local one. The paper-scale job is **rendered, not submitted** (it needs 80 GPUs). When a SLURM
# scheduler answers here (`sinfo`) — a cluster login node, or a laptop after `make slurm-up`, which
# starts a one-node SLURM as root — section 4 submits a small **`cpu-demo`** job through the same
# path, shows `squeue`, follows its log while it runs and plots its curves.
#
# **What it needs, how long it takes.** The kit only, for sections 1–3 (seconds; the demo tiling is
# made first if missing: ~1 min). Section 4 needs SLURM: the `cpu-demo` job's 1,200 iterations take
# ~4 min on 2 CPU cores plus ~20 s of start-up (`smoke = True`: 6 iterations, well under a minute);
# on a GPU node about a minute. Without SLURM the notebook says why nothing was submitted.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/05"  # rendered jobs, figures and notebook_summary.json go here
smoke = False  # True: the submitted cpu-demo job runs 6 iterations instead of the preset's 1,200
tile_dir = None  # training data as seen from the compute nodes; None: the demo tiling (made if missing)
train_out = None  # the paper job's output folder on the cluster; None: out_dir/run
preset = "paper"  # pretraining preset of the rendered job (exaonepath-lab train --preset)
engine = "sbatch"  # submitit | sbatch | torchrun: the engine the jobs use
nodes = 10  # paper: 10 machines
gpus_per_node = 8  # paper: 8 A100 each
partition = None  # SLURM partition; None: the cluster default
account = None  # SLURM account; None: yours
time_min = 2880  # minutes per job slot (48 h); time-outs checkpoint and requeue
init_checkpoint = None  # local ImageNet weights for the backbone as seen from the nodes (the paper starts from ImageNet); None: random init, said so
stain_target = None  # fitted Macenko target JSON (stain tools); None: torchstain's reference stain matrix
setup = None  # shell lines each job runs first, with absolute paths; None: activate this kernel's environment
n_patches_paper = 285153903  # patches of the paper run (§4.1), for the arithmetic
submit = "auto"  # section 4: "auto" submits the cpu-demo job when SLURM answers; True: SLURM required; False: never
submit_paper = False  # True: also submit the rendered paper-scale job with `engine` (a real GPU cluster)
demo_iterations = None  # iterations of the cpu-demo job; None: the preset's 1,200 (smoke: 6)

# %%
import json
import os
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.io as pio
from IPython.display import Code, Markdown, display
from plotly.subplots import make_subplots
import plotly.graph_objects as go

from exaonepath_lab.io import atomic_path, write_json_atomic
from exaonepath_lab.pretrain.launch import (LaunchConfig, job_records, plan_launch, scheduler_unavailable, split_batch,
                                            squeue, submit as submit_job, wait_for_job, write_plan)
from exaonepath_lab.pretrain.presets import get_preset
from exaonepath_lab.notebook_params import demo_paths, output_dir, resolve_path, tiling_dir
from exaonepath_lab.pretrain.schedules import build_schedules

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
# Relative paths are taken from the notebooks/ folder, wherever the kernel or papermill starts; jobs
# start elsewhere again, so every path handed to them is absolute.
out = output_dir(out_dir)
summary: dict = {}

if submit not in ("auto", True, False):
    raise ValueError(f"submit={submit!r}: use 'auto' (submit when SLURM answers), True or False")
if tile_dir is None:
    tile_dir = demo_paths(smoke=smoke, train=False)["tile_dir"]  # the demo's tiling (made if missing)
tile_dir = str(tiling_dir(tile_dir))
train_out = str(resolve_path(train_out)) if train_out else str(out / "run")
if setup is None:  # this kernel's environment, by absolute path: sbatch may run anywhere
    env_bin = Path(sys.executable).parent
    setup = [f"source {env_bin / 'activate'}" if (env_bin / "activate").is_file() else f"export PATH={env_bin}:$PATH"]
for line in setup:
    words = line.split()
    if len(words) >= 2 and words[0] in ("source", ".") and not Path(words[1]).is_absolute():
        raise ValueError(f"setup line {line!r}: {words[1]!r} is relative to wherever sbatch starts the job; "
                         "give an absolute path")
overrides = []
if init_checkpoint is not None:
    overrides.append(f"init_checkpoint={Path(init_checkpoint).absolute()}")
elif preset == "paper":
    overrides.append("init_checkpoint=none")  # random init on purpose; the paper itself starts from ImageNet
if stain_target is not None:
    overrides.append(f"stain_target={Path(stain_target).absolute()}")
print("data:", tile_dir, "\nout: ", train_out, "\nsetup:", setup, "\noverrides:", overrides)
if init_checkpoint is None and preset == "paper":
    display(Markdown("**No `init_checkpoint`**: the paper starts ViT-B/16 from ImageNet weights (§4.2). The job below "
                     "is rendered with `init_checkpoint=none` (random initialisation, on purpose); set "
                     "`init_checkpoint` to local timm weights (nothing is downloaded) to render the published recipe."))

# %% [markdown]
# ## 1. The recipe: the `paper` preset
#
# The paper (§4.2) says the other hyper-parameters follow the original DINO paper's ViT-B settings, so
# where it is silent the preset takes the values of DINO's **published ViT-B/16 run** (not `main_dino.py`'s
# argparse defaults): gradient clipping 0.3, global crops at scale (0.25, 1), local crops at (0.05, 0.25),
# min lr 2e-6, and the output layer trained from the start (no last-layer freezing, as the paper says).
# `tests/test_pretrain_presets.py` checks every field against that table with its source. It starts
# from ImageNet weights (`init_checkpoint`); without one the kit refuses unless you say `none`. The
# remaining open choices are documented in `PretrainConfig` (`exaonepath-lab train --list-keys`): the lr 0.005 is the **peak** lr after warm-up, used as is (DINO's
# code would multiply by batch/256, which would give 0.1 at batch 5,120); the global crops are 224 px
# (the paper's text says 256²); the warm-up counts iterations, not epochs.

# %%
pcfg = get_preset(preset)
keys = ["timm_name", "batch_size", "epochs", "lr", "lr_scaling", "warmup_iters", "min_lr", "weight_decay",
        "weight_decay_end", "momentum_teacher", "warmup_teacher_temp", "teacher_temp", "warmup_teacher_temp_epochs",
        "teacher_temp_warmup", "out_dim", "n_local_crops", "global_crop_size", "local_crop_size",
        "global_crop_scale", "local_crop_scale", "freeze_last_layer_epochs", "precision", "normalize", "clip_grad"]
recipe = pd.DataFrame({"value": [getattr(pcfg, k) for k in keys]}, index=keys)
recipe.loc["peak lr at 80 GPUs"] = pcfg.peak_lr(80)
display(recipe)
summary["preset"] = {k: getattr(pcfg, k) for k in keys}

# %% [markdown]
# ## 2. Batch arithmetic
#
# The paper fixes the **global** batch: 64 images per GPU × 80 GPUs = 5,120. With another GPU count
# the kit keeps 5,120 and divides it (an uneven split is an error that suggests GPU counts that
# work); `--batch-per-gpu` instead scales the global batch with the GPUs. One epoch over the paper's
# 285 M patches is then ~55,700 iterations, so the 1,000-iteration warm-up is under 2 % of the first
# epoch — a warm-up written "per epoch" would have been 55 times longer.

# %%
per_gpu, global_batch = split_batch(nodes * gpus_per_node, global_batch=5120 if preset == "paper" else None,
                                    batch_per_gpu=None, preset_batch_per_gpu=pcfg.batch_size)
print(f"{nodes} nodes × {gpus_per_node} GPUs = {nodes * gpus_per_node} GPUs; {per_gpu} per GPU × "
      f"{nodes * gpus_per_node} = global batch {global_batch}")
if preset == "paper" and nodes * gpus_per_node == 80:
    assert (per_gpu, global_batch) == (64, 5120)  # the paper's numbers

rows = []
for gpus in (8, 16, 32, 48, 64, 80, 128, 160):
    try:
        p, g = split_batch(gpus, global_batch=5120, batch_per_gpu=None, preset_batch_per_gpu=64)
        rows.append({"GPUs": gpus, "per GPU": p, "global batch": g, "note": ""})
    except ValueError as e:
        rows.append({"GPUs": gpus, "per GPU": None, "global batch": 5120, "note": str(e).split(";")[0]})
display(pd.DataFrame(rows))

iters_per_epoch = n_patches_paper // global_batch  # full global batches per epoch (the tail waits)
total_iters = pcfg.epochs * iters_per_epoch
arith = {"gpus": nodes * gpus_per_node, "batch_per_gpu": per_gpu, "global_batch": global_batch,
         "patches": n_patches_paper, "iters_per_epoch": iters_per_epoch, "epochs": pcfg.epochs,
         "total_iters": total_iters, "warmup_iters": pcfg.warmup_iters,
         "warmup_share_of_run": pcfg.warmup_iters / total_iters}
display(pd.Series(arith, name="paper run", dtype=object).to_frame())
summary["batch_arithmetic"] = arith

# %% [markdown]
# ### The schedules of that run
#
# Precomputed per iteration, as DINO does (`exaonepath_lab.pretrain.schedules`): the lr warms up
# linearly over 1,000 iterations and decays on a cosine; weight decay rises 0.04 → 0.4; the teacher's
# EMA momentum rises 0.996 → 1; the teacher temperature warms 0.04 → 0.07 over DINO's ViT-B/16
# warm-up of 50 epochs. The `paper` preset keeps DINO's per-epoch values (`teacher_temp_warmup="dino"`):
# epoch e uses what DINO's run used at epoch e, so this 10-epoch run stays inside the warm-up and ends
# near 0.046 (0.04 + 0.03 × 10/50). The paper does not say what the authors did here (DINO's own code
# cannot run a warm-up longer than the run); `--set teacher_temp_warmup=fit` gives the ramp squeezed
# into the run instead. The trainer uses the same rule as this cell.

# %%
sched = build_schedules(total_iters=total_iters, peak_lr=pcfg.peak_lr(nodes * gpus_per_node), min_lr=pcfg.min_lr,
                        warmup_iters=pcfg.warmup_iters, weight_decay=pcfg.weight_decay,
                        weight_decay_end=pcfg.weight_decay_end, momentum=pcfg.momentum_teacher,
                        momentum_end=pcfg.momentum_teacher_end, warmup_teacher_temp=pcfg.warmup_teacher_temp,
                        teacher_temp=pcfg.teacher_temp,
                        warmup_teacher_temp_iters=pcfg.teacher_temp_warmup_iters(iters_per_epoch),
                        teacher_temp_warmup=pcfg.teacher_temp_warmup)  # the trainer's own rule
# every iteration of the warm-up, then a coarse grid: the figure stays small
it = np.unique(np.concatenate([np.arange(0, min(3 * pcfg.warmup_iters, total_iters), 5),
                               np.linspace(0, total_iters - 1, 1500).astype(int)]))
names = {"lr": "learning rate", "wd": "weight decay", "momentum": "teacher EMA momentum",
         "teacher_temp": "teacher temperature"}
fig = make_subplots(rows=2, cols=2, subplot_titles=list(names.values()))
for k, (key, title) in enumerate(names.items()):
    fig.add_trace(go.Scatter(x=it, y=sched[key][it], name=title, mode="lines"), row=k // 2 + 1, col=k % 2 + 1)
    fig.update_xaxes(title_text="iteration", row=k // 2 + 1, col=k % 2 + 1)
fig.add_vline(x=pcfg.warmup_iters, line_dash="dash", line_color="gray", row=1, col=1)
fig.update_layout(title=f"Schedules of the {preset!r} run: {total_iters:,} iterations at global batch {global_batch:,}",
                  showlegend=False, height=600, template="plotly_white")
fig.write_html(out / "schedules.html", include_plotlyjs="directory")  # plotly.min.js beside it: offline
fig.show()

mfig, axes = plt.subplots(2, 2, figsize=(11, 6))
for ax, (key, title) in zip(axes.ravel(), names.items()):
    ax.plot(it, sched[key][it])
    ax.set_title(title)
    ax.set_xlabel("iteration")
axes[0, 0].axvline(pcfg.warmup_iters, ls="--", color="gray")
inset = axes[0, 0].inset_axes([0.45, 0.45, 0.5, 0.45])
inset.plot(it[it < 3 * pcfg.warmup_iters], sched["lr"][it[it < 3 * pcfg.warmup_iters]])
inset.set_title("first 3,000 iterations", fontsize=8)
mfig.tight_layout()
with atomic_path(out / "schedules.png") as tmp:
    mfig.savefig(tmp, dpi=110, format="png")
plt.show()
summary["schedules"] = {"peak_lr": float(sched["lr"].max()), "lr_at_warmup_end": float(sched["lr"][pcfg.warmup_iters]),
                        "final_lr": float(sched["lr"][-1]), "final_teacher_temp": float(sched["teacher_temp"][-1])}

# %% [markdown]
# ## 3. The rendered jobs (dry run)
#
# `plan_launch` resolves the batch split and renders every engine's job; `write_plan` writes them:
# `job.sbatch`, `torchrun.sh`, `submitit.json` (the executor parameters; each submitit task trains
# with `train_config.json`), `launch_config.json` and `train_config.json` (the resolved recipe,
# saved beside the job so the run can be traced and re-run). Nothing is submitted. Paths are
# absolute because jobs start in another directory on other machines.

# %%
lcfg = LaunchConfig(preset=preset, data=str(tile_dir), out=train_out, engine=engine, nodes=nodes,
                    gpus_per_node=gpus_per_node, partition=partition, account=account, time_min=time_min,
                    setup=tuple(setup), overrides=tuple(overrides), launch_dir=str(out / "launch"))
plan = plan_launch(lcfg)
paths = write_plan(plan)
print("written:", {k: str(v) for k, v in paths.items()})
display(Markdown("**`job.sbatch`** — submit with `sbatch job.sbatch` on a SLURM login node:"))
display(Code(plan.sbatch, language="bash"))

# %% [markdown]
# What to look at in the script: `--signal=B:USR1@120` asks SLURM to warn the batch shell two
# minutes before the time limit; the shell forwards `USR1` through `srun` and `torchrun` to the
# workers, which write a checkpoint and exit; the shell then runs `scontrol requeue`, and the
# requeued job (`SLURM_RESTART_COUNT > 0`) continues with `--resume`. `torchrun` gets one agent per
# node (`--ntasks-per-node=1`) and starts one worker per GPU; the rendezvous is on the first node.

# %%
display(Markdown("**`torchrun.sh`** — the plain torchrun command (every node, with `NODE_RANK` and `MASTER_ADDR`):"))
display(Code(plan.torchrun, language="bash"))
one = plan_launch(lcfg.replace(nodes=1, engine="torchrun"))
display(Markdown(f"On **one** machine with {gpus_per_node} GPUs the same recipe is `--standalone` "
                 f"({one.batch_per_gpu} per GPU × {gpus_per_node} = {one.global_batch}; the global batch is kept):"))
display(Code(one.torchrun, language="bash"))
display(Markdown(f"Keeping 5,120 on {gpus_per_node} GPUs means {one.batch_per_gpu} images (× 10 crops) per GPU, "
                 "more than a ViT-B fits in an A100's memory, and the trainer has no gradient accumulation. "
                 "On one machine give `batch_per_gpu=64` (`--batch-per-gpu 64`: global batch 512) and keep in "
                 "mind that the recipe's lr 0.005 was chosen for 5,120."))
display(Markdown("**submitit** executor parameters (one SLURM task per GPU):"))
display(Code(json.dumps(plan.submitit, indent=1), language="json"))
cli = (f"exaonepath-lab launch --preset {preset} --data {tile_dir} --out {train_out} --engine {engine} "
       f"--nodes {nodes} --gpus-per-node {gpus_per_node}" + "".join(f" --set {o}" for o in overrides) + " --dry-run")
display(Markdown(f"The same from the command line (`--submit` instead of `--dry-run` submits):\n\n`{cli}`"))
summary["launch"] = {"engine": engine, "nodes": nodes, "gpus_per_node": gpus_per_node,
                     "batch_per_gpu": plan.batch_per_gpu, "global_batch": plan.global_batch,
                     "train_argv": list(plan.train_argv), "files": {k: str(v) for k, v in paths.items()},
                     "single_node": {"batch_per_gpu": one.batch_per_gpu, "global_batch": one.global_batch},
                     "cli": cli}

# %% [markdown]
# ## 4. A real job on the scheduler
#
# The paper-scale job above needs 80 GPUs. What can run wherever SLURM answers is the same path
# with the `cpu-demo` preset: `launch` renders it, creates the folder SLURM writes the job's
# output into, and submits it (`sbatch` by default; `submitit` when `engine = "submitit"`). The
# cell shows the queue, prints the log's newest row every few seconds while the job runs, and
# plots the curves when it ends. No scheduler here: the cell says why nothing was submitted.

# %%
why_not = scheduler_unavailable() if submit else "submit = False"
if submit is True and why_not is not None:
    raise RuntimeError(f"submit = True, but no SLURM scheduler takes jobs here: {why_not}")
demo_engine = engine if engine in ("sbatch", "submitit") else "sbatch"  # torchrun does not go through SLURM
if demo_iterations is not None and int(demo_iterations) < 1:
    raise ValueError(f"demo_iterations={demo_iterations!r}: give a positive number of iterations, or None")
demo_iters = int(demo_iterations or (6 if smoke else get_preset("cpu-demo").max_iters))
demo_out = out / "demo_run"


def log_rows(path: Path) -> list[dict]:
    """Metric rows of a log.jsonl the job is still writing (a half-written last line is skipped)."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in row and "event" not in row:
            rows.append(row)
    return rows


if why_not is None:
    if demo_out.exists():  # this notebook's own earlier demo run: a new job starts from scratch
        import shutil

        shutil.rmtree(demo_out)
    demo = LaunchConfig(preset="cpu-demo", data=tile_dir, out=str(demo_out), engine=demo_engine, nodes=1,
                        gpus_per_node=1, cpus_per_task=min(2, os.cpu_count() or 1), time_min=30, signal_delay_s=60,
                        partition=partition, account=account, setup=tuple(setup), job_name="exaonepath-cpu-demo",
                        overrides=(f"max_iters={demo_iters}", "log_every=1",  # stain_target: as the paper job
                                   *[o for o in overrides if o.startswith("stain_target=")]))
    job_id = submit_job(demo)
    if demo_engine != engine:
        print(f"engine = {engine!r} does not go through SLURM: the cpu-demo job uses sbatch")
    print(f"submitted the cpu-demo job ({demo_iters} iterations) with {demo_engine}: SLURM job {job_id}")
    print(squeue(job_id))
    seen = {"t": 0.0, "n": -1}

    def follow(recs: list[dict]) -> None:
        rows = log_rows(demo_out / "log.jsonl")
        if rows and len(rows) != seen["n"] and time.monotonic() - seen["t"] > 5:
            r = rows[-1]
            print(f"{recs[0].get('JobState', '?'):>9}  iteration {r['it'] + 1}/{demo_iters}  loss {r['loss']:.3f}  "
                  f"teacher entropy {r['teacher_entropy']:.2f}  {r['img_per_s']:.0f} img/s", flush=True)
            seen.update(t=time.monotonic(), n=len(rows))

    (rec,) = wait_for_job(job_id, poll_s=1.0, on_poll=follow)
    rows = log_rows(demo_out / "log.jsonl")
    print(f"job {job_id}: {rec['JobState']} (exit {rec['ExitCode']}, restarts {rec['Restarts']}), "
          f"{len(rows)} iterations logged")
    if demo_engine == "sbatch":
        job_out = demo.log_folder / f"{demo.job_name}-{job_id}.out"
    else:
        job_out = demo.folder / "submitit" / job_id / f"{job_id}_0_log.out"
    display(Code(job_out.read_text()[-2000:], language="text"))
    if rec["JobState"] != "COMPLETED":
        raise RuntimeError(f"the cpu-demo job ended {rec['JobState']}; its output is in {job_out} "
                           f"and {job_out.with_suffix('.err')}")
    from exaonepath_lab.pretrain.curves import plot_curves_plotly

    cfig = plot_curves_plotly(rows, out_dim=get_preset("cpu-demo").out_dim,
                              title=f"cpu-demo on SLURM (job {job_id}): {len(rows)} iterations")
    cfig.write_html(out / "demo_curves.html", include_plotlyjs="directory")
    cfig.show()
    summary["demo_job"] = {"submitted": True, "engine": demo_engine, "job_id": job_id, "state": rec["JobState"],
                           "restarts": int(rec["Restarts"]), "iterations": len(rows),
                           "final_loss": rows[-1]["loss"], "run_dir": str(demo_out), "job_output": str(job_out)}
else:
    print(f"nothing submitted: {why_not}")
    summary["demo_job"] = {"submitted": False, "reason": why_not}

# %% [markdown]
# With `submit_paper = True` the paper-scale job rendered in section 3 is submitted as well, with
# `engine` (`sbatch`/`submitit`: a SLURM cluster with GPUs; `torchrun`: runs here, on one machine
# with GPUs). The job id is recorded in the summary.

# %%
if submit_paper:
    paper_job = submit_job(lcfg)
    print(f"submitted the {preset!r} job with {engine}: {paper_job}")
    summary["paper_job"] = {"engine": engine, "job_id": paper_job}
else:
    print("the paper-scale job was rendered only (submit_paper = False)")
    summary["paper_job"] = None

# %% tags=["remove-cell"]
summary["figures"] = ["schedules.png", "schedules.html"] + (["demo_curves.html"] if why_not is None else [])
_ = write_json_atomic(out / "notebook_summary.json", summary)
