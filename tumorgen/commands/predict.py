"""`tumorgen predict --model RUN --input COHORT_OR_FILE --out DIR`: segment cases, written on their original grids."""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import console, report_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a cohort or a CT file with a trained model")
    p.add_argument("--model", required=True, type=Path, help="training run folder or its model/ folder")
    p.add_argument("--input", required=True, type=Path, help="cohort (any layout), manifest or NIfTI file")
    p.add_argument("--out", required=True, type=Path, help="output folder: <case id>.nii.gz per case")
    p.add_argument("--tta", action="store_true", help="average over the 8 flip combinations (slower, steadier)")
    p.add_argument("--save-prob", action="store_true", help="also write <case id>_tumor_prob.nii.gz (float32)")
    p.add_argument("--skip-existing", action="store_true", help="skip cases whose output already exists")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--min-lesion-mm3", type=float, default=None, metavar="MM3",
                   help="give predicted lesion components smaller than this back to the tissue around them "
                        "(default: the model's infer.min_lesion_mm3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cohort.errors import CohortError
    from segmentation.predict import predict_cohort

    try:
        report = predict_cohort(args.model, args.input, args.out, tta=args.tta, save_prob=args.save_prob,
                                overwrite=not args.skip_existing, device=args.device,
                                min_lesion_mm3=args.min_lesion_mm3)
    except CohortError as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    return report_exit(report)
