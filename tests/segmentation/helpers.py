"""Tiny abdominal cases built in code for the segmentation tests (no downloads, seconds).

Imported by the tests; ``conftest.py`` exposes the fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cohort import labels as L
from cohort.case import Case
from cohort.config import from_dict
from cohort.layouts import write_case, write_manifest
from segmentation.config import SegConfig, default_config_path, load_seg_config

torch.set_num_threads(1)


def make_case(case_id: str, seed: int, shape=(24, 24, 20), spacing=(1.5, 1.5, 1.5), tumor: bool = True,
              kind: str = "real") -> Case:
    """A body ellipse with a liver (right side = high x), a lesion inside it and two kidneys.

    HU: air -1000, soft tissue 40, liver 100, lesion -20 (hypodense), kidneys 200;
    mild noise. Geometry jitters with ``seed``.
    """
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    c = np.array(shape, np.float32) / 2
    body = (((g - c) / (c * np.array([0.95, 0.8, 1.2]))) ** 2).sum(-1) <= 1
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    lc = c + np.array([X * 0.18, 0, 0]) + rng.uniform(-1, 1, 3)
    liver = (((g - lc) / np.array([X * 0.22, Y * 0.25, Z * 0.3])) ** 2).sum(-1) <= 1
    label[liver] = L.NAME_TO_INDEX["liver"]
    for side, name in ((-1, "kidney_left"), (1, "kidney_right")):
        kc = c + np.array([side * X * 0.25, -Y * 0.25, -Z * 0.2]) + rng.uniform(-0.5, 0.5, 3)
        kid = (((g - kc) / np.array([2.5, 2.5, 3.5])) ** 2).sum(-1) <= 1
        kid &= ~liver
        label[kid] = L.NAME_TO_INDEX[name]
    if tumor:
        tc = lc + rng.uniform(-1, 1, 3)
        les = ((g - tc) ** 2).sum(-1) <= rng.uniform(2.5, 3.5) ** 2
        label[les & liver] = L.NAME_TO_INDEX["liver_lesion"]
    hu = {L.NAME_TO_INDEX["liver"]: 100.0, L.NAME_TO_INDEX["liver_lesion"]: -20.0,
          L.NAME_TO_INDEX["kidney_left"]: 200.0, L.NAME_TO_INDEX["kidney_right"]: 200.0}
    for v, h in hu.items():
        ct[label == v] = h
    ct += rng.normal(0, 5, shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-X * spacing[0] / 2, -Y * spacing[1] / 2, -Z * spacing[2] / 2]
    return Case(case_id, ct, label, affine, {"kind": kind, "generator": None if kind == "real" else "test"})


def write_cohort(root: Path, n: int, prefix: str, seed: int = 0, tumor: bool = True, kind: str = "real") -> Path:
    for i in range(n):
        write_case(make_case(f"{prefix}_{i:03d}", seed + i, tumor=tumor, kind=kind), root)
    write_manifest(root)
    return root


def tiny_config(sources: list[dict], **sections) -> SegConfig:
    """The tiny test config with the given sources and section overrides."""
    import dataclasses

    base = dataclasses.asdict(load_seg_config(default_config_path("tiny")))
    base["sources"] = sources
    for sec, vals in sections.items():
        if isinstance(vals, dict):
            base[sec].update(vals)
        else:
            base[sec] = vals
    return from_dict(SegConfig, base)


def onthefly_train_args(run_dir: Path, healthy: Path, method: str, params: str) -> list[str]:
    """`tumorgen segment train` on one healthy source whose every draw gets an on-the-fly tumor."""
    from segmentation.config import default_config_path

    return ["segment", "train", "--config", str(default_config_path("tiny")), "--run-dir", str(run_dir), "--quiet",
            "--set", f"sources=[{{name: healthy, path: {healthy}}}]", "--set", f"onthefly.method={method}",
            "--set", "onthefly.prob=1.0", "--set", "data.val_fraction=0.0", "--set", "data.patch_size=[24,24,16]",
            "--set", f"onthefly.params={params}"]
