"""The `tumorgen` command. Thin: each subcommand parses arguments and calls one typed function.

Subcommands live in ``tumorgen/commands/<name>.py``; each module defines
``register(subparsers)`` which adds its parser(s) and sets ``func`` to a
callable ``(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules under tumorgen.commands, in the order their commands are listed
COMMAND_MODULES = (
    "phantoms",
    "cohort",
    "train",
    "sample",
    "generator",
    "synthesize",
    "filter",
    "segment",
    "predict",
    "export",
    "evaluate",
    "scaling",
    "demo",
    "env",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorgen",
        description="Synthetic tumor CT: generate, filter, and measure what it does for tumor segmentation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"tumorgen.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tumorgen.commands.{name}":
                continue  # stage not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
