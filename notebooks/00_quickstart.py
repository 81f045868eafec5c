# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
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

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/00"
smoke = False
cohort_dir = None  # None: the demo's (made if missing); or your own folders/checkpoints below
tile_dir = None
ckpt_raw = None
ckpt_norm = None
per_slide = 150  # patches per slide for Figure 2 (paper: 1,000)

# %%
from pathlib import Path

import plotly.io as pio
from IPython.display import Image, display

from exaonepath_lab.analysis import collapse_report, metrics_wide
from exaonepath_lab.demo import demo_inputs
from exaonepath_lab.encoders import create_encoder
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.report.figure3 import figure3_plotly
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.stain import MacenkoNormalizer

pio.renderers.default = "plotly_mimetype+notebook"  # offline
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A cohort, tiled, and two DINO models
# `demo_inputs` synthesizes the cohort (pyramidal TIFFs that OpenSlide reads), tiles it the paper's
# way (CLAM-style tissue mask, 256 px at 0.5 µm/px = 512 px at 0.25 µm/px), and trains the `cpu-demo`
# DINO preset on raw and on Macenko-normalized patches — or reuses all of it if it exists.

# %%
paths = {"cohort_dir": cohort_dir, "tile_dir": tile_dir, "ckpt_raw": ckpt_raw, "ckpt_norm": ckpt_norm}
if None in paths.values():
    paths = demo_inputs("../outputs", smoke=smoke)
paths

# %%
display(Image(filename=str(Path(paths["cohort_dir"]) / "cohort_thumbs.png"), width=900))
figure3_plotly(paths["tile_dir"]).show()

# %% [markdown]
# ## 2. Stain normalization
# One batched call normalizes many patches to a reference stain; patches where Macenko cannot work
# (blank glass, a single colour) are passed through and counted, never dropped.

# %%
import matplotlib.pyplot as plt
import numpy as np

patches = TiledPatchDataset(paths["tile_dir"], out_px=128, max_per_slide=1)  # one patch per slide
macenko = MacenkoNormalizer()
before = np.stack([patches[i]["image"] for i in range(len(patches))])
result = macenko.normalize(before)
print("per-patch outcomes:", result.counts())
fig, ax = plt.subplots(figsize=(12, 3))
ax.imshow(np.concatenate([np.concatenate(list(before), 1), np.concatenate(list(np.asarray(result.images)), 1)], 0))
ax.set_axis_off()
ax.set_title("one patch per slide: as scanned (top), Macenko-normalized (bottom)")
fig.savefig(out / "stain_before_after.png", dpi=100, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## 3. Figure 2, measured
# (a) raw-trained model on raw input, (b) the same model on normalized input, (c) the
# normalization-trained model on normalized input. The k-NN slide purity (0 = slides fully mixed,
# 1 = every neighbour from the same slide) is given with a 95 % bootstrap interval over slides.

# %%
if smoke:
    per_slide = min(per_slide, 30)
dataset = TiledPatchDataset(paths["tile_dir"], out_px=128)
enc_raw = create_encoder("kit-dino", checkpoint=paths["ckpt_raw"])
enc_norm = create_encoder("kit-dino", checkpoint=paths["ckpt_norm"])
report = collapse_report(
    dataset,
    {"(a) raw / raw": (enc_raw, None), "(b) raw / Macenko": (enc_raw, macenko), "(c) Macenko / Macenko": (enc_norm, macenko)},
    out_dir=out, per_slide=per_slide, n_boot=50 if smoke else 200,
)
report.figure.plotly.show()
metrics_wide(report.metrics).round(2)

# %%
purity = report.metrics.query("metric == 'knn_slide_purity'")[["features", "value", "ci_low", "ci_high"]]
write_json_atomic(out / "notebook_summary.json", {"knn_slide_purity": purity.to_dict("records")})
purity.round(3)
