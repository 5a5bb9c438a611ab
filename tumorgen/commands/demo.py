"""`tumorgen demo`: the whole chain on the built-in phantom world."""

from __future__ import annotations

import argparse

from tumorgen.commands._common import add_set_argument, console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole chain on the phantom world and write one HTML report")
    p.add_argument("--out", default="runs/demo", help="run folder (resumable: rerun to continue)")
    p.add_argument("--config", default=None, help="demo YAML (default: configs/demo/demo.yaml)")
    p.add_argument("--smoke", action="store_true", help="the smallest sizes (configs/demo/smoke.yaml): checks the chain")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rich.markup import escape

    from cohort.config import ConfigError, load_config
    from tumorgen.demo import DemoConfig, _cfg_path, run_demo

    config = args.config or ("demo/smoke.yaml" if args.smoke else "demo/demo.yaml")
    path = _cfg_path(config)  # a path, or relative to the shipped configs/
    try:  # check the config before any stage starts (or the run folder is made)
        load_config(DemoConfig, path if path.exists() else Path(config), args.overrides)
        page = run_demo(args.out, config, args.overrides)
    except ConfigError as e:  # one line "<file>: <key>: <problem>", also from a stage's own config
        console.print(f"[red]config error[/red] {escape(str(e))}", highlight=False)
        return 2
    console.print(f"open {page}")
    state = json.loads((page.parent / "stages.json").read_text())
    return 1 if state.get("scaling", {}).get("info", {}).get("failed_cells") else 0
