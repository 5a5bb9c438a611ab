"""AbdomenAtlas layout: ``<root>/<case>/ct.nii.gz`` plus ``combined_labels.nii.gz``
(vocabulary indices) or ``segmentations/<name>.nii.gz`` binary masks. Mask names are
AbdomenAtlas 2.0's (``colon_lesion``, ``esophagus_tumor``, ``endometrioma_tumor`` for the
uterine lesion class, ...: :func:`cohort.labels.abdomenatlas_name`); aliases are read too.

This is also the layout the product writes (synthetic cohorts, phantoms), with
a ``case.json`` provenance sidecar per case and a ``manifest.jsonl`` per cohort.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from cohort import labels as L
from cohort.case import Case, CaseRef
from cohort.errors import CohortError
from cohort.io import is_temp_name, make_temp_dir, read_image, read_label, write_json, write_volume
from cohort.layouts.base import SIDECAR, Cohort, check_grid, dangling, load_with_mapping, read_sidecar

CT_NAME = "ct.nii.gz"
COMBINED = "combined_labels.nii.gz"
SEG_DIR = "segmentations"


def is_abdomenatlas(root: Path) -> bool:
    return root.is_dir() and any((d / CT_NAME).exists() for d in root.iterdir() if d.is_dir() and not is_temp_name(d))


def _load_per_organ(ref: CaseRef) -> Case:
    ct, ct_meta = read_image(ref.image)
    seg_dir = ref.image.parent / SEG_DIR
    files = sorted(f for f in seg_dir.glob("*.nii*") if not is_temp_name(f))
    label = np.zeros(ct.shape, np.uint8)
    named = []
    for f in files:
        try:
            idx = L.label_index(f.name)
        except L.UnknownLabelError:
            raise CohortError(f, f"mask name {f.name!r} is not a known label of the vocabulary "
                                 "(AbdomenAtlas 2.0 names or their aliases)") from None
        named.append((idx, f))
    # organs first, lesions last, so a lesion inside its organ wins
    for idx, f in sorted(named, key=lambda t: t[0]):
        mask, meta = read_label(f)
        check_grid(ct_meta, meta)
        if mask.max(initial=0) > 1:
            raise CohortError(f, f"per-organ mask must be binary 0/1, found values up to {int(mask.max())}")
        label[mask > 0] = idx
    meta = read_sidecar(ref.sidecar)
    meta.setdefault("case_id", ref.case_id)
    meta.setdefault("kind", "real")
    meta.setdefault("source", {"dataset": "abdomenatlas", "case_id": ref.case_id, "path": str(ref.image)})
    meta["source_path"] = str(ref.image)
    meta["layout"] = "abdomenatlas"
    return Case(ref.case_id, ct, label, ct_meta.affine, meta)


def _load(ref: CaseRef) -> Case:
    if ref.label is not None:
        return load_with_mapping(ref, None, dataset="abdomenatlas")
    return _load_per_organ(ref)


def read_abdomenatlas(root: Path) -> Cohort:
    cohort = Cohort(Path(root), "abdomenatlas")
    for d in sorted(p for p in Path(root).iterdir() if not p.name.startswith(".")):
        if dangling(d):
            cohort.problems[d.name] = f"{d}: dangling symbolic link (its target {os.readlink(d)} does not exist)"
            continue
        if not d.is_dir():
            continue
        ct = d / CT_NAME
        if dangling(ct):
            cohort.problems[d.name] = f"{ct}: dangling symbolic link (its target {os.readlink(ct)} does not exist)"
            continue
        if not ct.exists():
            # anything case-like without its CT is a case that cannot be used; say so
            if any(d.glob("*.nii*")) or (d / SEG_DIR).exists() or (d / SIDECAR).exists():
                cohort.problems[d.name] = f"{d}: case folder has no {CT_NAME}"
            continue
        combined = d / COMBINED
        if dangling(combined):
            cohort.problems[d.name] = f"{combined}: dangling symbolic link (its target {os.readlink(combined)} does not exist)"
            continue
        if not combined.exists() and not (d / SEG_DIR).is_dir():
            label = None
        else:
            label = combined if combined.exists() else None
        sidecar = d / SIDECAR
        cohort.refs.append(CaseRef(d.name, ct, label, "abdomenatlas", _load, sidecar if sidecar.exists() else None))
    return cohort


def case_dir(root: str | Path, case_id: str) -> Path:
    return Path(root) / case_id


def case_done(root: str | Path, case_id: str) -> bool:
    """A case counts as written only when its folder holds the sidecar (written last, then renamed in)."""
    return (case_dir(root, case_id) / SIDECAR).exists()


def write_case(case: Case, root: str | Path, *, per_organ_masks: bool = False, overwrite: bool = False) -> Path:
    """Write a case in the AbdomenAtlas layout, atomically.

    Everything goes into a hidden temporary folder beside the target, which is
    renamed into place at the end, so a killed job leaves either the whole case
    or nothing. Refuses to overwrite an existing case unless asked, and never
    writes onto the files the case was read from.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = case_dir(root, case.case_id)
    src = case.meta.get("source_path")
    if src and Path(src).resolve().parent == target.resolve():
        raise CohortError(target, "refusing to overwrite the input case the data was read from")
    if target.exists() and not overwrite:
        if case_done(root, case.case_id):
            raise CohortError(target, "case already exists (pass overwrite=True to replace it)")
        shutil.rmtree(target)  # a leftover without its sidecar is an incomplete write
    if case.ct.shape != case.label.shape:
        raise CohortError(target, f"CT shape {case.ct.shape} and label shape {case.label.shape} differ")
    tmp = make_temp_dir(root, case.case_id)
    try:
        write_volume(tmp / CT_NAME, case.ct, case.affine, dtype=np.int16)
        write_volume(tmp / COMBINED, case.label.astype(np.uint8), case.affine, dtype=np.uint8)
        if per_organ_masks:
            for v in np.unique(case.label):
                if v:
                    write_volume(tmp / SEG_DIR / f"{L.abdomenatlas_name(int(v))}.nii.gz",
                                 (case.label == v).astype(np.uint8), case.affine, dtype=np.uint8)
        meta = {k: v for k, v in case.meta.items() if k not in ("source_path", "layout")}
        meta["case_id"] = case.case_id
        meta["spacing_mm"] = list(case.spacing)
        meta["shape"] = list(case.shape)
        write_json(tmp / SIDECAR, meta)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
