"""`tumorgen filter train|score|apply|audit`: the adversarial quality filter for synthetic tumors.

    tumorgen filter train --real data/siteA --synthetic ca=data/siteA_ca rules=data/siteA_rules --out runs/filter
    tumorgen filter score --model runs/filter --cohort data/siteA_ca --out runs/filter/ca
    tumorgen filter apply --model runs/filter --scores runs/filter/ca --out runs/filter/ca
    tumorgen filter audit --model runs/filter --scores runs/filter/ca --out runs/filter/ca/audit

`--segmentor RUN` (a trained segmentation run or model folder) adds the
FreeTumor gate; without it the gate is reported as not applied. The gate
votes only once its segmentor's sensitivity on held-out real tumors
(`--gate-validation COHORT`, or freetumor.validation_cohort) reaches
freetumor.min_sensitivity; otherwise it is reported as not voting, with why.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import add_set_argument, console, report_exit


def _common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--config", type=Path, default=None, help="filter YAML (default: configs/generative/filter.yaml)")
    add_set_argument(p)
    if model_required:
        p.add_argument("--model", required=True, type=Path, help="discriminator folder from `tumorgen filter train`")


def _segmentor_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--segmentor", type=Path, default=None, metavar="RUN",
                   help="trained segmentation run (or model) folder: enables the FreeTumor gate")
    p.add_argument("--device", default="cpu", help="torch device for the segmentor (cpu, cuda)")
    p.add_argument("--gate-validation", type=Path, default=None, metavar="COHORT",
                   help="held-out real tumor cohort the segmentor's sensitivity is measured on; the FreeTumor "
                        "gate votes only when it reaches freetumor.min_sensitivity")


def _scored_command(fs, name: str, help: str) -> argparse.ArgumentParser:
    """A filter subcommand that works on scores (from `filter score`) or scores a cohort first."""
    p = fs.add_parser(name, help=help)
    _common(p)
    _segmentor_opt(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scores", type=Path, help="scores.jsonl (or its folder) from `filter score`")
    src.add_argument("--cohort", type=Path, help="score this cohort first")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("filter", help="score synthetic tumors, discard poor ones, audit the decision")
    fs = p.add_subparsers(dest="filter_command", metavar="ACTION")

    t = fs.add_parser("train", help="train the discriminator (real vs synthetic tumor crops)")
    _common(t, model_required=False)
    t.add_argument("--real", nargs="+", required=True, type=Path, help="cohort(s) with real tumors")
    t.add_argument("--synthetic", nargs="*", default=[], metavar="[NAME=]PATH",
                   help="cohort(s) with synthetic tumors; NAME=PATH names the generator (per-generator AUC); "
                        "train.synthetic in the config lists more")
    t.add_argument("--out", required=True, type=Path, help="discriminator folder to write")
    t.set_defaults(func=run_train)

    c = fs.add_parser("calibrate", help="set the calibrated cutoff from real tumor cases the model never saw "
                                        "(rewrites <model>/calibration.json)")
    _common(c)
    c.add_argument("--real", nargs="+", required=True, type=Path,
                   help="cohort(s) of real tumor cases held out from training (e.g. this site's own)")
    c.add_argument("--check-fraction", type=float, default=0.5,
                   help="share of the given patients kept out of the reference to check the promised "
                        "false-reject rate at train.alpha_checks (0: all calibrate, nothing checked; default 0.5)")
    c.add_argument("--seed", type=int, default=0, help="seed of the reference/check split")
    c.set_defaults(func=run_calibrate)

    s = fs.add_parser("score", help="score every tumor and case of a cohort -> <out>/scores.jsonl")
    _common(s)
    _segmentor_opt(s)
    s.add_argument("--cohort", required=True, type=Path, help="synthetic cohort (any layout)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.set_defaults(func=run_score)

    a = _scored_command(fs, "apply", "decide and write the filtered manifest <out>/manifest.jsonl (deletes nothing)")
    a.add_argument("--out", required=True, type=Path, help="output folder (not the cohort itself)")
    a.set_defaults(func=run_apply)

    u = _scored_command(fs, "audit", "HTML report with figures and a JSON summary")
    u.add_argument("--out", required=True, type=Path, help="report folder (report.html, figures/, summary.json)")
    u.add_argument("--probe-cohort", type=Path, default=None, metavar="COHORT",
                   help="build the known-bad probes from this cohort's tumor cases (e.g. the real cohort); "
                        "default: the best-scoring cases of the scored cohort")
    u.set_defaults(func=run_audit)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _config(args):
    from cohort.config import config_dir, load_config
    from generative.quality.config import FilterConfig

    path = args.config
    if path is None:
        default = config_dir() / "generative" / "filter.yaml"
        path = default if default.exists() else None
    return load_config(FilterConfig, path, args.overrides)


def build_segmentor(run: Path | None, device: str = "cpu"):
    """The FreeTumor gate's segmentor (:func:`segmentation.predict.build_segmentor`), or None."""
    if run is None:
        return None
    from segmentation.predict import build_segmentor as build

    return build(run, device)


def _errors():
    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from generative.quality.policies import PolicyError

    return (CohortError, ConfigError, PolicyError)


def run_train(args) -> int:
    from generative.quality.train import train_discriminator

    try:
        out = train_discriminator(args.real, args.synthetic, _config(args), args.out)
    except _errors() as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    console.print(f"discriminator saved to {out}")
    return 0


def _scores(args, cfg, seg=None):
    from cohort.errors import BatchReport
    from generative.quality.apply import SCORES_NAME, read_scores, score_cohort

    if getattr(args, "scores", None) is not None:
        return read_scores(args.scores), BatchReport()
    report = BatchReport()
    return score_cohort(args.model, args.cohort, cfg, seg, Path(args.out) / SCORES_NAME, report,
                        gate_validation=getattr(args, "gate_validation", None)), report


def run_calibrate(args) -> int:
    from cohort.errors import BatchReport
    from generative.quality.calibrate import calibrate

    if not 0 <= args.check_fraction < 1:
        console.print(f"[red]error[/red] --check-fraction must be in [0, 1), got {args.check_fraction}")
        return 2
    report = BatchReport()
    try:
        cal = calibrate(args.model, args.real, _config(args), args.check_fraction, args.seed, report)
    except _errors() as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    src = cal["calibration_source"]
    console.print(f"calibrated on {src['n_reference']} real cases ({src['n_check']} kept to check) -> "
                  f"{Path(args.model) / 'calibration.json'}")
    for r in cal["alpha_checks"]:
        lo, hi = r["ci"]
        console.print(f"  alpha {r['alpha']:.2f}: cutoff {r['cutoff']:.3f}, false rejects on the check patients "
                      f"{100 * r['false_reject']:.0f} % (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %), "
                      f"{'holds' if r['holds'] else 'DOES NOT HOLD'}")
    return report_exit(report)


def run_score(args) -> int:
    try:
        cfg = _config(args)
        scores, report = _scores(args, cfg, build_segmentor(args.segmentor, args.device))
    except _errors() as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    n_t = sum(len(s.tumors) for s in scores)
    console.print(f"scored {len(scores)} cases ({n_t} tumors) -> {Path(args.out) / 'scores.jsonl'}")
    return report_exit(report)


def run_apply(args) -> int:
    from generative.quality.apply import apply_filter

    try:
        cfg = _config(args)
        scores, report = _scores(args, cfg, build_segmentor(args.segmentor, args.device))
        manifest = apply_filter(scores, args.model, args.out, cfg)
    except _errors() as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    import json

    from cohort.layouts import is_accepted

    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    n_acc = sum(1 for r in rows if is_accepted(r))  # the manifest's own case-level decision
    console.print(f"{n_acc} of {len(rows)} cases accepted -> {manifest}")
    return report_exit(report)


def run_audit(args) -> int:
    from generative.quality.audit import audit

    try:
        cfg = _config(args)
        seg = build_segmentor(args.segmentor, args.device)
        scores, report = _scores(args, cfg, seg)
        page = audit(scores, args.model, args.out, cfg, seg, probe_cohort=args.probe_cohort,
                     gate_validation=args.gate_validation)
    except _errors() as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    console.print(f"audit written to {page}")
    return report_exit(report)
