"""`tumorgen export nnunet`: write real + synthetic cohorts as an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from tumorgen.commands._common import add_set_argument, console, report_exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export cohorts for other tools")
    esub = p.add_subparsers(dest="export_command", metavar="FORMAT")
    nn = esub.add_parser("nnunet", help="nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)")
    nn.add_argument("--sources", nargs="+", default=[], metavar="SPEC",
                    help="cohorts: a path, or name=real,path=DIR,weight=1[,kind=real][,accepted_only=true]"
                         "[,max_cases=N]; weights 1 and 3 export real : synthetic = 1 : 3")
    nn.add_argument("--config", type=Path, default=None,
                    help="take sources and classes from a segmentation config (the same mixing spec as training)")
    nn.add_argument("--classes", nargs="+", default=None,
                    help="label classes in order (vocabulary names or organ types); default: the config's")
    nn.add_argument("--dataset-id", required=True, type=int, help="nnU-Net dataset id, 1-999")
    nn.add_argument("--name", default="TumorGen", help="dataset name (DatasetNNN_<name>)")
    nn.add_argument("--out", required=True, type=Path, help="nnUNet_raw folder")
    nn.add_argument("--seed", type=int, default=0, help="seed of the case subsets")
    add_set_argument(nn)
    nn.set_defaults(func=run_nnunet)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_nnunet(args: argparse.Namespace) -> int:
    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from segmentation.config import SegConfig, load_seg_config
    from segmentation.export import check_nnunet_dataset, export_nnunet, parse_source_spec, write_export_record

    try:
        cfg = load_seg_config(args.config, args.overrides) if args.config else SegConfig()
        sources = [parse_source_spec(s) for s in args.sources] or list(cfg.sources)
        classes = args.classes or list(cfg.classes)
        result = export_nnunet(sources, classes, args.dataset_id, args.out, name=args.name, seed=args.seed)
    except (ConfigError, CohortError, ValueError) as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    write_export_record(result, result.root / "tumorgen_export.json")
    check = check_nnunet_dataset(result.root)
    console.print(f"{result.root}: {', '.join(f'{k} {v}' for k, v in result.counts.items())} cases")
    for p in check.problems:
        console.print(f"[red]invalid[/red] {p}")
    code = report_exit(result.report)
    return code or (0 if check.ok else 1)
