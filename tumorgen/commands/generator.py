"""`tumorgen generator eval`: quality numbers of a trained generator."""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generator", help="inspect the diffusion generator (eval)")
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
