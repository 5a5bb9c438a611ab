"""A single CT file as a one-case cohort (``tumorgen predict --input scan.nii.gz``)."""

from __future__ import annotations

from pathlib import Path

from cohort.case import Case, CaseRef
from cohort.layouts.base import Cohort, load_with_mapping


def case_id_of(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name[:-5] if name.endswith("_0000") else name


def _load(ref: CaseRef) -> Case:
    return load_with_mapping(ref, None, dataset="file")


def read_single(path: Path) -> Cohort:
    path = Path(path)
    return Cohort(path, "file", [CaseRef(case_id_of(path), path, None, "file", _load)])
