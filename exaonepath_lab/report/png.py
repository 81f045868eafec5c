"""Static figures: a matplotlib figure written as PNG atomically (temp name, then rename)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import atomic_path


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG at ``path`` (never half-written) and return the path."""
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return Path(path)
