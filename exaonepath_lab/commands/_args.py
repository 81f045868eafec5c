"""Argument helpers shared by the subcommands."""
from __future__ import annotations

import argparse
from typing import Any

from ..config import parse_key_values  # noqa: F401  (the --set/--encoder-kw parser, shared with the library)


STAIN_TARGET_HELP = (
    "Macenko target: a fitted target JSON (StainTarget.save) or an image to fit it on, such as the authors' "
    "target (git clone https://github.com/LG-AI-EXAONE/EXAONEPath; the file is EXAONEPath/macenko_target/"
    "'target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png'; its non-commercial licence keeps it out of the kit). "
    "An image is fitted as the authors' macenko_normalizer() does (whole image, Io 240, alpha 1, beta 0.15) and the "
    "fitted target is cached as JSON next to the run. Default: the HERef/maxCRef reference of Macenko/torchstain, "
    "for those without the authors' image (the authors never use it)"
)


def add_macenko_options(p: argparse.ArgumentParser, normalize_help: str, *, default: bool = False) -> None:
    """The Macenko options shared by ``extract`` and ``probe``; see :func:`macenko_from_args`.

    ``default=True`` (probe: the paper's protocol) normalizes unless ``--no-normalize`` is given;
    ``--normalize`` stays accepted. ``default=False`` (extract) normalizes only with ``--normalize``.
    """
    g = p.add_mutually_exclusive_group()
    g.add_argument("--normalize", dest="normalize", action="store_true", default=default, help=normalize_help)
    g.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="no Macenko normalization" + (" (differs from the paper's protocol; `table` marks such rows)"
                                                       if default else " (the default)"))
    p.set_defaults(normalize_default=default)
    p.add_argument("--stain-target", metavar="JSON_OR_IMAGE", help=STAIN_TARGET_HELP)
    p.add_argument("--stain-policy", choices=["passthrough", "flag", "raise"], default="passthrough",
                   help="images Macenko cannot normalize (background, too little tissue): passthrough keeps them raw "
                   "with their status recorded and counted (default, so every model sees the same images; never dropped)")
    p.add_argument("--stain-backend", choices=["auto", "torch", "numba"], default="auto",
                   help="Macenko implementation: auto = numba kernels on CPU (the first call of a fresh checkout "
                   "compiles them, ~20 s, then they are cached), torch on GPU; torch = no compile step")


def macenko_from_args(args: argparse.Namespace, *, target_cache: Any = None) -> Any:
    """The :class:`MacenkoNormalizer` the options of :func:`add_macenko_options` ask for, or None.

    ``target_cache``: where a target fitted from an image is saved (a JSON next to the run);
    see :func:`exaonepath_lab.stain.target.resolve_target`.
    """
    if not args.normalize:
        if args.stain_target:
            if getattr(args, "normalize_default", False):
                raise ValueError("--stain-target given with --no-normalize; drop --no-normalize (the paper normalizes) "
                                 "or drop the target")
            raise ValueError("--stain-target given without --normalize; add --normalize or drop the target")
        return None
    from ..stain.macenko import MacenkoNormalizer
    from ..stain.target import resolve_target

    target = resolve_target(args.stain_target, cache_path=target_cache)
    return MacenkoNormalizer(target, policy=args.stain_policy, backend=args.stain_backend)
