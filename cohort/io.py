"""Reading and writing volumes. The only module of the project that touches nibabel.

Arrays are in the file's voxel order (i, j, k); the 4x4 affine maps voxel
indices to world millimetres in RAS+ (nibabel's convention: +x toward the
patient's right side, +y anterior, +z superior; the TotalSegmentator sample
has its liver at high x). CT is
returned as float32 Hounsfield units, label maps as integer arrays.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cohort.errors import CohortError

#: Spacing outside this range (mm) is taken as a broken header, not a scan.
SPACING_RANGE_MM = (0.05, 20.0)


@dataclass(frozen=True)
class ImageMeta:
    """Geometry and origin of a volume. ``spacing`` is in mm per voxel axis."""

    affine: np.ndarray
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    orientation: str  # e.g. "RAS", from nibabel.aff2axcodes
    path: str | None = None

    @staticmethod
    def from_affine(affine: np.ndarray, shape: tuple[int, ...], path: str | Path | None = None) -> ImageMeta:
        affine = np.asarray(affine, dtype=np.float64)
        spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        orientation = "".join(nib.aff2axcodes(affine))
        return ImageMeta(affine, tuple(int(s) for s in shape), spacing, orientation, None if path is None else str(path))


def _load(path: str | Path) -> tuple[np.ndarray, ImageMeta, np.dtype]:
    path = Path(path)
    if not path.exists():
        raise CohortError(path, "file does not exist")
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for bad headers
        raise CohortError(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from e
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile) as e:
        raise CohortError(path, f"truncated or corrupt image data ({type(e).__name__}: {e})") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CohortError(path, f"expected a 3D volume, got {data.ndim}D with shape {tuple(data.shape)}")
    meta = ImageMeta.from_affine(img.affine, data.shape, path)
    if not np.all(np.isfinite(img.affine)):
        raise CohortError(path, "affine contains NaN or inf")
    lo, hi = SPACING_RANGE_MM
    if any(not (lo <= s <= hi) for s in meta.spacing):
        raise CohortError(path, f"absurd voxel spacing {tuple(round(s, 4) for s in meta.spacing)} mm (expected {lo}-{hi} mm)")
    return data, meta, img.get_data_dtype()


def read_image(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a CT volume as float32 HU, shape (X, Y, Z). Rejects NaN/inf voxels."""
    data, meta, _ = _load(path)
    arr = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        n = int((~np.isfinite(arr)).sum())
        raise CohortError(path, f"{n} voxels are NaN or inf")
    return arr, meta


def read_label(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read an integer label map, shape (X, Y, Z), values unchanged (int32).

    Float-stored label maps are accepted only when every value is a whole number.
    """
    data, meta, _ = _load(path)
    arr = np.asarray(data)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)):
            raise CohortError(path, "label map contains NaN or inf")
        if not np.all(np.mod(arr, 1) == 0):
            raise CohortError(path, "label map has non-integer values")
    arr = arr.astype(np.int32)
    if arr.size and arr.min() < 0:
        raise CohortError(path, f"label map has negative values (min {int(arr.min())})")
    return arr, meta


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A failure inside the block leaves neither the temporary file nor a partial
    ``path`` behind. The temporary keeps the suffix so writers that look at it
    (nibabel: ``.nii.gz`` means gzip) behave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_volume(path: str | Path, array: np.ndarray, affine: np.ndarray, *, dtype: Any = None) -> Path:
    """Write a 3D array as NIfTI atomically. CT is stored int16 HU when ``dtype`` is None
    and the array is floating; label maps (integer arrays) as uint8."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise CohortError(path, f"refusing to write a {array.ndim}D array as a volume (shape {array.shape})")
    if dtype is None:
        dtype = np.int16 if np.issubdtype(array.dtype, np.floating) else (np.uint8 if array.max(initial=0) < 256 else np.int16)
    if np.issubdtype(np.dtype(dtype), np.integer) and np.issubdtype(array.dtype, np.floating):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    img = nib.Nifti1Image(array.astype(dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (sorted keys, numpy scalars converted)."""
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    text = json.dumps(obj, indent=2, sort_keys=True, default=default)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CohortError(path, "file does not exist") from None
    except json.JSONDecodeError as e:
        raise CohortError(path, f"invalid JSON ({e})") from e


def same_grid(a: ImageMeta, b: ImageMeta, tol: float = 1e-3) -> bool:
    """True when two volumes share shape and affine (within ``tol`` mm)."""
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=tol)
