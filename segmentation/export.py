"""Export real + synthetic cohorts as an nnU-Net v2 raw dataset, with the same mixing spec as training.

``export_nnunet(sources, classes, dataset_id, out)`` writes
``out/DatasetNNN_<name>/`` with ``imagesTr/<case>_0000.nii.gz`` (CT, HU,
int16, the case's own grid), ``labelsTr/<case>.nii.gz`` (consecutive labels:
0 background, k = ``classes[k-1]``) and ``dataset.json`` (``channel_names``
{"0": "CT"}, ``labels``, ``numTraining``, ``file_ending``), so nnU-Net trains
on exactly the data this product trains on.

A finite dataset cannot be "drawn" like the training sampler, so weights
become case counts: every source contributes ``floor(scale * weight)`` cases
with the largest ``scale`` no source runs out at (the limiting source gives
all its cases), i.e. weights 1 : 3 export all real cases and three times as
many synthetic ones when there are enough. Without weights every case is
exported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from cohort.errors import BatchReport, CohortError
from cohort.io import clean_stale_temps, is_temp_name, read_json, read_label, write_json
from segmentation.config import SegConfigError, SourceConfig
from segmentation.data import ClassMap, open_source

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def parse_source_spec(text: str) -> SourceConfig:
    """``name=real,path=data/a,weight=1,kind=real,accepted_only=true,max_cases=10`` or a bare path."""
    if "=" not in text:
        p = Path(text)
        name = p.stem if p.is_file() else p.name
        return SourceConfig(name=name.split(".")[0] or "source", path=text)
    kw: dict[str, Any] = {}
    known = {f.name for f in fields(SourceConfig)}
    for part in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in part:
            raise SegConfigError(f"source spec {text!r}: expected key=value pairs, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in known:
            raise SegConfigError(f"source spec {text!r}: unknown key {k!r} (known: {', '.join(sorted(known))})")
        if k == "weight":
            kw[k] = float(v)
        elif k == "max_cases":
            kw[k] = int(v)
        elif k == "accepted_only":
            kw[k] = v.lower() in ("1", "true", "yes")
        else:
            kw[k] = v
    if "path" not in kw:
        raise SegConfigError(f"source spec {text!r}: needs path=")
    kw.setdefault("name", Path(kw["path"]).name.split(".")[0])
    return SourceConfig(**kw)


def plan_counts(sizes: list[int], weights: list[float | None]) -> list[int]:
    """Cases per source for a finite export (see the module docstring)."""
    if all(w is None for w in weights):
        return list(sizes)
    if any(w is None for w in weights):
        raise SegConfigError("sources: give every source a weight, or none")
    w = np.asarray(weights, np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise SegConfigError(f"sources: weights must be >= 0 and not all zero, got {list(weights)}")
    pos = w > 0
    scale = min(s / x for s, x in zip(np.asarray(sizes)[pos], w[pos]))
    return [int(np.floor(scale * x + 1e-9)) for x in w]


def nnunet_case_id(source: str, case_id: str) -> str:
    """``<source>_<case id>`` with characters nnU-Net file names do not like replaced."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{source}_{case_id}")


@dataclass
class ExportResult:
    root: Path
    counts: dict[str, int]
    report: BatchReport
    cases: dict[str, list[str]] = field(default_factory=dict)


def export_nnunet(sources: list[SourceConfig], classes: list[str], dataset_id: int, out: str | Path,
                  name: str = "TumorGen", seed: int = 0, show: bool = True) -> ExportResult:
    """Write the nnU-Net v2 raw dataset (see the module docstring). Bad cases go into the report."""
    from cohort.layouts import NnUNetWriter

    if not sources:
        raise SegConfigError("export: no sources given")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise SegConfigError(f"export: dataset name {name!r} may only hold letters, digits, '_' and '-'")
    cm = ClassMap(tuple(classes))
    problems: list[dict[str, str]] = [{} for _ in sources]
    refs = [open_source(s, seed, p) for s, p in zip(sources, problems)]
    counts = plan_counts([len(r) for r in refs], [s.weight for s in sources])
    writer = NnUNetWriter(out, dataset_id, name, list(cm.classes))
    report = BatchReport()
    for s, found in zip(sources, problems):
        for cid, why in found.items():
            report.fail(nnunet_case_id(s.name, cid), why)
    for folder in (writer.root, writer.root / "imagesTr", writer.root / "labelsTr"):
        clean_stale_temps(folder)  # of an earlier export killed while writing here
    chosen: dict[str, list[str]] = {}
    with Progress(disable=not show, transient=True) as prog:
        task = prog.add_task("exporting", total=sum(counts))
        for s, rs, n in zip(sources, refs, counts):
            pick = np.sort(np.random.default_rng([seed, 11]).permutation(len(rs))[:n]) if n < len(rs) else range(len(rs))
            chosen[s.name] = []
            for i in pick:
                ref = rs[int(i)]
                cid = nnunet_case_id(s.name, ref.case_id)
                try:
                    writer.add(ref.load(), cid)
                    chosen[s.name].append(cid)
                    report.done.append(cid)
                except CohortError as e:
                    report.fail(cid, e)
                prog.advance(task)
    root = writer.finish({
        "name": name,
        "description": "exported by tumorgen (segmentation.export) from real and synthetic cohorts",
        "tumorgen": {"sources": {s.name: {"path": s.path, "kind": s.kind, "weight": s.weight,
                                          "available": len(r), "exported": len(chosen[s.name])}
                                 for s, r in zip(sources, refs)}, "classes": list(classes), "seed": seed},
    })
    return ExportResult(root, {s.name: len(chosen[s.name]) for s in sources}, report, chosen)


@dataclass
class NnUNetCheck:
    """Structural check of an nnU-Net v2 raw dataset; ``problems`` empty means it passes."""

    root: Path
    cases: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_nnunet_dataset(root: str | Path, read_labels: bool = True) -> NnUNetCheck:
    """File names, dataset.json keys, consecutive labels, image/label pairs and label values.

    Mirrors what nnU-Net's ``verify_dataset_integrity`` requires of a single-channel
    dataset, without needing nnunetv2 installed.
    """
    root = Path(root)
    problems: list[str] = []
    if not re.fullmatch(r"Dataset\d{3}_[A-Za-z0-9_-]+", root.name):
        problems.append(f"{root}: folder name must be DatasetNNN_Name")
    try:
        ds = read_json(root / "dataset.json")
    except CohortError as e:
        return NnUNetCheck(root, [], [*problems, str(e)])
    missing = [k for k in REQUIRED_KEYS if k not in ds]
    if missing:
        problems.append(f"{root / 'dataset.json'}: missing keys {missing}")
    if ds.get("channel_names") != {"0": "CT"}:
        problems.append(f"{root / 'dataset.json'}: channel_names must be {{'0': 'CT'}}, got {ds.get('channel_names')}")
    labels = ds.get("labels") or {}
    values = sorted(labels.values()) if all(isinstance(v, int) for v in labels.values()) else None
    if labels.get("background") != 0:
        problems.append(f"{root / 'dataset.json'}: labels must map 'background' to 0")
    if values is None or values != list(range(len(values))):
        problems.append(f"{root / 'dataset.json'}: label values must be consecutive integers from 0, got {labels}")
    ending = ds.get("file_ending", ".nii.gz")
    images = sorted(p for p in (root / "imagesTr").glob(f"*{ending}") if not is_temp_name(p))
    cases = []
    for img in images:
        m = re.fullmatch(rf"(.+)_(\d{{4}}){re.escape(ending)}", img.name)
        if not m or m.group(2) != "0000":
            problems.append(f"{img}: image files must be named <case>_0000{ending} (one CT channel)")
            continue
        cases.append(m.group(1))
    labels_dir = sorted(p for p in (root / "labelsTr").glob(f"*{ending}") if not is_temp_name(p))
    label_cases = {p.name[: -len(ending)] for p in labels_dir}
    for c in sorted(set(cases) - label_cases):
        problems.append(f"{root / 'imagesTr' / (c + '_0000' + ending)}: no label file labelsTr/{c}{ending}")
    for c in sorted(label_cases - set(cases)):
        problems.append(f"{root / 'labelsTr' / (c + ending)}: no image file imagesTr/{c}_0000{ending}")
    if ds.get("numTraining") != len(cases):
        problems.append(f"{root / 'dataset.json'}: numTraining is {ds.get('numTraining')} but imagesTr holds {len(cases)} cases")
    if read_labels and values:
        from cohort.io import read_image, same_grid

        top = max(values)
        for c in sorted(set(cases) & label_cases):
            lab, lmeta = read_label(root / "labelsTr" / f"{c}{ending}")
            bad = [int(v) for v in np.unique(lab) if v > top]
            if bad:
                problems.append(f"{root / 'labelsTr' / (c + ending)}: label values {bad} are not in dataset.json labels")
            _, imeta = read_image(root / "imagesTr" / f"{c}_0000{ending}")
            if not same_grid(imeta, lmeta, tol=1e-3):
                problems.append(f"{root / 'labelsTr' / (c + ending)}: not on the image's grid (shape or affine differ)")
    return NnUNetCheck(root, cases, problems)


def write_export_record(result: ExportResult, path: str | Path) -> Path:
    """Which cases came from which source (JSON), for provenance next to the dataset."""
    return write_json(path, {"root": str(result.root), "counts": result.counts, "cases": result.cases,
                             "failed": result.report.failed})
