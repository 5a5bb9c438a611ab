"""`tumorgen generator eval`: quality numbers of a trained generator; `tumorgen generator calibrate`: its draft calibration."""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generator", help="inspect the diffusion generator (eval, calibrate)")
    sub = p.add_subparsers(dest="generator_command", metavar="SUBCOMMAND")
    e = sub.add_parser(
        "eval",
        help="autoencoder PSNR/SSIM; HU statistics and Frechet distance of synthetic vs real tumors",
        description="Reconstruction PSNR/SSIM of the autoencoder on crops of REAL; HU mean/std inside the tumors of "
                    "REAL and SYNTHETIC; the Frechet distance between their tumor patches in the features of a small "
                    "3D CNN trained here on REAL (tumor vs healthy patches). Writes generator_eval.json/.md to OUT.",
    )
    e.add_argument("--model", type=Path, default=None, help="model folder holding autoencoder/ (optional)")
    e.add_argument("--real", required=True, type=Path, metavar="COHORT", help="real cohort with tumors")
    e.add_argument("--synthetic", type=Path, default=None, metavar="COHORT", help="synthetic cohort")
    e.add_argument("--heldout", type=Path, default=None, metavar="COHORT",
                   help="real tumors kept out of the feature network's training: the yardstick (FD, tumor rate)")
    e.add_argument("--out", type=Path, default=None, metavar="DIR")
    e.add_argument("--recon-crops", type=int, default=8)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_eval)
    c = sub.add_parser(
        "calibrate",
        help="fit the draft calibration of a model from a cohort it sampled (generative.diffusion.calibration)",
        description="Reads the tumor provenance of SYNTHETIC (sampled by MODEL with inpaint.draft_strength < 1): per "
                    "tumor the attributes its draft was drawn with and those its output measures, and writes them "
                    "with their residuals to OUT; sampling with --set inpaint.draft_calibration=OUT drafts each tumor "
                    "with the asked attributes minus the median residual of the K calibration tumors nearest to them. "
                    "Prints the leave-one-out check. Sample the calibration cohort with another seed than the cohort "
                    "you will judge, at least 2 K tumors.",
    )
    c.add_argument("--model", required=True, type=Path, help="the ControlNet pipeline folder the samples came from")
    c.add_argument("--synthetic", required=True, type=Path, metavar="COHORT", help="a cohort sampled by MODEL")
    c.add_argument("--out", required=True, type=Path, metavar="FILE", help="the calibration JSON to write")
    c.add_argument("--attributes", nargs="+", default=None, metavar="NAME",
                   help="attributes to calibrate (default: contrast_hu rim_hu)")
    c.add_argument("--k", type=int, default=None, help="neighbours per correction (default 12)")
    c.set_defaults(func=run_calibrate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_eval(args: argparse.Namespace) -> int:
    from cohort.errors import CohortError
    from generative.diffusion.evaluate import evaluate_generator

    try:
        rep = evaluate_generator(args.model, args.real, args.synthetic, args.out, args.recon_crops, args.seed,
                                 heldout=args.heldout)
    except CohortError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    print(rep.markdown())
    return 1 if rep.failed else 0


def run_calibrate(args: argparse.Namespace) -> int:
    from cohort.errors import BatchReport, CohortError
    from generative.diffusion.calibration import ATTRIBUTES, K, calibrate_cohort
    from generative.diffusion.models import pipeline_hash

    if not (args.model / "controlnet").is_dir():
        console.print(f"[red]error:[/red] {args.model}: not a ControlNet pipeline folder (no controlnet/ in it)")
        return 2
    report = BatchReport()
    try:
        cal = calibrate_cohort(args.synthetic, pipeline_hash(args.model), tuple(args.attributes or ATTRIBUTES),
                               args.k or K, report)
    except (CohortError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    cal.write(args.out)
    for a, f in cal.summary.items():
        console.print(f"{a}: {f['n']} tumors; measured - drafted: mean {f['bias_before']:+.2f}, median |.| "
                      f"{f['median_abs_before']:.2f}; corrected (leave-one-out): mean {f['loo_bias_after']:+.2f}, "
                      f"median |.| {f['loo_median_abs_after']:.2f}")
    console.print(f"wrote {args.out}")
    if report.failed:
        console.print(report.summary())
        return 1
    return 0
