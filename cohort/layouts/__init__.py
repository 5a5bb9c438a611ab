"""Readers for every dataset layout, mapped onto the canonical vocabulary, and the writer.

``open_cohort(path)`` detects the layout; each reader returns a
:class:`~cohort.layouts.base.Cohort` of lazily loaded cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cohort.errors import CohortError
from cohort.layouts.abdomenatlas import case_dir, case_done, is_abdomenatlas, read_abdomenatlas, write_case
from cohort.layouts.base import Cohort
from cohort.layouts.kits import is_kits, read_kits
from cohort.layouts.manifest import (
    MANIFEST_NAME,
    filter_decision,
    is_accepted,
    keep_accepted,
    read_manifest,
    read_rows,
    write_manifest,
    write_rows,
)
from cohort.layouts.msd import is_msd, read_msd
from cohort.layouts.nnunet import NnUNetWriter, is_nnunet, read_nnunet
from cohort.layouts.single import read_single

LAYOUTS = ("abdomenatlas", "msd", "nnunet", "kits23", "manifest", "file")


def detect_layout(path: str | Path) -> str:
    """Name the layout of a folder or file, or raise CohortError saying why none fits."""
    path = Path(path)
    if not path.exists():
        raise CohortError(path, "does not exist")
    if path.is_file():
        if path.suffix in (".csv", ".jsonl"):
            return "manifest"
        if path.name.endswith((".nii", ".nii.gz")):
            return "file"
        raise CohortError(path, "not a cohort: expected a folder, a .csv/.jsonl manifest or a NIfTI file")
    if is_nnunet(path):
        return "nnunet"
    if is_msd(path):
        return "msd"
    if is_kits(path):
        return "kits23"
    if is_abdomenatlas(path):
        return "abdomenatlas"
    if (path / MANIFEST_NAME).exists():
        return "manifest"
    if (path / "ct.nii.gz").exists():
        return "abdomenatlas_case"
    raise CohortError(path, "no known cohort layout found (AbdomenAtlas case folders with ct.nii.gz, MSD or nnU-Net "
                            "dataset.json, KiTS23 case folders with imaging.nii.gz, or a manifest)")


def open_cohort(path: str | Path, layout: str | None = None, mapping: Any = None,
                accepted_only: bool = False) -> Cohort:
    """Open a cohort in any supported layout (auto-detected unless ``layout`` is given).

    ``mapping`` (manifests only): a named mapping ("totalsegmentator_v2") or
    ``{value: name}``. ``accepted_only``: keep the cases the quality filter accepted
    (:func:`cohort.layouts.manifest.keep_accepted`: a case without a decision is not
    accepted, and a cohort without any decision is a CohortError).
    """
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout == "manifest" and path.is_dir():
        path = path / MANIFEST_NAME
    readers = {
        "abdomenatlas": read_abdomenatlas,
        "msd": read_msd,
        "nnunet": read_nnunet,
        "kits23": read_kits,
        "file": read_single,
    }
    if layout == "manifest":
        return read_manifest(path, mapping=mapping, accepted_only=accepted_only)
    if layout == "abdomenatlas_case":
        # one AbdomenAtlas case folder given instead of its cohort: a cohort of that one case
        whole = read_abdomenatlas(path.parent)
        cohort = Cohort(path, "abdomenatlas")
        cohort.refs = [r for r in whole.refs if r.case_id == path.name]
        if path.name in whole.problems:
            cohort.problems[path.name] = whole.problems[path.name]
        if not cohort.refs and not cohort.problems:
            raise CohortError(path, f"a case folder that its parent {path.parent} does not list as a case; "
                                    f"give the cohort folder {path.parent} instead")
        return keep_accepted(cohort) if accepted_only else cohort
    if layout not in readers:
        raise CohortError(path, f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    cohort = readers[layout](path)
    return keep_accepted(cohort) if accepted_only else cohort


__all__ = [
    "Cohort", "open_cohort", "detect_layout", "write_case", "case_done", "case_dir", "write_manifest",
    "read_manifest", "read_rows", "write_rows", "NnUNetWriter", "LAYOUTS", "MANIFEST_NAME", "filter_decision",
    "is_accepted", "keep_accepted",
]
