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
import re
import secrets
import shutil
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

#: Largest volume (voxels, all header dimensions) read into memory; ``TUMORGEN_MAX_VOXELS``
#: overrides it. 2**31 int16 voxels are 4 GiB on disk and 8 GiB as float32 HU: far above
#: any abdominal CT (512 x 512 x 1500 is 0.4e9), so a header claiming more is broken.
MAX_VOXELS = 2**31
MAX_VOXELS_ENV = "TUMORGEN_MAX_VOXELS"

#: deflate cannot compress better than about 1032:1, so a .nii.gz smaller than
#: 1/1032 of the bytes its header claims cannot hold them
DEFLATE_MAX_RATIO = 1032

#: Temporary names of the atomic writers: ``.<stem>.<8 characters>.part<suffixes>`` for
#: files (``.ct.1a2b3c4d.part.nii.gz``), ``.<case id>.<8 characters>.part`` for case
#: folders. The 8 characters are hex here and were [a-z0-9_] from tempfile before, so
#: leftovers of either are recognised. Readers skip these names; writers that own a
#: folder delete them (:func:`clean_stale_temps`).
TEMP_MARK = ".part"
_TEMP_NAME = re.compile(r"\.[^/]*\.[a-z0-9_]{8}\.part(\.[^/]+)?")


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
        codes = nib.aff2axcodes(affine)
        if None in codes:  # a zero column of the affine: that voxel axis points nowhere
            raise CohortError(path, f"invalid voxel spacing {tuple(round(s, 4) for s in spacing)} mm: an axis "
                                    "has zero (or no) spacing in the header, so its orientation is undefined")
        return ImageMeta(affine, tuple(int(s) for s in shape), spacing, "".join(codes),
                         None if path is None else str(path))


def max_voxels() -> int:
    """The voxel limit of :func:`read_image` / :func:`read_label` (``TUMORGEN_MAX_VOXELS`` or :data:`MAX_VOXELS`)."""
    value = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not value:
        return MAX_VOXELS
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise CohortError(None, f"{MAX_VOXELS_ENV} must be a positive whole number of voxels, got {value!r}")
    return n


def _check_header_size(path: Path, img: Any) -> None:
    """Refuse a header whose shape and dtype cannot be (or must not be) read, before reading any data.

    nibabel allocates what the header claims: 4000^3 int16 over a few bytes of
    payload would try to allocate 128 GB.
    """
    shape = tuple(int(s) for s in img.header.get_data_shape())
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    nbytes = voxels * int(img.header.get_data_dtype().itemsize)
    limit = max_voxels()
    if voxels > limit:
        raise CohortError(path, f"header claims shape {shape} ({voxels:,} voxels), above the limit of {limit:,} "
                                f"voxels (set {MAX_VOXELS_ENV} to read larger volumes)")
    size = path.stat().st_size
    if path.name.endswith(".nii"):
        need = int(getattr(img.dataobj, "offset", 0)) + nbytes  # the image header copy has vox_offset 0
        if size < need:
            raise CohortError(path, f"header claims shape {shape} ({nbytes:,} bytes of "
                                    f"{img.header.get_data_dtype()}) but the file holds {size:,} bytes, "
                                    f"{need:,} needed (limit {limit:,} voxels): truncated file or broken header")
    elif path.name.endswith(".nii.gz") and size * DEFLATE_MAX_RATIO < nbytes:
        raise CohortError(path, f"header claims shape {shape} ({nbytes:,} bytes of {img.header.get_data_dtype()}) "
                                f"but the {size:,}-byte gzip file cannot hold that much (limit {limit:,} voxels): "
                                "truncated file or broken header")


def _raw_pixdim(path: Path, img: Any) -> tuple[float, ...] | None:
    """pixdim[1:4] (mm) as stored: nibabel's load silently replaces zeros by 1."""
    if not isinstance(img.header, nib.Nifti1Header):
        return None
    with nib.openers.ImageOpener(str(path)) as f:
        raw = type(img.header).from_fileobj(f, check=False)
    return tuple(round(float(v), 4) for v in raw["pixdim"][1:4])


def _zero_pixdim(path: Path, img: Any) -> bool:
    """True when the affine comes from pixdim (no sform) and a stored pixdim is zero.

    nibabel then uses 1 mm for that axis, a spacing the scan never had.
    """
    if not isinstance(img.header, nib.Nifti1Header) or int(img.header["sform_code"]) > 0:
        return False
    pixdim = _raw_pixdim(path, img)
    return pixdim is not None and any(v == 0 for v in pixdim)


def _load(path: str | Path) -> tuple[np.ndarray, ImageMeta, np.dtype]:
    path = Path(path)
    if not path.exists():
        raise CohortError(path, "file does not exist")
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for bad headers
        raise CohortError(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from e
    _check_header_size(path, img)
    # everything below is checked on the header, before any voxel is read
    shape = tuple(int(s) for s in img.header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CohortError(path, f"expected a 3D volume, got {len(shape)}D with shape {shape}")
    if not np.all(np.isfinite(img.affine)):
        raise CohortError(path, "affine contains NaN or inf")
    # spacing before orientation: a zero spacing has no orientation (aff2axcodes gives None)
    spacing = tuple(round(float(s), 4) for s in np.sqrt((np.asarray(img.affine, np.float64)[:3, :3] ** 2).sum(axis=0)))
    if not all(s > 0 for s in spacing) or _zero_pixdim(path, img):
        raise CohortError(path, f"invalid voxel spacing: zero spacing in the header (pixdim {_raw_pixdim(path, img)} "
                                f"mm, affine column lengths {spacing} mm)")
    lo, hi = SPACING_RANGE_MM
    if any(not (lo <= s <= hi) for s in spacing):
        raise CohortError(path, f"absurd voxel spacing {spacing} mm (expected {lo}-{hi} mm)")
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile) as e:
        raise CohortError(path, f"truncated or corrupt image data ({type(e).__name__}: {e})") from e
    if data.ndim == 4:
        data = data[..., 0]
    meta = ImageMeta.from_affine(img.affine, data.shape, path)
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


def is_temp_name(name: str | Path) -> bool:
    """True for the names :func:`atomic_path` and :func:`make_temp_dir` give their temporaries.

    A run killed mid-write leaves them behind; readers and listers skip them.
    """
    return _TEMP_NAME.fullmatch(Path(name).name) is not None


def _temp_name(stem: str, suffix: str = "") -> str:
    return f".{stem}.{secrets.token_hex(4)}{TEMP_MARK}{suffix}"


def make_temp_dir(parent: str | Path, stem: str) -> Path:
    """Create a hidden temporary folder ``parent/.<stem>.<8 hex>.part`` and return it.

    Unlike ``tempfile.mkdtemp`` (mode 0700) the folder gets the umask's usual
    mode (0755 under umask 022), which it keeps when renamed into place.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / _temp_name(stem)
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:
            continue


def _make_temp_file(parent: Path, stem: str, suffix: str) -> Path:
    while True:
        path = parent / _temp_name(stem, suffix)
        try:
            # 0666 minus the umask (0644 under umask 022), not tempfile.mkstemp's 0600:
            # the renamed file must be readable wherever a plain write would be
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporaries of this product's atomic writers left in ``folder`` by a killed run.

    Only names matching :func:`is_temp_name` are touched, never anything else
    (a temporary case folder goes whole). For writers that own ``folder``: call
    on start, not while another process may be writing there. Returns what was deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if is_temp_name(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A failure inside the block leaves neither the temporary file nor a partial
    ``path`` behind. The temporary keeps the suffix so writers that look at it
    (nibabel: ``.nii.gz`` means gzip) behave; its name is ``.<stem>.<8 hex>.part<suffix>``
    (see :func:`is_temp_name`) and its mode follows the umask like a plain write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    tmp_path = _make_temp_file(path.parent, path.name.split(".")[0], suffix)
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
