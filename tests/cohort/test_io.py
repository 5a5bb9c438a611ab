import gzip

import nibabel as nib
import numpy as np
import pytest

from cohort.errors import CohortError
from cohort.io import atomic_path, read_image, read_label, write_json, write_volume


def _save(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


def test_write_read_roundtrip(tmp_path, make_case):
    case = make_case()
    write_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    write_volume(tmp_path / "lab.nii.gz", case.label, case.affine)
    ct, meta = read_image(tmp_path / "ct.nii.gz")
    lab, _ = read_label(tmp_path / "lab.nii.gz")
    assert ct.dtype == np.float32 and np.abs(ct - np.rint(case.ct)).max() <= 0.5
    assert np.array_equal(lab, case.label)
    assert meta.spacing == pytest.approx((2.0, 2.0, 3.0)) and meta.orientation == "RAS"
    assert np.allclose(meta.affine, case.affine)


def test_missing_file(tmp_path):
    with pytest.raises(CohortError, match="nope.nii.gz: file does not exist"):
        read_image(tmp_path / "nope.nii.gz")


def test_corrupt_and_truncated(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not nifti")
    with pytest.raises(CohortError, match="bad.nii.gz: not a readable NIfTI"):
        read_image(bad)
    good = _save(tmp_path / "good.nii.gz", np.random.rand(30, 30, 30).astype(np.float32))
    raw = gzip.decompress(good.read_bytes())
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(CohortError, match="trunc.nii.gz: (truncated or corrupt|not a readable)"):
        read_image(trunc)


def test_nan_wrong_dims_absurd_spacing(tmp_path):
    a = np.zeros((8, 8, 8), np.float32)
    a[1, 2, 3] = np.nan
    with pytest.raises(CohortError, match="nan.nii.gz: 1 voxels are NaN or inf"):
        read_image(_save(tmp_path / "nan.nii.gz", a))
    with pytest.raises(CohortError, match="expected a 3D volume, got 2D"):
        read_image(_save(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.float32)))
    with pytest.raises(CohortError, match="absurd voxel spacing"):
        read_image(_save(tmp_path / "sp.nii.gz", np.zeros((8, 8, 8), np.float32), np.diag([100.0, 1, 1, 1])))


def test_non_integer_labels(tmp_path):
    with pytest.raises(CohortError, match="non-integer values"):
        read_label(_save(tmp_path / "l.nii.gz", np.full((4, 4, 4), 1.5, np.float32)))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"x": np.float32(1.5)})
    assert target.read_text().strip().endswith("}") and [p.name for p in tmp_path.iterdir()] == ["out.json"]
