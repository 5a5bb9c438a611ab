"""`tumorgen cohort info DIR`: read a cohort in any layout and summarize it."""

from __future__ import annotations

import argparse
import json

from tumorgen.commands._common import console, report_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cohort", help="inspect cohorts (any supported layout)")
    csub = p.add_subparsers(dest="cohort_command", metavar="ACTION")
    info = csub.add_parser("info", help="cases, spacing, organs and tumors with counts and sizes")
    info.add_argument("path", help="cohort folder, manifest (.csv/.jsonl) or NIfTI file")
    info.add_argument("--mapping", default=None, help="label mapping for manifests, e.g. totalsegmentator_v2")
    info.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_info(args: argparse.Namespace) -> int:
    from cohort.errors import BatchReport, CohortError
    from cohort.summary import render, summarize

    report = BatchReport()
    try:
        s = summarize(args.path, mapping=args.mapping, report=report)
    except CohortError as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    print(json.dumps(s.as_dict(), indent=2) if args.as_json else render(s))
    if report.failed:
        return report_exit(report)
    return 0
