"""Tiling: tissue mask, non-overlapping MPP-aware grid, multi-slide run and manifest.

>>> from exaonepath_lab.tiling import TileConfig, run_tiling
>>> result = run_tiling("slides/", "tiles/", TileConfig(target_mpp=0.5, target_px=256), workers=2)
>>> result.manifest  # one row per slide: status ok | failed | skipped_done
"""
from .config import TileConfig
from .grid import grid_coords, majority_labels, patch_size_px, tissue_fraction, tissue_patches
from .h5 import read_patch_h5, write_patch_h5
from .mask import pen_mask, tissue_mask
from .run import (
    MANIFEST_COLUMNS,
    SlideJob,
    TilingResult,
    format_report,
    merge_manifests,
    resolve_inputs,
    run_tiling,
    shard_from_env,
)
from .slide import tile_slide
from .thumbnail import read_at_mpp

__all__ = [
    "TileConfig", "grid_coords", "majority_labels", "patch_size_px", "tissue_fraction", "tissue_patches",
    "read_patch_h5", "write_patch_h5", "pen_mask", "tissue_mask", "MANIFEST_COLUMNS", "SlideJob",
    "TilingResult", "format_report", "merge_manifests", "resolve_inputs", "run_tiling", "shard_from_env",
    "tile_slide", "read_at_mpp",
]
