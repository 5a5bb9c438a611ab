"""`tumorgen cohort info`: what a cohort holds (cases, spacing, organs, tumors and their sizes)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cohort import labels as L
from cohort.errors import BatchReport, CohortError
from cohort.layouts import open_cohort
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM, measure_lesions


@dataclass
class CohortSummary:
    path: str
    layout: str
    n_cases: int = 0
    kinds: Counter = field(default_factory=Counter)
    sites: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    organ_cases: Counter = field(default_factory=Counter)  # organ -> cases containing it
    tumor_cases: Counter = field(default_factory=Counter)  # lesion class -> cases with >= 1
    tumor_diameters: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    tumor_volumes_ml: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def as_dict(self) -> dict[str, Any]:
        tumors = {}
        for name, d in self.tumor_diameters.items():
            arr = np.array(d)
            tumors[name] = {
                "cases": self.tumor_cases[name],
                "lesions": len(d),
                "early_lesions": int((arr <= EARLY_TUMOR_DIAMETER_MM).sum()),
                "diameter_mm_median": round(float(np.median(arr)), 2),
                "diameter_mm_min": round(float(arr.min()), 2),
                "diameter_mm_max": round(float(arr.max()), 2),
                "volume_ml_median": round(float(np.median(self.tumor_volumes_ml[name])), 3),
            }
        return {
            "path": self.path,
            "layout": self.layout,
            "cases": self.n_cases,
            "kinds": dict(self.kinds),
            "sites": dict(self.sites),
            "spacing_mm": {k: v for k, v in self.spacings.most_common()},
            "shape_min": [int(v) for v in np.min(self.shapes, axis=0)] if self.shapes else None,
            "shape_max": [int(v) for v in np.max(self.shapes, axis=0)] if self.shapes else None,
            "organs": dict(sorted(self.organ_cases.items(), key=lambda kv: L.NAME_TO_INDEX[kv[0]])),
            "tumors": tumors,
        }


def summarize(path: str | Path, mapping: Any = None, report: BatchReport | None = None,
              progress: bool = True) -> CohortSummary:
    """Read every case of a cohort and count organs, tumors and sizes. Bad cases go into ``report``."""
    from rich.progress import track

    cohort = open_cohort(path, mapping=mapping)
    report = report if report is not None else BatchReport()
    s = CohortSummary(str(path), cohort.layout)
    refs = cohort.refs
    for cid, why in cohort.problems.items():
        report.fail(cid, why)
    it = track(refs, description="reading cases", transient=True) if progress else refs
    for ref in it:
        try:
            case = ref.load()
        except CohortError as e:
            report.fail(ref.case_id, e)
            continue
        s.n_cases += 1
        report.done.append(ref.case_id)
        s.kinds[case.meta.get("kind", "real")] += 1
        if case.meta.get("site"):
            s.sites[case.meta["site"]] += 1
        s.spacings["x".join(f"{v:.2f}" for v in case.spacing)] += 1
        s.shapes.append(case.shape)
        present = np.unique(case.label)
        for v in present:
            if 0 < v < L.LESION_LABELS[0]:
                s.organ_cases[L.INDEX_TO_NAME[int(v)]] += 1
        for rec in measure_lesions(case.label, case.spacing):
            s.tumor_diameters[rec.name].append(rec.max_axial_diameter_mm)
            s.tumor_volumes_ml[rec.name].append(rec.volume_ml)
        for v in present:
            if int(v) in L.LESION_LABELS:
                s.tumor_cases[L.INDEX_TO_NAME[int(v)]] += 1
    return s


def render(summary: CohortSummary) -> str:
    """A plain-text table for the terminal."""
    d = summary.as_dict()
    lines = [f"cohort {d['path']} ({d['layout']}): {d['cases']} cases; kinds {d['kinds']}"
             + (f"; sites {d['sites']}" if d["sites"] else ""),
             f"spacing (mm): {d['spacing_mm']}",
             f"shape: {d['shape_min']} .. {d['shape_max']}",
             "organs (cases containing): " + ", ".join(f"{k} {v}" for k, v in d["organs"].items())]
    if d["tumors"]:
        lines.append(f"{'tumor class':<20}{'cases':>6}{'lesions':>8}{'early<=20mm':>12}{'diam med':>10}{'min':>7}{'max':>7}{'vol med mL':>11}")
        for name, t in d["tumors"].items():
            lines.append(f"{name:<20}{t['cases']:>6}{t['lesions']:>8}{t['early_lesions']:>12}{t['diameter_mm_median']:>10}"
                         f"{t['diameter_mm_min']:>7}{t['diameter_mm_max']:>7}{t['volume_ml_median']:>11}")
    else:
        lines.append("tumors: none")
    return "\n".join(lines)
