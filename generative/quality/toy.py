"""Tiny in-code cases for the filter's tests and smoke runs (no phantom generator needed).

A toy case is a small cube (default 32^3 at 2 mm): air outside a body of fat
(-90 HU), an ellipsoid "liver" (about 130 HU, smooth texture) and, for tumor
cases, one or two hypodense lesions. ``real`` lesions are smooth blobs with a
soft rim (the look of a real hypodense liver tumor on portal-venous CT);
``noise`` lesions have the same masks but noise-filled interiors, the
caricature of a bad generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.case import Case
from cohort.layouts import write_case, write_manifest

LIVER = L.NAME_TO_INDEX["liver"]
LIVER_LESION = L.NAME_TO_INDEX["liver_lesion"]


def _smooth_noise(shape, rng: np.random.Generator, sigma: float, sd: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (n / (n.std() + 1e-8) * sd).astype(np.float32)


def make_toy_case(case_id: str, rng: np.random.Generator, tumor: str | None = "real", n_tumors: int = 1,
                  shape: tuple[int, int, int] = (32, 32, 32), spacing: float = 2.0,
                  radius_vox: tuple[float, float] = (2.5, 4.5)) -> Case:
    """One toy case. ``tumor``: None (healthy), "real" or "noise"; meta kind follows (noise = synthetic)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    c = np.array(shape, np.float32).reshape(3, 1, 1, 1) / 2.0
    body = (((grid - c) / (c * 0.95)) ** 2).sum(0) <= 1.0
    liver = (((grid - c) / (c * np.array([0.5, 0.45, 0.45], np.float32).reshape(3, 1, 1, 1))) ** 2).sum(0) <= 1.0
    ct = np.full(shape, -1000.0, np.float32)
    ct[body] = -90.0
    ct += rng.normal(0.0, 8.0, shape).astype(np.float32)
    liver_hu = 130.0 + _smooth_noise(shape, rng, 1.5, 6.0)
    ct[liver] = liver_hu[liver] + rng.normal(0.0, 8.0, int(liver.sum())).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[liver] = LIVER
    tumors = []
    if tumor is not None:
        inner = ndimage.binary_erosion(liver, iterations=int(np.ceil(radius_vox[1])) + 1)
        cand = np.argwhere(inner)
        for _ in range(n_tumors):
            r = float(rng.uniform(*radius_vox))
            ctr = cand[rng.integers(len(cand))].astype(np.float32)
            d = np.sqrt(((grid - ctr.reshape(3, 1, 1, 1)) ** 2).sum(0))
            mask = (d <= r) & liver
            if tumor == "real":
                w = 1.0 / (1.0 + np.exp(-(r - d) / 0.8))  # soft rim
                t_hu = float(rng.uniform(55.0, 80.0))
                ct = np.where(liver, ct * (1 - w) + (t_hu + rng.normal(0, 6.0, shape)) * w, ct).astype(np.float32)
            elif tumor == "noise":
                ct[mask] = rng.uniform(-150.0, 350.0, int(mask.sum())).astype(np.float32)
            else:
                raise ValueError(f"unknown toy tumor kind {tumor!r}; expected None, 'real' or 'noise'")
            label[mask] = LIVER_LESION
            tumors.append({"organ": "liver", "label": LIVER_LESION, "radius_vox": r})
    kind = "synthetic" if tumor == "noise" else "real"
    affine = np.diag([spacing, spacing, spacing, 1.0])
    meta = {"case_id": case_id, "kind": kind, "generator": "toy-noise" if kind == "synthetic" else None,
            "tumors": tumors, "source": {"dataset": "toy", "case_id": case_id}}
    return Case(case_id, ct.astype(np.float32), label, affine, meta)


def write_toy_cohort(root: str | Path, n: int, tumor: str | None, seed: int = 0, prefix: str | None = None,
                     **kw) -> Path:
    """Write ``n`` toy cases in the AbdomenAtlas layout plus ``manifest.jsonl``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    prefix = prefix or (tumor or "healthy")
    for i in range(n):
        write_case(make_toy_case(f"{prefix}_{i:03d}", rng, tumor, **kw), root)
    write_manifest(root)
    return root
