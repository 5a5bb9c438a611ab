"""The real TotalSegmentator CT sample (tests/data/totalsegmentator, see its NOTICE.md)."""

import numpy as np
import pytest

from cohort.layouts import open_cohort, write_case
from cohort.lesions import measure_lesions
from cohort.preprocess import preprocess, restore
from cohort.summary import summarize
from tests.conftest import TS_COHORT


@pytest.fixture(scope="module")
def ts_case():
    return open_cohort(TS_COHORT).refs[0].load()


def test_reads_real_ct_and_maps_organs(ts_case):
    assert ts_case.shape == (122, 101, 30) and ts_case.spacing == pytest.approx((3, 3, 3))
    assert -1100 <= ts_case.ct.min() < -900 and ts_case.ct.max() == pytest.approx(1207)
    assert set(ts_case.present_labels()) == {"kidney_left", "kidney_right", "liver", "pancreas", "spleen"}
    liver_hu = float(np.median(ts_case.ct[ts_case.mask("liver")]))
    assert 20 < liver_hu < 200  # soft tissue, contrast-enhanced or not
    # RAS+: the liver lies on the patient's right = higher x than the spleen
    assert np.argwhere(ts_case.mask("liver"))[:, 0].mean() > np.argwhere(ts_case.mask("spleen"))[:, 0].mean()
    assert measure_lesions(ts_case.label, ts_case.spacing) == []


def test_totalsegmentator_label_map_agrees_with_masks(ts_case):
    full = open_cohort(TS_COHORT / "manifest_total.jsonl").refs[0].load()
    for organ in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas"):
        a, b = full.mask(organ), ts_case.mask(organ)
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.8, organ
    assert full.has("aorta") and full.has("postcava")


def test_real_ct_resample_roundtrip(ts_case):
    p = preprocess(ts_case, spacing=(1.5, 1.5, 1.5))
    assert p.case.shape == (243, 201, 59)
    back = restore(p.case.label, p.record)
    assert back.shape == ts_case.shape and np.array_equal(back, ts_case.label)


def test_real_ct_write_read_roundtrip(tmp_path, ts_case):
    write_case(ts_case, tmp_path)
    again = open_cohort(tmp_path).refs[0].load()
    assert np.array_equal(again.label, ts_case.label)
    assert np.array_equal(again.ct, ts_case.ct)  # int16 HU survive exactly
    s = summarize(tmp_path, progress=False).as_dict()
    assert s["cases"] == 1 and s["organs"]["liver"] == 1 and s["tumors"] == {}
