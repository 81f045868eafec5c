"""The frozen config of a stain job (``exaonepath-lab normalize``), saved as ``stain_config.json`` beside its outputs."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..config import JobConfig
from .policy import POLICIES


@dataclasses.dataclass(frozen=True)
class StainConfig(JobConfig):
    """Everything a Macenko job was asked to do: the target, the method's parameters, the failure policy.

    Defaults are the paper's (Macenko et al. 2009 as torchstain implements it, which EXAONEPath
    uses); the per-image statuses and counts are in the job's report, not here.
    """

    target: str | None = None
    """Target to map to: a fitted target JSON (``StainTarget.save``) or a target image (e.g. the authors' TCGA
    PNG, fitted once and cached as ``stain_target.json``); None: the reference HERef/maxCRef of Macenko/torchstain."""
    fit_target: tuple[str, ...] = ()
    """Images whose pooled pixels the target is fitted on instead (the paper: a tissue-rich 4096² crop)."""
    save_target: str | None = None
    """Where the target fitted on ``fit_target`` was written."""
    Io: float = 240.0
    """Transmitted light intensity (paper/torchstain: 240)."""
    alpha: float = 1.0
    """Angle percentile of the stain vectors (paper: 1, i.e. the 1st and 99th)."""
    beta: float = 0.15
    """Optical-density threshold of tissue pixels (paper: 0.15)."""
    min_tissue_fraction: float = 0.01
    """Below this share of tissue pixels an image is ``too_few_tissue_pixels`` (1 %: 502 px at 224²,
    enough for the angle percentiles to be more than single extreme pixels)."""
    policy: str = "passthrough"
    """Images that cannot be normalized: passthrough (kept unchanged, status recorded), flag (same plus a
    warning) or raise. A batch job must neither stop nor drop items, hence passthrough."""
    batch_size: int = 64
    """Images per batch (64 patches of 224² px: ~40 MB in flight); does not change the output."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"StainConfig.policy={self.policy!r}: use one of {sorted(POLICIES)}")
        if self.target and self.fit_target:
            raise ValueError("give either a target JSON or images to fit one on (fit_target), not both")
        if self.save_target and not self.fit_target:
            raise ValueError("save_target needs fit_target (the images to fit the target on)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")

    def normalizer(self, target: Any = None, *, device: Any = None) -> Any:
        """The :class:`MacenkoNormalizer` of these parameters, mapping to ``target``.

        ``target``: the :class:`StainTarget` loaded from ``self.target`` or fitted on ``self.fit_target``
        (the caller does that, so it can report the fit); None: the default HERef/maxCRef.
        """
        from .macenko import MacenkoNormalizer

        return MacenkoNormalizer(target, Io=self.Io, alpha=self.alpha, beta=self.beta, policy=self.policy,
                                 min_tissue_fraction=self.min_tissue_fraction, device=device)
