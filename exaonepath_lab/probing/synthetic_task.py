"""A downstream task built from the synthetic cohort, for the demo: tissue-class classification.

Input: a tiling run over a synthetic cohort (``exaonepath-lab synth`` then ``exaonepath-lab tile``),
whose patch files carry ``labels`` (majority class of the class map). Classes are the tissue classes
``tumor, stroma, lymphocytes, adipose, necrosis`` (labels 1..5 of
:data:`exaonepath_lab.slides.synth_spec.CLASS_NAMES`, renumbered 0..4). Patches labelled
``background`` (0) or unknown (-1) are not part of the task; their number is recorded in
``ds.excluded_counts`` and ``meta.attrs``, not dropped silently.

Split by **slide** (a slide's patches all land in one split, as the paper's patient-level splits):
slides sorted by id, permuted with ``numpy.random.default_rng(seed)``; ``round(0.2 S)`` test and
``round(0.2 S)`` validation slides (at least one each), the rest train. The assignment is saved to
``<tile_dir>/splits/synthetic_slides_seed<seed>.csv`` (or ``split_dir``) and validated on reload.
Because the synthetic slides differ in staining site, a stain-sensitive encoder does worse on the
held-out slides: this is the paper's collapse argument in miniature.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..io import atomic_path


def slide_splits(slide_ids: list[str], *, seed: int = 0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2) -> dict[str, str]:
    """``{slide_id: "train" | "val" | "test"}``; needs at least 3 slides."""
    ids = sorted(set(slide_ids))
    if len(ids) < 3:
        raise ValueError(f"the synthetic task needs >= 3 slides to split train/val/test by slide, got {len(ids)}; "
                         "synthesize more slides (exaonepath-lab synth --slides 10)")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_test = max(1, int(round(test_fraction * len(ids))))
    n_val = max(1, int(round(val_fraction * len(ids))))
    out = {s: "test" for s in order[:n_test]}
    out |= {s: "val" for s in order[n_test : n_test + n_val]}
    out |= {s: "train" for s in order[n_test + n_val :]}
    return out


def load_synthetic_task(
    tile_dir: str | Path,
    *,
    transform: Callable[[np.ndarray], Any] | None = None,
    seed: int = 0,
    split_dir: str | Path | None = None,
    out_px: int | None = 224,
    max_per_slide: int | None = None,
) -> Any:
    """Labelled tissue patches of a tiling run with slide-level ``split``; item protocol.

    ``out_px``: patches are read area-resized to this many px (224, the encoders' input; None keeps
    the extracted 0.5 µm/px-equivalent size). ``max_per_slide`` subsamples (seeded) for quick demos.
    """
    from ..slides.dataset import TiledPatchDataset
    from ..slides.synth_spec import CLASS_NAMES

    ds = TiledPatchDataset(tile_dir, out_px=out_px, transform=transform, max_per_slide=max_per_slide, seed=seed)
    meta = ds.meta
    keep = (meta["label"] >= 1).to_numpy()
    excluded = {"background": int((meta["label"] == 0).sum()), "unknown": int((meta["label"] < 0).sum())}
    if not keep.any():
        raise ValueError(f"no tissue-labelled patches in {tile_dir} (labels: background {excluded['background']}, "
                         f"unknown {excluded['unknown']}); tile a synthetic cohort (its class maps give the labels)")
    meta = meta[keep].reset_index(drop=True).copy()
    meta["label"] = meta["label"].astype(np.int64) - 1
    classes = list(CLASS_NAMES[1:])
    meta["class_name"] = [classes[i] for i in meta["label"]]

    where = Path(split_dir) if split_dir is not None else Path(tile_dir) / "splits"
    path = where / f"synthetic_slides_seed{seed}.csv"
    slides = sorted(meta["slide_id"].astype(str).unique())
    if path.exists():
        saved = pd.read_csv(path, dtype=str, keep_default_na=False)
        if sorted(saved["slide_id"]) != slides:
            raise ValueError(f"split file {path} lists slides {sorted(saved['slide_id'])} but the tiling has {slides}; "
                             f"delete {path} to regenerate the split")
        assign = dict(zip(saved["slide_id"], saved["split"]))
    else:
        assign = slide_splits(slides, seed=seed)
        with atomic_path(path) as tmp:
            pd.DataFrame({"slide_id": list(assign), "split": list(assign.values())}).sort_values("slide_id").to_csv(tmp, index=False)
    meta["split"] = meta["slide_id"].astype(str).map(assign)
    meta["patient"] = meta["slide_id"]
    meta["dataset"] = "synthetic"
    meta.attrs["excluded_counts"] = excluded
    ds.meta = meta
    ds.classes = classes  # type: ignore[attr-defined]
    ds.excluded_counts = excluded  # type: ignore[attr-defined]
    return ds
