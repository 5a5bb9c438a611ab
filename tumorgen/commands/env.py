"""`tumorgen env`: versions, devices, CPU capability and the precision `auto` picks."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="versions, devices, CPU capability, chosen precision, offline weight paths "
                                   "(paste into a bug report)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tumorgen.env import environment, format_text

    env = environment()
    print(json.dumps(env, indent=1) if args.json else format_text(env))
    return 0
