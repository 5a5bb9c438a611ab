"""`tumorgen scaling run|report --config configs/evaluation/scaling.yaml`.

`run` does everything the config names, from nothing: phantom cohorts, generators, synthetic and
filtered cohorts, the grid of cells, the report (and, with `--publish DIR` or `report.publish`, a copy
of the small results). Every stage resumes after a kill. Several `run` processes may share one study
folder (e.g. one per core with OMP_NUM_THREADS=1): each takes the cells no other holds, and waits for a
stage another is making. `report` regenerates the tables, figures and lessons.json from the cells' small
results (e.g. a published copy)."""

from __future__ import annotations

import argparse

from tumorgen.commands._common import add_set_argument, console, report_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scaling", help="the real-vs-synthetic scaling study (grid of segmentation runs)")
    ssub = p.add_subparsers(dest="scaling_command", metavar="ACTION")
    run = ssub.add_parser("run", help="run every unfinished cell of the grid (resumable; several processes may "
                                      "share one study folder, each taking the cells no other holds)")
    run.add_argument("--config", default="evaluation/scaling.yaml",
                     help="scaling YAML (a path, or relative to the shipped configs/)")
    run.add_argument("--out", required=True, help="study folder (one subfolder per cell)")
    run.add_argument("--cell", action="append", default=None, help="run only this cell id (repeatable)")
    run.add_argument("--list", action="store_true", help="list the cell ids and whether they are finished")
    run.add_argument("--publish", default=None, metavar="DIR",
                     help="copy the small results (cells' JSON/CSV, lessons.json, config, PNG, HTML) to DIR")
    add_set_argument(run)
    run.set_defaults(func=cmd_run)
    rep = ssub.add_parser("report", help="tables, curves and an HTML page from finished cells")
    rep.add_argument("--out", required=True, help="study folder (or a published copy of its small results)")
    rep.add_argument("--publish", default=None, metavar="DIR", help="then copy the small results to DIR")
    rep.set_defaults(func=cmd_report)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.markup import escape

    from cohort.config import config_dir
    from evaluation.scaling import cells, load_scaling_config
    from evaluation.scaling_report import run_and_report

    path = Path(args.config)
    if not path.exists() and (config_dir() / args.config).exists():
        path = config_dir() / args.config  # a name relative to the shipped configs/
    try:
        cfg = load_scaling_config(path, args.overrides)
    except ValueError as e:  # ConfigError (a ValueError) and the study's own checks: "<file>: <key>: <problem>"
        console.print(f"[red]config error[/red] {escape(str(e))}", highlight=False)
        return 2
    if args.list:
        for c in cells(cfg):
            done = (Path(args.out) / "cells" / c.id / "cell.json").exists()
            print(f"{c.id}\t{'finished' if done else 'todo'}")
        return 0
    try:
        report, page = run_and_report(cfg, args.out, only=args.cell, publish_to=args.publish)
    except ValueError as e:  # a study folder made with another config, unknown cell ids
        console.print(f"[red]error[/red] {escape(str(e))}", highlight=False)
        return 2
    console.print(f"study folder: {args.out}" + (f"; report: {page}" if page else ""))
    return report_exit(report)


def cmd_report(args: argparse.Namespace) -> int:
    from evaluation.scaling_report import publish, write_report

    try:
        page = write_report(args.out)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    if args.publish:
        publish(args.out, args.publish)
    print((page.parent / "table.md").read_text())
    console.print(f"report: {page}")
    return 0
