"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

#: soft_wrap: an error or a FAILED line stays one line whatever the terminal width (rich would break
#: it at 80 columns when stderr is not a terminal), so it can be grepped and parsed
console = Console(stderr=True, soft_wrap=True)


def add_command(subparsers, name: str, doc: str | None, help: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` description is its module docstring (everything after the
    first line), so the text a user reads lives in one place."""
    description = (doc or "").split("\n", 1)[1].strip() if doc and "\n" in doc else None
    return subparsers.add_parser(name, help=help, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set a.b=v`` overrides for typed configs (repeatable)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.001 (repeatable)")


def report_exit(report) -> int:
    """Print a BatchReport's summary; exit status 1 when any case failed."""
    console.print(report.summary())
    return 0 if report.ok else 1


def discard_new_output(path: Path, existed: bool, own: Sequence[str] = ()) -> None:
    """Delete the output folder a command created before failing on its arguments.

    Only when ``existed`` is False (the command made it) and it holds nothing
    but the command's own bookkeeping files ``own`` (e.g. the resolved config)
    and temporaries, so a refused run leaves no empty result folder behind and
    never deletes a case.
    """
    from cohort.io import is_temp_name

    path = Path(path)
    if existed or not path.is_dir():
        return
    if all(p.name in own or is_temp_name(p) for p in path.iterdir()):
        shutil.rmtree(path)
