# ---
# jupyter:
#   jupytext:
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
# # 04 · DINO pretraining on a laptop: raw vs Macenko-normalized patches
#
# EXAONEPath is DINO (Caron et al. 2021) on a ViT-B/16, trained on patches that were
# **Macenko-normalized once per image, before the DINO augmentation, with probability 1**
# (paper §3.3). Here the same code trains the small `cpu-demo` preset twice — on raw patches and on
# normalized patches — and shows the curves while it trains.
#
# ## DINO in five sentences
#
# 1. **Two kinds of views.** Each patch is cropped and augmented several times: 2 large *global*
#    crops and a few small *local* crops (colour jitter, blur, grayscale, flips on each).
# 2. **Student and teacher.** The *student* network sees every view; the *teacher* — the same
#    architecture, its weights an exponential moving average (EMA) of the student's — sees only the
#    global views. Nothing is ever labelled.
# 3. **Prototypes.** Both end in a head that outputs `K = out_dim` scores, turned into a probability
#    distribution over K "prototypes" by a softmax with a temperature.
# 4. **The loss** is the cross-entropy between the teacher's distribution for one view and the
#    student's for another view of the same patch: the student learns to say, from a local crop,
#    what the teacher says from a global one.
# 5. **Centering vs sharpening.** The teacher subtracts a running mean of its own outputs
#    (*centering*: no prototype may win for every image) and uses a low temperature (*sharpening*:
#    each image must pick a few prototypes). Each on its own leads to a collapse; together they
#    balance.
#
# ## Two representation collapses — and a third, different one
#
# | collapse | what happens | how it shows | watched by |
# |---|---|---|---|
# | **uniform** (too much centering) | the teacher outputs the same flat distribution for every image | loss ≈ `ln K`, per-sample teacher entropy ≈ `ln K` | the curves below, the trainer's collapse monitor |
# | **one prototype** (too much sharpening) | every image maps to the same prototype | batch entropy (of the batch-mean output) → 0 | the curves below, the monitor |
# | **WSI-specific** (the paper's) | training works and features are informative, but they also encode *which slide* a patch came from (its stain, its scanner) | nothing in the loss: patches of a slide cluster together | slide purity, notebook 03 |
#
# The first two are failures of training: features become useless. The third is a success of
# training at the wrong task: colour is a legitimate, easy cue to tell views of one patch from other
# patches, so the network learns it. DINO's **colour jitter does not remove it** (paper §3.1): jitter
# is random per view and small, around each slide's own colour; every patch of a slide shares that
# colour, so slide colour stays a cue that survives the augmentation. Normalizing every patch to one
# target before augmentation (`normalize=True`) takes the cue away.
#
# **Your own data.** `tile_dir` = a tiling of your slides (`exaonepath-lab tile`). The `cpu-demo`
# preset trains on 2 CPU cores in ~5 min per run (1,200 iterations × 32 patches); that is a toy — for
# a real model use `exaonepath-lab train --preset paper` on GPUs (notebook 05). With a class, run
# `make demo` once beforehand: this notebook then **reuses the demo's two finished runs** (curves,
# checkpoints) instead of retraining; set `retrain = True` to train live. The learning check at the
# end needs tissue labels (the synthetic cohort has them); on unlabelled slides it is skipped with a
# message.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/04"  # runs, figures, notebook_summary.json; relative paths are taken from notebooks/
smoke = False  # tiny sizes (tests): 6 iterations, fewer evaluation patches
demo_dir = "../outputs"  # where `make demo` writes: its tiling, and its two runs when reused
tile_dir = None  # a tiling of your slides; None: the demo's (made if missing)
retrain = False  # False: reuse the demo's finished runs when tile_dir and iterations are None
iterations = None  # None: the preset's own length (1,200); the warm-ups scale with it
chunk = 25  # iterations between curve refreshes
eval_per_slide = 120  # patches per slide for the learning check
seed = 0

# %%
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
from IPython.display import Markdown, clear_output, display

from exaonepath_lab import notebook_params as nbp
from exaonepath_lab.analysis import colour_features
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.pretrain.config import PretrainConfig
from exaonepath_lab.pretrain.curves import plot_curves_plotly, read_log
from exaonepath_lab.pretrain.evaluate import embed_images
from exaonepath_lab.probing.knn import knn_accuracy
from exaonepath_lab.probing.learning import teacher_and_random_twin
from exaonepath_lab.pretrain.presets import get_preset
from exaonepath_lab.pretrain.trainer import train
from exaonepath_lab.report.training_figures import compare_runs
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline
out = nbp.output_dir(out_dir)
iterations = nbp.check_int("iterations", iterations, allow_none=True)
chunk = nbp.check_int("chunk", chunk)
eval_per_slide = nbp.check_int("eval_per_slide", eval_per_slide, minimum=2)
reuse = nbp.demo_runs(demo_dir) if (tile_dir is None and iterations is None and not retrain) else None
if tile_dir is None:
    tile_dir = nbp.demo_paths(demo_dir, smoke=smoke, train=False)["tile_dir"]
else:
    tile_dir = nbp.tiling_dir(tile_dir)
if smoke and reuse is None:
    iterations, chunk, eval_per_slide = iterations or 6, 3, min(eval_per_slide, 40)
print("reusing the demo's finished runs in", demo_dir if reuse else "", "" if reuse else
      "training here (no finished demo runs, or tile_dir / iterations / retrain set)")

# %% [markdown]
# ## The preset, and why it differs from the paper's
#
# Every knob is a field of one frozen `PretrainConfig`, saved as `config.json` beside the
# checkpoints. `cpu-demo` was found by measurement on 2 CPU cores (`benchmarks/dino_learning.md`);
# a naive shrink of DINO's ViT-B recipe drifts to the uniform collapse within ~50 iterations.
#
# | knob | `paper` (ViT-B/16) | `cpu-demo` | why |
# |---|---|---|---|
# | backbone | ViT-B/16, 224 px, CLS token | 4 blocks × 128 wide, 8 px patches, mean of patch tokens | at random init the CLS output is almost the same for every image; the token mean is not, so the teacher's targets differ between images from step 0 |
# | prototypes `out_dim` | 65,536 | 512 | 65,536 prototypes cannot be organised in a few hundred steps |
# | head | no BN, weight-normalised last layer | BN in the head, learnable last-layer gain | BN spreads a small batch; the gain lets the student sharpen as fast as the teacher asks |
# | crops | 224 / 96 px, 8 local | 32 / 16 px of patches read at 64 px, 4 local | cheap on a CPU; reading and normalizing 256 px patches was half of every iteration |
# | colour jitter | (0.4, 0.4, 0.2, 0.1) | (0.2, 0.2, 0.1, 0.02), grayscale 20 % kept | at full strength the teacher drifts to uniform in ~300 iterations, and a hue shift scrambles what tells H&E classes apart (how much of each stain); the grayscale views teach the raw run to look past colour |
# | blur σ | 0.1–2 px | 0.1–0.4 px | scaled to 32 px crops |
# | teacher temperature | 0.04, warming towards 0.07 (DINO ViT-B/16's 50-epoch ramp; ~0.046 after 10 epochs) | 0.02 | at 0.04 the run drifts to uniform within ~100 steps |
# | teacher momentum | 0.996 | 0.99 | 0.996 moves the teacher too slowly for ~1,000 steps |
# | length | 10 epochs of 285 M patches, 5,120 per batch | 1,200 iterations × 32 (~25 epochs of 10 slides) | 150 iterations left the features no better than random init; 1,200 beat it clearly |
# | warm-up | 1,000 iterations | 60 (5 %) | scaled with `iterations` here |
# | precision | bf16 | fp32 | CPU bf16 autocast is slower than fp32 on most CPUs |
#
# **The scale the toy sees.** A patch covers 128 µm; read at 64 px it is at 2 µm/px, and a global crop
# (40–100 % of the patch area) resized to 32 px is at ~2.5–4 µm/px — nuclei (5–10 µm) are 1–3 px. The
# toy learns tissue *texture and colour*, not nuclear detail; the paper's ViT-B sees 0.5 µm/px.

# %%
base = get_preset("cpu-demo")
if reuse is not None:
    configs = {name: PretrainConfig.load(Path(rec["run_dir"]) / "config.json") for name, rec in reuse.items()}
else:
    over = {"data": str(tile_dir), "seed": int(seed)}
    if iterations is not None:  # the warm-ups keep their share of the run (60 of 1,200 stays 60 at 1,200)
        frac = iterations / base.max_iters
        over.update(max_iters=iterations,
                    warmup_iters=max(1, round(base.warmup_iters * frac)) if base.warmup_iters else 0,
                    warmup_teacher_temp_iters=round(base.warmup_teacher_temp_iters * frac))
    configs = {name: get_preset("cpu-demo", out_dir=str(out / name), normalize=(name == "macenko"), **over)
               for name in ("raw", "macenko")}
shown = ["max_iters", "warmup_iters", "warmup_teacher_temp_iters", "batch_size", "lr", "out_dim", "global_crop_size",
         "local_crop_size", "n_local_crops", "load_px", "color_jitter", "teacher_temp", "momentum_teacher", "normalize"]
pd.DataFrame({n: {k: str(c.to_dict()[k]) for k in shown} for n, c in configs.items()})

# %% [markdown]
# ## Train both, with live curves
#
# Training proceeds in chunks (`stop_at`): each chunk resumes exactly from the last checkpoint — the
# same mechanism that survives SLURM pre-emption. What to watch: the loss falling below `ln K`, the
# per-sample teacher entropy low (sharp choices) while the **batch entropy stays high** (different
# images choose different prototypes). Both entropies low would be the one-prototype collapse.

# %%
runs, logs = {}, {}
if reuse is not None:
    runs = {name: {**rec, "status": "completed (the demo's run, reused)"} for name, rec in reuse.items()}
    logs = {name: read_log(Path(rec["run_dir"]) / "log.jsonl") for name, rec in reuse.items()}
    fig = compare_runs(logs, out_dim=configs["raw"].out_dim)
    fig.show()
else:
    dataset = TiledPatchDataset(tile_dir)
    for name, cfg in configs.items():
        total = cfg.max_iters
        for stop in list(range(chunk, total, chunk)) + [total]:
            res = train(cfg, dataset, stop_at=stop, progress=False)
            logs[name] = read_log(Path(cfg.out_dir) / "log.jsonl")
            clear_output(wait=True)
            print(f"{name}: iteration {res.iteration}/{total}")
            fig = compare_runs(logs, out_dim=cfg.out_dim)
            fig.show()
        runs[name] = {"run_dir": str(res.out_dir), "checkpoint": str(res.checkpoint), "final": res.final,
                      "collapse_warnings": list(res.collapse_warnings), "stain_counts": res.stain_counts,
                      "iterations": res.iteration, "status": res.status}
fig.write_html(out / "training_curves.html", include_plotlyjs="directory")  # the figure shown above, offline

# %% [markdown]
# The final numbers of each run, and every logged quantity of the Macenko run (weight decay and
# teacher-momentum cosines, the teacher-temperature schedule, gradient norm, KL, throughput).

# %%
for name, r in runs.items():
    ln_k = math.log(configs[name].out_dim)
    print(f"{name}: {r['status']}, {r['iterations']} iterations; final loss {r['final'].get('loss', float('nan')):.3f} "
          f"(ln K = {ln_k:.3f}); batch entropy {r['final'].get('batch_entropy', float('nan')):.2f}; "
          f"collapse warnings: {r['collapse_warnings'] or 'none'}; Macenko outcomes: {r['stain_counts']}")
plot_curves_plotly([r for r in logs["macenko"] if "loss" in r], out_dim=configs["macenko"].out_dim,
                   title="all logged quantities, Macenko run").show()

# %% [markdown]
# ## Did it learn?
#
# A random ViT already separates colours, so the honest check is a **margin over baselines that
# learned nothing**, on the same patches: the random-init twin of the same architecture, and plain
# **colour statistics** (per-channel histograms and moments — the cue the paper warns about). The
# score is k-NN balanced accuracy of the tissue classes, with folds that never split a slide (a
# neighbour from the same slide cannot help). Evaluation views: the whole patch at the crop size the
# model was trained on (32 px, ~4 µm/px).

# %%
eval_ds = TiledPatchDataset(tile_dir, out_px=64, max_per_slide=eval_per_slide, seed=seed)
keep = (eval_ds.meta["label"] >= 1).to_numpy()  # tissue classes only (0 = background, -1 = no label)
labels = eval_ds.meta["label"].to_numpy()[keep]
groups = eval_ds.meta["slide_id"].astype(str).to_numpy()[keep]
rows = []
if keep.sum() == 0 or len(np.unique(labels)) < 2 or len(np.unique(groups)) < 2:
    display(Markdown(f"**Learning check skipped**: it needs tissue labels of at least two classes on at least two "
                     f"slides, and `{tile_dir}` has {int(keep.sum())} labelled patches "
                     f"({len(np.unique(labels))} classes, {len(np.unique(groups))} slides). Unlabelled slides "
                     "(your own) have none; the synthetic cohort has them. Notebook 06 probes a labelled dataset."))
else:
    images = np.stack([eval_ds[int(i)]["image"] for i in np.flatnonzero(keep)])
    macenko_images = np.asarray(MacenkoNormalizer().normalize(images).images)
    for name, r in runs.items():
        teacher, twin = teacher_and_random_twin(str(r["checkpoint"]), seed=seed)
        imgs = macenko_images if configs[name].normalize else images
        feats = {"trained teacher": embed_images(teacher, imgs, size=configs[name].global_crop_size),
                 "random-init twin": embed_images(twin, imgs, size=configs[name].global_crop_size),
                 "colour statistics": colour_features(imgs)}
        for model_name, f in feats.items():
            rows.append({"run": name, "features": model_name,
                         "tissue k-NN bacc": knn_accuracy(f, labels, groups=groups)})
    check = pd.DataFrame(rows).pivot(index="run", columns="features", values="tissue k-NN bacc")
    check["margin over twin"] = check["trained teacher"] - check["random-init twin"]
    display(check.round(3))
    display(Markdown(f"Chance (balanced accuracy) is 1/{len(np.unique(labels))} = {1 / len(np.unique(labels)):.2f}. "
                     "A trained teacher at or below its twin or the colour statistics learned nothing beyond colour."))

# %% tags=["remove-cell"]
_ = write_json_atomic(out / "notebook_summary.json", {
    "reused_demo_runs": reuse is not None, "tile_dir": str(tile_dir),
    "iterations": {n: r["iterations"] for n, r in runs.items()},
    "warmup_iters": {n: c.warmup_iters for n, c in configs.items()},
    "final_loss": {n: r["final"].get("loss") for n, r in runs.items()},
    "collapse_warnings": {n: r["collapse_warnings"] for n, r in runs.items()},
    "tissue_knn": rows,
})
