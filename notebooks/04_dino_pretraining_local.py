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
# (paper §3.3). Here the same code trains the `cpu-demo` preset — a 4-block, 128-wide ViT with 8 px
# patches on 32 px global / 16 px local crops of patches read at 64 px, 1,200 iterations — on the demo cohort, twice: on raw patches and on
# normalized patches, and shows the curves while it trains.
#
# What to watch:
# * **loss** falling below `ln(out_dim)` — a loss stuck at `ln(out_dim)` means the teacher's output
#   is uniform: collapse;
# * **teacher entropy** (per-sample) low but **batch entropy** (of the mean output) high — sharp,
#   diverse prototypes; both low means every image maps to the same prototype;
# * the schedules: lr warm-up in *iterations* then cosine; weight decay and teacher momentum cosines;
#   teacher temperature warm-up.
#
# The run is resumable: training proceeds in chunks (`stop_at`), each chunk resumes exactly from the
# last checkpoint — the same mechanism that survives SLURM pre-emption.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/04"
smoke = False
tile_dir = None  # tiling output (None: the demo cohort, made if missing)
iterations = None  # None: the cpu-demo preset's own length
chunk = 25  # iterations between curve refreshes
seed = 0

# %%
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import clear_output, display
from plotly.subplots import make_subplots

from exaonepath_lab.demo import demo_inputs
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.pretrain.curves import plot_curves_plotly, read_log
from exaonepath_lab.pretrain.evaluate import embed_images
from exaonepath_lab.probing.knn import knn_accuracy
from exaonepath_lab.probing.learning import teacher_and_random_twin
from exaonepath_lab.pretrain.presets import get_preset
from exaonepath_lab.pretrain.trainer import train
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline
if smoke:
    iterations, chunk = 6, 3
if tile_dir is None:
    tile_dir = demo_inputs("../outputs", smoke=smoke, train=False)["tile_dir"]
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The preset
# Every knob is a field of one frozen `PretrainConfig`, saved as `config.json` beside the
# checkpoints. The preset's docstring says why each value differs from DINO's ViT-B recipe.

# %%
over = {"data": tile_dir, "seed": seed}
if iterations:
    over.update(max_iters=int(iterations), warmup_iters=max(1, int(iterations) // 4),
                warmup_teacher_temp_iters=max(1, int(iterations) // 2))
configs = {name: get_preset("cpu-demo", out_dir=str(out / name), normalize=(name == "macenko"), **over)
           for name in ("raw", "macenko")}
pd.Series(configs["macenko"].to_dict()).to_frame("cpu-demo")

# %% [markdown]
# ## Train both, with live curves

# %%
def live_figure(logs: dict, out_dim: int) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=("DINO loss", "teacher entropy (per sample)", "lr"))
    for name, rows in logs.items():
        rows = [r for r in rows if "loss" in r]  # iteration rows only (the log also records events)
        it = [r["it"] for r in rows]
        fig.add_trace(go.Scatter(x=it, y=[r["loss"] for r in rows], name=f"{name}: loss"), 1, 1)
        fig.add_trace(go.Scatter(x=it, y=[r["teacher_entropy"] for r in rows], name=f"{name}: entropy"), 1, 2)
        fig.add_trace(go.Scatter(x=it, y=[r["lr"] for r in rows], name=f"{name}: lr"), 1, 3)
    fig.add_hline(y=math.log(out_dim), line_dash="dot", line_color="red", row=1, col=1,
                  annotation_text="ln(out_dim): collapse")
    fig.update_layout(height=380, template="plotly_white")
    return fig


dataset = TiledPatchDataset(tile_dir)
results, logs = {}, {}
for name, cfg in configs.items():
    total = cfg.max_iters
    for stop in list(range(chunk, total, chunk)) + [total]:
        results[name] = train(cfg, dataset, stop_at=stop, progress=False)
        logs[name] = read_log(Path(cfg.out_dir) / "log.jsonl")
        clear_output(wait=True)
        print(f"{name}: iteration {results[name].iteration}/{total}")
        live_figure(logs, cfg.out_dim).show()

# %%
fig = live_figure(logs, configs["raw"].out_dim)
fig.write_html(out / "training_curves.html", include_plotlyjs="directory")
for name, res in results.items():
    print(f"{name}: status {res.status}, final loss {res.final.get('loss'):.3f} "
          f"(ln out_dim = {math.log(configs[name].out_dim):.3f}), collapse warnings: {res.collapse_warnings or 'none'}, "
          f"Macenko outcomes: {res.stain_counts}")
plot_curves_plotly([r for r in logs["macenko"] if "loss" in r], out_dim=configs["macenko"].out_dim,
                   title="all metrics, Macenko run").show()

# %% [markdown]
# ## Did it learn?
# A random ViT already separates colours, so the honest check is a **margin over the random-init
# twin** of the same architecture: k-NN balanced accuracy of the tissue classes, with folds that
# never split a slide (a neighbour from the same slide cannot help).

# %%
eval_ds = TiledPatchDataset(tile_dir, out_px=64, max_per_slide=40 if smoke else 120, seed=seed)
keep = (eval_ds.meta["label"] >= 1).to_numpy()  # tissue classes only
images = np.stack([eval_ds[int(i)]["image"] for i in np.flatnonzero(keep)])
labels = eval_ds.meta["label"].to_numpy()[keep]
groups = eval_ds.meta["slide_id"].astype(str).to_numpy()[keep]
macenko_images = np.asarray(MacenkoNormalizer().normalize(images).images)
rows = []
for name, res in results.items():
    teacher, twin = teacher_and_random_twin(str(res.checkpoint), seed=seed)
    imgs = macenko_images if configs[name].normalize else images
    for model_name, model in (("trained teacher", teacher), ("random-init twin", twin)):
        feats = embed_images(model, imgs, size=configs[name].global_crop_size)
        rows.append({"run": name, "model": model_name, "tissue k-NN bacc": knn_accuracy(feats, labels, groups=groups)})
check = pd.DataFrame(rows)
display(check.pivot(index="run", columns="model", values="tissue k-NN bacc").round(3))

# %%
write_json_atomic(out / "notebook_summary.json", {
    "final_loss": {n: r.final.get("loss") for n, r in results.items()},
    "collapse_warnings": {n: r.collapse_warnings for n, r in results.items()},
    "tissue_knn": check.to_dict("records"),
})
