"""One explicit failure policy for patches that cannot be stain-normalized.

The reference code (torchstain, copied by the paper's repository) raises
``kthvalue(): ... non-zero size`` on background patches, or returns NaN, and the
paper's evaluation code then returns the raw image or drops the sample, so test sets
silently differ from model to model (PROTOCOL.md §2). Here every image gets a
status string, and the caller chooses what happens to the failed ones:

``passthrough``
    return the input pixels unchanged; the status says why. Quiet: counts only.
``flag``
    the same images as ``passthrough``, and a :class:`StainNormalizationWarning`
    naming how many images failed and why (one warning per call).
``raise``
    raise :class:`StainNormalizationError` naming the first failed image, the
    reason and the fix.

Statuses:

``ok``
    normalized.
``too_few_tissue_pixels``
    fewer pixels with OD ≥ beta in every channel than ``max(min_tissue_pixels,
    min_tissue_fraction · H·W)``: white/background, near-empty or tiny patches.
``degenerate``
    stain geometry cannot be estimated: a single colour (zero covariance), the two
    stain vectors (nearly) parallel, or a non-positive 99th-percentile concentration.
``nonfinite``
    a NaN/inf appeared anyway (should not happen; kept so it can never be silent).
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Iterable, Literal, Sequence

Policy = Literal["passthrough", "flag", "raise"]
POLICIES: tuple[str, ...] = ("passthrough", "flag", "raise")

OK = "ok"
TOO_FEW_TISSUE = "too_few_tissue_pixels"
DEGENERATE = "degenerate"
NONFINITE = "nonfinite"
STATUSES: tuple[str, ...] = (OK, TOO_FEW_TISSUE, DEGENERATE, NONFINITE)

_FIX = {
    TOO_FEW_TISSUE: "the patch is background/white, near-empty or too small; lower min_tissue_fraction/"
    "min_tissue_pixels only if it really holds tissue",
    DEGENERATE: "the patch has a single colour (or one stain only), so two stain vectors cannot be "
    "separated; it is usually background, ink or a black/blank region",
    NONFINITE: "non-finite values appeared; please report the image",
}


class StainNormalizationError(ValueError):
    """An image could not be stain-normalized and the policy is ``raise``."""


class StainNormalizationWarning(UserWarning):
    """Some images could not be stain-normalized and were passed through (policy ``flag``)."""


def check_policy(policy: str) -> str:
    """Validate a policy name; the error lists the valid ones."""
    if policy not in POLICIES:
        raise ValueError(f"unknown stain failure policy {policy!r}; choose one of {list(POLICIES)}")
    return policy


def count_statuses(status: Iterable[str]) -> dict[str, int]:
    """``{"ok": n_ok, <status>: n, ..., "total": n_all}``; ``ok`` always present."""
    c = Counter(status)
    out = {OK: c.pop(OK, 0)}
    out.update(sorted(c.items()))
    out["total"] = sum(v for k, v in out.items())
    return out


def enforce_policy(
    policy: str,
    status: Sequence[str],
    details: Sequence[str] | None = None,
    *,
    what: str = "image",
) -> None:
    """Raise or warn according to ``policy`` when any status is not ``ok``.

    ``details[i]`` (optional) adds numbers for image ``i`` to the message.
    """
    bad = [i for i, s in enumerate(status) if s != OK]
    if not bad or policy == "passthrough":
        return
    i = bad[0]
    s = status[i]
    extra = f" ({details[i]})" if details is not None and details[i] else ""
    if policy == "raise":
        raise StainNormalizationError(
            f"{what} {i} of {len(status)}: {s}{extra}. Fix: {_FIX.get(s, '')}; or use policy='passthrough' "
            f"or 'flag' to return such images unchanged with a status. "
            f"{len(bad)} of {len(status)} failed in this call."
        )
    counts = {k: v for k, v in count_statuses(status).items() if k not in (OK, "total")}
    warnings.warn(
        f"{len(bad)} of {len(status)} {what}s were not stain-normalized and were passed through unchanged: "
        f"{counts}; first: {what} {i}{extra}",
        StainNormalizationWarning,
        stacklevel=3,
    )
