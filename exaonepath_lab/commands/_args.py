"""Argument helpers shared by the subcommands."""
from __future__ import annotations

import argparse
from typing import Any

from ..config import parse_key_values  # noqa: F401  (the --set/--encoder-kw parser, shared with the library)


def add_macenko_options(p: argparse.ArgumentParser, normalize_help: str) -> None:
    """The four Macenko options shared by ``extract`` and ``probe``; see :func:`macenko_from_args`."""
    p.add_argument("--normalize", action="store_true", help=normalize_help)
    p.add_argument("--stain-target", help="fitted stain target JSON (StainTarget.save); default: HERef/maxCRef")
    p.add_argument("--stain-policy", choices=["passthrough", "flag", "raise"], default="passthrough",
                   help="images Macenko cannot normalize (background, too little tissue): passthrough keeps them raw "
                   "with their status recorded and counted (default, so every model sees the same images; never dropped)")
    p.add_argument("--stain-backend", choices=["auto", "torch", "numba"], default="auto",
                   help="Macenko implementation: auto = numba kernels on CPU (the first call of a fresh checkout "
                   "compiles them, ~20 s, then they are cached), torch on GPU; torch = no compile step")


def macenko_from_args(args: argparse.Namespace) -> Any:
    """The :class:`MacenkoNormalizer` the options of :func:`add_macenko_options` ask for, or None."""
    if not args.normalize:
        if args.stain_target:
            raise ValueError("--stain-target given without --normalize; add --normalize or drop the target")
        return None
    from ..stain.macenko import MacenkoNormalizer
    from ..stain.target import StainTarget

    target = StainTarget.load(args.stain_target) if args.stain_target else None
    return MacenkoNormalizer(target, policy=args.stain_policy, backend=args.stain_backend)
