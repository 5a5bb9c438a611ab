"""Shared machinery of the layout readers: the Cohort object and case loading."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cohort import labels as L
from cohort.case import Case, CaseRef
from cohort.errors import BatchReport, CohortError
from cohort.io import ImageMeta, read_image, read_json, read_label, same_grid

SIDECAR = "case.json"


@dataclass
class Cohort:
    """A set of cases on disk in one layout. Iterate ``refs``; nothing is read until ``load()``."""

    root: Path
    layout: str
    refs: list[CaseRef] = field(default_factory=list)
    #: problems found while listing (e.g. a case folder with no CT); reported, not fatal
    problems: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self) -> Iterator[CaseRef]:
        return iter(self.refs)

    def ids(self) -> list[str]:
        return [r.case_id for r in self.refs]

    def get(self, case_id: str) -> CaseRef:
        for r in self.refs:
            if r.case_id == case_id:
                return r
        raise KeyError(f"{self.root}: no case {case_id!r}")

    def iter_cases(self, report: BatchReport | None = None) -> Iterator[Case]:
        """Load every case; bad ones go into ``report`` (with the reason) and are skipped."""
        report = report if report is not None else BatchReport()
        for cid, why in self.problems.items():
            report.fail(cid, why)
        for ref in self.refs:
            try:
                case = ref.load()
            except CohortError as e:
                report.fail(ref.case_id, e)
                continue
            yield case


def dangling(path: Path) -> bool:
    """A symbolic link whose target is gone: ``exists()`` is False, so listings would drop it silently."""
    return path.is_symlink() and not path.exists()


def check_grid(ct_meta: ImageMeta, lab_meta: ImageMeta) -> None:
    if ct_meta.shape != lab_meta.shape:
        raise CohortError(lab_meta.path, f"label shape {lab_meta.shape} does not match CT shape {ct_meta.shape} ({ct_meta.path})")
    if not same_grid(ct_meta, lab_meta, tol=1e-2):
        raise CohortError(lab_meta.path, f"label affine does not match the CT affine ({ct_meta.path}); "
                                         "the two are not on the same grid")


def read_sidecar(path: Path | None) -> dict[str, Any]:
    if path is not None and path.exists():
        meta = read_json(path)
        if not isinstance(meta, dict):
            raise CohortError(path, "sidecar must hold a JSON object")
        return meta
    return {}


def load_with_mapping(ref: CaseRef, mapping: Mapping[int, int | str] | None, *, unmapped: str = "error",
                      post: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
                      dataset: str | None = None) -> Case:
    """Read CT + one label file, map labels onto the vocabulary, validate the pair.

    ``mapping`` None means the file already holds vocabulary indices (values above
    the vocabulary are errors). ``post(ct, label_src, affine, label)`` can rewrite
    the mapped label (KiTS' left/right kidney split).
    """
    ct, ct_meta = read_image(ref.image)
    meta = read_sidecar(ref.sidecar)
    if ref.label is None:
        label = np.zeros(ct.shape, np.uint8)
    else:
        src, lab_meta = read_label(ref.label)
        check_grid(ct_meta, lab_meta)
        try:
            if mapping is None:
                mapping = {i: i for i in range(1, L.NUM_CLASSES)}
            label = L.apply_mapping(src, mapping, where=str(ref.label), unmapped=unmapped)
        except L.UnknownLabelError as e:
            raise CohortError(ref.label, str(e).split(": ", 1)[-1]) from None
        if post is not None:
            label = post(ct, src, ct_meta.affine, label)
    meta.setdefault("case_id", ref.case_id)
    meta.setdefault("kind", "real")
    meta.setdefault("source", {"dataset": dataset or ref.layout, "case_id": ref.case_id, "path": str(ref.image)})
    meta["source_path"] = str(ref.image)
    meta["layout"] = ref.layout
    return Case(ref.case_id, ct, label, ct_meta.affine, meta)


def generic_lesion_mapping(label_names: Mapping[int, str], hint: str = "", where: str = "") -> dict[int, str]:
    """Map a dataset's {value: name} onto the vocabulary.

    Bare names such as "cancer", "tumour" or "lesion" (MSD, nnU-Net datasets)
    become the lesion class of the dataset's organ, taken from the other labels
    or from ``hint`` (the dataset name, e.g. "Task03_Liver").
    """
    generic = {"cancer", "tumor", "tumour", "lesion", "tumors", "lesions", "mass"}
    organs = [n for n in label_names.values() if n.lower() not in generic | {"background"}]
    out: dict[int, str] = {}
    for value, name in label_names.items():
        key = name.strip().lower()
        if key == "background":
            out[int(value)] = "background"
        elif key in generic:
            organ = None
            for cand in [*organs, *hint.lower().replace("-", "_").split("_")]:
                try:
                    organ_name = L.canonical_name(cand)
                except L.UnknownLabelError:
                    t = cand.lower().rstrip("s")
                    if t in L.ORGAN_TYPES:
                        organ = t
                        break
                    if t == "hepaticvessel":
                        organ = "liver"
                        break
                    continue
                if organ_name in L.ORGAN_TO_LESION:
                    organ = organ_name
                    break
            if organ is None:
                raise CohortError(where, f"label {name!r} ({value}) is a lesion but the organ it belongs to is unknown; "
                                         "pass an explicit label mapping")
            out[int(value)] = L.NAME_TO_INDEX[L.ORGAN_TYPE_TO_LESION.get(organ) or L.ORGAN_TO_LESION[organ]]
        elif key in ("kidney", "kidneys"):
            out[int(value)] = "kidney_left"  # split into left/right by the caller when it can
        elif key in ("vessel", "vessels") and "hepatic" in hint.lower():
            out[int(value)] = "hepatic_vessel"
        else:
            try:
                out[int(value)] = L.canonical_name(name)
            except L.UnknownLabelError as e:
                raise CohortError(where, str(e)) from None
    return out


def split_kidneys(ct: np.ndarray, affine: np.ndarray, label: np.ndarray, kidney_mask: np.ndarray) -> np.ndarray:
    """Assign kidney voxels to left/right by which side of the body midline they lie.

    RAS+ world x grows toward the patient's right, so voxels with world x below
    the body's centre (the CT's voxels above -500 HU) are the left kidney.
    """
    body = ct > -500
    if not kidney_mask.any():
        return label
    ijk_body = np.argwhere(body) if body.any() else np.argwhere(np.ones_like(body))
    mid_x = (affine[0, :3] @ ijk_body.mean(0)) + affine[0, 3]
    ijk = np.argwhere(kidney_mask)
    wx = ijk @ affine[0, :3] + affine[0, 3]
    out = label.copy()
    left = wx < mid_x
    out[tuple(ijk[left].T)] = L.NAME_TO_INDEX["kidney_left"]
    out[tuple(ijk[~left].T)] = L.NAME_TO_INDEX["kidney_right"]
    return out
