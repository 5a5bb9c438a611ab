"""`tumorgen train`: one stage of the latent diffusion model on this machine (one process).

Train one stage (autoencoder -> diffusion -> controlnet; each later stage names the previous stage's
model folder in init_from). Writes config.yaml, logs/ (TensorBoard), checkpoints/ and model/ under the
run folder. For several processes or GPUs use ``accelerate launch -m generative.train`` with the same
arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cohort.runs import add_rerun_arguments
from tumorgen.commands._common import add_command, add_set_argument, console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "train", __doc__, help="train the generator: autoencoder, latent diffusion UNet or ControlNet")
    p.add_argument("--stage", required=True, choices=["autoencoder", "diffusion", "controlnet"])
    p.add_argument("--config", required=True, type=Path, help="YAML (e.g. configs/generative/autoencoder.yaml)")
    p.add_argument("--run-dir", type=Path, default=None, help="run folder (default: <output_dir>/<stage>)")
    add_rerun_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from generative.diffusion.perceptual import PerceptualWeightsMissing
    from generative.train import train_stage

    try:
        out = train_stage(args.stage, args.config, args.run_dir, args.resume, args.overrides, not args.quiet,
                          overwrite=args.overwrite)
    except (ConfigError, CohortError, PerceptualWeightsMissing, ValueError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        return 2
    console.print(f"model written to {out}")
    return 0
