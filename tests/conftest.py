"""Shared fixtures: the real H&E folder and a small demo cohort (tiled, with two briefly trained checkpoints)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_HE = ROOT / ".." / "shared" / "data" / "real_he"


@pytest.fixture(scope="session")
def real_he() -> Path:
    if not REAL_HE.is_dir():
        pytest.skip(f"real H&E test data not found at {REAL_HE}")
    return REAL_HE


@pytest.fixture(scope="session")
def smoke_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 4-slide synthetic cohort, its tiling and two 6-step cpu-demo checkpoints (raw, Macenko).

    Built with the demo's own stages (exaonepath_lab.demo.demo_inputs), so notebooks
    see exactly what `make demo` gives them, at smoke size.
    """
    from exaonepath_lab.demo import demo_inputs

    out = tmp_path_factory.mktemp("smoke_demo")
    return demo_inputs(out, smoke=True, progress=False)
