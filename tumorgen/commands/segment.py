"""`tumorgen segment train`: train tumor segmentation on real + synthetic cohorts;
`tumorgen segment fit RUN...`: does a finished model segment its own training tumors
(:mod:`segmentation.health`; a collapsed lesion output is a failed training, not a data effect).

Resolves a named on-the-fly synthesizer (``onthefly: {method: ca, ...}``) into an
object through the synthesizer registry (:func:`generative.registry.resolve_onthefly`):
``segmentation`` never imports the generators. For several processes: ``accelerate launch -m tumorgen.cli segment train ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cohort.runs import add_rerun_arguments
from tumorgen.commands._common import add_set_argument, console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="train tumor segmentation (MONAI SegResNet by default)")
    ssub = p.add_subparsers(dest="segment_command", metavar="ACTION")
    tr = ssub.add_parser("train", help="train on the sources of a config (real, synthetic, filtered manifests)")
    tr.add_argument("--config", type=Path, default=None, help="configs/segmentation/<name>.yaml (default: the paper recipe)")
    tr.add_argument("--run-dir", "--out", dest="run_dir", type=Path, default=None,
                    help="run folder (default runs/segmentation/<config name>); the model lands in RUN/model")
    add_rerun_arguments(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    add_set_argument(tr)
    tr.set_defaults(func=run_train)
    fi = ssub.add_parser("fit", help="check that finished runs segment their own training tumors (collapsed lesion output)")
    fi.add_argument("runs", nargs="+", type=Path, help="segmentation run folders (config.yaml + model/)")
    fi.add_argument("--patches", type=int, default=24, help="lesion-centred training patches per run (default 24)")
    fi.add_argument("--no-write", action="store_true", help="do not write RUN/train_fit.json")
    fi.set_defaults(func=run_fit)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_train(args: argparse.Namespace) -> int:
    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from segmentation.config import load_seg_config
    from segmentation.train import train_segmentation

    try:
        cfg = load_seg_config(args.config, args.overrides)
    except ConfigError as e:
        console.print(f"[red]config error[/red] {e}")
        return 2
    synth = spec_for = None
    if cfg.onthefly.method is not None:
        from generative.registry import resolve_onthefly

        try:
            synth, spec_for = resolve_onthefly(cfg.onthefly.method, dict(cfg.onthefly.params))
        except (ConfigError, ValueError) as e:
            console.print(f"[red]config error[/red] onthefly: {e}")
            return 2
    run_dir = args.run_dir or Path("runs/segmentation") / (args.config.stem if args.config else "default")
    try:
        model = train_segmentation(cfg, run_dir, resume=args.resume, synthesizer=synth, spec_for=spec_for,
                                   show=not args.quiet, overwrite=args.overwrite)
    except (CohortError, ConfigError) as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    console.print(f"model: {model}  (per-source counts: {Path(run_dir) / 'source_counts.json'})")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """Exit 0: every run's lesion classes fit; 1: some run collapsed; 2: some run could not be checked."""
    from rich.markup import escape

    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from segmentation.health import FIT_NAME, collapsed_classes, fit_message, fit_run

    status = 0
    for run in args.runs:
        try:
            fit = fit_run(run, patches=args.patches, write=not args.no_write)
        except (CohortError, ConfigError, OSError, ValueError) as e:
            console.print(f"[red]error[/red] {escape(str(e))}" if isinstance(e, CohortError)
                          else f"[red]error[/red] {run}: {escape(str(e))}")
            status = 2
            continue
        rows = ", ".join(f"{n}: recall {r['recall']:.2f}, max p {r['max_prob']:.2f}" for n, r in fit["classes"].items())
        if collapsed_classes(fit):
            console.print(f"[red]collapsed[/red] {escape(fit_message(fit, str(run)))}")
            status = max(status, 1)
        else:
            console.print(f"ok {run}: {rows or 'no lesion in the training cases'} ({fit['patches']} patches)"
                          + ("" if args.no_write else f" -> {Path(run) / FIT_NAME}"))
    return status
