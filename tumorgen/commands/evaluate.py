"""`tumorgen evaluate`: segmentation metrics of a prediction folder against a ground-truth cohort.

Evaluate <case id>.nii.gz label maps in PRED against the ground-truth cohort GT (any layout).
Writes cases.csv, lesions.csv, summary.json, summary.md and metrics.yaml to OUT: DSC, NSD, HD95 and
mean surface distance, patient / tumor / early-tumor sensitivity beside false positives per case and
lesion precision (under the configured localisation rule), specificity and AUC, with 95 % CIs. Missing
or mismatched cases are reported and make the exit status 1; the other cases are still evaluated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import add_command, add_set_argument, console, report_exit

DEFAULT_CONFIG = "evaluation/metrics.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "evaluate", __doc__, help="DSC, NSD, patient/tumor/early-tumor sensitivity, specificity and AUC with 95%% CIs")
    p.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of <case id>.nii.gz predictions")
    p.add_argument("--gt", required=True, type=Path, metavar="COHORT", help="ground-truth cohort (folder or manifest)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--config", type=Path, default=None,
                   help=f"metrics YAML (default: configs/{DEFAULT_CONFIG})")
    p.add_argument("--layout", default=None, help="ground-truth layout, when auto-detection is not wanted")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cohort.config import ConfigError, config_dir
    from cohort.errors import CohortError
    from evaluation.evaluate import evaluate_cohort
    from evaluation.metrics import load_metrics_config

    try:
        config = load_metrics_config(args.config or config_dir() / DEFAULT_CONFIG, args.overrides)
        result, report = evaluate_cohort(args.pred, args.gt, args.out, config, layout=args.layout,
                                         progress=not args.quiet)
    except (CohortError, ConfigError) as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        return 2
    console.print(result.markdown(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {args.out}/cases.csv, lesions.csv, summary.json, summary.md")
    return report_exit(report)
