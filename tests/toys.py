"""Toy cases built in code for the tests and benchmarks (seconds, no phantom world, no downloads).

- :func:`toy_liver`: (ct, label) arrays, an ellipsoid "liver" in fat, optionally a straight "vessel"
  through it (hepatic_vessel, 200 HU); liver HU uniform in ``hu`` plus noise. The tumor makers' tests.
- :func:`toy_abdomen_case`: a :class:`~cohort.case.Case` with body fat, liver (+ an optional hypodense
  lesion), a kidney and the aorta. The diffusion tests and ``benchmarks/bench_sampling.py``.
- :func:`toy_lesion_case` / :func:`write_toy_lesion_cohort`: a small cube (default 32^3 at 2 mm), air
  outside a body of fat (-90 HU), an ellipsoid "liver" (about 130 HU, smooth texture) and, for tumor
  cases, hypodense lesions. ``real`` lesions are smooth blobs with a soft rim (the look of a real
  hypodense liver tumor on portal-venous CT); ``noise`` lesions have the same masks but noise-filled
  interiors, the caricature of a bad generator. The quality filter's tests.
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


def toy_liver(n: int | tuple[int, int, int] = 32, radii_frac: tuple[float, float, float] = (0.42, 0.38, 0.38),
              seed: int = 0, hu: tuple[float, float] = (100.0, 160.0), vessel: bool = False,
              noise_hu: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """(ct float32 HU (X, Y, Z), label uint8): an ellipsoid liver (label 5) centred in the grid,
    radii = radii_frac x size; background -100 HU fat. ``hu``: the liver's uniform HU range."""
    shape = (n, n, n) if isinstance(n, int) else tuple(int(s) for s in n)
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    d = sum(((g - (s - 1) / 2) / (f * s)) ** 2 for g, s, f in zip(grids, shape, radii_frac))
    liver = d <= 1.0
    ct = (-100.0 + rng.normal(0, noise_hu, shape)).astype(np.float32)
    ct[liver] = rng.uniform(hu[0], hu[1], int(liver.sum())).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[liver] = L.NAME_TO_INDEX["liver"]
    if vessel:
        v = np.zeros(shape, bool)
        cx, cy = shape[0] // 2, shape[1] // 2
        v[cx - 1: cx + 1, cy - 1: cy + 1, :] = True
        v &= liver
        ct[v] = 200.0
        label[v] = L.NAME_TO_INDEX["hepatic_vessel"]
    return ct, label


def toy_abdomen_case(case_id: str, shape=(32, 32, 32), spacing: float = 1.5, seed: int = 0,
                     tumor: bool = True) -> Case:
    """A tiny abdomen built in code: body fat, liver (+ optional hypodense lesion), a kidney
    and the aorta, with noise. For tests and benchmarks where no phantom cohort is given.
    ct float32 HU (X, Y, Z), label uint8 vocabulary."""
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    ct = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)

    def ell(c, r):
        return (((g - np.array(c, np.float32)[:, None, None, None]) / np.array(r, np.float32)[:, None, None, None]) ** 2).sum(0) <= 1

    body = ell((X / 2, Y / 2, Z / 2), (0.48 * X, 0.42 * Y, 10 * Z))
    ct[body] = -90.0
    jitter = rng.uniform(-0.06, 0.06, 3) * np.array(shape)
    liver = ell(np.array((0.36 * X, 0.5 * Y, 0.5 * Z)) + jitter, (0.24 * X, 0.26 * Y, 0.34 * Z))
    ct[liver], lab[liver] = 60.0, L.NAME_TO_INDEX["liver"]
    kid = ell((0.72 * X, 0.38 * Y, 0.45 * Z), (0.09 * X, 0.12 * Y, 0.18 * Z))
    ct[kid], lab[kid] = 150.0, L.NAME_TO_INDEX["kidney_left"]
    aorta = ell((0.55 * X, 0.3 * Y, Z / 2), (0.05 * X, 0.05 * Y, 10 * Z))
    ct[aorta], lab[aorta] = 190.0, L.NAME_TO_INDEX["aorta"]
    if tumor:
        idx = np.argwhere(liver)
        core = idx[rng.integers(len(idx))]
        centre = 0.5 * core + 0.5 * (np.array((0.36 * X, 0.5 * Y, 0.5 * Z)) + jitter)  # halfway to the liver centre
        r = rng.uniform(0.06, 0.1) * min(shape)
        t = ell(centre, (r, r * rng.uniform(0.8, 1.2), r)) & liver
        ct[t], lab[t] = 15.0, L.NAME_TO_INDEX["liver_lesion"]
    ct += rng.normal(0, 12, shape).astype(np.float32) * body
    affine = np.diag([spacing, spacing, spacing, 1.0])
    return Case(case_id, ct.astype(np.float32), lab, affine, {"kind": "real", "generator": None, "source": {"dataset": "toy"}})


def _smooth_noise(shape, rng: np.random.Generator, sigma: float, sd: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (n / (n.std() + 1e-8) * sd).astype(np.float32)


def toy_lesion_case(case_id: str, rng: np.random.Generator, tumor: str | None = "real", n_tumors: int = 1,
                    shape: tuple[int, int, int] = (32, 32, 32), spacing: float = 2.0,
                    radius_vox: tuple[float, float] = (2.5, 4.5)) -> Case:
    """One toy lesion case (the quality filter's tests). ``tumor``: None (healthy), "real" or "noise"; meta kind follows (noise = synthetic)."""
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


def write_toy_lesion_cohort(root: str | Path, n: int, tumor: str | None, seed: int = 0, prefix: str | None = None,
                             **kw) -> Path:
    """Write ``n`` :func:`toy_lesion_case` cases in the AbdomenAtlas layout plus ``manifest.jsonl``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    prefix = prefix or (tumor or "healthy")
    for i in range(n):
        write_case(toy_lesion_case(f"{prefix}_{i:03d}", rng, tumor, **kw), root)
    write_manifest(root)
    return root


def drop_seconds(node):
    """Provenance minus wall-clock timings (the only part that may differ between runs)."""
    if isinstance(node, dict):
        return {k: drop_seconds(v) for k, v in node.items() if k != "seconds"}
    if isinstance(node, list):
        return [drop_seconds(v) for v in node]
    return node


def cohort_arrays(out) -> dict:
    """{case id: (ct, label, sidecar minus timings)} of an AbdomenAtlas cohort folder (temps skipped)."""
    import json

    from cohort.io import is_temp_name, read_image, read_label

    res = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and not is_temp_name(p.name)):
        meta = drop_seconds(json.loads((d / "case.json").read_text()))
        res[d.name] = (read_image(d / "ct.nii.gz")[0], read_label(d / "combined_labels.nii.gz")[0], meta)
    return res


def assert_same_cohorts(a: dict, b: dict) -> None:
    """Two :func:`cohort_arrays` results hold the same cases, voxel for voxel, with the same provenance."""
    assert a.keys() == b.keys() and a
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1], b[k][1]), k
        assert a[k][2] == b[k][2], k


def extents_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Extent of a non-empty mask along each axis, in mm (voxel count times spacing)."""
    ext = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        ext.append((idx[-1] - idx[0] + 1) * spacing[ax])
    return np.array(ext)
