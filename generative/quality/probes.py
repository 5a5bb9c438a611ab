"""Known-bad tumors: deliberately broken copies of good cases, to show the filter catches them.

Each probe takes a case with at least one tumor and breaks its first tumor in
one way. A filter that deserves trust rejects nearly all of them:

- ``noise``: the tumor's voxels become wide Gaussian noise (sd 150 HU) around its own median.
- ``wrong_hu``: the tumor is filled with a bone-like 450 HU (no soft-tissue tumor is that dense).
- ``blocky``: the tumor becomes its bounding box, a flat block with straight edges.
- ``outside``: the tumor (mask and texture) is moved out of its organ into surrounding
  tissue; its old place is refilled with the organ's texture.
- ``seam``: the tumor is pasted with a straight-edged patch of its surroundings (its bounding
  box grown by 3 voxels) whose HU is off by +60: the box-shaped boundary seam of a badly blended
  paste.
- ``blur``: the tumor and a 2-voxel rim around it are smoothed (Gaussian, sigma 2 voxels): the
  scanner's noise texture is gone and the edge smeared, the look of an over-smoothed generator.

Inputs are never modified; probes are deterministic given ``rng``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.case import Case
from generative.quality.crops import CropConfig, TumorInfo, find_tumors

ProbeKind = Literal["noise", "wrong_hu", "blocky", "outside", "seam", "blur"]
PROBE_KINDS: tuple[str, ...] = get_args(ProbeKind)
WRONG_HU = 450.0
#: HU added to the pasted patch of a ``seam`` probe
SEAM_HU = 60.0


@dataclass
class Probe:
    """A broken case. ``kind`` in PROBE_KINDS; ``source`` the case it was made from."""

    kind: str
    source: str
    case: Case


def _organ_mask(label: np.ndarray, info: TumorInfo) -> np.ndarray:
    return np.isin(label, L.organ_indices(info.organ))


def _fill_like_organ(ct: np.ndarray, organ: np.ndarray, where: np.ndarray, rng: np.random.Generator) -> None:
    vals = ct[organ & ~where]
    if vals.size == 0:
        vals = np.array([float(np.median(ct))], np.float32)
    ct[where] = rng.choice(vals, int(where.sum()))


def make_probe(case: Case, kind: str, rng: np.random.Generator, crop: CropConfig | None = None) -> Probe | None:
    """Break the first tumor of ``case`` in the way ``kind`` names; None if it cannot be done here."""
    tumors = find_tumors(case, crop or CropConfig())
    if not tumors:
        return None
    info, mask = tumors[0]
    ct, label = case.ct.copy(), case.label.copy()
    if kind == "noise":
        med = float(np.median(ct[mask]))
        ct[mask] = (med + rng.normal(0.0, 150.0, int(mask.sum()))).astype(np.float32)
    elif kind == "wrong_hu":
        ct[mask] = (WRONG_HU + rng.normal(0.0, 10.0, int(mask.sum()))).astype(np.float32)
    elif kind == "blocky":
        (lo, hi) = info.bbox
        box = np.zeros_like(mask)
        box[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        med = float(np.median(ct[mask]))
        ct[box] = med
        label[box] = info.label
    elif kind == "outside":
        shift = _move_outside(case, mask)
        if shift is None:
            return None
        organ = _organ_mask(label, info)
        vals = ct[mask]
        _fill_like_organ(ct, organ, mask, rng)
        label[mask] = L.organ_indices(info.organ)[0]
        idx = np.argwhere(mask) + np.asarray(shift)
        ct[tuple(idx.T)] = vals
        label[tuple(idx.T)] = info.label
    elif kind == "seam":
        (lo, hi) = info.bbox
        sl = tuple(slice(max(0, a - 3), min(n, b + 3)) for a, b, n in zip(lo, hi, ct.shape))
        body = ct[sl] > -500  # the paste covers tissue, not the air around the patient
        ct[sl] = np.where(body, ct[sl] + SEAM_HU, ct[sl])
    elif kind == "blur":
        region = ndimage.binary_dilation(mask, iterations=2)
        sl = ndimage.find_objects(region.astype(np.uint8))[0]
        sl = tuple(slice(max(0, s.start - 6), s.stop + 6) for s in sl)
        smooth = ndimage.gaussian_filter(ct[sl].astype(np.float32), 2.0)
        ct[sl] = np.where(region[sl], smooth, ct[sl])
    else:
        raise ValueError(f"unknown probe kind {kind!r}; expected one of {PROBE_KINDS}")
    meta = dict(case.meta)
    meta.update({"kind": "synthetic", "probe": kind, "probe_source": case.case_id})
    return Probe(kind, case.case_id, Case(f"{case.case_id}__probe_{kind}", ct, label, np.array(case.affine), meta))


def _move_outside(case: Case, mask: np.ndarray) -> tuple[int, int, int] | None:
    """The shortest voxel shift (26 directions) that puts the tumor wholly outside every labelled
    structure (with a one-voxel gap) while at least 90 % of it stays inside the body (> -500 HU)."""
    body = case.ct > -500
    labelled = ndimage.binary_dilation(case.label > 0, iterations=1)
    idx = np.argwhere(mask)
    shape = np.array(mask.shape)
    best, best_len = None, np.inf
    dirs = [np.array(d) for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)]
    for d in dirs:
        d = d - 1
        for step in range(1, int(shape.max())):
            shift = d * step
            new = idx + shift
            if (new < 0).any() or (new >= shape).any():
                break
            t = tuple(new.T)
            if not labelled[t].any() and body[t].mean() >= 0.9:
                length = float(np.linalg.norm(shift))
                if length < best_len:
                    best, best_len = shift, length
                break
    return None if best is None else tuple(int(s) for s in best)


def make_probes(cases: Sequence[Case], kinds: Sequence[str], seed: int = 0) -> tuple[list[Probe], list[str]]:
    """Every probe kind for every case: (probes, notes on probes that could not be built)."""
    rng = np.random.default_rng(seed)
    probes, notes = [], []
    for case in cases:
        for kind in kinds:
            p = make_probe(case, kind, rng)
            if p is None:
                notes.append(f"{kind} probe not built from {case.case_id} (no tumor, or no room outside the organ)")
            else:
                probes.append(p)
    return probes, notes
