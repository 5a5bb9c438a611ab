"""KiTS23 layout: ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` with
1 kidney, 2 tumor, 3 cyst.

The vocabulary has left and right kidneys and no cyst class: kidney voxels are
split by body side (see :func:`cohort.layouts.base.split_kidneys`) and cysts are
kept as kidney tissue, their voxel count recorded in the case's meta as
``kits_cyst_voxels`` so nothing is lost silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cohort.case import Case, CaseRef
from cohort.io import is_temp_name
from cohort.layouts.base import Cohort, dangling, load_with_mapping, split_kidneys

KITS_MAPPING = {1: "kidney_left", 2: "kidney_lesion", 3: "kidney_left"}


def is_kits(root: Path) -> bool:
    return Path(root).is_dir() and any((d / "imaging.nii.gz").exists() for d in Path(root).iterdir()
                                       if d.is_dir() and not is_temp_name(d))


def _load(ref: CaseRef) -> Case:
    cysts = {}

    def post(ct: np.ndarray, src: np.ndarray, affine: np.ndarray, label: np.ndarray) -> np.ndarray:
        cysts["voxels"] = int((src == 3).sum())
        return split_kidneys(ct, affine, label, (src == 1) | (src == 3))

    case = load_with_mapping(ref, KITS_MAPPING, post=post, dataset="kits23")
    case.meta["kits_cyst_voxels"] = cysts.get("voxels", 0)
    return case


def read_kits(root: Path) -> Cohort:
    cohort = Cohort(Path(root), "kits23")
    for d in sorted(p for p in Path(root).iterdir() if not p.name.startswith(".")):
        img = d / "imaging.nii.gz"
        link = next((p for p in (d, img) if dangling(p)), None)
        if link is not None:
            cohort.problems[d.name] = f"{link}: dangling symbolic link (its target {os.readlink(link)} does not exist)"
            continue
        if not d.is_dir():
            continue
        if not img.exists():
            if any(d.glob("*.nii*")):
                cohort.problems[d.name] = f"{d}: case folder has no imaging.nii.gz"
            continue
        seg = d / "segmentation.nii.gz"
        cohort.refs.append(CaseRef(d.name, img, seg if seg.exists() else None, "kits23", _load))
    return cohort

