"""Medical Segmentation Decathlon layout: ``dataset.json`` with ``labels`` and ``training``
(``imagesTr``/``labelsTr``). Bare "cancer"/"tumour" labels become the lesion of the
task's organ (Task03_Liver: 1 liver, 2 cancer -> liver, liver_lesion)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from cohort.case import Case, CaseRef
from cohort.errors import CohortError
from cohort.io import read_json
from cohort.layouts.base import Cohort, generic_lesion_mapping, load_with_mapping


def is_msd(root: Path) -> bool:
    f = Path(root) / "dataset.json"
    if not f.exists():
        return False
    d = read_json(f)
    return isinstance(d, dict) and "training" in d and "channel_names" not in d


def _load(mapping: dict, ref: CaseRef) -> Case:
    return load_with_mapping(ref, mapping, dataset="msd")


def read_msd(root: Path) -> Cohort:
    root = Path(root)
    ds = read_json(root / "dataset.json")
    labels = ds.get("labels")
    if not isinstance(labels, dict):
        raise CohortError(root / "dataset.json", "no 'labels' object")
    names = {int(k): str(v) for k, v in labels.items()}
    mapping = generic_lesion_mapping(names, hint=str(ds.get("name", root.name)) + "_" + root.name,
                                     where=str(root / "dataset.json"))
    cohort = Cohort(root, "msd")
    for item in ds.get("training", []):
        img = root / str(item["image"]).lstrip("./")
        lab = root / str(item["label"]).lstrip("./") if item.get("label") else None
        cid = img.name.split(".nii")[0]
        if not img.exists():
            cohort.problems[cid] = f"{img}: listed in dataset.json but missing"
            continue
        cohort.refs.append(CaseRef(cid, img, lab, "msd", partial(_load, mapping)))
    return cohort
