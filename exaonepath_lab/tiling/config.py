"""The frozen configuration of a tiling job (saved as ``tile_config.json``)."""
from __future__ import annotations

import dataclasses

from ..config import JobConfig


@dataclasses.dataclass(frozen=True)
class TileConfig(JobConfig):
    """Everything that decides which patches a slide yields.

    Patch geometry (PROTOCOL.md §1): the level-0 patch side is
    ``round(target_px * target_mpp / slide_mpp)`` px, i.e. 512 px at 0.25 µm/px and
    256 px at 0.5 µm/px for the defaults; patches are not resized.

    Segmentation runs on a thumbnail at ``seg_mpp`` µm/px, so every length below is
    given in µm (or mm²) and means the same tissue size whatever the scan resolution.
    The paper says only "CLAM-style, tissue regions only"; the thresholds below are
    our documented choices.
    """

    target_mpp: float = 0.5
    """µm/px the patch corresponds to once resized to ``target_px`` (paper: 0.5)."""
    target_px: int = 256
    """Patch side in px at ``target_mpp`` (paper: 256)."""
    min_tissue: float = 0.5
    """Keep a patch when at least this fraction of its footprint is tissue in the mask.
    The paper gives none; 0.5 sits between CLAM's permissive point test and all-tissue."""
    seg_mpp: float = 8.0
    """µm/px of the segmentation thumbnail: a 128 µm patch spans 16 mask px, enough for a
    tissue fraction, and a 40k x 40k px slide at 0.25 µm/px gives a 1,250 px thumbnail."""
    median_um: float = 56.0
    """Median blur of the saturation channel (µm; CLAM's 7 px at ~8 µm/px)."""
    sat_floor: int = 15
    """Saturation (0-255) below which a pixel is glass whatever Otsu says: on a slide with
    no tissue Otsu would otherwise split the glass noise in two."""
    sat_ceiling: int = 50
    """Upper bound on the Otsu threshold: glass is below ~20, pale tissue (fat septa,
    loose stroma) sits at 25-50; a higher Otsu value means it split tissue from tissue."""
    close_um: float = 32.0
    """Morphological closing radius (µm): joins tissue broken by pale gaps."""
    min_object_mm2: float = 0.02
    """Tissue islands smaller than this (mm²; ~140 x 140 µm) are dust or debris, dropped."""
    max_hole_mm2: float = 0.02
    """Holes in tissue smaller than this are filled; larger ones (fat, lumina) stay out."""
    exclude_pen: bool = True
    """Remove strongly saturated green/blue ink, saturated red ink and very dark pixels
    (black ink, label, debris) before thresholding."""
    dark_value: int = 50
    """HSV value (0-255) below which a pixel is ink or debris rather than stained tissue
    (dense epidermis in CMU-1 reaches ~63 at 4 µm/px; black marker cores sit at 20-45)."""
    ink_margin_um: float = 24.0
    """Coloured-ink masks are grown by this much (µm, ≥ 1 px): marker edges blend into tissue."""
    mpp_override: float | None = None
    """µm/px used for every slide instead of its metadata (recorded as the MPP source)."""
    allow_plain_images: bool = False
    """Also accept PNG/JPEG as one-level slides (they need an MPP override or column)."""

    def __post_init__(self) -> None:
        if not self.target_mpp > 0 or not self.target_px > 0:
            raise ValueError(f"target_mpp and target_px must be positive, got {self.target_mpp}, {self.target_px}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue is a fraction in [0, 1], got {self.min_tissue}")
        if not 0 <= self.sat_floor <= self.sat_ceiling <= 255:
            raise ValueError(f"need 0 <= sat_floor <= sat_ceiling <= 255, got {self.sat_floor}, {self.sat_ceiling}")
        if not self.seg_mpp > 0:
            raise ValueError(f"seg_mpp must be positive µm/px, got {self.seg_mpp}")
        if self.mpp_override is not None and not self.mpp_override > 0:
            raise ValueError(f"mpp_override must be positive µm/px, got {self.mpp_override}")
