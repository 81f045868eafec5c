"""The dataset manifests in ``data_manifests/`` (one JSON per dataset): source, license, classes,
expected counts per partition, split rule, checksums.

They live at the repository root (next to the package) so a reader finds them without opening
code; set ``EXAONEPATH_LAB_MANIFESTS`` to use another folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def manifest_dir() -> Path:
    """Folder holding ``<dataset>.json``; errors say how to point to it."""
    env = os.environ.get("EXAONEPATH_LAB_MANIFESTS")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "data_manifests"
    if not d.is_dir():
        raise FileNotFoundError(f"dataset manifests not found at {d}; set EXAONEPATH_LAB_MANIFESTS to the "
                                "data_manifests/ folder of the exaonepath-lab repository")
    return d


def load_manifest(name: str) -> dict[str, Any]:
    """The manifest of dataset ``name`` (e.g. ``"mhist"``)."""
    p = manifest_dir() / f"{name}.json"
    if not p.is_file():
        known = sorted(q.stem for q in manifest_dir().glob("*.json") if not q.name.endswith(".schema.json"))
        raise ValueError(f"no manifest for dataset {name!r} ({p}); known: {known}")
    return json.loads(p.read_text())
