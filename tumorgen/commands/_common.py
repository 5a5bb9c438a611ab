"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse

from rich.console import Console

console = Console(stderr=True)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set a.b=v`` overrides for typed configs (repeatable)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.001 (repeatable)")


def report_exit(report) -> int:
    """Print a BatchReport's summary; exit status 1 when any case failed."""
    console.print(report.summary())
    return 0 if report.ok else 1
