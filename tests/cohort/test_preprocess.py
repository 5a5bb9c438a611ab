import numpy as np
import pytest

from cohort.case import Case
from cohort.errors import CohortError
from cohort.preprocess import crop_roi, preprocess, resample, restore, scale_hu, to_ras, unscale_hu


def test_scale_hu():
    x = np.array([-1000, -175, 37.5, 250, 3000], np.float32)
    assert scale_hu(x).tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert unscale_hu(scale_hu(x))[2] == pytest.approx(37.5)


def test_resample_keeps_extent_and_labels(make_case):
    case = make_case(spacing=(2.0, 2.0, 3.0))
    r = resample(case, (1.0, 1.0, 1.0))
    assert r.shape == (39, 35, 46) and r.spacing == pytest.approx((1, 1, 1))
    assert np.allclose(r.affine[:3, 3], case.affine[:3, 3])
    # liver volume preserved within a voxel layer
    v0 = (case.label == 5).sum() * 12.0
    v1 = (r.label == 5).sum() * 1.0
    assert abs(v1 - v0) / v0 < 0.25


def test_reoriented_input_restores_exactly(make_case):
    case = make_case()
    # an LPI-like input: flip x and y, permute axes
    ct = np.transpose(case.ct[::-1, ::-1], (2, 0, 1)).copy()
    lab = np.transpose(case.label[::-1, ::-1], (2, 0, 1)).copy()
    aff = np.zeros((4, 4))
    aff[0, 1], aff[1, 2], aff[2, 0], aff[3, 3] = -2.0, -2.0, 3.0, 1.0
    odd = Case("odd", ct, lab, aff, {})
    p = preprocess(odd, spacing=(1.5, 1.5, 1.5))
    assert to_ras(odd).image_meta.orientation == "RAS"
    back = restore(p.case.label, p.record)
    assert back.shape == odd.shape
    assert (back == odd.label).mean() > 0.97
    # exact when no resampling happens
    p2 = preprocess(odd, spacing=None)
    assert np.array_equal(restore(p2.case.label, p2.record), odd.label)
    prob = restore(p.case.ct, p.record, order=1)
    assert prob.dtype == np.float32 and prob.shape == odd.shape


def test_crop_roi_and_restore(make_case):
    case = make_case()
    p = preprocess(case, spacing=(2.0, 2.0, 3.0), crop_organs=["liver"], margin_mm=2.0)
    assert p.case.shape[0] < case.shape[0]
    assert (p.case.label == 27).sum() == (case.label == 27).sum()  # lesions belong to the organ ROI
    back = restore(p.case.label, p.record)
    liver_or_lesion = np.isin(case.label, (5, 27))
    assert np.array_equal(back[liver_or_lesion], case.label[liver_or_lesion])
    # world position of the cropped origin follows the crop
    assert np.allclose(p.case.affine[:3, 3], case.affine[:3, :3] @ [s.start for s in p.record.crop] + case.affine[:3, 3])


def test_empty_requested_organ_errors(make_case):
    case = make_case()
    case.meta["source_path"] = "/data/x/ct.nii.gz"
    with pytest.raises(CohortError, match=r"/data/x/ct.nii.gz: none of the organs \['pancreas'\] is present"):
        crop_roi(case, ["pancreas"])
