"""`tumorgen synthesize`: tumors from any registered maker (CA, rules, diffusion, ...) in a healthy cohort.

For each healthy case, grow (--method ca, Pixel2Cancer cellular automaton), draw (--method rules,
SyntheticTumors ellipsoids) or inpaint (--method diffusion --model DIR) tumors and write AbdomenAtlas
case folders with provenance sidecars (tumor sizes included), manifest.jsonl, tumors.csv and
synthesis_summary.json. Finished cases are skipped (resumable); bad source cases are reported and make
the exit status 1. `tumorgen sample` is the same loop with several diffusion tumors per case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import add_command, add_set_argument, console, discard_new_output, report_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    from generative.registry import get_entry, synthesizer_names

    made = "; ".join(f"{n}: {', '.join(get_entry(n).organs)}" for n in synthesizer_names())
    p = add_command(subparsers, "synthesize", __doc__, help="insert tumors from a registered maker (ca, rules, diffusion, ...) into a healthy cohort")
    p.add_argument("--method", required=True, choices=synthesizer_names(),
                   help=f"a registered tumor maker (generative.registry); tumor types per maker: {made}")
    p.add_argument("--model", type=Path, default=None, help="diffusion: the controlnet stage's model folder "
                   "(same as --set params.model=DIR)")
    p.add_argument("--healthy", required=True, type=Path, metavar="COHORT", help="healthy cohort (any layout)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output cohort folder")
    p.add_argument("--config", type=Path, default=None,
                   help="SynthesisConfig YAML (default: configs/generative/synth_<method>.yaml)")
    p.add_argument("--spec", action="append", default=[], metavar="SPEC",
                   help="tumor spec, repeatable: inline 'organ=liver,size=small,count=2' (keys organ, size, "
                        "diameter_mm, steps, count); replaces the config's specs")
    p.add_argument("--seed", type=int, default=None, help="cohort seed (default: the config's)")
    p.add_argument("--n-per-case", type=int, default=None, help="synthetic cases per healthy case")
    p.add_argument("--limit", type=int, default=None, help="use at most this many healthy cases")
    p.add_argument("--device", default=None, help="device of the maker: cpu, cuda (CA also auto; default: the config's)")
    p.add_argument("--compat", action="store_true", help="CA: pixel2cancer_compat (reproduce the reference quirks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cohort.config import ConfigError, config_dir, load_config, save_config
    from cohort.errors import CohortError
    from generative.registry import check_supported
    from generative.tumors import make_synthesizer, summarize_sizes, synthesize_cohort
    from generative.tumors.base import TumorSpec
    from generative.tumors.config import SynthesisConfig

    path = args.config or (config_dir() / "generative" / f"synth_{args.method}.yaml")
    if args.config is None and not path.exists():
        path = None  # a registered maker without a shipped YAML: its defaults
    overrides = [f"method={args.method}"] + list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.n_per_case is not None:
        overrides.append(f"n_per_case={args.n_per_case}")
    if args.limit is not None:
        overrides.append(f"limit={args.limit}")
    if args.device is not None:
        overrides.append(f"params.device={args.device}")
    if args.model is not None:
        overrides.append(f"params.model={args.model}")
    if args.compat:
        overrides.append("params.compat=true")
    try:
        cfg = load_config(SynthesisConfig, path, overrides)
        if args.spec:
            cfg.specs = [TumorSpec.parse(s) for s in args.spec]
            check_supported(cfg.method, [s.organ for s in cfg.specs], "--spec")
        synth = make_synthesizer(cfg.method, cfg.synthesizer_config())
    except (ConfigError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    console.print(f"synthesize: {cfg.method} on {args.healthy} -> {args.out} (seed {cfg.seed}, "
                  f"{cfg.n_per_case} per case, specs {[s.as_dict() for s in cfg.specs]})")
    existed = args.out.exists()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, args.out / "synthesis_config.yaml")
        report = synthesize_cohort(args.healthy, args.out, synth, cfg.specs, seed=cfg.seed,
                                   n_per_case=cfg.n_per_case, limit=cfg.limit or None, progress=not args.no_progress)
    except (CohortError, ValueError) as e:
        # refused before any case was written (e.g. no --healthy cohort): leave no folder behind
        discard_new_output(args.out, existed, own=("synthesis_config.yaml",))
        console.print(f"[red]error:[/red] {e}")
        return 2
    except OSError as e:  # the output folder refused a write before the cohort loop (a full disk)
        discard_new_output(args.out, existed, own=("synthesis_config.yaml",))
        console.print(f"[red]error:[/red] {e.filename or args.out}: {e.strerror or e}")
        return 1
    try:
        summary = summarize_sizes(args.out)
    except OSError as e:  # the loop reported the cohort files it could not write
        console.print(f"[red]error:[/red] {args.out}: {e.strerror or e}")
        return report_exit(report) or 1
    console.print(f"tumors: {summary['tumors']} in {summary['cases_with_tumors']} cases, "
                  f"{summary['early_tumors']} early (<= {summary['early_threshold_mm']:g} mm); "
                  f"diameter quantiles (mm): {summary.get('diameter_mm_quantiles')}")
    return report_exit(report)
