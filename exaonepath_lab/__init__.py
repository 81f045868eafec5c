"""exaonepath-lab: reproduce, measure and extend EXAONEPath.

Pipeline (data flows one way): slides -> tiling -> stain -> pretrain / features
-> analysis / probing -> report. The names below are the short public face, one per step,
imported lazily (``import exaonepath_lab`` loads neither torch nor numpy)::

    import exaonepath_lab as xl

    slide = xl.open_slide("slide.svs")                         # slides
    xl.run_tiling("slides/", "tiles/", xl.TileConfig())       # tiling
    norm = xl.MacenkoNormalizer()                              # stain
    enc = xl.create_encoder("exaonepath", checkpoint="EXAONEPath.ckpt")
    fs = xl.extract_features(enc, xl.TiledPatchDataset("tiles/"), normalizer=norm)  # features
    xl.collapse_metrics(fs.features, fs.meta)                  # analysis

Each job's config (``TileConfig``, ``StainConfig``, ``PretrainConfig``, ``ExtractConfig``,
``ProbeConfig``, ``DemoConfig``) is here too; the sub-packages hold the rest.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("exaonepath-lab")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

#: Public name -> the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    # job configs, one per job
    "TileConfig": "exaonepath_lab.tiling.config",
    "StainConfig": "exaonepath_lab.stain.config",
    "PretrainConfig": "exaonepath_lab.pretrain.config",
    "ExtractConfig": "exaonepath_lab.features.config",
    "ProbeConfig": "exaonepath_lab.probing.config",
    "DemoConfig": "exaonepath_lab.config",
    # slides -> tiling
    "open_slide": "exaonepath_lab.slides.wsi",
    "TiledPatchDataset": "exaonepath_lab.slides.dataset",
    "ImageFolderDataset": "exaonepath_lab.datasets",
    "run_tiling": "exaonepath_lab.tiling.run",
    # stain
    "MacenkoNormalizer": "exaonepath_lab.stain.macenko",
    "StainTarget": "exaonepath_lab.stain.target",
    # pretrain
    "train": "exaonepath_lab.pretrain.trainer",
    "get_preset": "exaonepath_lab.pretrain.presets",
    # encoders -> features
    "create_encoder": "exaonepath_lab.encoders.registry",
    "register_encoder": "exaonepath_lab.encoders.registry",
    "list_encoders": "exaonepath_lab.encoders.registry",
    "extract_features": "exaonepath_lab.features.extract",
    "load_features": "exaonepath_lab.features.cache",
    # analysis / probing
    "embed": "exaonepath_lab.analysis.embeddings",
    "collapse_metrics": "exaonepath_lab.analysis.collapse",
    "load_dataset": "exaonepath_lab.probing.datasets",
    "run_linear_probe": "exaonepath_lab.probing.linear",
    # the whole story
    "run_demo": "exaonepath_lab.demo",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'exaonepath_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
