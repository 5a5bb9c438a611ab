"""nnU-Net v2 raw dataset: ``dataset.json`` (channel_names, labels name->value,
numTraining, file_ending), ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``.
Read and write."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from cohort import labels as L
from cohort.case import Case, CaseRef
from cohort.errors import CohortError
from cohort.io import is_temp_name, read_json, write_json, write_volume
from cohort.layouts.base import Cohort, generic_lesion_mapping, load_with_mapping


def is_nnunet(root: Path) -> bool:
    f = Path(root) / "dataset.json"
    if not f.exists():
        return False
    d = read_json(f)
    return isinstance(d, dict) and "channel_names" in d


def _load(mapping: dict, ref: CaseRef) -> Case:
    return load_with_mapping(ref, mapping, dataset="nnunet")


def read_nnunet(root: Path, split: str = "Tr") -> Cohort:
    root = Path(root)
    ds = read_json(root / "dataset.json")
    channels = ds.get("channel_names", {})
    if len(channels) != 1:
        raise CohortError(root / "dataset.json", f"expected one CT channel, found channel_names {channels}")
    ending = ds.get("file_ending", ".nii.gz")
    labels = ds.get("labels")
    if not isinstance(labels, dict):
        raise CohortError(root / "dataset.json", "no 'labels' object")
    names = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):  # region-based training: not a label map definition
            raise CohortError(root / "dataset.json", f"region-based label {name!r} is not supported")
        names[int(value)] = str(name)
    mapping = generic_lesion_mapping(names, hint=root.name, where=str(root / "dataset.json"))
    cohort = Cohort(root, "nnunet")
    for img in sorted((root / f"images{split}").glob(f"*_0000{ending}")):
        if is_temp_name(img):
            continue
        cid = img.name[: -len(f"_0000{ending}")]
        lab = root / f"labels{split}" / f"{cid}{ending}"
        cohort.refs.append(CaseRef(cid, img, lab if lab.exists() or lab.is_symlink() else None, "nnunet",
                                   partial(_load, mapping)))
    images = set(cohort.ids())
    for lab in sorted((root / f"labels{split}").glob(f"*{ending}")):
        cid = lab.name[: -len(ending)]
        if not is_temp_name(lab) and cid not in images:
            cohort.problems[cid] = f"{lab}: label file has no image images{split}/{cid}_0000{ending}"
    return cohort


class NnUNetWriter:
    """Write cases as an nnU-Net v2 raw dataset with consecutive labels.

    ``classes``: vocabulary names or organ types ("kidney" = both kidneys) kept,
    in output order (value i+1); anything else becomes background. Call
    :meth:`add` per case, then :meth:`finish`.
    """

    def __init__(self, out: str | Path, dataset_id: int, name: str, classes: Sequence[str]):
        if not 1 <= dataset_id <= 999:
            raise ValueError(f"nnU-Net dataset id must be 1..999, got {dataset_id}")
        self.root = Path(out) / f"Dataset{dataset_id:03d}_{name}"
        self.classes = [c if c in L.ORGAN_TYPES else L.canonical_name(c) for c in classes]
        self.lut = np.zeros(L.NUM_CLASSES, np.uint8)
        for i, c in enumerate(self.classes, start=1):
            for idx in L.organ_indices(c):
                if self.lut[idx]:
                    raise ValueError(f"nnU-Net classes: {c!r} overlaps an earlier class")
                self.lut[idx] = i
        self.n = 0

    def add(self, case: Case, case_id: str | None = None) -> None:
        cid = case_id or case.case_id
        write_volume(self.root / "imagesTr" / f"{cid}_0000.nii.gz", case.ct, case.affine, dtype=np.int16)
        write_volume(self.root / "labelsTr" / f"{cid}.nii.gz", self.lut[case.label], case.affine, dtype=np.uint8)
        self.n += 1

    def finish(self, extra: dict | None = None) -> Path:
        labels = {"background": 0} | {c: i for i, c in enumerate(self.classes, start=1)}
        ds = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": self.n, "file_ending": ".nii.gz"}
        if extra:
            ds.update(extra)
        write_json(self.root / "dataset.json", ds)
        return self.root
