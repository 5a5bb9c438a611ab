"""Synthetic cohorts: insert diffusion-generated tumors into every healthy case.

    tumorgen sample --healthy COHORT --model DIR --spec configs/generative/sample.yaml --out DIR
    accelerate launch --num_processes 2 -m generative.diffusion.sample --healthy ...   (sharded, GPUs)
    torchrun --nproc_per_node 2 -m generative.diffusion.sample --healthy ...           (sharded, CPU processes)

Jobs are (source case, k) for k < ``cases_per_source``; job j belongs to rank
``j % world_size``. Each job's randomness comes from (spec seed, source case id,
k) only, so the cohort is the same whatever the number of processes and
whether the run was interrupted: finished cases (``cohort.layouts.case_done``)
are skipped, and cases are written atomically (``write_case``), so nothing is
ever half-written. Bad source cases are reported and skipped; the returned
:class:`cohort.errors.BatchReport` says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cohort import labels as L
from cohort.case import Case
from cohort.config import load_config
from cohort.errors import BatchReport, CohortError
from cohort.layouts import case_done, open_cohort, write_case, write_manifest
from generative.diffusion.config import SampleSpec
from generative.diffusion.inpaint import DiffusionSynthesizer, InpaintSettings
from generative.diffusion.models import pipeline_hash
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.tumors.base import SynthesisError, TumorSpec
from generative.tumors.shapes import sample_size_class

console = Console(stderr=True)


def job_rng(seed: int, case_id: str, k: int) -> np.random.Generator:
    """Randomness of one synthetic case, from (seed, source case id, k) alone."""
    return np.random.default_rng([int(seed), zlib.crc32(case_id.encode()), int(k)])


def synthetic_id(source_id: str, k: int) -> str:
    return f"{source_id}_diff{k:02d}"


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


def make_case(synth: DiffusionSynthesizer, source: Case, k: int, spec: SampleSpec, model_hash: str,
              source_path: str) -> Case:
    """One synthetic case from one healthy case, with its provenance sidecar."""
    t0 = time.time()
    rng = job_rng(spec.seed, source.case_id, k)
    ct, label = source.ct, source.label
    records, plan = [], tumor_plan(spec, source.label, rng)
    for ts in plan:
        res = synth(ct, label, source.spacing, ts, rng)
        ct, label = res.ct, res.label
        records += res.records
    cid = synthetic_id(source.case_id, k)
    meta = {
        "case_id": cid, "kind": "synthetic", "generator": "diffusion",
        "source": {"dataset": (source.meta.get("source") or {}).get("dataset"), "case_id": source.case_id,
                   "path": source_path},
        "site": source.meta.get("site"), "seed": spec.seed, "seed_key": [spec.seed, source.case_id, k],
        "model_hash": model_hash,
        "sampler": spec.sampler, "steps": spec.steps, "tumors": records,
        "tumor_specs": [t.as_dict() for t in plan], "seconds": round(time.time() - t0, 3),
    }
    return Case(cid, ct, label, source.affine, meta)


def sample_cohort(healthy: str | Path, model: str | Path, spec: SampleSpec | str | Path, out: str | Path,
                  overrides: list[str] | tuple[str, ...] = (), rank: int | None = None, world_size: int | None = None,
                  progress: bool = True, device: str | None = None) -> BatchReport:
    """Write a synthetic cohort (AbdomenAtlas layout + manifest) under ``out``.

    rank / world_size: this process's shard; by default from accelerate's process state
    (1 process unless started with ``accelerate launch`` on GPUs or ``torchrun`` on CPU).
    """
    spec = spec if isinstance(spec, SampleSpec) else load_config(SampleSpec, spec, list(overrides))
    state = None
    if rank is None or world_size is None:
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu")
        rank, world_size = state.process_index, state.num_processes
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    report = BatchReport()
    pipe = LatentDiffusionPipeline.from_pretrained(model, dev)
    mhash = pipeline_hash(model)
    settings = InpaintSettings(sampler=spec.sampler, steps=spec.steps, roi_size=list(spec.roi_size),
                               feather_mm=spec.feather_mm, margin_mm=spec.margin_mm, size_mix=dict(spec.size_mix),
                               early_fraction=spec.early_fraction or None, mixed_precision=spec.mixed_precision,
                               tile_latent=spec.tile_latent, latent_blend=spec.latent_blend)
    synth = DiffusionSynthesizer(pipe, settings, mhash)
    cohort = open_cohort(healthy)
    refs = cohort.refs[: spec.max_sources] if spec.max_sources else cohort.refs
    if rank == 0:
        for cid, why in cohort.problems.items():
            report.fail(cid, why)
    jobs = [(ref, k) for ref in refs for k in range(spec.cases_per_source)]
    mine = [j for i, j in enumerate(jobs) if i % world_size == rank]
    bar = Progress(TextColumn(f"[bold]sample r{rank}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[msg]}"), console=console, disable=not progress)
    loaded: dict[str, Case | None] = {}
    with bar:
        task = bar.add_task("sample", total=len(mine), msg="")
        for ref, k in mine:
            cid = synthetic_id(ref.case_id, k)
            if case_done(out, cid):
                report.skipped.append(cid)
                bar.advance(task)
                continue
            try:
                if ref.case_id not in loaded:
                    loaded.clear()  # keep one source case in memory
                    loaded[ref.case_id] = ref.load()
                case = make_case(synth, loaded[ref.case_id], k, spec, mhash, str(ref.image))
                write_case(case, out)
                report.done.append(cid)
                bar.update(task, advance=1, msg=f"{cid} {case.meta['seconds']:.1f}s")
            except (CohortError, SynthesisError, ValueError) as e:
                report.fail(cid, f"source {ref.case_id}: {e}")
                bar.advance(task)
    if state is not None:
        state.wait_for_everyone()
    if rank == 0:
        write_manifest(out)
    if progress and report.done:
        secs = [json.loads((out / c / "case.json").read_text())["seconds"] for c in report.done]
        console.print(f"rank {rank}: {len(report.done)} cases in {sum(secs):.1f} s, {np.mean(secs):.2f} s per case "
                      f"({spec.sampler}, {spec.steps} steps)")
    if world_size > 1:
        console.print(f"rank {rank} of {world_size}: {len(mine)} of {len(jobs)} jobs, {len(report.done)} written, "
                      f"{len(report.skipped)} already done")
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
