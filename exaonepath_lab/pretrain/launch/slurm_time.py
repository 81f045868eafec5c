"""SLURM time limits: ``D-HH:MM:SS`` and back."""
from __future__ import annotations

import re


def format_slurm_time(minutes: int) -> str:
    """SLURM ``D-HH:MM:SS`` for a duration in minutes."""
    d, rem = divmod(int(minutes), 24 * 60)
    h, m = divmod(rem, 60)
    return f"{d}-{h:02d}:{m:02d}:00"


def parse_slurm_time(text: str) -> int:
    """Minutes from a SLURM time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"time {text!r} is not a SLURM time; use e.g. 2880, 48:00:00 or 2-00:00:00")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        secs = int(a) * 60 + int(b)
    else:  # M
        secs = int(a) * 60
    return max(1, -(-secs // 60))
