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
# ## What a t-SNE picture can and cannot show
#
# t-SNE places points so that each point's **nearest neighbours** in feature space stay near it in the
# picture. That part is reliable: if a patch's neighbours are mostly from its own slide, it sits in
# that slide's island. Everything else is not: **cluster sizes** (t-SNE expands dense regions and
# shrinks sparse ones), **distances between clusters** (two islands far apart may be close in feature
# space) and the overall shape carry no meaning, and a different seed or perplexity redraws them.
# **Perplexity** is roughly the number of neighbours each point pays attention to (30 here, as in the
# paper's tools): small values break the picture into many small islands, large ones merge them.
#
# So this notebook **measures** the clustering in the original feature space (768 dimensions for a
# ViT-B, 128 for the demo's toy), never on the 2-D picture, with 95 % bootstrap intervals over slides:
#
# | metric | reads | less slide clustering means |
# |---|---|---|
# | normalized k-NN slide purity | share of a patch's `k` = 15 nearest neighbours from its own slide, rescaled so 0 = chance and 1 = all | ↓ lower |
# | iLISI | effective number of slides among a patch's neighbours (its own fixed neighbourhood, perplexity 30 — independent of the t-SNE's), scaled to [0, 1] | ↑ higher |
# | slide silhouette | how much closer a patch is to its own slide's patches than to the nearest other slide's, −1…1 | ↓ lower |
# | slide-ID probe | balanced accuracy of a linear probe predicting the slide from the features | ↓ lower |
# | SO share | among a patch's neighbours that are either *same class, other slide* (SO) or *other class, same slide* (OS): the share of SO — does biology or the slide decide who is a neighbour? | ↑ higher |
#
# Reference rows, computed on the same patches: **colour statistics** alone, and a **random-init**
# network of the same architecture — how much clustering is already in the input's colour rather
# than something training learned. Every comparison between panels is a **paired** bootstrap
# difference (the same slides drawn for both), not an overlap of two intervals.
#
# **Your own data.** `data` = a tiling of your slides, a folder of slides (tiled here) or a folder
# of images (cut into patches), plus `ckpt_raw` and `ckpt_norm`: two models of the same `encoder`,
# trained on raw and on Macenko-normalized patches (notebook 04, `exaonepath-lab train`, or released
# weights). The notebook never trains on your behalf: without both checkpoints it stops and says so.
# (For one encoder on any images, `exaonepath-lab audit` gives the same measurements.) Time: with the
# demo's 4-block ViT a minute on a CPU; with a ViT-B/16, 3 panels + 1 random twin × 10 slides ×
# `per_slide` patches — about 1.5 h on 2 CPU cores at `per_slide=250` and a few minutes on one GPU
# (GPU time estimated, not measured here).

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/03"  # figures, metrics, notebook_summary.json; relative paths are taken from notebooks/
smoke = False
demo_dir = "../outputs"  # where `make demo` writes; used when data and both checkpoints are None
data = None  # your patches: a tiling, a folder of slides, or a folder of images; None: the demo's tiling
ckpt_raw = None  # a model trained on raw patches (with data and ckpt_norm)
ckpt_norm = None  # the same architecture trained on Macenko-normalized patches
encoder = "kit-dino"  # how to load the checkpoints: kit-dino (this kit's training), exaonepath, timm:<name>, ...
read_px = 256  # patches are read at this side (px) before the encoder's resize/crop: 256 → 224 as in the paper
device = "cpu"  # cuda for a GPU
n_slides = 10  # paper: 10 WSIs
per_slide = 250  # paper: 1,000 patches per WSI (the demo slides hold ~150-400)
method = "tsne"  # tsne (the paper's) | umap | pca
perplexity = 30.0  # t-SNE only; iLISI keeps its own neighbourhood (lisi_perplexity)
k = 15  # neighbours of slide purity and the SO share; slides need ≥ k + 1 patches (audit --k)
lisi_perplexity = 30.0
seed = 0

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
from IPython.display import HTML, Markdown, display

from exaonepath_lab import notebook_params as nbp
from exaonepath_lab.analysis import (collapse_reading, collapse_report, differences_table, figure2, gallery_html,
                                     metrics_table, neighbour_gallery, open_patches, thumbnail_uri)
from exaonepath_lab.analysis.summary import tissue_knn
from exaonepath_lab.analysis.explorer import CollapseExplorer
from exaonepath_lab.encoders import create_encoder, list_encoders
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
method = nbp.check_choice("method", method, ["tsne", "umap", "pca"])
device = nbp.check_device(device)
if encoder not in list_encoders() and not str(encoder).startswith(("timm:", "random:")):
    raise nbp.NotebookParameterError(f"encoder={encoder!r} is not a known encoder; known: {sorted(list_encoders())}")
read_px, n_slides, per_slide, k = (nbp.check_int(n, v, minimum=m) for n, v, m in
                                   (("read_px", read_px, 32), ("n_slides", n_slides, 2), ("per_slide", per_slide, 2),
                                    ("k", k, 1)))
own = nbp.own_or_demo("Figure 2 on your data", data=data, ckpt_raw=ckpt_raw, ckpt_norm=ckpt_norm)
if not own and encoder != "kit-dino":
    raise nbp.NotebookParameterError(f"encoder={encoder!r} needs your ckpt_raw and ckpt_norm (the demo's are kit-dino)")
out = nbp.output_dir(out_dir)
if smoke:
    n_slides, per_slide = min(n_slides, 4), min(per_slide, 30)
if own:
    ckpt_raw, ckpt_norm = (nbp.checkpoint_file(c, name=n) for c, n in ((ckpt_raw, "ckpt_raw"), (ckpt_norm, "ckpt_norm")))
    src = nbp.resolve_path(data)
    if not src.exists():
        raise nbp.NotebookParameterError(f"data={data!r}: not found ({src}); give a tiling, a folder or CSV of slides, "
                                         "or a folder of images")
    dataset, info = open_patches(src, tiles_dir=out / "tiles", out_px=read_px,
                                 progress=not smoke)
    print("your data:", info)
else:
    demo = nbp.demo_paths(demo_dir, smoke=smoke)
    ckpt_raw, ckpt_norm = demo["ckpt_raw"], demo["ckpt_norm"]
    dataset = TiledPatchDataset(demo["tile_dir"], out_px=read_px)
    print("the demo's cohort and models, from", demo["tile_dir"])

# %% [markdown]
# ## The patches and the encoders
# Patches are read at `read_px` (256 px: the paper resizes to 256 and centre-crops 224); each encoder
# then applies its own preprocessing (Resize → CenterCrop → mean/std) — the demo's toy ViT sees 32 px.
# `kit-dino` loads the *teacher* backbone of the kit's DINO checkpoints, strictly (a missing or
# unexpected key is an error).

# %%
macenko = MacenkoNormalizer()  # torchstain's reference target, Io=240, alpha=1, beta=0.15
enc_raw = create_encoder(encoder, checkpoint=ckpt_raw, device=device)
enc_norm = create_encoder(encoder, checkpoint=ckpt_norm, device=device)
print(len(dataset), "patches from", dataset.meta["slide_id"].nunique(), "slides;", enc_raw)

# %% [markdown]
# ## Figure 2 in one call
# `collapse_report` samples K slides × M patches (seeded), extracts and caches features per panel,
# adds the reference rows, computes the metrics and the paired differences, embeds, and writes
# `figure2.html` (hover a point to see its patch), `figure2.png`, `metrics.csv` and `differences.csv`.

# %%
PANELS = ("(a) raw-trained, raw input", "(b) raw-trained, Macenko input", "(c) Macenko-trained, Macenko input")
panels = {PANELS[0]: (enc_raw, None), PANELS[1]: (enc_raw, macenko), PANELS[2]: (enc_norm, macenko)}
report = collapse_report(dataset, panels, out_dir=out, n_slides=n_slides, per_slide=per_slide, seed=seed,
                         method=method, perplexity=perplexity, lisi_perplexity=lisi_perplexity, k=k,
                         n_boot=50 if smoke else 200, progress=not smoke)
report.figure.plotly.show()

# %% [markdown]
# ### The same points, coloured by tissue class
# Slide clustering is bad only if it *replaces* biology. Coloured by tissue class (the synthetic
# cohort knows each patch's class), a good panel shows classes forming the islands, slides mixed
# within them.

# %%
labelled = report.sample["label"].to_numpy() >= 1 if "label" in report.sample else np.zeros(len(report.sample), bool)
if labelled.any():
    by_class = figure2(report.figure.embeddings, report.sample, color_by="class_name", method=method,
                       perplexity=perplexity, seed=seed, thumbnails=report.figure.thumbnails or None)
    by_class.save(out, stem="figure2_by_class", include_plotlyjs="directory")
    by_class.plotly.show()
else:
    display(Markdown("No tissue-class labels in these patches: the class-coloured figure and the tissue k-NN are skipped."))

# %% [markdown]
# ## The numbers
#
# Each column header carries the direction that means *less* slide clustering (↓ lower is better,
# ↑ higher is better); the last row is the **chance level** — what a feature set with no slide
# information at all would score on these patches. Two chance levels surprise newcomers:
#
# - **iLISI's chance is not 1.** iLISI counts the effective number of slides among a patch's
#   neighbours; even perfect mixing does not reach all slides equally in a neighbourhood of ~30 when
#   slides contribute different numbers of patches, so chance is well below 1 (about 0.6 in the full
#   demo; the row shows the value for these patches). Compare with the chance row, not with 1.
# - **Silhouette can be ≈ 0 while purity is high.** Silhouette compares a patch's *average* distance to
#   its whole slide with its average distance to the nearest other slide; slides that contain several
#   tissue classes are spread out, so the averages are close (≈ 0) even when each patch's *nearest*
#   neighbours all come from its own slide (purity high). Purity looks locally, silhouette globally.
#
# Next to slide purity, **tissue k-NN** (balanced accuracy of tissue classes from each patch's
# neighbours, folds that never split a slide) says whether the features still carry biology: lower
# slide purity is only good news if tissue k-NN does not drop with it.

# %%
display(metrics_table(report.metrics))
tissue = tissue_knn(report.features, report.sample)  # empty without tissue labels
purity = report.metrics[report.metrics["metric"] == "knn_slide_purity"][["features", "value", "ci_low", "ci_high"]]
side = purity.merge(tissue, on="features", how="left").rename(
    columns={"value": "slide purity ↓", "ci_low": "ci low", "ci_high": "ci high", "tissue_knn_bacc": "tissue k-NN ↑"})
display(side.round(3))
display(differences_table(report.differences))

# %% [markdown]
# ### In plain words
# The same reading as the demo report, from the paired differences.

# %%
reading = collapse_reading(report.metrics, report.differences, knn=tissue if len(tissue) else None, panels=PANELS)
display(Markdown("\n".join(f"- {text}" for text, _ in reading)))
d = report.differences
bc = d[(d["a"] == PANELS[1]) & (d["b"] == PANELS[2]) & (d["metric"] == "knn_slide_purity")]
b_equals_c = bool(len(bc) and bc["ci_low"].iloc[0] <= 0 <= bc["ci_high"].iloc[0])
if b_equals_c:
    display(Markdown(f"**In this run (b) ≈ (c)**: the slide purity of the raw-trained model on normalized input and "
                     f"of the Macenko-trained model cannot be told apart (paired difference "
                     f"{bc['difference'].iloc[0]:.2f} [{bc['ci_low'].iloc[0]:.2f}, {bc['ci_high'].iloc[0]:.2f}]). "
                     "Here normalizing the *input* does all the work; the paper's extra gain from *training* on "
                     "normalized patches is not visible at this scale."))

# %% [markdown]
# ## Nearest neighbours, (a) vs (c)
# The most direct picture of "clusters by slide": the same query patches (black border), and their 8
# nearest neighbours in feature space under (a) and under (c). A red border is a neighbour from the
# query's own slide, green from another slide. Under collapse the neighbours are the query's slide
# mates whatever their tissue; after normalization they should be similar tissue from other slides.

# %%
thumbs = report.figure.thumbnails if len(report.figure.thumbnails) == len(report.sample) else \
    [thumbnail_uri(dataset[int(i)]["image"]) for i in report.plan.indices]
feats_ac = {t: report.features[t].features for t in (PANELS[0], PANELS[2])}
gallery = neighbour_gallery(feats_ac, report.sample, n_queries=4 if smoke else 6, k=8, seed=seed)
display(HTML(gallery_html(gallery, thumbs)))
same_slide = gallery.groupby("features", sort=False)["same_slide"].mean()

# %% [markdown]
# ## Explore
# Switch encoder, input normalization, embedding method, perplexity and colouring (slide or tissue
# class). Embeddings are cached, so switching back is instant.

# %%
sets = {("raw-trained", "raw"): report.features[PANELS[0]], ("raw-trained", "macenko"): report.features[PANELS[1]],
        ("macenko-trained", "macenko"): report.features[PANELS[2]]}
explorer = CollapseExplorer(sets, seed=seed, n_boot=0 if smoke else 50)
display(explorer.widget)

# %% tags=["remove-cell"]
_ = write_json_atomic(out / "notebook_summary.json", {
    "knn_slide_purity": purity.to_dict("records"), "tissue_knn": tissue.to_dict("records"),
    "chance": report.metrics.groupby("metric")["chance"].first().to_dict(),
    "b_equals_c": b_equals_c, "gallery_same_slide_share": same_slide.to_dict(),
    "encoder": encoder, "read_px": read_px, "own_data": own,
    "files": {k: str(v) for k, v in report.paths.items()}})
