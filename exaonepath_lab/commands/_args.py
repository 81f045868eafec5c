"""Argument helpers shared by the subcommands."""
from __future__ import annotations

import json
from typing import Any


def parse_key_values(items: list[str], flag: str) -> dict[str, Any]:
    """``["lr=1e-3", "global_crop_scale=[0.25,1]"]`` -> dict; values parsed as JSON when they can be, else strings.

    ``flag`` names the option in the error, e.g. ``--set`` or ``--encoder-kw``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE (VALUE parsed as JSON when it can be)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out
