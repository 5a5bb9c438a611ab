"""Reading cohorts for the filter: cases in RAS voxel order, their tumors and crops."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohort.case import Case, CaseRef
from cohort.errors import BatchReport, CohortError
from cohort.layouts import open_cohort
from cohort.preprocess import to_ras
from generative.quality.crops import CropConfig, TumorCrop, TumorInfo, find_tumors, tumor_crop


def patient_group(case: Case) -> str:
    """A synthetic case's healthy source case id, else the case's own id."""
    src = case.meta.get("source") or {}
    if case.meta.get("kind") == "synthetic" and isinstance(src, dict) and src.get("case_id"):
        return str(src["case_id"])
    return case.case_id


@dataclass
class LoadedCase:
    """A case with its tumors found (full-grid masks) and cropped."""

    ref: CaseRef
    case: Case
    tumors: list[tuple[TumorInfo, np.ndarray]]
    crops: list[TumorCrop]

    @property
    def group(self) -> str:
        """The patient a case comes from: a synthetic case's healthy source, else its own id.

        Validation is split by group so that no patient sits on both sides.
        """
        return patient_group(self.case)


def load_case(ref: CaseRef, crop: CropConfig) -> LoadedCase:
    """Load one case (RAS voxel axes), find its tumors and cut one crop per tumor."""
    case = to_ras(ref.load())
    tumors = find_tumors(case, crop)
    crops = [TumorCrop(info, tumor_crop(case, info, mask, crop)) for info, mask in tumors]
    return LoadedCase(ref, case, tumors, crops)


def iter_cohorts(dirs: Sequence[str | Path], crop: CropConfig, report: BatchReport) -> Iterator[LoadedCase]:
    """Every case of every cohort; unreadable ones go to ``report`` with the reason."""
    for d in dirs:
        cohort = open_cohort(d)
        for cid, why in cohort.problems.items():
            report.fail(cid, why)
        for ref in cohort.refs:
            try:
                yield load_case(ref, crop)
            except CohortError as e:
                report.fail(ref.case_id, e)
            else:
                report.done.append(ref.case_id)
