"""``exaonepath-lab`` command line: thin subcommands over the library.

Each subcommand lives in ``exaonepath_lab/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser (with help for every option) and
sets ``func`` to a callable ``func(args) -> int``. Command modules import heavy
libraries inside ``func`` so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Order = order in --help; the pipeline order.
COMMANDS = [
    "synth",
    "tile",
    "normalize",
    "train",
    "launch",
    "extract",
    "collapse",
    "audit",
    "datasets",
    "sample-data",
    "probe",
    "table",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="exaonepath-lab",
        description="Reproduce, measure and extend EXAONEPath: tiling, stain normalization, DINO "
        "pretraining, WSI-specific feature collapse, linear probing, tables and figures.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"exaonepath_lab.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            module = name.replace("-", "_")
            if e.name == f"exaonepath_lab.commands.{module}":
                # A listed command that is missing is a broken install, never a smaller CLI.
                raise ImportError(f"exaonepath-lab: command {name!r} is listed in exaonepath_lab.cli.COMMANDS but "
                                  f"exaonepath_lab/commands/{module}.py is missing; reinstall the package "
                                  "(pip install -e .) or remove it from COMMANDS") from e
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        # Library errors already name the input and the fix; no traceback for users.
        if getattr(args, "debug", False):
            raise
        print(f"exaonepath-lab {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
