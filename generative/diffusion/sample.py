"""Synthetic cohorts: insert diffusion-generated tumors into every healthy case.

    tumorgen sample --healthy COHORT --model DIR --spec configs/generative/sample.yaml --out DIR
    accelerate launch --num_processes 2 -m generative.diffusion.sample --healthy ...   (sharded, GPUs)
    torchrun --nproc_per_node 2 -m generative.diffusion.sample --healthy ...           (sharded, CPU processes)

The loop itself is the one every tumor maker shares
(:func:`generative.tumors.offline.synthesize_cohort`): jobs are (source case, k) for
k < ``cases_per_source``; job j belongs to rank ``j % world_size``; each job's
randomness comes from (spec seed, source case id, k) only, so the cohort is the same
whatever the number of processes and whether the run was interrupted. Bad source
cases are reported and skipped; the returned :class:`cohort.errors.BatchReport` says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from cohort import labels as L
from cohort.config import load_config
from cohort.errors import BatchReport
from generative.diffusion.config import DiffusionMakerConfig, SampleSpec
from generative.registry import build_synthesizer
from generative.tumors.base import SynthesisError, TumorSpec
from generative.tumors.offline import synthesize_cohort
from generative.tumors.shapes import sample_size_class

console = Console(stderr=True)


def tumor_plan(spec: SampleSpec, label: np.ndarray, rng: np.random.Generator) -> list[TumorSpec]:
    """The tumors of one case: a count in [tumors_min, tumors_max], each in an organ type of
    ``spec.organs`` present in the case, with a size class drawn from the spec's mix."""
    present = [o for o in spec.organs if np.isin(label, L.organ_indices(o)).any()]
    if not present:
        raise SynthesisError(f"none of the organs {spec.organs} is in the label map")
    n = int(rng.integers(spec.tumors_min, spec.tumors_max + 1))
    early = spec.early_fraction if spec.early_fraction > 0 else None
    return [TumorSpec(organ=str(rng.choice(present)), size=sample_size_class(rng, spec.size_mix, early), count=1)
            for _ in range(n)]


def sample_plan(spec: SampleSpec):
    """The cohort loop's plan for a sample spec: ``(case, rng) -> [TumorSpec, ...]``."""
    return lambda case, rng: tumor_plan(spec, case.label, rng)


def sample_cohort(healthy: str | Path, model: str | Path, spec: SampleSpec | str | Path, out: str | Path,
                  overrides: list[str] | tuple[str, ...] = (), rank: int | None = None, world_size: int | None = None,
                  progress: bool = True, device: str | None = None) -> BatchReport:
    """Write a synthetic cohort (AbdomenAtlas layout + manifest) under ``out``.

    A front door to the one cohort loop (:func:`generative.tumors.offline.synthesize_cohort`)
    with the registry's "diffusion" synthesizer and the spec's tumor plan; output cases are
    ``<source>_diffusion_<k>``. rank / world_size: this process's shard; by default from
    accelerate's process state (1 process unless started with ``accelerate launch`` on GPUs
    or ``torchrun`` on CPU).
    """
    spec = spec if isinstance(spec, SampleSpec) else load_config(SampleSpec, spec, list(overrides))
    state = None
    if rank is None or world_size is None:
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu")
        rank, world_size = state.process_index, state.num_processes
    synth = build_synthesizer("diffusion", DiffusionMakerConfig(model=str(model), device=device or "",
                                                                **dataclasses.asdict(spec.inpaint)))
    t0 = time.perf_counter()
    report = synthesize_cohort(healthy, out, synth, sample_plan(spec), seed=spec.seed,
                               n_per_case=spec.cases_per_source, limit=spec.max_sources or None, progress=progress,
                               rank=rank, world_size=world_size,
                               barrier=state.wait_for_everyone if state is not None else None)
    if progress and report.done:
        sec = time.perf_counter() - t0
        console.print(f"rank {rank}: {len(report.done)} cases in {sec:.1f} s, {sec / len(report.done):.2f} s per case "
                      f"({spec.inpaint.sampler}, {spec.inpaint.steps} steps)")
    if world_size > 1:
        console.print(f"rank {rank} of {world_size}: {len(report.done)} written, {len(report.skipped)} already done")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generative.diffusion.sample", description="Write a synthetic cohort.")
    p.add_argument("--healthy", required=True, help="cohort of healthy cases (any layout)")
    p.add_argument("--model", required=True, help="ControlNet pipeline folder (controlnet stage's model/)")
    p.add_argument("--spec", default=None, help="YAML of generative.diffusion.config.SampleSpec")
    p.add_argument("--out", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = sample_cohort(args.healthy, args.model, args.spec, args.out, args.overrides,
                           progress=not args.no_progress, device=args.device)
    console.print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
