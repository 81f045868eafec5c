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
# # 06 · Linear probing: how good are the frozen features?
#
# Table 1 of the paper scores every encoder the same way (§4.4): the encoder is **frozen**, each
# image becomes one feature vector, and a single **linear layer** is trained on top — SGD, lr 0.1,
# momentum 0.9, no weight decay, batch 128, **12,500 iterations**; images resized to 256 and
# centre-cropped to 224, no other augmentation, Macenko normalization in train *and* test; metric:
# top-1 accuracy. Because only a linear layer learns, the score measures what the features already
# separate.
#
# The kit's choices where the paper is silent are named fields of `ProbeConfig` (feature
# normalization, initialisation, and model selection on the validation split — the test metrics of
# the last iterate are recorded too). Features are extracted once into an HDF5 cache keyed by what
# produced them (encoder, checkpoint hash, preprocessing, stain target, patch list); the probe, the
# k-NN and every plot read the cache. Stain-normalization failures are counted per split in every
# result, never dropped.
#
# By default this runs on the demo's **synthetic tissue task** (5 tissue classes, split by slide so
# held-out slides come from other "staining sites") with the demo's two DINO runs — on raw and on
# Macenko patches — and a random-init twin. Point `dataset` / `dataset_root` at a downloaded dataset
# (`"crc100k"`, `"mhist"`, `"pcam"`, `"til"`, `"msi_crc"`, `"msi_stad"`) and `encoder` /
# `checkpoint` at a model (e.g. `encoder = "exaonepath"` with the checkpoint you downloaded under
# its license) to reproduce a Table 1 column.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/06"  # features, probe results, figures and notebook_summary.json
smoke = False  # tiny sizes (tests): fewer patches, 200 probe iterations, one seed
tile_dir = None  # demo tiling (synthetic task); None: made if missing
ckpt_raw = None  # demo DINO checkpoint trained on raw patches; None: made if missing
ckpt_norm = None  # demo DINO checkpoint trained on Macenko patches; None: made if missing
dataset = "synthetic"  # synthetic | pcam | mhist | crc100k | til | msi_crc | msi_stad | folder (your own patches)
dataset_root = None  # folder of the dataset as downloaded; None: the demo tiling (synthetic only)
encoder = "kit-dino"  # encoder name (exaonepath_lab.encoders.list_encoders()), e.g. exaonepath, uni, timm:resnet50
checkpoint = None  # weights of `encoder` (a local file); None with kit-dino: the two demo checkpoints
iterations = 12500  # the paper's probe length
seeds = [0, 1, 2]  # probe seeds: mean and std over them
knn_k = 20  # k-NN neighbours (DINO's default)
batch_size = 64  # feature-extraction batch
device = "cpu"  # cuda for a GPU

# %%
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch
from IPython.display import Image, display

from exaonepath_lab.encoders import create_encoder, random_like
from exaonepath_lab.features import extract_features
from exaonepath_lab.io import atomic_path, write_json_atomic
from exaonepath_lab.probing import ProbeConfig, evaluate_features, load_dataset, write_result
from exaonepath_lab.probing.synthetic_task import load_synthetic_task
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
torch.set_num_threads(2)
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
if smoke:
    iterations, seeds = min(iterations, 200), seeds[:1]
summary: dict = {"dataset": dataset, "encoder": encoder}

# %% [markdown]
# ## 1. The dataset and its splits
#
# Every downstream dataset follows the kit's item protocol, with `label` and `split` in its `meta`
# table. The paper's own 80:20 splits (of a train partition, or of patients) are generated once by
# a fixed rule and saved as CSV next to the data, so every encoder is probed on the same samples.

# %%
demo_models = encoder == "kit-dino" and checkpoint is None
if (dataset == "synthetic" and dataset_root is None and tile_dir is None) or (demo_models and ckpt_raw is None):
    from exaonepath_lab.demo import demo_inputs

    demo = demo_inputs("../outputs", smoke=smoke, train=demo_models)
    tile_dir = tile_dir or demo["tile_dir"]
    ckpt_raw, ckpt_norm = ckpt_raw or demo.get("ckpt_raw"), ckpt_norm or demo.get("ckpt_norm")
if dataset == "synthetic":
    # 128 px reads of the 128 µm patches: the demo encoders see 48 px anyway
    ds = load_synthetic_task(dataset_root or tile_dir, out_px=128, seed=0, max_per_slide=30 if smoke else None)
    print("left out (not tissue):", ds.excluded_counts)
else:
    if dataset_root is None:
        raise ValueError(f"dataset={dataset!r} needs dataset_root: the folder of the downloaded dataset "
                         "(`exaonepath-lab datasets check DIR --dataset NAME` validates it)")
    ds = load_dataset(dataset, dataset_root)
    dataset = summary["dataset"] = getattr(ds, "dataset_name", dataset)  # folder:<name>: its own Table 1 column
classes = list(ds.classes)
counts = pd.crosstab(ds.meta["class_name"], ds.meta["split"])
display(counts)
if dataset == "synthetic":
    display(ds.meta.groupby("split")["slide_id"].unique().apply(list).to_frame("slides"))
summary["n_items"] = {str(k): int(v) for k, v in ds.meta["split"].value_counts().items()}
summary["classes"] = classes

# %% [markdown]
# ## 2. Encoders and features
#
# With the demo checkpoints the comparison is the paper's argument in miniature: the model trained on
# raw patches (with raw and with Macenko input), the model trained on Macenko patches, and a
# random-init twin of the same architecture — the floor that tells how much the *training* added.
# Features are cached under `out_dir/features`; a rerun reuses them when the key matches.

# %%
mac = MacenkoNormalizer()  # the default target; the paper normalizes in train and test
if demo_models:
    enc_raw = create_encoder("kit-dino", checkpoint=ckpt_raw, device=device)
    enc_norm = create_encoder("kit-dino", checkpoint=ckpt_norm, device=device)
    models = {"DINO raw (raw input)": (enc_raw, None), "DINO raw (Macenko input)": (enc_raw, mac),
              "DINO Macenko (Macenko input)": (enc_norm, mac),
              "random-init twin (Macenko input)": (random_like(enc_norm, seed=0), mac)}
else:
    enc = create_encoder(encoder, checkpoint=checkpoint, device=device)
    models = {f"{encoder} (Macenko input)": (enc, mac), f"random-init {encoder} (Macenko input)": (random_like(enc), mac)}

features = {}
for name, (enc, norm) in models.items():
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    fs = extract_features(enc, ds, normalizer=norm, batch_size=batch_size,
                          cache_path=out / "features" / f"{dataset.replace(':', '_')}__{slug}.h5", progress=not smoke)
    features[name] = fs
    print(f"{name}: {fs.features.shape} features ({fs.cache_status}); stain statuses:",
          dict(zip(*np.unique(fs.norm_status, return_counts=True))))

# %% [markdown]
# ## 3. The linear probe, and k-NN
#
# `evaluate_features` trains the probe once per seed on the `train` split, selects the checkpoint
# with the best `val` top-1, and reports `test` as mean ± std over seeds. Weighted k-NN (DINO's
# `eval_knn`: cosine similarity, k = 20, temperature 0.07) needs no training and is a quick
# second opinion. Each result is a JSON file (the input of Table 1, notebook 07).

# %%
pcfg = ProbeConfig(iterations=iterations, seeds=tuple(seeds))
print(pcfg)
results, rows = {}, []
for name, fs in features.items():
    enc = models[name][0]
    info = {"params": int(sum(p.numel() for p in enc.parameters()))}
    lin = evaluate_features(fs, dataset=dataset, model=name, config=pcfg, classes=classes, model_info=info,
                            progress=not smoke)
    knn = evaluate_features(fs, dataset=dataset, model=name, method="knn", knn_k=knn_k, classes=classes,
                            model_info=info)
    files = [write_result(lin, out / "probe"), write_result(knn, out / "probe")]
    results[name] = {"linear": lin, "knn": knn, "files": [str(f) for f in files]}
    t = lin["test"]
    rows.append({"model": name, "linear top-1": t["top1"]["mean"], "± std": t["top1"]["std"],
                 "balanced acc.": t["balanced_accuracy"]["mean"], "AUROC": t["auroc"]["mean"],
                 "last-iterate top-1": lin["test_last_iterate"]["top1"]["mean"],
                 "k-NN top-1": knn["test"]["top1"]["mean"],
                 "stain failures (test)": sum(v for k, v in lin["normalization"].get("test", {}).items()
                                              if k not in ("ok", "none"))})
table = pd.DataFrame(rows).set_index("model")
display(table.round(3))

# %% [markdown]
# What to look at: with the demo checkpoints, the Macenko-trained model with Macenko input should beat
# its random-init twin (training learned tissue, not just colour), and the raw-trained model should
# gain from Macenko input on held-out slides. The demo trains for minutes on 2 CPU cores, so the
# differences are small and the seeds' spread matters: read the ± std before the means. On a
# smoke-sized run (a few dozen patches, 200 iterations) the numbers are noise.

# %%
fig = go.Figure()
fig.add_bar(name="linear probe (mean ± std over seeds)", x=table.index, y=table["linear top-1"],
            error_y=dict(type="data", array=table["± std"]))
fig.add_bar(name=f"k-NN (k = {knn_k})", x=table.index, y=table["k-NN top-1"])
chance = 1 / len(classes)
fig.add_hline(y=chance, line_dash="dot", line_color="gray", annotation_text="chance")
fig.update_layout(barmode="group", template="plotly_white", yaxis_title="test top-1 accuracy",
                  yaxis_range=[0, 1], title=f"Frozen features on {dataset}: linear probe and k-NN", height=480)
fig.write_html(out / "probe_results.html", include_plotlyjs="directory")  # plotly.min.js beside it: offline
fig.show()

mfig, ax = plt.subplots(figsize=(1.8 * len(table) + 3, 4.5))
x = np.arange(len(table))
ax.bar(x - 0.2, table["linear top-1"], 0.4, yerr=table["± std"], capsize=4, label="linear probe (± std)")
ax.bar(x + 0.2, table["k-NN top-1"], 0.4, label=f"k-NN (k = {knn_k})")
ax.axhline(chance, ls=":", color="gray", label="chance")
ax.set_xticks(x, [m.replace(" (", "\n(") for m in table.index], fontsize=8)
ax.set_ylim(0, 1)
ax.set_ylabel("test top-1 accuracy")
ax.set_title(f"Frozen features on {dataset}")
ax.legend(fontsize=8)
mfig.tight_layout()
with atomic_path(out / "probe_results.png") as tmp:
    mfig.savefig(tmp, dpi=120, format="png")
plt.close(mfig)
display(Image(filename=str(out / "probe_results.png")))

# %% [markdown]
# ### Validation curves and what a result file holds
#
# The validation top-1 during training (first seed) shows where the selected checkpoint came from.
# Every result JSON records the protocol, the selection rule actually used, the split sizes, the
# stain statuses per split and the feature-cache key hash, so a number in a table can be traced.

# %%
mfig, ax = plt.subplots(figsize=(7, 3.5))
for name, r in results.items():
    curve = pd.DataFrame(r["linear"]["per_seed"][0]["val_curve"])
    if len(curve):
        ax.plot(curve["iteration"], curve["top1"], marker="o", label=name)
ax.set_xlabel("probe iteration")
ax.set_ylabel("val top-1")
ax.legend(fontsize=7)
mfig.tight_layout()
with atomic_path(out / "val_curves.png") as tmp:
    mfig.savefig(tmp, dpi=110, format="png")
plt.show()
first = next(iter(results.values()))["linear"]
print(json.dumps({k: first[k] for k in ("model", "dataset", "method", "protocol", "selection_used", "n",
                                       "normalization", "preprocessing")}, indent=1, default=str))

# %%
summary.update({"probe_config": pcfg.to_dict(), "results": table.reset_index().to_dict("records"),
                "result_files": [f for r in results.values() for f in r["files"]],
                "figures": ["probe_results.png", "probe_results.html", "val_curves.png"]})
write_json_atomic(out / "notebook_summary.json", summary)
display(table.round(3))
