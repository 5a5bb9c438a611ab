"""Manifest cohorts: a CSV or JSONL file listing cases.

Columns / keys: ``case_id``, ``ct`` (or ``image``), ``label`` (optional), and
optionally ``mapping`` (a named mapping such as ``totalsegmentator_v2`` or
``vocabulary``, or a JSON object ``{"value": "name"}``) and ``accepted``
(written by the quality filter). Relative paths are taken from the manifest's
folder. The product writes ``manifest.jsonl`` beside every cohort it makes.

The ``accepted`` rule (``accepted_only``, every layout) is :func:`keep_accepted`,
built on :func:`filter_decision` / :func:`is_accepted`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cohort import labels as L
from cohort.case import Case, CaseRef
from cohort.errors import CohortError
from cohort.io import write_text
from cohort.layouts.base import SIDECAR, Cohort, load_with_mapping, read_sidecar

NAMED_MAPPINGS: dict[str, dict[int, str] | None] = {
    "vocabulary": None,
    "totalsegmentator_v2": dict(L.TOTALSEGMENTATOR_V2),
}
MANIFEST_NAME = "manifest.jsonl"


def _resolve_mapping(value: Any, where: str) -> tuple[dict | None, str]:
    """Return (mapping, unmapped policy)."""
    if value in (None, "", "vocabulary"):
        return None, "error"
    if isinstance(value, str) and value.strip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, str):
        if value not in NAMED_MAPPINGS:
            raise CohortError(where, f"unknown label mapping {value!r}; named mappings: {sorted(NAMED_MAPPINGS)}")
        # a whole-body label set: classes outside the vocabulary become background
        return NAMED_MAPPINGS[value], "background"
    if isinstance(value, dict):
        return {int(k): v for k, v in value.items()}, "error"
    raise CohortError(where, f"label mapping must be a name or an object, got {type(value).__name__}")


def _load(mapping: dict | None, unmapped: str, ref: CaseRef) -> Case:
    case = load_with_mapping(ref, mapping, unmapped=unmapped, dataset=ref.extra.get("dataset", "manifest"))
    for k in ("accepted", "score", "reasons", "kind", "generator"):
        if k in ref.extra:
            case.meta[k if k != "score" else "filter_score"] = ref.extra[k]
    return case


def read_rows(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise CohortError(path, "manifest does not exist")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CohortError(path, f"line {n} is not valid JSON ({e})") from None
    return rows


def read_manifest(path: Path, mapping: Any = None, accepted_only: bool = False) -> Cohort:
    path = Path(path)
    cohort = Cohort(path, "manifest")
    for n, row in enumerate(read_rows(path), start=1):
        cid = str(row.get("case_id") or "").strip()
        img = row.get("ct") or row.get("image")
        if not cid or not img:
            cohort.problems[cid or f"line{n}"] = f"{path}: row {n} needs case_id and ct"
            continue
        img = (path.parent / img) if not Path(img).is_absolute() else Path(img)
        lab = row.get("label")
        lab = ((path.parent / lab) if not Path(lab).is_absolute() else Path(lab)) if lab else None
        mp, unmapped = _resolve_mapping(row.get("mapping", mapping), str(path))
        sidecar = img.parent / SIDECAR
        extra = {k: v for k, v in row.items() if k not in ("case_id", "ct", "image", "label", "mapping")}
        cohort.refs.append(CaseRef(cid, img, lab, "manifest", partial(_load, mp, unmapped),
                                   sidecar if sidecar.exists() else None, extra))
    return keep_accepted(cohort) if accepted_only else cohort


# ----------------------------------------------------------------------------- the accepted rule

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def filter_decision(record: Mapping[str, Any] | None, where: str | Path | None = None) -> bool | None:
    """The quality filter's decision recorded for one case: True, False, or None when there is none.

    ``record``: a manifest row (``CaseRef.extra``) or a case's provenance (the ``case.json``
    sidecar, ``Case.meta``). Read from ``accepted`` (a bool, or the text true/false, 1/0, yes/no
    of a CSV manifest, any case), else from the sidecar's ``filter`` block (``filter.accepted``).
    A missing, null or empty value is no decision; any other value is a CohortError at ``where``.
    """
    if not record:
        return None
    value = record.get("accepted")
    if value is None and isinstance(record.get("filter"), Mapping):
        value = record["filter"].get("accepted")
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None  # an empty CSV cell
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise CohortError(where, f"accepted must be true or false, got {value!r}")


def is_accepted(record: Mapping[str, Any] | None, where: str | Path | None = None) -> bool:
    """Whether the quality filter accepted the case of ``record`` (see :func:`filter_decision`).

    No decision is not acceptance: a case the filter never judged is not "accepted".
    """
    return filter_decision(record, where) is True


def keep_accepted(cohort: Cohort) -> Cohort:
    """The cases of ``cohort`` the quality filter accepted: what ``accepted_only`` means everywhere.

    A case's decision is its manifest row's (``accepted``), else its sidecar's. Rules:

    - a case marked accepted is kept; one marked rejected is dropped;
    - a case with no decision is dropped (the filter never judged it; the filter's own manifest
      writes ``accepted`` on every line, so this only happens in a hand-merged list);
    - a cohort where *no* case carries a decision was never filtered, and asking for its accepted
      cases is a CohortError, not "keep them all": training on unfiltered cases while the config
      says ``accepted_only`` would be a silent mistake. Point ``accepted_only`` at the filter's
      ``manifest.jsonl`` (``tumorgen filter apply``), or drop it.

    Listing problems are kept. Every case rejected leaves an empty cohort (the caller says so).
    """
    kept, decided = [], 0
    for ref in cohort.refs:
        decision = filter_decision(ref.extra, cohort.root)
        if decision is None and ref.sidecar is not None:
            decision = filter_decision(read_sidecar(ref.sidecar), ref.sidecar)
        decided += decision is not None
        if decision is True:
            kept.append(ref)
    if cohort.refs and not decided:
        raise CohortError(cohort.root, "accepted_only: no case carries a quality-filter decision (accepted), so this "
                                       "cohort was never filtered; use the filter's manifest.jsonl (tumorgen filter "
                                       "apply) or drop accepted_only")
    return Cohort(cohort.root, cohort.layout, kept, dict(cohort.problems))


def manifest_row(root: Path, case_dir: Path) -> dict[str, Any]:
    meta = read_sidecar(case_dir / SIDECAR)
    tumors = meta.get("tumors") or []
    return {
        "case_id": case_dir.name,
        "ct": str((case_dir / "ct.nii.gz").relative_to(root)),
        "label": str((case_dir / "combined_labels.nii.gz").relative_to(root)),
        "kind": meta.get("kind", "real"),
        "generator": meta.get("generator"),
        "site": meta.get("site"),
        "source_case": (meta.get("source") or {}).get("case_id"),
        "n_tumors": len(tumors),
        "tumor_diameters_mm": [t.get("max_axial_diameter_mm") for t in tumors],
    }


def write_manifest(root: str | Path, name: str = MANIFEST_NAME) -> Path:
    """(Re)write ``root/manifest.jsonl`` from the complete case folders under ``root``."""
    root = Path(root)
    rows = [manifest_row(root, d) for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and (d / SIDECAR).exists()]
    return write_text(root / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write a JSONL manifest atomically (the quality filter's filtered manifests)."""
    def default(o):
        return o.item() if isinstance(o, np.generic) else str(o)
    return write_text(path, "".join(json.dumps(r, sort_keys=True, default=default) + "\n" for r in rows))
