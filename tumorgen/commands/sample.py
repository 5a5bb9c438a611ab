"""`tumorgen sample`: a synthetic cohort from healthy cases and a trained ControlNet pipeline.

For each healthy case and each of cases_per_source, place tumors (organs, sizes and counts from the
spec) and inpaint them; writes AbdomenAtlas case folders with provenance sidecars, manifest.jsonl and
tumors.csv. Finished cases are skipped (resumable); bad source cases are reported and make the exit
status 1. The same cohort loop as `tumorgen synthesize --method diffusion`, with several tumors per case.

Sharded across processes with ``accelerate launch -m generative.diffusion.sample`` (same arguments).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import add_command, add_set_argument, console, report_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "sample", __doc__, help="insert diffusion-generated tumors into healthy cases (a synthetic cohort)")
    p.add_argument("--healthy", required=True, type=Path, metavar="COHORT", help="healthy cohort (any layout)")
    p.add_argument("--model", required=True, type=Path, metavar="DIR", help="controlnet stage's model folder")
    p.add_argument("--spec", type=Path, default=None, help="YAML of SampleSpec (e.g. configs/generative/sample.yaml)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from generative.diffusion.sample import sample_cohort

    try:
        report = sample_cohort(args.healthy, args.model, args.spec, args.out, args.overrides,
                               progress=not args.quiet, device=args.device)
    except (ConfigError, CohortError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    except OSError as e:  # a write outside the cohort loop (which reports its own) was refused
        console.print(f"[red]error:[/red] {e.filename or args.out}: {e.strerror or e}")
        return 1
    return report_exit(report)
