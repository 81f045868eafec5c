"""exaonepath-lab: reproduce, measure and extend EXAONEPath.

Pipeline (data flows one way): slides -> tiling -> stain -> pretrain / features
-> analysis / probing -> report. Import the sub-packages you need, e.g.
``from exaonepath_lab.stain import MacenkoNormalizer``.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("exaonepath-lab")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
