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
# # 00 · Quickstart: the EXAONEPath story in a few cells
#
# EXAONEPath (LG AI Research, 2024) observed that self-supervised features of pathology patches
# cluster by the **slide** they came from — mostly because every lab stains and scans a little
# differently — and that **Macenko stain normalization applied to every patch before DINO training**
# largely removes that "WSI-specific feature collapse".
#
# This notebook walks the whole pipeline on the kit's embedded synthetic cohort (10 slides whose
# stain and scanner differ the way real labs do): slides → tissue patches → stain normalization →
# two small DINO models (raw vs normalized patches) → Figure 2 with numbers. Each step is one library
# call; the numbered notebooks 01–07 open each step up. The first run trains two small models
# (a few minutes on a laptop); after `make demo` everything is reused from `outputs/`.

# %% [markdown]
# ### Your own data
#
# Leave every path below as `None` to use the demo's cohort and models (made in `demo_dir` if
# missing: ~12 min on 2 CPU cores the first time, two `cpu-demo` trainings; seconds after
# `make demo`). For your own slides set **all** of: `cohort_dir` (a folder of slides, tiled here
# into `out_dir/tiles`) *or* `tile_dir` (an existing `exaonepath-lab tile` output), and `ckpt_raw` /
# `ckpt_norm`, DINO checkpoints trained on raw and on Macenko-normalized patches of such slides
# (notebook 04 or `exaonepath-lab train`). A partial set is an error naming what is missing — the
# notebook never swaps in the demo's data for yours. Rough time on your data: tiling ~1–5 s per slide;
# Figure 2 extracts 3 × 10 × `per_slide` patches — seconds for the demo's 4-block ViT on a CPU,
# about an hour for a ViT-B/16 on 2 CPU cores at `per_slide=150` and a minute or two on one GPU
# (GPU time estimated from ViT-B's ~17 GFLOPs per 224 px image, not measured here).

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/00"  # relative paths are taken from the notebooks/ folder
smoke = False
demo_dir = "../outputs"  # where `make demo` writes; used only when the four paths below are None
cohort_dir = None  # your slides (tiled into tile_dir, or out_dir/tiles) — or:
tile_dir = None  # an existing tiling of your slides
ckpt_raw = None  # DINO checkpoint trained on raw patches
ckpt_norm = None  # DINO checkpoint trained on Macenko-normalized patches
per_slide = 150  # patches per slide for Figure 2 (paper: 1,000)

# %%
from pathlib import Path

import plotly.io as pio
from IPython.display import Markdown, display
from PIL import Image as PILImage

from exaonepath_lab import notebook_params as nbp
from exaonepath_lab.analysis import collapse_reading, collapse_report, metrics_table
from exaonepath_lab.encoders import create_encoder
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.report.png import save_figure
from exaonepath_lab.report.figure3 import figure3_plotly
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.slides.synthetic import cohort_montage
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline
per_slide = nbp.check_int("per_slide", per_slide, minimum=2)
out = nbp.output_dir(out_dir)

# %% [markdown]
# ## 1. A cohort, tiled, and two DINO models
# `demo_inputs` synthesizes the cohort (pyramidal TIFFs that OpenSlide reads), tiles it the paper's
# way (CLAM-style tissue mask, 256 px at 0.5 µm/px = 512 px at 0.25 µm/px), and trains the `cpu-demo`
# DINO preset on raw and on Macenko-normalized patches — or reuses all of it if it exists. With your
# own paths, your slides are tiled the same way and your checkpoints are loaded.

# %%
own = nbp.own_or_demo("Figure 2 on your data", **{"cohort_dir or tile_dir": cohort_dir or tile_dir},
                      ckpt_raw=ckpt_raw, ckpt_norm=ckpt_norm)
if own:
    cohort_dir, tile_dir = nbp.slides_and_tiles(cohort_dir, tile_dir, out=out, progress=not smoke)
    ckpt_raw = nbp.checkpoint_file(ckpt_raw, name="ckpt_raw")
    ckpt_norm = nbp.checkpoint_file(ckpt_norm, name="ckpt_norm")
else:
    demo = nbp.demo_paths(demo_dir, smoke=smoke)
    cohort_dir, tile_dir, ckpt_raw, ckpt_norm = (demo[k] for k in ("cohort_dir", "tile_dir", "ckpt_raw", "ckpt_norm"))
print("data:", "yours" if own else "the demo's", "\n tiles:", tile_dir, "\n checkpoints:", ckpt_raw, ckpt_norm)

# %% [markdown]
# The tiling's QC pictures (tissue outline in green, kept patches in blue; one per slide, at most
# ten) and Figure 3, the MPP of the extracted patches (notebook 01 explains both).

# %%
masks = sorted((Path(tile_dir) / "masks").glob("*.png"))[:10]
display(PILImage.fromarray(cohort_montage(masks, [m.stem for m in masks], cell=240)))
figure3_plotly(tile_dir).show()

# %% [markdown]
# ## 2. Stain normalization
# One batched call normalizes many patches to a reference stain; patches where Macenko cannot work
# (blank glass, a single colour) are passed through and counted, never dropped.

# %%
import matplotlib.pyplot as plt
import numpy as np

patches = TiledPatchDataset(tile_dir, out_px=128, max_per_slide=1)  # one patch per slide
macenko = MacenkoNormalizer()
before = np.stack([patches[i]["image"] for i in range(len(patches))])
result = macenko.normalize(before)
print("per-patch outcomes:", result.counts())
fig, ax = plt.subplots(figsize=(12, 3))
ax.imshow(np.concatenate([np.concatenate(list(before), 1), np.concatenate(list(np.asarray(result.images)), 1)], 0))
ax.set_axis_off()
ax.set_title("one patch per slide: as scanned (top), Macenko-normalized (bottom)")
save_figure(fig, out / "stain_before_after.png", dpi=100)
plt.show()

# %% [markdown]
# ## 3. Figure 2, measured
# (a) raw-trained model on raw input, (b) the same model on normalized input, (c) the
# normalization-trained model on normalized input. The picture is a t-SNE (neighbourhoods are
# meaningful, cluster sizes and distances are not); the numbers are computed in feature space, each
# with a 95 % bootstrap interval over slides, the direction that means *less* slide clustering
# (↓ / ↑) and the chance level. The main one, normalized k-NN slide purity, is the share of a patch's
# 15 nearest neighbours from its own slide, rescaled so 0 = chance and 1 = every neighbour from the same
# slide. Notebook 03 explains each metric and shows more.

# %%
if smoke:
    per_slide = min(per_slide, 30)
enc_raw = create_encoder("kit-dino", checkpoint=ckpt_raw)
enc_norm = create_encoder("kit-dino", checkpoint=ckpt_norm)
# read at the encoder's resize size (256 px for a ViT-B/16, the paper's input), at least 128 px for the hover thumbnails
dataset = TiledPatchDataset(tile_dir, out_px=max(128, enc_raw.resize_size))
PANELS = ("(a) raw / raw", "(b) raw / Macenko", "(c) Macenko / Macenko")
report = collapse_report(dataset, dict(zip(PANELS, [(enc_raw, None), (enc_raw, macenko), (enc_norm, macenko)])),
                         out_dir=out, per_slide=per_slide, n_boot=50 if smoke else 200, progress=not smoke)
report.figure.plotly.show()
display(metrics_table(report.metrics))
display(Markdown("\n".join(f"- {text}" for text, _ in collapse_reading(report.metrics, report.differences,
                                                                         panels=PANELS))))

# %% tags=["remove-cell"]
purity = report.metrics.query("metric == 'knn_slide_purity'")[["features", "value", "ci_low", "ci_high"]]
_ = write_json_atomic(out / "notebook_summary.json", {"knn_slide_purity": purity.to_dict("records")})
