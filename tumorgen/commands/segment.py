"""`tumorgen segment train`: train tumor segmentation on real + synthetic cohorts.

Resolves a named on-the-fly synthesizer (``onthefly: {method: ca, ...}``) into
an object here, because only ``tumorgen`` composes the generators with
segmentation. For several processes: ``accelerate launch -m tumorgen.cli segment train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path
from typing import Any

from tumorgen.commands._common import add_set_argument, console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="train tumor segmentation (MONAI SegResNet by default)")
    ssub = p.add_subparsers(dest="segment_command", metavar="ACTION")
    tr = ssub.add_parser("train", help="train on the sources of a config (real, synthetic, filtered manifests)")
    tr.add_argument("--config", type=Path, default=None, help="configs/segmentation/<name>.yaml (default: the paper recipe)")
    tr.add_argument("--run-dir", "--out", dest="run_dir", type=Path, default=None,
                    help="run folder (default runs/segmentation/<config name>); the model lands in RUN/model")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    add_set_argument(tr)
    tr.set_defaults(func=run_train)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def resolve_synthesizer(method: str, params: dict[str, Any]) -> tuple[Any, Any]:
    """(synthesizer, spec_for) for a named method.

    ``params`` keys that are :class:`generative.tumors.base.TumorSpec` fields
    (size, diameter_mm, steps, count) shape every tumor; the rest configure the
    synthesizer (its ``<Name>Config`` dataclass).
    """
    from generative.tumors.base import TumorSpec

    spec_keys = {f.name for f in dataclasses.fields(TumorSpec)} - {"organ"}
    spec_kw = {k: v for k, v in params.items() if k in spec_keys}
    synth_kw = {k: v for k, v in params.items() if k not in spec_keys}
    tumors = importlib.import_module("generative.tumors")
    try:
        synth = tumors.make_synthesizer(method)
        if synth_kw:
            # the synthesizer's own config dataclass (CAConfig, RulesConfig) takes the remaining params
            cfg_cls = type(synth.config)
            known = {f.name for f in dataclasses.fields(cfg_cls)}
            unknown = sorted(set(synth_kw) - known)
            if unknown:
                raise ValueError(f"onthefly.params: unknown key(s) {unknown} for {cfg_cls.__name__} or TumorSpec; "
                                 f"known: {sorted(known | spec_keys)}")
            synth = tumors.make_synthesizer(method, cfg_cls(**synth_kw))
    except ValueError as e:
        raise SystemExit(f"onthefly: {e}") from None

    def spec_for(organ: str, rng) -> Any:
        return TumorSpec(organ=organ, **spec_kw)

    return synth, spec_for


def run_train(args: argparse.Namespace) -> int:
    from cohort.config import ConfigError
    from cohort.errors import CohortError
    from segmentation.config import load_seg_config
    from segmentation.train import train_segmentation

    try:
        cfg = load_seg_config(args.config, args.overrides)
    except ConfigError as e:
        console.print(f"[red]config error[/red] {e}")
        return 2
    synth = spec_for = None
    if cfg.onthefly.method is not None:
        synth, spec_for = resolve_synthesizer(cfg.onthefly.method, dict(cfg.onthefly.params))
    run_dir = args.run_dir or Path("runs/segmentation") / (args.config.stem if args.config else "default")
    try:
        model = train_segmentation(cfg, run_dir, resume=args.resume, synthesizer=synth, spec_for=spec_for,
                                   show=not args.quiet)
    except (CohortError, ConfigError) as e:
        console.print(f"[red]error[/red] {e}")
        return 2
    console.print(f"model: {model}  (per-source counts: {Path(run_dir) / 'source_counts.json'})")
    return 0
