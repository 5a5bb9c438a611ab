import gzip
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from cohort.errors import CohortError
from cohort.io import (
    MAX_VOXELS_ENV,
    atomic_path,
    clean_stale_temps,
    is_temp_name,
    make_temp_dir,
    read_image,
    read_label,
    write_json,
    write_text,
    write_volume,
)
from tests.conftest import write_lying_header


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


@pytest.mark.parametrize("problem", ["zero_spacing", "zero_pixdim"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_zero_spacing_is_a_cohort_error(tmp_path, problem, suffix):
    # the zero affine column used to escape as a TypeError from aff2axcodes; a zero pixdim
    # without sform was read as 1 mm
    path = write_lying_header(tmp_path / f"{problem}{suffix}", problem)
    for read in (read_image, read_label):
        with pytest.raises(CohortError, match=rf"{problem}{suffix}: invalid voxel spacing: zero spacing") as e:
            read(path)
        assert e.value.path == str(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_huge_header_is_refused_before_reading(tmp_path, monkeypatch, suffix):
    path = write_lying_header(tmp_path / f"huge{suffix}", "huge_shape")
    monkeypatch.delenv(MAX_VOXELS_ENV, raising=False)
    with pytest.raises(CohortError, match=r"huge.*: header claims shape \(4000, 4000, 4000\).*above the limit of "
                                          r"2,147,483,648 voxels"):
        read_image(path)
    # under a raised limit the file's own size still gives the lie away
    monkeypatch.setenv(MAX_VOXELS_ENV, str(10**11))
    with pytest.raises(CohortError, match=r"claims shape \(4000, 4000, 4000\).*(file holds|gzip file cannot hold)"
                                          r".*limit 100,000,000,000 voxels"):
        read_label(path)


def test_voxel_limit_comes_from_the_environment(tmp_path, monkeypatch, make_case):
    case = make_case()  # 20 x 18 x 16 = 5,760 voxels
    write_volume(tmp_path / "ct.nii", case.ct, case.affine)
    monkeypatch.setenv(MAX_VOXELS_ENV, "5000")
    with pytest.raises(CohortError, match=r"ct.nii: header claims shape \(20, 18, 16\).*limit of 5,000 voxels"):
        read_image(tmp_path / "ct.nii")
    monkeypatch.setenv(MAX_VOXELS_ENV, "5760")
    assert read_image(tmp_path / "ct.nii")[0].shape == (20, 18, 16)
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(CohortError, match=f"{MAX_VOXELS_ENV} must be a positive whole number"):
        read_image(tmp_path / "ct.nii")


def test_temp_names_are_recognised_and_only_they_are_cleaned(tmp_path):
    with atomic_path(tmp_path / "PHANTOM_As0_0001.nii.gz") as tmp:
        file_temp = tmp.name
        assert is_temp_name(tmp) and file_temp.endswith(".part.nii.gz")
    folder_temp = make_temp_dir(tmp_path, "PHANTOM_As0_0002")
    (folder_temp / "ct.nii.gz").write_bytes(b"half a case")
    assert is_temp_name(folder_temp) and is_temp_name(".case.ab_cd9z8.part")  # tempfile's names of before
    # a kill leaves both; the user's own files look alike but are not ours
    stale = tmp_path / file_temp
    stale.write_bytes(b"partial")
    keep = ["PHANTOM_As0_0001.nii.gz", "notes.part", ".notes.part", "scan.part.nii.gz", ".x.TOOLONG99.part.nii.gz",
            ".hidden.nii.gz"]
    for name in keep[1:]:
        (tmp_path / name).write_text("mine")
    assert not any(is_temp_name(n) for n in keep)
    assert sorted(p.name for p in clean_stale_temps(tmp_path)) == sorted([file_temp, folder_temp.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert clean_stale_temps(tmp_path / "missing") == []


def test_written_files_follow_the_umask(tmp_path, make_case):
    case = make_case()
    old = os.umask(0o022)
    try:
        paths = [write_volume(tmp_path / "a" / "ct.nii.gz", case.ct, case.affine), write_json(tmp_path / "x.json", {}),
                 write_text(tmp_path / "x.txt", "hi")]
        folder = make_temp_dir(tmp_path, "c")
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p  # tempfile.mkstemp gave 0600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # tempfile.mkdtemp gave 0700
