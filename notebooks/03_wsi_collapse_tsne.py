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
# # 03 · WSI-specific feature collapse, measured (Figure 2)
#
# The paper's central observation (EXAONEPath §3.1–3.3, Figure 2): features of a DINO model
# trained on raw patches **cluster by the slide** the patches came from, although the model never
# saw a slide id. The paper shows three t-SNE pictures of 10 slides × 1,000 patches:
#
# * **(a)** model trained on raw patches, raw input — strong clustering by slide;
# * **(b)** the same model, Macenko-normalized input — somewhat mixed;
# * **(c)** model trained on Macenko-normalized patches, normalized input — much more mixed.
#
# Pictures depend on t-SNE's whims, so this notebook also *measures* the clustering in feature
# space, with 95 % bootstrap intervals over slides and a chance level:
#
# | metric | reads | collapse means |
# |---|---|---|
# | normalized k-NN slide purity | share of a patch's 15 nearest neighbours from its own slide, rescaled so 0 = chance | high |
# | iLISI | effective number of slides in a perplexity-30 neighbourhood, scaled to [0, 1] | low |
# | slide silhouette | silhouette with the slide as the label | high |
# | slide-ID probe | balanced accuracy of a linear probe predicting the slide | high |
# | SO share (the kit's slide-level variant; not PathoROB's robustness index, which contrasts medical centres) | SO / (SO + OS) over k-NN pairs (same biology-other slide vs other biology-same slide); n/a without class labels | low |
#
# Two **reference rows** are computed on the same patches: colour statistics alone, and a
# random-init network of the same architecture. They tell how much clustering is already in the
# colour of the input rather than something training learned.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/03"
smoke = False
tile_dir = None  # tiling output (None: the demo cohort, made if missing)
data = None  # your own patches instead: a folder or CSV of WSIs (tiled into out_dir/tiles), a tiling output, or an image folder (FOLDER/<slide>/<patch>.png), as `exaonepath-lab audit` takes
ckpt_raw = None  # DINO checkpoint trained on raw patches (None: the demo's)
ckpt_norm = None  # DINO checkpoint trained on Macenko-normalized patches (None: the demo's)
n_slides = 10  # paper: 10 WSIs
per_slide = 250  # paper: 1,000 patches per WSI (the demo slides hold ~150-400)
method = "tsne"  # tsne (the paper's) | umap | pca
perplexity = 30.0
k = 15  # neighbours of purity and the SO share; slides need ≥ k + 1 patches (audit --k)
seed = 0

# %%
from pathlib import Path

import pandas as pd
import plotly.io as pio
from IPython.display import display

from exaonepath_lab.analysis import collapse_report, metrics_wide
from exaonepath_lab.analysis.explorer import CollapseExplorer
from exaonepath_lab.analysis.inputs import input_kind, open_patches
from exaonepath_lab.demo import demo_inputs
from exaonepath_lab.encoders import create_encoder
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
if smoke:
    n_slides, per_slide = min(n_slides, 4), min(per_slide, 30)
if (tile_dir is None and data is None) or None in (ckpt_raw, ckpt_norm):
    paths = demo_inputs("../outputs", smoke=smoke)
    tile_dir = tile_dir or paths["tile_dir"]
    ckpt_raw = ckpt_raw or paths["ckpt_raw"]
    ckpt_norm = ckpt_norm or paths["ckpt_norm"]
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The patches and the encoders
# Patches are read from the slides at their extracted size (256 px at 0.5 µm/px, 512 px at
# 0.25 µm/px) and area-resized to 128 px; each encoder then applies its own preprocessing
# (Resize → CenterCrop → mean/std). `kit-dino` loads the *teacher* backbone of our DINO checkpoints,
# strictly (any missing or unexpected key is an error).

# %%
if data is not None:  # the same reader as `exaonepath-lab audit`
    kind = input_kind(Path(data))
    dataset, info = open_patches(data, kind=kind, tiles_dir=out / "tiles", out_px=None if kind == "images" else 128)
    print(info)
else:
    dataset = TiledPatchDataset(tile_dir, out_px=128)
macenko = MacenkoNormalizer()  # torchstain's reference target, Io=240, alpha=1, beta=0.15
enc_raw = create_encoder("kit-dino", checkpoint=ckpt_raw)
enc_norm = create_encoder("kit-dino", checkpoint=ckpt_norm)
print(len(dataset), "patches from", dataset.meta["slide_id"].nunique(), "slides;", enc_raw)

# %% [markdown]
# ## Figure 2 in one call
# `collapse_report` samples K slides × M patches (seeded), extracts and caches features per panel,
# adds the reference rows, computes the metrics with bootstrap intervals, embeds, and writes
# `figure2.html` (hover a point to see its patch), `figure2.png` and `metrics.csv`.

# %%
panels = {
    "(a) raw-trained, raw input": (enc_raw, None),
    "(b) raw-trained, Macenko input": (enc_raw, macenko),
    "(c) Macenko-trained, Macenko input": (enc_norm, macenko),
}
report = collapse_report(dataset, panels, out_dir=out, n_slides=n_slides, per_slide=per_slide, seed=seed, k=k,
                         method=method, perplexity=perplexity, n_boot=50 if smoke else 200)
report.figure.plotly.show()

# %%
display(report.figure.matplotlib)

# %% [markdown]
# ## The numbers
# Lower slide purity, silhouette and slide-probe accuracy, and higher iLISI and SO share,
# mean less collapse. Compare each trained panel with the reference rows of the same input.

# %%
table = report.metrics
display(metrics_wide(table).round(3))
purity = table[table["metric"] == "knn_slide_purity"][["features", "value", "ci_low", "ci_high"]]
display(purity.round(3))

# %% [markdown]
# ## Explore
# Switch encoder, input normalization, embedding method, perplexity and colouring (slide or tissue
# class). Embeddings are cached, so switching back is instant.

# %%
sets = {
    ("raw-trained", "raw"): report.features["(a) raw-trained, raw input"],
    ("raw-trained", "macenko"): report.features["(b) raw-trained, Macenko input"],
    ("macenko-trained", "macenko"): report.features["(c) Macenko-trained, Macenko input"],
}
explorer = CollapseExplorer(sets, seed=seed, n_boot=0 if smoke else 50)
display(explorer.widget)

# %%
summary = {row.features: {"purity": row.value, "ci": [row.ci_low, row.ci_high]} for row in purity.itertuples()}
write_json_atomic(out / "notebook_summary.json", {"knn_slide_purity": summary, "files": {k: str(v) for k, v in report.paths.items()}})
summary
