"""`tumorgen phantoms`: write a procedural phantom cohort (the embedded default data)."""

from __future__ import annotations

import argparse

from tumorgen.commands._common import console, report_exit


def _floats(text: str) -> tuple[float, ...] | float:
    parts = [float(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected one number or three (e.g. 1.5 or 0.8,0.8,2.5), got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _ints(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected one size or three (e.g. 96,96,64), got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def register(subparsers) -> None:
    from cohort.phantom.sites import SITES

    p = subparsers.add_parser(
        "phantoms", help="write a phantom CT cohort (procedural abdomen with known tumors)",
        description="Write N procedural abdominal CT cases from one scanner site in the AbdomenAtlas layout "
                    "plus manifest.jsonl. Deterministic in (seed, site, case index); re-running resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--site", default="A", help=f"scanner site: {', '.join(f'{k} ({v.description})' for k, v in SITES.items())}")
    p.add_argument("--sites-file", default=None, metavar="YAML",
                   help="extra site definitions (e.g. configs/demo/phantom_sites.yaml); --site may then name one")
    p.add_argument("--n", type=int, default=40, help="number of cases")
    p.add_argument("--tumor-fraction", type=float, default=0.5, help="fraction of cases with tumors (the rest are healthy controls)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed")
    p.add_argument("--spacing", type=_floats, default=None, metavar="MM",
                   help="voxel spacing in mm, one value or x,y,z (default: the site's native spacing; 1.5 gives 96x96x64)")
    p.add_argument("--fov", type=_floats, default=None, metavar="MM", help="field of view in mm, one value or x,y,z (default: the site's, 144,144,96)")
    p.add_argument("--shape", type=_ints, default=None, metavar="X,Y,Z", help="voxel grid size (overrides the fov)")
    p.add_argument("--organs", default="liver,pancreas,kidney",
                   help="organ types that get tumors, comma-separated: liver, pancreas, kidney, colon, esophagus, "
                        "uterus (the last three select the full anatomy; male patients get no uterine tumors)")
    p.add_argument("--anatomy", choices=("auto", "basic", "full"), default="auto",
                   help="basic: the abdomen of phantom version 1; full: plus a haustral colon, the esophagus and, "
                        "in women, the uterus; auto: full when --organs names colon, esophagus or uterus")
    p.add_argument("--sex", choices=("random", "F", "M"), default="random",
                   help="patient sex (random: drawn per case; F when uterus is the only tumor organ)")
    p.add_argument("--out", required=True, help="output cohort folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cohort.phantom import generate_cohort, get_site, load_sites

    try:
        extra = load_sites(args.sites_file) if args.sites_file else None
        site = get_site(args.site, extra)
    except ValueError as e:  # ConfigError is a ValueError
        console.print(f"[red]error:[/red] {e}")
        return 2
    organs = tuple(o.strip() for o in args.organs.split(",") if o.strip())
    console.print(f"phantoms: site {site.name} ({site.description}), n={args.n}, tumor fraction {args.tumor_fraction}, "
                  f"seed {args.seed} -> {args.out}")
    try:
        report = generate_cohort(args.out, site, args.n, tumor_fraction=args.tumor_fraction, seed=args.seed,
                                 spacing=args.spacing, shape=args.shape, organs=organs, fov_mm=args.fov,
                                 progress=not args.no_progress,
                                 anatomy=None if args.anatomy == "auto" else args.anatomy,
                                 sex=None if args.sex == "random" else args.sex)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    return report_exit(report)
