"""Offline synthesis: a healthy cohort in, a synthetic tumor cohort out (AbdomenAtlas layout + manifest).

Each output case ``<source id>_<method>_<k>`` is drawn with a generator seeded
from (seed, source case id, k), so results do not depend on the order or on
which cases were already done: a killed run resumes where it stopped and
produces the same cohort. Bad source cases (unreadable, no organ, already
holding a lesion of the class, organ too small) are reported and skipped.
"""

from __future__ import annotations

import csv
import io
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cohort import labels as L
from cohort.case import Case
from cohort.errors import BatchReport, CohortError
from cohort.io import read_json, write_json, write_text
from cohort.layouts import case_done, open_cohort, write_case, write_manifest
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM
from generative.tumors.base import SynthesisError, Synthesizer, TumorSpec

SIZES_CSV = "tumors.csv"
SUMMARY_JSON = "synthesis_summary.json"


def case_rng(seed: int, case_id: str, k: int) -> np.random.Generator:
    """The generator of output ``k`` of source ``case_id``: independent of processing order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(case_id.encode()), int(k)]))


def output_id(source_id: str, method: str, k: int) -> str:
    return f"{source_id}_{method}_{k:02d}"


def pick_spec(specs: Sequence[TumorSpec], case: Case, rng: np.random.Generator) -> TumorSpec:
    """One spec among those whose organ the case has (uniformly); SynthesisError when none."""
    present = [s for s in specs if np.isin(case.label, L.organ_indices(s.organ)).any()]
    if not present:
        raise SynthesisError(f"none of the spec organs {sorted({s.organ for s in specs})} is in the label map")
    return present[int(rng.integers(len(present)))] if len(present) > 1 else present[0]


def synthesize_case(case: Case, synthesizer: Synthesizer, spec: TumorSpec, rng: np.random.Generator,
                    out_id: str, seed: int, k: int) -> Case:
    """One synthetic case from one healthy case, with its provenance sidecar."""
    lesion = L.lesion_index_for(spec.organ)
    if (case.label == lesion).any():
        raise SynthesisError(f"source case already holds {L.INDEX_TO_NAME[lesion]} voxels (not healthy for "
                             f"{spec.organ})")
    t0 = time.perf_counter()
    res = synthesizer(case.ct.astype(np.float32, copy=False), case.label.astype(np.uint8, copy=False), case.spacing,
                      spec, rng)
    seconds = time.perf_counter() - t0
    src = case.meta.get("source") if isinstance(case.meta.get("source"), dict) else {}
    meta: dict[str, Any] = {
        "case_id": out_id,
        "kind": "synthetic",
        "source": {"dataset": src.get("dataset") or case.meta.get("dataset"), "case_id": case.case_id,
                   "path": case.meta.get("source_path")},
        "generator": synthesizer.name,
        "seed": int(seed),
        "rng_key": [int(seed), case.case_id, int(k)],
        "site": case.meta.get("site"),
        "model_hash": None,
        "sampler": None,
        "steps": res.info.get("steps"),
        "spec": spec.as_dict(),
        "tumors": res.records,
        "synthesis": {key: v for key, v in res.info.items() if key != "seconds"},
        "filter": None,
        "seconds": round(seconds, 3),
    }
    return Case(out_id, res.ct, res.label, np.array(case.affine), meta)


def synthesize_cohort(healthy_dir: str | Path, out_dir: str | Path, synthesizer: Synthesizer,
                      specs: TumorSpec | Sequence[TumorSpec], seed: int = 0, n_per_case: int = 1,
                      limit: int | None = None, progress: bool = True) -> BatchReport:
    """Synthesize ``n_per_case`` tumor cases per healthy case of ``healthy_dir`` into ``out_dir``.

    specs: one spec or several (one drawn per output case). Already written cases are
    skipped (resume). Writes ``manifest.jsonl``, ``tumors.csv`` (one row per tumor with
    its size) and ``synthesis_summary.json`` at the end. Returns the :class:`BatchReport`.
    """
    specs = [specs] if isinstance(specs, TumorSpec) else list(specs)
    if not specs:
        raise ValueError("synthesize_cohort needs at least one TumorSpec")
    if n_per_case < 1:
        raise ValueError(f"n_per_case must be >= 1, got {n_per_case}")
    out_dir = Path(out_dir)
    if Path(healthy_dir).resolve() == out_dir.resolve():
        raise CohortError(out_dir, "output folder is the healthy cohort itself; choose another --out")
    cohort = open_cohort(healthy_dir)
    report = BatchReport()
    for cid, why in cohort.problems.items():
        report.fail(cid, why)
    refs = cohort.refs[:limit] if limit else cohort.refs
    if not refs:
        raise CohortError(healthy_dir, "the healthy cohort holds no cases")
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = (TextColumn("[bold]synthesize {task.fields[method]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[case]}"), TimeRemainingColumn())
    with Progress(*cols, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task("cases", total=len(refs) * n_per_case, method=synthesizer.name, case="")
        for ref in refs:
            todo = [k for k in range(n_per_case) if not case_done(out_dir, output_id(ref.case_id, synthesizer.name, k))]
            for k in set(range(n_per_case)) - set(todo):
                report.skipped.append(output_id(ref.case_id, synthesizer.name, k))
            bar.advance(task, n_per_case - len(todo))
            if not todo:
                continue
            try:
                case = ref.load()
            except CohortError as e:
                for k in todo:
                    report.fail(output_id(ref.case_id, synthesizer.name, k), e)
                bar.advance(task, len(todo))
                continue
            for k in todo:
                oid = output_id(ref.case_id, synthesizer.name, k)
                bar.update(task, case=oid)
                rng = case_rng(seed, ref.case_id, k)
                try:
                    spec = pick_spec(specs, case, rng)
                    write_case(synthesize_case(case, synthesizer, spec, rng, oid, seed, k), out_dir)
                    report.done.append(oid)
                except (SynthesisError, CohortError, ValueError) as e:
                    report.fail(oid, f"source {ref.case_id}: {e}")
                bar.advance(task)
    write_manifest(out_dir)
    summarize_sizes(out_dir)
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
