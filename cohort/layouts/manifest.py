"""Manifest cohorts: a CSV or JSONL file listing cases.

Columns / keys: ``case_id``, ``ct`` (or ``image``), ``label`` (optional), and
optionally ``mapping`` (a named mapping such as ``totalsegmentator_v2`` or
``vocabulary``, or a JSON object ``{"value": "name"}``) and ``accepted``
(written by the quality filter). Relative paths are taken from the manifest's
folder. The product writes ``manifest.jsonl`` beside every cohort it makes.
"""

from __future__ import annotations

import csv
import json
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
        if accepted_only and str(row.get("accepted", True)).lower() in ("false", "0", "no"):
            continue
        img = (path.parent / img) if not Path(img).is_absolute() else Path(img)
        lab = row.get("label")
        lab = ((path.parent / lab) if not Path(lab).is_absolute() else Path(lab)) if lab else None
        mp, unmapped = _resolve_mapping(row.get("mapping", mapping), str(path))
        sidecar = img.parent / SIDECAR
        extra = {k: v for k, v in row.items() if k not in ("case_id", "ct", "image", "label", "mapping")}
        cohort.refs.append(CaseRef(cid, img, lab, "manifest", partial(_load, mp, unmapped),
                                   sidecar if sidecar.exists() else None, extra))
    return cohort


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
