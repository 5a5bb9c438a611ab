"""Offline synthesis: a healthy cohort in, a synthetic tumor cohort out (AbdomenAtlas layout + manifest).

Each output case ``<source id>_<method>_<k>`` is drawn with a generator seeded
from (seed, source case id, k), so results do not depend on the order or on
which cases were already done: a killed run resumes where it stopped and
produces the same cohort. Bad source cases (unreadable, no organ, organ too
small) are reported and skipped. Lesions the source case already holds are kept
(new tumors go elsewhere in the organ) and listed in the sidecar's ``existing_lesions``.
"""

from __future__ import annotations

import csv
import errno
import io
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cohort import labels as L
from cohort.case import Case
from cohort.errors import BatchReport, CohortError
from cohort.io import clean_stale_temps, read_json, write_json, write_text
from cohort.layouts import case_dir, case_done, open_cohort, write_case, write_manifest
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM, measure_lesions
from cohort.progress import StepProgress
from generative.tumors.base import SynthesisError, Synthesizer, TumorSpec

SIZES_CSV = "tumors.csv"
SUMMARY_JSON = "synthesis_summary.json"

#: write errors after which no later case can be written either (disk full, quota, read-only):
#: the loop stops instead of computing cases it cannot keep
STOP_ERRNOS = frozenset(n for n in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS) if n is not None)


def case_rng(seed: int, case_id: str, k: int) -> np.random.Generator:
    """The generator of output ``k`` of source ``case_id``: independent of processing order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(case_id.encode()), int(k)]))


def output_id(source_id: str, method: str, k: int) -> str:
    return f"{source_id}_{method}_{k:02d}"


#: how the tumors of one output case are chosen: ``plan(case, rng) -> [TumorSpec, ...]``
Plan = Callable[[Case, np.random.Generator], list[TumorSpec]]


def pick_spec(specs: Sequence[TumorSpec], case: Case, rng: np.random.Generator) -> TumorSpec:
    """One spec among those whose organ the case has (uniformly); SynthesisError when none."""
    present = [s for s in specs if np.isin(case.label, L.organ_indices(s.organ)).any()]
    if not present:
        raise SynthesisError(f"none of the spec organs {sorted({s.organ for s in specs})} is in the label map")
    return present[int(rng.integers(len(present)))] if len(present) > 1 else present[0]


def one_of(specs: TumorSpec | Sequence[TumorSpec]) -> Plan:
    """The plan "one spec per output case, drawn among those whose organ the case has"."""
    specs = [specs] if isinstance(specs, TumorSpec) else list(specs)
    if not specs:
        raise ValueError("a synthesis plan needs at least one TumorSpec")
    return lambda case, rng: [pick_spec(specs, case, rng)]


def synthesize_case(case: Case, synthesizer: Synthesizer, specs: TumorSpec | Sequence[TumorSpec],
                    rng: np.random.Generator, out_id: str, seed: int, k: int) -> Case:
    """One synthetic case from one healthy case (each spec applied in turn), with its provenance sidecar.

    The sidecar schema is the same for every method: generator, seed, rng_key (seed, source
    case id, k), specs, tumors (one record per tumor), model_hash / sampler / steps (None for
    methods without them), synthesis (method details) and seconds.
    """
    specs = [specs] if isinstance(specs, TumorSpec) else list(specs)
    # a source that already holds lesions (the common augmentation case: real tumor-bearing scans)
    # keeps them: every maker places its tumors inside organ voxels, away from labelled lesions, and
    # the sidecar records the existing lesions beside the new ones
    existing = np.isin(case.label, L.LESION_LABELS)
    existing_records = [r.as_dict() for r in measure_lesions(case.label, case.spacing)] if existing.any() else []
    t0 = time.perf_counter()
    ct, label = case.ct.astype(np.float32, copy=False), case.label.astype(np.uint8, copy=False)
    records: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for spec in specs:
        res = synthesizer(ct, label, case.spacing, spec, rng)
        ct, label = res.ct, res.label
        records += res.records
        infos.append({key: v for key, v in res.info.items() if key != "seconds"})
    seconds = time.perf_counter() - t0
    if existing.any() and not np.array_equal(label[existing], case.label[existing]):
        raise SynthesisError(f"{synthesizer.name} overwrote existing lesion voxels of the source case")
    src = case.meta.get("source") if isinstance(case.meta.get("source"), dict) else {}
    first = infos[0] if infos else {}
    meta: dict[str, Any] = {
        "case_id": out_id,
        "kind": "synthetic",
        "source": {"dataset": src.get("dataset") or case.meta.get("dataset"), "case_id": case.case_id,
                   "path": case.meta.get("source_path")},
        "generator": synthesizer.name,
        "seed": int(seed),
        "rng_key": [int(seed), case.case_id, int(k)],
        "site": case.meta.get("site"),
        "model_hash": getattr(synthesizer, "model_hash", None) or None,
        "sampler": first.get("sampler"),
        "steps": first.get("steps"),
        "specs": [s.as_dict() for s in specs],
        "tumors": records,
        "existing_lesions": existing_records,
        "synthesis": infos[0] if len(infos) == 1 else infos,
        "filter": None,
        "seconds": round(seconds, 3),
    }
    return Case(out_id, ct, label, np.array(case.affine), meta)


def _check_supported(synthesizer: Synthesizer, specs: Sequence[TumorSpec]) -> None:
    """A registered maker asked for a tumor type it does not list is a ValueError before any case."""
    from generative.registry import check_supported, synthesizer_names

    name = getattr(synthesizer, "name", None)
    if name in synthesizer_names():
        check_supported(name, [s.organ for s in specs], "specs")


def synthesize_cohort(healthy_dir: str | Path, out_dir: str | Path, synthesizer: Synthesizer,
                      specs: TumorSpec | Sequence[TumorSpec] | Plan, seed: int = 0, n_per_case: int = 1,
                      limit: int | None = None, progress: bool = True, rank: int = 0, world_size: int = 1,
                      barrier: Callable[[], None] | None = None) -> BatchReport:
    """The one cohort loop of every tumor maker: ``n_per_case`` synthetic cases per healthy case.

    specs: one spec or several (one drawn per output case among the organs the case has),
        or a plan ``(case, rng) -> [TumorSpec, ...]`` (several tumors per case).
    rank / world_size: this process's shard; job j = (source case, k) belongs to rank
        ``j % world_size``, so the cohort is the same for any number of processes.
        ``barrier`` (e.g. accelerate's ``wait_for_everyone``) is called before rank 0 writes
        the cohort files.
    Output case ``<source id>_<method>_<k>`` draws from (seed, source case id, k) alone, so a
    killed run resumes where it stopped with the same result; finished cases are skipped.
    Rank 0 writes ``manifest.jsonl``, ``tumors.csv`` (one row per tumor with its size) and
    ``synthesis_summary.json`` at the end. Returns the :class:`BatchReport`.
    A write that fails for lack of space (or quota, or a read-only folder) fails its case, leaves
    no partial case folder, and stops this shard: the cases after it are reported as not
    attempted; other write errors fail only their case.
    """
    if not callable(specs) or isinstance(specs, TumorSpec):
        _check_supported(synthesizer, [specs] if isinstance(specs, TumorSpec) else list(specs))
    plan: Plan = specs if callable(specs) and not isinstance(specs, TumorSpec) else one_of(specs)  # type: ignore[arg-type]
    if n_per_case < 1:
        raise ValueError(f"n_per_case must be >= 1, got {n_per_case}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    out_dir = Path(out_dir)
    if Path(healthy_dir).resolve() == out_dir.resolve():
        raise CohortError(out_dir, "output folder is the healthy cohort itself; choose another --out")
    cohort = open_cohort(healthy_dir)
    report = BatchReport()
    if rank == 0:
        for cid, why in cohort.problems.items():
            report.fail(cid, why)
    refs = cohort.refs[:limit] if limit else cohort.refs
    if not refs:
        raise CohortError(healthy_dir, "the healthy cohort holds no cases")
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        clean_stale_temps(out_dir)  # what a killed run left half-written
    if barrier is not None:
        barrier()  # no rank writes before the stale temps are gone
    jobs = [(ref, k) for ref in refs for k in range(n_per_case)]
    mine = [j for i, j in enumerate(jobs) if i % world_size == rank]
    name = synthesizer.name
    desc = f"synthesize {name}" + (f" r{rank}/{world_size}" if world_size > 1 else "")
    loaded: dict[str, Case] = {}
    stopped, rest = "", []  # why the loop stopped early (a full disk) and the jobs it left
    with StepProgress(desc, len(mine), enabled=progress, unit="case") as bar:
        for i, (ref, k) in enumerate(mine):
            oid = output_id(ref.case_id, name, k)
            if case_done(out_dir, oid):
                report.skipped.append(oid)
                bar.advance()
                continue
            try:
                if ref.case_id not in loaded:
                    loaded.clear()  # one source case in memory
                    loaded[ref.case_id] = ref.load()
                case = loaded[ref.case_id]
                rng = case_rng(seed, ref.case_id, k)
                out = synthesize_case(case, synthesizer, plan(case, rng), rng, oid, seed, k)
            except (SynthesisError, CohortError, ValueError) as e:
                report.fail(oid, f"source {ref.case_id}: {e}")
                bar.advance()
                continue
            try:
                # a source in the AbdomenAtlas layout with per-organ masks gets them back, new lesions included
                per_organ = cohort.layout == "abdomenatlas" and (Path(ref.image).parent / "segmentations").is_dir()
                write_case(out, out_dir, per_organ_masks=per_organ)  # atomic: on any error no case folder and no temporary remain
            except (CohortError, ValueError) as e:
                report.fail(oid, f"source {ref.case_id}: {e}")
                bar.advance()
                continue
            except OSError as e:  # the output folder refused the write
                why = e.strerror or str(e)
                report.fail(oid, f"source {ref.case_id}: cannot write {case_dir(out_dir, oid)}: {why}")
                bar.advance()
                if e.errno in STOP_ERRNOS:  # full disk: every later case would fail the same way
                    stopped, rest = f"{why} (stopped after {oid})", mine[i + 1:]
                    break
                continue
            report.done.append(oid)
            bar.advance(info=f"{oid} {out.meta['seconds']:.1f}s")
    if stopped:  # every later case of this shard is reported, none is computed
        for ref, k in rest:
            oid = output_id(ref.case_id, name, k)
            if case_done(out_dir, oid):
                report.skipped.append(oid)
            else:
                report.fail(oid, f"not attempted: {out_dir}: {stopped}")
    if barrier is not None:
        barrier()
    if rank == 0:
        for what, write in (("manifest.jsonl", write_manifest), (SIZES_CSV, summarize_sizes)):
            try:
                write(out_dir)
            except OSError as e:  # the cases written so far stay valid; a rerun writes these files again
                report.fail(what, f"cannot write {out_dir / what}: {e.strerror or e}")
    return report


def size_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """One row per synthesized tumor of a cohort, from its case sidecars."""
    rows = []
    for d in sorted(Path(out_dir).iterdir()):
        side = d / "case.json"
        if not d.is_dir() or d.name.startswith(".") or not side.exists():
            continue
        meta = read_json(side)
        for t in meta.get("tumors") or []:
            rows.append({"case_id": meta.get("case_id", d.name), "generator": meta.get("generator"),
                         "organ": t.get("organ"), "label": t.get("label"), "voxels": t.get("voxels"),
                         "volume_ml": t.get("volume_ml"), "max_axial_diameter_mm": t.get("max_axial_diameter_mm"),
                         "early": t.get("early")})
    return rows


def summarize_sizes(out_dir: str | Path) -> dict[str, Any]:
    """Write ``tumors.csv`` and ``synthesis_summary.json`` (size distribution) for a cohort; return the summary."""
    out_dir = Path(out_dir)
    rows = size_rows(out_dir)
    buf = io.StringIO()
    fields = ["case_id", "generator", "organ", "label", "voxels", "volume_ml", "max_axial_diameter_mm", "early"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    write_text(out_dir / SIZES_CSV, buf.getvalue())
    diam = np.array([r["max_axial_diameter_mm"] for r in rows], dtype=float)
    vol = np.array([r["volume_ml"] for r in rows], dtype=float)
    cases = sorted({r["case_id"] for r in rows})
    summary: dict[str, Any] = {"cases_with_tumors": len(cases), "tumors": len(rows),
                               "early_tumors": int((diam <= EARLY_TUMOR_DIAMETER_MM).sum()) if len(rows) else 0,
                               "early_threshold_mm": EARLY_TUMOR_DIAMETER_MM}
    if len(rows):
        q = [0, 25, 50, 75, 100]
        summary["diameter_mm_quantiles"] = dict(zip(map(str, q), np.round(np.percentile(diam, q), 2).tolist()))
        summary["volume_ml_quantiles"] = dict(zip(map(str, q), np.round(np.percentile(vol, q), 3).tolist()))
        edges = [0, 10, 20, 30, 50, 1e9]
        hist = np.histogram(diam, bins=edges)[0]
        summary["diameter_histogram_mm"] = {f"{a:g}-{b:g}" if b < 1e9 else f">{a:g}": int(n)
                                            for a, b, n in zip(edges[:-1], edges[1:], hist)}
    write_json(out_dir / SUMMARY_JSON, summary)
    return summary
