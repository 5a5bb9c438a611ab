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


def test_real_case_with_a_lesion_gains_a_second_one_and_keeps_the_first(ts_case, tmp_path):
    """Issue 19 item 3 on the real 3 mm CT: a tumor-bearing scan keeps its tumor and gains one."""
    import json

    import numpy as np

    from cohort.case import Case
    from cohort.layouts import write_case
    from generative.registry import build_synthesizer
    from generative.tumors import TumorSpec, synthesize_cohort

    label = ts_case.label.copy()
    liver = np.argwhere(label == 5)
    c = liver[len(liver) // 2]
    box = tuple(slice(int(v) - 1, int(v) + 2) for v in c)
    label[box][label[box] == 5] = 27  # a small "real" liver tumor
    first = label == 27
    write_case(Case("TS1", ts_case.ct, label, ts_case.affine, {"kind": "real"}), tmp_path / "src")
    for method, spec in (("rules", TumorSpec("liver", size="small")), ("ca", TumorSpec("liver", diameter_mm=20))):
        rep = synthesize_cohort(tmp_path / "src", tmp_path / method, build_synthesizer(method), spec, seed=1,
                                progress=False)
        assert rep.ok, rep.summary()
        out = open_cohort(tmp_path / method).refs[0].load()
        assert np.all(out.label[first] == 27) and ((out.label == 27) & ~first).any(), method
        meta = json.loads((tmp_path / method / out.case_id / "case.json").read_text())
        assert meta["existing_lesions"] and meta["tumors"], method


def test_diffusion_inpainting_on_the_real_ct_changes_only_organ_and_tumor(ts_case):
    """Issue 19 item 4 on the real 3 mm CT (an untrained tiny pipeline at 1.5 mm: resampled ROI)."""
    import numpy as np
    import torch

    from cohort.config import config_dir, load_config
    from generative.diffusion.config import GenerativeConfig, InpaintSettings
    from generative.diffusion.inpaint import DiffusionSynthesizer
    from generative.diffusion.training import build_pipeline
    from generative.tumors import TumorSpec

    torch.manual_seed(0)
    pipe = build_pipeline(load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml"))
    synth = DiffusionSynthesizer(pipe, InpaintSettings(steps=2, roi_size=[32, 32, 32], margin_mm=3.0))
    for organ, labels in (("liver", (5,)), ("kidney", (3, 4))):
        res = synth(ts_case.ct, ts_case.label, ts_case.spacing, TumorSpec(organ, size="small"), np.random.default_rng(2))
        changed = res.ct != ts_case.ct
        assert changed.any(), organ
        assert np.all(np.isin(ts_case.label[changed], labels) | (res.label[changed] >= 27)), organ


def test_a_single_real_case_folder_reads(tmp_path, ts_case):
    from cohort.layouts import write_case

    write_case(ts_case, tmp_path / "cohort")
    one = open_cohort(tmp_path / "cohort" / ts_case.case_id)
    assert [r.case_id for r in one.refs] == [ts_case.case_id]
