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
# Table 1 of the paper reports linear-probe accuracy (§4.4): the encoder is **frozen**, each
# image becomes one feature vector, and a single **linear layer** is trained on top — SGD, lr 0.1,
# momentum 0.9, no weight decay, batch 128, **12,500 iterations**; images resized to 256 and
# centre-cropped to 224, no other augmentation, Macenko normalization in train *and* test; metric:
# top-1 accuracy. Only EXAONEPath's and GigaPath's rows were measured that way by the authors; most
# other rows are quoted from the RudolfV paper, whose protocol differs (notebook 07 says which).
#
# ## What a linear probe measures, and why the splits go by slide
#
# Because only a linear layer learns, the probe measures what the features *already* separate with a
# straight cut: if tissue classes lie in different directions of feature space, a hyperplane finds
# them. It does not measure what fine-tuning could reach.
#
# It also measures anything that correlates with the label, including things that should not.
# Patches of one slide share its stain and scanner — notebook 03 showed features clustering by
# slide. If the same slide had patches in train and in test, the probe could recognise the *slide*
# and read off its labels ("this colour was mostly tumour"): slide identity leaks. So every split here
# is **by slide** (or by patient, for the public datasets): the test slides come from "staining
# sites" the probe never saw, and a feature that encodes the slide rather than the tissue does not help.
#
# The kit's choices where the paper is silent are named fields of `ProbeConfig` (feature
# normalization, initialisation, and model selection on the validation split — the test metrics of
# the last iterate are recorded too). Features are extracted once into an HDF5 cache keyed by what
# produced them; the probe, the k-NN and every plot read the cache. Stain-normalization failures are
# counted per split in every result, never dropped.
#
# **Data and time.** By default: the demo's synthetic tissue task (5 tissue classes, split by slide)
# with the demo's two DINO runs (raw and Macenko) and a random-init twin — a few minutes on a CPU. For a
# Table 1 column set `dataset` / `dataset_root` to a downloaded dataset (`pcam`, `mhist`, `crc100k`,
# `til`, `msi_crc`, `msi_stad`; `exaonepath-lab datasets check` validates the folder) and `encoder` /
# `checkpoint` to a model (e.g. `encoder = "exaonepath"` with its checkpoint file). Extraction
# dominates: a ViT-B/16 runs at roughly 1–3 images/s on 2 CPU cores, so PCam's 327,680 images take
# **days** on a CPU and well under an hour on one GPU (`device = "cuda"`); the notebook prints its
# estimate before starting. The probe itself (12,500 iterations) takes about a minute per seed.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/06"  # features, probe results, figures; relative paths are taken from notebooks/
smoke = False  # tiny sizes (tests): fewer patches, 200 probe iterations, one seed
demo_dir = "../outputs"  # where `make demo` writes: its tiling and checkpoints are used when the paths below are None
dataset = "synthetic"  # synthetic | pcam | mhist | crc100k | til | msi_crc | msi_stad | folder (your own patches)
dataset_root = None  # the dataset's folder as downloaded; for synthetic a tiling of synthetic slides (None: the demo's)
encoder = "kit-dino"  # encoder name (exaonepath_lab.encoders.list_encoders()), e.g. exaonepath, uni, timm:resnet50
checkpoint = None  # weights of `encoder` (a local file); None with kit-dino: compare ckpt_raw and ckpt_norm
ckpt_raw = None  # kit-dino, checkpoint None: a run trained on raw patches (with ckpt_norm; both None: the demo's)
ckpt_norm = None  # kit-dino, checkpoint None: a run trained on Macenko-normalized patches
normalize = True  # Macenko-normalize the probe's input (the paper: in train and test)
random_twin = True  # also probe a random-init twin of the encoder (the floor; doubles the extraction time)
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
from IPython.display import Markdown, display

from exaonepath_lab import notebook_params as nbp
from exaonepath_lab.encoders import create_encoder, random_like
from exaonepath_lab.features import extract_features
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.probing import ProbeConfig, evaluate_features, load_dataset, write_result
from exaonepath_lab.probing.datasets import DATASETS
from exaonepath_lab.probing.synthetic_task import load_synthetic_task
from exaonepath_lab.report.png import save_figure
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
torch.set_num_threads(2)
dataset = nbp.check_choice("dataset", dataset, ["synthetic", *DATASETS, "folder"])
normalize = nbp.check_choice("normalize", normalize, [True, False])
random_twin = nbp.check_choice("random_twin", random_twin, [True, False])
iterations = nbp.check_int("iterations", iterations)
knn_k, batch_size = nbp.check_int("knn_k", knn_k), nbp.check_int("batch_size", batch_size)
if not (isinstance(seeds, (list, tuple)) and seeds and all(isinstance(s, int) for s in seeds)):
    raise nbp.NotebookParameterError(f"seeds={seeds!r}: expected a non-empty list of whole numbers")
device = nbp.check_device(device)
pair = encoder == "kit-dino" and checkpoint is None  # compare a raw- and a Macenko-trained run of the kit
if pair:
    own_ckpts = nbp.own_or_demo("comparing two kit-dino runs", ckpt_raw=ckpt_raw, ckpt_norm=ckpt_norm)
else:
    nbp.reject_unused("unless encoder='kit-dino' and checkpoint=None (they are the pair compared there)",
                      ckpt_raw=ckpt_raw, ckpt_norm=ckpt_norm)
if dataset != "synthetic" and dataset_root is None:
    raise nbp.NotebookParameterError(
        f"dataset={dataset!r} needs dataset_root: the folder of the downloaded dataset "
        f"(`exaonepath-lab datasets check DIR --dataset {dataset}` validates it)")
need_demo_ckpts = pair and not own_ckpts
if (dataset == "synthetic" and dataset_root is None) or need_demo_ckpts:
    demo = nbp.demo_paths(demo_dir, smoke=smoke, train=need_demo_ckpts)
    dataset_root = dataset_root if dataset_root is not None else demo["tile_dir"]
    if need_demo_ckpts:
        ckpt_raw, ckpt_norm = demo["ckpt_raw"], demo["ckpt_norm"]
dataset_root = nbp.tiling_dir(dataset_root, name="dataset_root") if dataset == "synthetic" else \
    nbp.existing_dir("dataset_root", dataset_root)
out = nbp.output_dir(out_dir)
if smoke:
    iterations, seeds = min(iterations, 200), seeds[:1]
summary: dict = {"dataset": dataset, "encoder": encoder, "normalize": normalize, "dataset_root": str(dataset_root)}

# %% [markdown]
# ## 1. Encoders
#
# With the kit's two runs the comparison is the paper's argument in miniature: the model trained on
# raw patches (with raw and with Macenko input), the model trained on Macenko patches, and a
# random-init twin of the same architecture — the floor that tells how much the *training* added.

# %%
mac = MacenkoNormalizer() if normalize else None  # the default target; the paper normalizes in train and test
label = "Macenko input" if normalize else "raw input"
if pair:
    enc_raw = create_encoder("kit-dino", checkpoint=nbp.checkpoint_file(ckpt_raw, name="ckpt_raw"), device=device)
    enc_norm = create_encoder("kit-dino", checkpoint=nbp.checkpoint_file(ckpt_norm, name="ckpt_norm"), device=device)
    models = {"DINO raw (raw input)": (enc_raw, None)}
    if normalize:
        models["DINO raw (Macenko input)"] = (enc_raw, mac)
    models[f"DINO Macenko ({label})"] = (enc_norm, mac)
    twin_of = enc_norm
else:
    enc = create_encoder(encoder, checkpoint=checkpoint, device=device)
    models = {f"{encoder} ({label})": (enc, mac)}
    twin_of = enc
if random_twin:
    models[f"random-init twin ({label})"] = (random_like(twin_of, seed=0), mac)
for name, (e, _) in models.items():
    print(f"{name}: {e.name}, {sum(p.numel() for p in e.parameters()) / 1e6:.1f} M parameters, input {e.input_size} px")

# %% [markdown]
# ## 2. The dataset and its splits
#
# Every downstream dataset follows the kit's item protocol, with `label` and `split` in its `meta`
# table. The paper's own 80:20 splits (of a train partition, or of patients) are generated once by
# a fixed rule and saved as CSV next to the data, so every encoder is probed on the same samples.
# Patches are read at the encoders' resize size (at least 128 px): 256 px for a ViT-B, which then
# centre-crops 224; the demo's small encoders see 32 px crops.

# %%
read_px = max(128, *(e.resize_size for e, _ in models.values()))
if dataset == "synthetic":
    ds = load_synthetic_task(dataset_root, out_px=read_px, seed=0, max_per_slide=30 if smoke else None)
    print("left out (not tissue):", ds.excluded_counts)
else:
    ds = load_dataset(dataset, dataset_root)
    dataset = summary["dataset"] = getattr(ds, "dataset_name", dataset)  # folder:<name>: its own Table 1 column
classes = list(ds.classes)
counts = pd.crosstab(ds.meta["class_name"], ds.meta["split"])
display(counts)
if "slide_id" in ds.meta and dataset == "synthetic":
    display(ds.meta.groupby("split")["slide_id"].unique().apply(list).to_frame("slides"))
test_share = ds.meta.loc[ds.meta["split"] == "test", "class_name"].value_counts(normalize=True)
chance = {"majority_class": str(test_share.index[0]), "majority_rate": float(test_share.iloc[0]),
          "uniform": 1 / len(classes)}
summary["n_items"] = {str(k): int(v) for k, v in ds.meta["split"].value_counts().items()}
summary["classes"], summary["chance"] = classes, chance
hours = sum(nbp.extraction_hours(len(ds), e, device=device) for e, _ in models.values())
print(f"chance on the test split: always answering {chance['majority_class']!r} scores top-1 "
      f"{chance['majority_rate']:.2f} (1/{len(classes)} = {chance['uniform']:.2f} only if classes were balanced)")
print(f"extraction estimate: ~{hours:.2g} h for {len(ds)} images × {len(models)} models on {device}")
if hours > 0.5:
    display(Markdown(f"**Warning: extraction will take roughly {hours:.1f} hours on `{device}`** "
                     f"({len(ds)} images, {len(models)} models). Use `device = \"cuda\"`, `random_twin = False`, "
                     "or run `exaonepath-lab extract` as a batch job; the cache resumes an interrupted run."))

# %% [markdown]
# ## 3. Features
#
# Features are cached under `out_dir/features`; a rerun reuses them when the key matches.

# %%
features = {}
for name, (enc, norm) in models.items():
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    fs = extract_features(enc, ds, normalizer=norm, batch_size=batch_size,
                          cache_path=out / "features" / f"{dataset.replace(':', '_')}__{slug}.h5", progress=not smoke)
    features[name] = fs
    print(f"{name}: {fs.features.shape} features ({fs.cache_status}); stain statuses:",
          dict(zip(*np.unique(fs.norm_status, return_counts=True))))

# %% [markdown]
# ## 4. The linear probe, and k-NN
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
                 "balanced acc.": t["balanced_accuracy"]["mean"], "bal. ± std": t["balanced_accuracy"]["std"],
                 "AUROC": t["auroc"]["mean"], "last-iterate top-1": lin["test_last_iterate"]["top1"]["mean"],
                 "k-NN top-1": knn["test"]["top1"]["mean"],
                 "stain failures (test)": sum(v for k, v in lin["normalization"].get("test", {}).items()
                                              if k not in ("ok", "none"))})
table = pd.DataFrame(rows).set_index("model")
display(table.round(3))

# %% [markdown]
# What to look at: top-1 against the **majority-class rate** (the dotted line: a probe that always
# answers the most frequent test class scores that much), and balanced accuracy against 1/n_classes
# (balanced accuracy averages the per-class recalls, so always answering one class scores exactly
# that). With the demo checkpoints, the Macenko-trained model should beat its random-init twin
# (training learned tissue, not just colour), and the raw-trained model should gain from Macenko input
# on held-out slides. The demo trains for minutes on 2 CPU cores, so differences are small: read the
# ± std over seeds before the means. On a smoke-sized run the numbers are noise.

# %%
fig = go.Figure()
fig.add_bar(name="linear probe, top-1 (± std over seeds)", x=table.index, y=table["linear top-1"],
            error_y=dict(type="data", array=table["± std"]))
fig.add_bar(name="linear probe, balanced acc. (± std)", x=table.index, y=table["balanced acc."],
            error_y=dict(type="data", array=table["bal. ± std"]))
fig.add_bar(name=f"k-NN top-1 (k = {knn_k})", x=table.index, y=table["k-NN top-1"])
fig.add_hline(y=chance["majority_rate"], line_dash="dot", line_color="gray",
              annotation_text=f"top-1 chance: majority class ({chance['majority_rate']:.2f})")
fig.add_hline(y=chance["uniform"], line_dash="dash", line_color="lightgray",
              annotation_text=f"balanced-acc. chance 1/{len(classes)}", annotation_position="bottom right")
fig.update_layout(barmode="group", template="plotly_white", yaxis_title="test score", yaxis_range=[0, 1],
                  title=f"Frozen features on {dataset}: linear probe and k-NN", height=480)
fig.write_html(out / "probe_results.html", include_plotlyjs="directory")  # plotly.min.js beside it: offline
fig.show()

mfig, ax = plt.subplots(figsize=(1.8 * len(table) + 3, 4.5))  # the same figure as a PNG file (not shown again)
x = np.arange(len(table))
ax.bar(x - 0.2, table["linear top-1"], 0.4, yerr=table["± std"], capsize=4, label="linear probe top-1 (± std)")
ax.bar(x + 0.2, table["balanced acc."], 0.4, yerr=table["bal. ± std"], capsize=4, label="balanced acc. (± std)")
ax.axhline(chance["majority_rate"], ls=":", color="gray", label="majority-class rate")
ax.axhline(chance["uniform"], ls="--", color="lightgray", label=f"1/{len(classes)}")
ax.set_xticks(x, [m.replace(" (", "\n(") for m in table.index], fontsize=10)
ax.set_ylim(0, 1)
ax.set_ylabel("test score")
ax.set_title(f"Frozen features on {dataset}")
ax.legend(fontsize=9)
save_figure(mfig, out / "probe_results.png")
plt.close(mfig)

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
ax.set_title("Validation top-1 while the probe trains (seed 0)")
ax.legend(fontsize=9)
save_figure(mfig, out / "val_curves.png", dpi=110)
plt.show()
first = next(iter(results.values()))["linear"]
print(json.dumps({k: first[k] for k in ("model", "dataset", "method", "protocol", "selection_used", "n",
                                       "normalization", "preprocessing")}, indent=1, default=str))

# %% tags=["remove-cell"]
summary.update({"probe_config": pcfg.to_dict(), "results": table.reset_index().to_dict("records"),
                "result_files": [f for r in results.values() for f in r["files"]],
                "figures": ["probe_results.png", "probe_results.html", "val_curves.png"]})
write_json_atomic(out / "notebook_summary.json", summary)
