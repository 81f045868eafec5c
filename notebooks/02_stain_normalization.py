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
# # 02 · Stain normalization: Macenko step by step
#
# EXAONEPath's one change to DINO is to **Macenko-normalize every patch before augmentation**
# (§3.2–3.3): slides from different labs and scanners differ in stain colour, a network trained on
# raw patches learns to recognise the *slide* from its colour ("WSI-specific feature collapse"), and
# normalizing removes that shortcut. The same normalizer, with the same target, is applied again at
# feature-extraction and linear-probe time.
#
# ## 0. What the colours are
#
# An H&E section is a slice of tissue a few µm thick, stained with two dyes and photographed in
# transmitted light:
#
# - **hematoxylin** (with a metal mordant) binds the negatively charged nucleic acids — chromatin in
#   the nuclei — and absorbs mostly red and green light: nuclei look **blue-purple**;
# - **eosin** binds positively charged proteins — cytoplasm, collagen, red cells — and absorbs mostly
#   green light: those look **pink**.
#
# The same tissue looks different from lab to lab because the staining differs (dye batch and age,
# staining time, pH, section thickness, fixation) and so does the scanner (lamp, optics, sensor, colour
# profile, JPEG compression). A network sees those differences as strongly as it sees morphology.
#
# Two words used below: a **stain vector** is the dye's absorbance — how much red, green and blue light
# a unit amount of it absorbs, in optical density (a direction in the 3-D OD space); a **concentration**
# is how much of that dye sits at a pixel (a length along that direction). Macenko (ISBI 2009) estimates
# both per image and re-colours the image with a target's vectors and staining strength.
#
# Constants as in the torchstain implementation the paper's code copies: `Io = 240`, `alpha = 1`,
# `beta = 0.15`. Sections:
#
# 1. optical density (OD) and the tissue mask; 2. the eigen-plane, angles and the two stain vectors;
# 3. concentrations, the 99th-percentile scaling and the reconstruction — checked against the library;
#    the **target / source / normalized** panel; 4. Macenko's **assumptions and failure modes**;
# 5. across slides (one patch per slide, real H&E included) with Reinhard and stain augmentation;
# 6. the failure policy (statuses and counts, never a silent drop); 7. an explorer.
#
# Real H&E used by default: the kit's fetched sample data (`exaonepath_lab.sample_data`, permissively
# licensed images from the `stardist` and `tiatoolbox` wheels and OpenSlide's CMU-1 slide region;
# fetched once, ~4 MB, then cached). Runs in ~1 min on a CPU.

# %% tags=["parameters"]
out_dir = "../outputs/notebooks/02"  # figures + notebook_summary.json; relative paths are taken from notebooks/
smoke = False  # tiny sizes (tests): fewer patches per slide
demo_dir = "../outputs"  # where `make demo` writes; its tiling is used when tile_dir is None
tile_dir = None  # a tiling of your slides (`exaonepath-lab tile`); None: the demo tiling (made if missing)
example_image = None  # an H&E image file for the step-by-step part; None: the stardist H&E sample image
target_image = None  # an H&E image to fit a target on; None: TIAToolbox's stain-normalization target image
extra_images = None  # a folder of more H&E images (png/jpg/tif), each shown as its own "slide"; None: none
patch_px = 224  # side of the patches read from the slides (px), the encoders' input size
seed = 0

# %%
import json
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.io as pio
import torch
from IPython.display import display

from exaonepath_lab import notebook_params as nbp
from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.io import write_json_atomic
from exaonepath_lab.report.png import save_figure
from exaonepath_lab.report.stain_figures import image_row, method_grid, od_scatter, stain_explorer
from exaonepath_lab.sample_data import sample_path
from exaonepath_lab.slides.dataset import TiledPatchDataset
from exaonepath_lab.slides.wsi import open_slide
from exaonepath_lab.stain import (MacenkoNormalizer, MacenkoStainAugment, ReinhardNormalizer,
                                  StainNormalizationError, StainNormalizationWarning, StainTarget, default_target)
from exaonepath_lab.stain.compare import (centre_crop, mean_concentrations, render_stains, single_stain_rgb,
                                          spread_table, stain_vectors_table, tissue_share)
from exaonepath_lab.stain.estimate import (estimate_stains, masked_percentiles, od_transform, optical_density,
                                           reconstruct, stain_pinv)

pio.renderers.default = "plotly_mimetype+notebook"  # offline: plotly.js is embedded, never fetched
torch.set_num_threads(2)
patch_px = nbp.check_int("patch_px", patch_px, minimum=32)
out = nbp.output_dir(out_dir)
summary: dict = {}
example_path = nbp.existing_file("example_image", example_image) if example_image else sample_path("stardist-histo.jpg")
target_path = nbp.existing_file("target_image", target_image) if target_image else sample_path("tiatoolbox-target.png")
extra_dir = nbp.existing_dir("extra_images", extra_images) if extra_images else None
tile_dir = nbp.tiling_dir(tile_dir) if tile_dir is not None else nbp.demo_paths(demo_dir, smoke=smoke, train=False)["tile_dir"]

# %% [markdown]
# ## 1. Optical density and the tissue mask
#
# Light passing through a stain is absorbed exponentially (Beer–Lambert), so in **optical density**
# `OD = −log((I + 1) / Io)` (`Io = 240`, the brightness of the glass) the contributions of
# hematoxylin and eosin *add up*: every pixel's OD is a non-negative combination of two stain
# vectors. Pixels whose OD is below `beta = 0.15` in any channel are glass or nearly transparent and
# would pull the estimate towards white: they are left out.

# %%
Io, alpha, beta = 240.0, 1.0, 0.15
example = read_rgb(example_path)
if max(example.shape[:2]) > 512:  # the step-by-step works on one patch-sized region
    example = centre_crop(example, min(512, *example.shape[:2]))
example_name = Path(example_path).name
h, w = example.shape[:2]
px = torch.from_numpy(np.ascontiguousarray(example)).reshape(1, -1, 3)  # (1, P, 3) uint8
od = optical_density(px, Io)  # (1, P, 3) float32
tissue = (od >= beta).all(dim=-1)  # (1, P): OD ≥ beta in every channel
print(f"{example_name}: {h}×{w} px, {int(tissue.sum())} tissue pixels ({tissue.float().mean():.0%})")

# %% [markdown]
# In OD space the tissue pixels lie close to a plane spanned by the two stain vectors. The 3-D
# scatter further below (rotate it) shows a random sample of them, each drawn in its own RGB colour,
# with the stain vectors this section estimates.
#
# ## 2. Eigenvectors, angles and the two stain vectors
#
# The two eigenvectors of the OD covariance with the largest eigenvalues span that plane. Each tissue
# pixel is projected onto it and described by its **angle**; the stains sit at the extremes of the
# angle distribution. Taking the `alpha` = 1st and 99th percentiles instead of the minimum and
# maximum makes the estimate robust to a few outlier pixels. Those two angles, mapped back to OD
# space, are the stain vectors; the one with the larger red OD is hematoxylin (torchstain's rule).
# Eigen-solvers may flip an eigenvector's sign (and GPUs do so differently from CPUs), so the kit
# fixes a convention: the largest-magnitude component is positive.

# %%
x = od[0][tissue[0]]  # (n, 3) tissue ODs
evals, evecs = torch.linalg.eigh(torch.cov(x.T))  # ascending eigenvalues
plane = evecs[:, 1:3]  # (3, 2): second largest, largest
plane = plane * torch.sign(plane.gather(0, plane.abs().argmax(dim=0, keepdim=True)))  # sign convention
proj = od[0] @ plane  # (P, 2)
phi = torch.atan2(proj[:, 1], proj[:, 0])  # angle of every pixel in the plane
phi_lo, phi_hi, _ = masked_percentiles(phi[None], tissue, q_low=alpha, q_high=100 - alpha)  # the library's nearest rank
v_lo = plane @ torch.stack([torch.cos(phi_lo[0]), torch.sin(phi_lo[0])])
v_hi = plane @ torch.stack([torch.cos(phi_hi[0]), torch.sin(phi_hi[0])])
he = torch.stack([v_lo, v_hi], dim=1) if v_lo[0] > v_hi[0] else torch.stack([v_hi, v_lo], dim=1)  # H first

est = estimate_stains(od, alpha=alpha, beta=beta)  # the library's batched version of the same steps
step_vs_lib = float((he - est["stain_matrix"][0]).abs().max())
print("eigenvalues:", evals.numpy().round(5))
print("stain vectors (columns H, E; rows OD r, g, b):\n", he.numpy().round(4))
print(f"max difference to exaonepath_lab.stain.estimate.estimate_stains: {step_vs_lib:.1e}")
assert step_vs_lib < 1e-3, "the step-by-step stain vectors should match the library's"

fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(np.degrees(phi[tissue[0]].numpy()), bins=120, color="gray")
for a, c, lab in ((phi_lo, "C0", f"{alpha:g}th percentile"), (phi_hi, "C3", f"{100 - alpha:g}th percentile")):
    ax.axvline(np.degrees(float(a[0])), color=c, label=lab)
ax.set_xlabel("angle in the eigen-plane (degrees)")
ax.set_ylabel("tissue pixels")
ax.set_title(f"Angles of the tissue pixels of {example_name}")
ax.legend()
save_figure(fig, out / "angles.png")
plt.show()

tgt = default_target()
fig_od = od_scatter(example, od[0].numpy(), tissue[0].numpy(), seed=seed, n_points=1500 if smoke else 4000,
                    title=f"Tissue pixels of {example_name} in optical density space",
                    vectors=[(he[:, 0].numpy(), "hematoxylin (this image)", "navy", "solid"),
                             (he[:, 1].numpy(), "eosin (this image)", "deeppink", "solid"),
                             (tgt.stain_matrix[:, 0], "hematoxylin (default target)", "navy", "dash"),
                             (tgt.stain_matrix[:, 1], "eosin (default target)", "deeppink", "dash")])
fig_od.write_html(out / "od_space.html", include_plotlyjs="directory")  # plotly.min.js beside it: offline
fig_od.show()

# %% [markdown]
# ## 3. Concentrations, scaling, reconstruction — and a target of your choice
#
# With the stain matrix `HE` (3×2), each pixel's OD is `HE · C`; the **concentrations** `C` (one per
# stain) are its least-squares solution. Their **99th percentile** `maxC` measures how strongly the
# image is stained; dividing by it and multiplying by the target's `maxCRef` equalises the staining
# strength, and the target's stain vectors `HERef` re-colour the result:
# `I = Io · exp(−HERef · C · maxCRef / maxC)`, clipped to [0, 255]. The default target is Macenko's
# reference (`HERef`, `maxCRef`); `StainTarget.fit(image)` fits one on any image (the paper fitted on
# a TCGA crop it does not distribute) and `.save()`/`.load()` keep it beside the features.

# %%
conc = (od[0] @ stain_pinv(he[None])[0].T).reshape(h, w, 2)  # (H, W, 2) concentrations
max_c = est["max_conc"][0]
t_sm, t_mc = tgt.tensors()
M = od_transform(est["pinv"], est["max_conc"], target_matrix=t_sm, target_max_conc=t_mc)  # (1, 3, 3): the whole map in OD space
normalized = reconstruct(od, M, Io).reshape(h, w, 3).numpy()
lib = MacenkoNormalizer().normalize(example)  # the library, in one call
lib_diff = np.abs(normalized.astype(int) - lib.images.astype(int))
print(f"maxC (99th percentile) = {max_c.numpy().round(3)}, target maxCRef = {tgt.max_conc.round(4)}")
print(f"step-by-step vs MacenkoNormalizer: mean |Δ| = {lib_diff.mean():.3f} grey levels, max {lib_diff.max()}")

fig = image_row([(example, "original"), (tissue[0].reshape(h, w).numpy(), f"tissue mask: OD ≥ {beta}"),
                 (single_stain_rgb(conc[..., 0], he[:, 0]), "hematoxylin only"),
                 (single_stain_rgb(conc[..., 1], he[:, 1]), "eosin only"),
                 (normalized, "normalized (default target)")])
save_figure(fig, out / "macenko_steps.png")
plt.show()
summary["step_by_step"] = {"image": example_name, "n_tissue_pixels": int(tissue.sum()),
                           "stain_matrix": he.numpy().round(5).tolist(), "max_conc": max_c.numpy().round(5).tolist(),
                           "stain_vectors_max_diff_vs_library": step_vs_lib,
                           "pixels_mean_abs_diff_vs_library": float(lib_diff.mean())}

# %% [markdown]
# **Target, source, normalized.** Normalization is always *to* something. Here the target is fitted
# on another lab's H&E image (`target_image`; by default the image TIAToolbox ships as its
# stain-normalization target) and the source image is mapped onto it: the result should take the
# target's hues and staining strength while keeping the source's structures.

# %%
target_img = read_rgb(target_path)
fitted = StainTarget.fit(target_img, source=Path(target_path).name)
to_fitted = MacenkoNormalizer(fitted).normalize(example)
fig = image_row([(target_img, f"target: {Path(target_path).name}"), (example, f"source: {example_name}"),
                 (to_fitted.images, "source normalized to the target")], size=4.2)
save_figure(fig, out / "target_source_normalized.png")
plt.show()
fitted.save(out / "fitted_target.json")
summary["target_panel"] = {"target": Path(target_path).name, "status": to_fitted.status[0],
                           "target_stain_matrix": np.round(fitted.stain_matrix, 4).tolist()}

# %% [markdown]
# ## 4. Macenko's assumptions, and how it fails
#
# 1. **Exactly two stains.** Every pixel is assumed to be a mix of hematoxylin and eosin. A third
#    absorber — brown DAB of an IHC stain, pigment, pen ink, a blue-dyed margin — gets forced onto the
#    H/E plane and shifts the vectors.
# 2. **Both stains present in the patch.** The two vectors are the *extremes* of the angle
#    distribution. A patch with a single stain (pure stroma, a blood vessel, mucus) still has extremes,
#    so Macenko returns two vectors **with status ok** — but both are variations of the one stain, and
#    the "normalized" patch is coloured wrongly. Nothing warns: the kit only flags vectors closer than
#    `min_stain_angle_deg` (a perfectly clean single-stain image is caught that way, a real one with
#    sensor noise is not). Below: the eosin-only rendering of the example from section 3, with a scan's
#    noise added, fitted and normalized on its own.
# 3. **Staining strength is a nuisance.** The per-patch 99th-percentile rescaling makes every patch
#    equally strongly stained. Real biology can be "more hematoxylin": hyperchromatic nuclei of a
#    tumour are darker than normal ones. Below, the example with its hematoxylin concentration raised by
#    60 % (a hyperchromatic version) and the original are normalized: afterwards they are nearly the
#    same — the difference a pathologist would see has been removed.

# %%
# eosin alone (as in pure stroma), with the sensor noise of a real scan (σ = 2 grey levels)
e_only = single_stain_rgb(conc[..., 1], he[:, 1]).astype(float)
e_only = np.clip(e_only + np.random.default_rng(seed).normal(0, 2, e_only.shape), 0, 255).astype(np.uint8)
single = MacenkoNormalizer().normalize(e_only)
found = single.params.stain_matrix[0]  # (3, 2): what Macenko calls H and E on this patch
angles = [float(np.degrees(np.arccos(np.clip(abs(found[:, j] @ he[:, 1].numpy()), -1, 1)))) for j in range(2)]
he_angle = float(np.degrees(np.arccos(np.clip(he[:, 0] @ he[:, 1], -1, 1))))
print(f"eosin-only patch: status {single.status[0]!r}; its 'H' and 'E' vectors are {angles[0]:.1f}° and "
      f"{angles[1]:.1f}° from the true eosin vector (the true hematoxylin vector is {he_angle:.0f}° away): "
      "half of the eosin is re-coloured as hematoxylin")

hyper = render_stains(conc * torch.tensor([1.6, 1.0]), he, Io)  # 60 % more hematoxylin, same eosin
pair = MacenkoNormalizer().normalize(np.stack([example, hyper]))

# mean hematoxylin, measured with the example's stain vectors (one fixed ruler for all four images)
before_ratio = float(mean_concentrations(hyper, he)[0] / mean_concentrations(example, he)[0])
after_ratio = float(mean_concentrations(pair.images[1], he)[0] / mean_concentrations(pair.images[0], he)[0])
fig = image_row([(e_only, "eosin only"), (single.images, "eosin only, 'normalized'"), (example, "original"),
                 (hyper, "hyperchromatic (H × 1.6)"), (pair.images[0], "original, normalized"),
                 (pair.images[1], "hyperchromatic, normalized")], size=3.0)
save_figure(fig, out / "failure_modes.png")
plt.show()
print(f"mean hematoxylin, hyperchromatic / original: {before_ratio:.2f} before normalization, "
      f"{after_ratio:.2f} after")
summary["assumptions"] = {"single_stain_status": single.status[0], "single_stain_angles_to_true_e": angles,
                          "true_h_e_angle": he_angle,
                          "hyperchromasia_ratio_before": before_ratio, "hyperchromasia_ratio_after": after_ratio}

# %% [markdown]
# ## 5. Across slides: Macenko, Reinhard and stain augmentation
#
# One patch per slide of the tiling (the demo's synthetic slides are "scanned" at different sites
# with different stain vectors, intensities and white points), plus real H&E from other labs: the
# sample images and a region of OpenSlide's CMU-1 slide (and the images of `extra_images`, if set).
#
# - **Macenko** maps every patch to the default target: stain colours and strengths equalised;
# - **Reinhard** matches each image's CIE-Lab mean and standard deviation to a target's — here fitted
#   on the Macenko-normalized first patch, so both aim at the same look; it shifts all colours
#   together and cannot tell the two stains apart;
# - **Macenko stain augmentation** (Tellez et al. 2018; torchstain's `MacenkoAugmentor`) goes the
#   other way: it randomly perturbs each image's own stain concentrations, *adding* colour variation
#   so a network learns to ignore it. EXAONEPath normalizes instead.

# %%
ds = TiledPatchDataset(tile_dir, out_px=patch_px, max_per_slide=4 if smoke else 12, seed=seed)
names, patches = [], []
for sid, g in ds.meta.groupby("slide_id", sort=True):  # per slide, the patch with the most tissue of a few
    imgs = [ds[int(i)]["image"] for i in g.index]
    names.append(str(sid))
    patches.append(max(imgs, key=tissue_share))
with open_slide(sample_path("cmu-small-region.svs")) as cmu:  # real Aperio slide region, 0.499 µm/px
    side = int(round(patch_px * 0.5 / cmu.mpp))  # the same 112 µm as the other patches' 224 px
    x0, y0 = cmu.dimensions[0] // 2, cmu.dimensions[1] // 2
    region = np.asarray(cmu.read_region((x0, y0), 0, (side, side)))[..., :3]  # (side, side, 3) uint8
real = {"cmu-1 region": region, "stardist sample": read_rgb(example_path), "tiatoolbox target": target_img}
if extra_dir is not None:
    files = sorted(f for f in extra_dir.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    real.update({f.stem: read_rgb(f) for f in files[: 3 if smoke else None]})
for name, img in real.items():
    crop = centre_crop(img, patch_px)
    if crop is None:
        print(f"{name}: smaller than {patch_px} px, left out")
        continue
    names.append(name)
    patches.append(crop)
batch = np.stack(patches)  # (N, patch_px, patch_px, 3) uint8
print(f"{len(names)} patches of {patch_px} px:", ", ".join(names))

mac = MacenkoNormalizer().normalize(batch)
rein = ReinhardNormalizer().fit(mac.images[0]).normalize(batch)
aug = MacenkoStainAugment(sigma1=0.2, sigma2=0.2, seed=seed).augment(batch)
variants = {"raw": batch, "Macenko": mac.images, "Reinhard": rein.images, "Macenko augmentation": aug.images}
fig = method_grid(variants, names)
save_figure(fig, out / "before_after_across_slides.png", dpi=110)
plt.show()

# %% [markdown]
# Two numbers for what the eye sees, each the quantity one of the methods equalises — so neither is
# a neutral referee (that is the downstream test of notebooks 03 and 06):
#
# - **colour spread**: the mean pairwise distance (CIE ΔE, Lab units) between the patches' mean Lab
#   colours. Reinhard matches exactly these means, so it scores ≈ 0 by construction; the rest of
#   the spread includes real differences in tissue content;
# - **stain-vector spread**: the mean pairwise angle (degrees) between the hematoxylin vectors, and
#   between the eosin vectors, that Macenko estimates on each output patch — what Macenko equalises.
#
# Below them, the per-slide stain vectors Macenko estimated on the raw patches: the variation the
# normalization removes.

# %%
spread = spread_table(variants)
display(spread.round(2))
display(stain_vectors_table(names, mac.params))
summary["across_slides"] = {"slides": names, "spread": spread.round(4).to_dict("index"),
                            "macenko_status_counts": mac.counts(), "reinhard_status_counts": rein.counts(),
                            "augment_status_counts": aug.counts()}

# %% [markdown]
# ## 6. The failure policy: blank patches
#
# Background and near-empty patches have no stain to estimate. torchstain then raises
# `kthvalue(): Expected reduction dim 0 to have non-zero size`, and the paper's evaluation code
# catches that by returning the raw image or even *dropping the sample*, so test sets silently
# differ from model to model. The kit gives every image a **status** and applies one explicit
# policy to the failed ones:
#
# - `passthrough` (default): the input pixels are returned unchanged, the status says why;
# - `flag`: the same, plus one warning per call with the counts;
# - `raise`: an error naming the image, the reason and the fix.
#
# Nothing is ever dropped: downstream jobs count the statuses in their reports. (The single-stain
# patch of section 4 is in the batch too: its status is `ok` — the failure the policy cannot see.)

# %%
rng = np.random.default_rng(seed)
white = np.clip(236 + rng.normal(0, 1.5, example.shape), 0, 255).astype(np.uint8)  # glass with sensor noise
flat = np.empty_like(example)
flat[:] = (200, 120, 170)  # one flat colour: no second stain direction
tests = {"tissue": example, "blank (glass)": white, "single colour": flat, "eosin only (section 4)": e_only}
policy_batch = np.stack(list(tests.values()))

res = MacenkoNormalizer(policy="passthrough").normalize(policy_batch)
display(pd.DataFrame({"patch": list(tests), "status": res.status, "tissue px": res.params.n_tissue,
                      "returned unchanged": [bool((a == b).all()) for a, b in zip(res.images, policy_batch)]}))
print("counts:", res.counts())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    MacenkoNormalizer(policy="flag").normalize(policy_batch)
flag_msgs = [str(c.message) for c in caught if issubclass(c.category, StainNormalizationWarning)]
print("policy='flag' warns:", flag_msgs[0] if flag_msgs else "(no warning)")
try:
    MacenkoNormalizer(policy="raise").normalize(policy_batch)
    raise_msg = "(no error)"
except StainNormalizationError as e:
    raise_msg = str(e)
print("policy='raise' raises StainNormalizationError:", raise_msg)
try:  # the reference implementation, for comparison
    import torchstain

    ref = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ref.normalize(I=torch.from_numpy(white).permute(2, 0, 1), stains=False)
    torchstain_msg = "(no error)"
except ImportError:
    torchstain_msg = "torchstain not installed"
except Exception as e:  # what torchstain does on a blank patch is exactly what we want to show
    torchstain_msg = f"{type(e).__name__}: {e}"
print("torchstain on the blank patch:", torchstain_msg)
summary["failure_policy"] = {"patches": list(tests), "status": res.status, "counts": res.counts(),
                             "flag_warning": flag_msgs[0] if flag_msgs else None, "raise_error": raise_msg,
                             "torchstain_on_blank": torchstain_msg}

# %% [markdown]
# ## 7. Explorer: slide × method
#
# Pick a slide and a method. (Built with ipywidgets; in a static or headless run the widget is
# displayed but not interactive, and the figures above carry the same content.)

# %%
explorer = stain_explorer(variants, names, status=mac.status)
if explorer is not None:
    display(explorer)

# %% tags=["remove-cell"]
summary.update({"tile_dir": str(tile_dir), "n_patches": len(names), "patch_px": patch_px,
                "figures": sorted(p.name for p in out.glob("*.png")) + ["od_space.html"]})
write_json_atomic(out / "notebook_summary.json", summary)
print(json.dumps(summary["across_slides"]["spread"], indent=1))
