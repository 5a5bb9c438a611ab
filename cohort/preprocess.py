"""The paper's preprocessing and its exact inverse.

Forward: reorient to RAS, resample to a target spacing (default 1.5 mm
isotropic; linear for CT, nearest for labels), optionally crop to an organ ROI
with a margin. HU are kept in the case; :func:`scale_hu` maps [-175, 250] HU to
[0, 1] where a network needs it. :func:`restore` puts a label map (or a
probability map) from the preprocessed grid back onto the original grid, with
the original shape and affine, so predictions are always written where the
input was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import nibabel.orientations as nio
import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.case import Case
from cohort.errors import CohortError

HU_WINDOW = (-175.0, 250.0)
DEFAULT_SPACING = (1.5, 1.5, 1.5)


def scale_hu(ct: np.ndarray, lo: float = HU_WINDOW[0], hi: float = HU_WINDOW[1]) -> np.ndarray:
    """Clip HU to [lo, hi] and scale to [0, 1] (float32)."""
    return ((np.clip(ct, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def unscale_hu(x: np.ndarray, lo: float = HU_WINDOW[0], hi: float = HU_WINDOW[1]) -> np.ndarray:
    """Inverse of :func:`scale_hu` inside the window (HU, float32)."""
    return (np.asarray(x, dtype=np.float32) * (hi - lo) + lo).astype(np.float32)


def _ornt_to_ras(affine: np.ndarray) -> np.ndarray:
    return nio.io_orientation(affine)


def reorient(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder/flip voxel axes so they run R, A, S. Returns (array, new affine, ornt)."""
    ornt = _ornt_to_ras(affine)
    out = nio.apply_orientation(array, ornt)
    new_aff = affine @ nio.inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(out), new_aff, ornt


def to_ras(case: Case) -> Case:
    """The case with RAS+ voxel axes (no resampling: axes are permuted and flipped)."""
    ct, aff, _ = reorient(case.ct, np.asarray(case.affine))
    label, _, _ = reorient(case.label, np.asarray(case.affine))
    return Case(case.case_id, ct, label, aff, dict(case.meta))


def _resample_array(arr: np.ndarray, ratio: np.ndarray, shape: tuple[int, ...], order: int, cval: float) -> np.ndarray:
    """Sample ``arr`` at old index = ratio * new index (ratio = new/old spacing)."""
    if np.allclose(ratio, 1.0) and tuple(arr.shape) == tuple(shape):
        return arr.copy()
    if order == 0:
        # nearest: index arithmetic is exact and far cheaper than affine_transform
        idx = [np.clip(np.rint(np.arange(n) * r).astype(np.int64), 0, s - 1) for n, r, s in zip(shape, ratio, arr.shape)]
        return arr[np.ix_(*idx)]
    return ndimage.affine_transform(arr.astype(np.float32, copy=False), ratio, output_shape=shape, order=order,
                                    mode="nearest", cval=cval, prefilter=False)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels needed to cover the same extent (first voxel centre kept)."""
    return tuple(int(np.floor((n - 1) * s / t + 1e-6)) + 1 for n, s, t in zip(shape, spacing, new_spacing))


def resample(case: Case, spacing: Sequence[float] = DEFAULT_SPACING) -> Case:
    """Resample CT (linear) and label (nearest) to ``spacing`` mm, keeping the first voxel centre."""
    old = np.array(case.spacing)
    new = np.array(spacing, dtype=np.float64)
    if np.any(new <= 0):
        raise CohortError(case.meta.get("source_path"), f"target spacing must be positive, got {tuple(new)}")
    ratio = new / old
    shape = resampled_shape(case.shape, old, new)
    ct = _resample_array(case.ct, ratio, shape, order=1, cval=-1024.0)
    label = _resample_array(case.label, ratio, shape, order=0, cval=0)
    affine = np.array(case.affine, dtype=np.float64)
    affine[:3, :3] = affine[:3, :3] * ratio[None, :]
    meta = dict(case.meta)
    return Case(case.case_id, ct.astype(np.float32), label.astype(np.uint8), affine, meta)


def organ_bbox(label: np.ndarray, organs: Sequence[str | int], margin_vox: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box (slices) of the given organs/types plus a margin, clipped to the volume."""
    idx: list[int] = []
    for o in organs:
        idx += [int(o)] if isinstance(o, (int, np.integer)) else list(L.organ_indices(o))
    # an organ's lesions belong to its ROI
    idx += [L.NAME_TO_INDEX[L.ORGAN_TO_LESION[L.INDEX_TO_NAME[i]]] for i in list(idx) if L.INDEX_TO_NAME[i] in L.ORGAN_TO_LESION]
    mask = np.isin(label, idx)
    if not mask.any():
        raise CohortError(None, f"none of the organs {list(organs)} is present in the label map")
    nz = np.argwhere(mask)
    lo = np.maximum(nz.min(0) - np.asarray(margin_vox), 0)
    hi = np.minimum(nz.max(0) + 1 + np.asarray(margin_vox), label.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def crop_roi(case: Case, organs: Sequence[str], margin_mm: float = 20.0) -> tuple[Case, tuple[slice, ...]]:
    """Crop to the organs' bounding box plus ``margin_mm``. Returns (cropped case, slices)."""
    margin = [int(np.ceil(margin_mm / s)) for s in case.spacing]
    try:
        sl = organ_bbox(case.label, organs, margin)
    except CohortError as e:
        raise CohortError(case.meta.get("source_path") or case.case_id, e.problem) from None
    affine = np.array(case.affine, dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ np.array([s.start for s in sl]) + affine[:3, 3]
    return Case(case.case_id, case.ct[sl].copy(), case.label[sl].copy(), affine, dict(case.meta)), sl


@dataclass
class Record:
    """What :func:`preprocess` did, so :func:`restore` can undo it."""

    original_shape: tuple[int, int, int]
    original_affine: np.ndarray
    ornt: np.ndarray  # nibabel orientation transform original -> RAS
    ras_shape: tuple[int, int, int]
    ras_spacing: tuple[float, float, float]
    spacing: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]
    crop: tuple[slice, ...] | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Preprocessed:
    case: Case  # RAS, target spacing, optionally cropped; CT still in HU
    record: Record


def preprocess(case: Case, spacing: Sequence[float] | None = DEFAULT_SPACING, crop_organs: Sequence[str] | None = None,
               margin_mm: float = 20.0) -> Preprocessed:
    """RAS + resample (+ organ ROI crop). ``spacing=None`` keeps the native spacing."""
    ornt = _ornt_to_ras(np.asarray(case.affine))
    ras = to_ras(case)
    rs = resample(ras, spacing) if spacing is not None else ras
    crop = None
    if crop_organs:
        rs, crop = crop_roi(rs, crop_organs, margin_mm)
    rec = Record(tuple(case.shape), np.array(case.affine), ornt, tuple(ras.shape), ras.spacing,
                 tuple(rs.spacing), tuple(resampled_shape(ras.shape, ras.spacing, rs.spacing)) if spacing else tuple(ras.shape), crop)
    return Preprocessed(rs, rec)


def restore(array: np.ndarray, record: Record, *, order: int = 0, fill: float = 0) -> np.ndarray:
    """Put an array from the preprocessed grid back on the original grid.

    ``order`` 0 (nearest) for label maps, 1 (linear) for probability maps. The
    result has the original shape and is aligned with the original affine.
    """
    arr = np.asarray(array)
    if record.crop is not None:
        full = np.full(record.resampled_shape, fill, dtype=arr.dtype)
        full[record.crop] = arr
        arr = full
    if arr.shape != tuple(record.resampled_shape):
        raise CohortError(None, f"array shape {arr.shape} does not match the preprocessed grid {record.resampled_shape}")
    ratio = np.array(record.ras_spacing) / np.array(record.spacing)
    if order == 0:
        back = _resample_array(arr, ratio, record.ras_shape, order=0, cval=fill)
    else:
        back = _resample_array(arr.astype(np.float32), ratio, record.ras_shape, order=order, cval=fill).astype(np.float32)
    # undo the reorientation: apply the inverse orientation transform
    inv = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(record.original_affine))
    out = nio.apply_orientation(back, inv)
    if tuple(out.shape) != tuple(record.original_shape):
        raise CohortError(None, f"restored shape {out.shape} != original {record.original_shape}")
    return np.ascontiguousarray(out)
