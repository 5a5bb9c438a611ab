"""SyntheticTumors rule-based synthesis: size classes, counts, placement, HU changes."""

import numpy as np
import pytest

from cohort import labels as L
from generative.tumors import RulesConfig, RuleSynthesizer, SynthesisError, TumorSpec
from generative.tumors.shapes import SIZE_CLASSES_MM
from tests.toys import extents_mm, toy_liver

LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]


@pytest.mark.parametrize("size,spacing", [("tiny", 0.5), ("small", 1.0), ("medium", 1.5), ("large", 2.5)])
def test_size_classes_land_in_their_radius_ranges(size, spacing):
    """Without elastic deformation each half-extent is the class radius x U(0.75, 1.25) (+- a voxel)."""
    ct, lab = toy_liver(56)
    sp = (spacing,) * 3
    synth = RuleSynthesizer(RulesConfig(elastic=False, margin_mm=0.0))
    r = SIZE_CLASSES_MM[size]
    for seed in range(3):
        res = synth(ct, lab, sp, TumorSpec(size=size, count=1), np.random.default_rng(seed))
        assert len(res.records) == 1
        half = extents_mm(res.label == LESION, sp) / 2
        assert np.all(half >= 0.75 * r - spacing) and np.all(half <= 1.25 * r + spacing), (size, half)
        assert not res.info["placements"][0]["clipped"]
        radii = np.array(res.info["placements"][0]["radii_mm"])
        assert np.all((radii >= 0.75 * r - 1e-6) & (radii <= 1.25 * r + 1e-6))


def test_elastic_size_stays_near_class():
    ct, lab = toy_liver(48)
    res = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(size="small", count=1), np.random.default_rng(0))
    d = res.records[0]["max_axial_diameter_mm"]
    assert 0.5 * 16 <= d <= 1.6 * 16


def test_counts_and_separate_components():
    ct, lab = toy_liver(64)
    res = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(size="tiny"), np.random.default_rng(3))
    n = len(res.info["placements"])
    assert 3 <= n <= 10
    assert len(res.records) == n  # room enough: every tumor its own component
    assert all(r["early"] for r in res.records)


def test_mix_draws_every_class():
    ct, lab = toy_liver(64)
    res = RuleSynthesizer()(ct, lab, (2.0,) * 3, TumorSpec(size="mix"), np.random.default_rng(0))
    classes = [p["size_class"] for p in res.info["placements"]]
    assert set(classes) == set(SIZE_CLASSES_MM)
    assert 3 + 5 + 2 + 1 <= len(classes) <= 10 + 10 + 5 + 3


def test_inside_organ_darker_only_in_organ_and_inputs_untouched():
    ct, lab = toy_liver(40, vessel=True)
    ct0, lab0 = ct.copy(), lab.copy()
    res = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(size="small", count=2), np.random.default_rng(1))
    assert np.array_equal(ct, ct0) and np.array_equal(lab, lab0)
    lesion = res.label == LESION
    assert lesion.any() and not (lesion & (lab0 != LIVER)).any()  # never on the vessel or outside
    changed = np.abs(res.ct - ct0) > 1e-4
    assert not (changed & (lab0 != LIVER)).any()
    drop = ct0 - res.ct
    assert drop.min() >= -1e-4 and drop.max() <= 145.0
    assert drop[lesion].mean() > 10.0
    assert 0.0 <= res.info["edge_sigma_vox"] - 1.0 <= 1.0 and 65 <= res.info["hu_difference"] <= 145


def test_diameter_spec_and_records():
    ct, lab = toy_liver(48)
    res = RuleSynthesizer(RulesConfig(elastic=False))(ct, lab, (1.0,) * 3, TumorSpec(diameter_mm=12.0, count=1),
                                                      np.random.default_rng(0))
    rec = res.records[0]
    assert 0.75 * 12 - 1 <= rec["max_axial_diameter_mm"] <= 1.25 * 12 * 1.42 + 1  # in-plane diagonal at most
    assert rec["method"] == "rules" and rec["organ"] == "liver" and rec["label"] == LESION
    assert rec["volume_ml"] == pytest.approx(rec["voxels"] / 1000.0)


def test_deterministic_per_seed():
    ct, lab = toy_liver(40)
    a = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(), np.random.default_rng(5))
    b = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(), np.random.default_rng(5))
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.label, b.label)


def test_bad_inputs():
    ct, lab = toy_liver(16)
    with pytest.raises(SynthesisError, match="no kidney voxels"):
        RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec("kidney"), np.random.default_rng(0))
    with pytest.raises(SynthesisError, match="same 3D shape"):
        RuleSynthesizer()(ct[:8], lab, (1.0,) * 3, TumorSpec(), np.random.default_rng(0))
    with pytest.raises(SynthesisError, match="unknown tumor size"):
        RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(size="huge"), np.random.default_rng(0))


# --- issue 19: darkening relative to the organ's own HU ----------------------------------------------------------


def gaussian_liver(hu: float, noise_hu: float = 10.0, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    ct, lab = toy_liver(n)
    rng = np.random.default_rng(1)
    liver = lab == LIVER
    ct[liver] = (hu + rng.normal(0, noise_hu, int(liver.sum()))).astype(np.float32)
    return ct, lab


def test_non_contrast_organ_gets_a_hypodense_tumor_above_water():
    """A 45 HU liver: the reference's absolute 65-145 HU darkening put the tumor at fat density;
    relative mode scales it by 45/130 and records what it measured."""
    ct, lab = gaussian_liver(45.0)
    spec = TumorSpec(size="small", count=2)
    for seed in range(3):
        res = RuleSynthesizer()(ct, lab, (1.0,) * 3, spec, np.random.default_rng(seed))
        lesion = res.label == LESION
        assert 5.0 < float(res.ct[lesion].mean()) < 45.0 - 8.0, float(res.ct[lesion].mean())
        hu = res.info["hu"]
        assert hu["hu_mode"] == "relative" and abs(hu["organ_median_hu"] - 45.0) < 1.5
        assert hu["reference_organ_hu"] == 130.0 and hu["hu_floor"] == 0.0
        assert abs(hu["hu_scale"] - 45.0 / 130.0) < 0.02
        assert 65 * 0.33 <= res.info["hu_difference"] <= 145 * 0.36 and hu["hu_difference"] == res.info["hu_difference"]
        assert res.records[0]["hu_mode"] == "relative" and res.records[0]["organ_median_hu"] == hu["organ_median_hu"]
    old = RuleSynthesizer(RulesConfig(hu_mode="absolute"))(ct, lab, (1.0,) * 3, spec, np.random.default_rng(0))
    new = RuleSynthesizer()(ct, lab, (1.0,) * 3, spec, np.random.default_rng(0))
    assert np.array_equal(old.label, new.label)  # the same draws: only the darkening differs
    lesion = old.label == LESION
    assert float(old.ct[lesion].mean()) < float(new.ct[lesion].mean()) - 15
    assert old.info["hu"] == {"hu_mode": "absolute", "hu_scale": 1.0, "hu_difference": old.info["hu_difference"]}
    assert 65 <= old.info["hu_difference"] <= 145


def test_contrast_enhanced_organ_keeps_the_reference_darkening():
    """At the reference organ HU (130) the relative darkening is the absolute one."""
    ct, lab = gaussian_liver(130.0, noise_hu=15.0)
    rel = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec(size="small"), np.random.default_rng(2))
    ab = RuleSynthesizer(RulesConfig(hu_mode="absolute"))(ct, lab, (1.0,) * 3, TumorSpec(size="small"),
                                                          np.random.default_rng(2))
    assert np.array_equal(rel.label, ab.label)
    assert abs(rel.info["hu"]["hu_scale"] - 1.0) < 0.01
    drop_rel, drop_ab = ct - rel.ct, ct - ab.ct
    assert np.allclose(drop_rel, drop_ab * rel.info["hu"]["hu_scale"], atol=0.02)


def test_kidney_uses_its_own_reference_hu():
    ct, lab = gaussian_liver(170.0)
    lab[lab == LIVER] = L.NAME_TO_INDEX["kidney_left"]
    res = RuleSynthesizer()(ct, lab, (1.0,) * 3, TumorSpec("kidney", size="small", count=1), np.random.default_rng(0))
    assert res.info["hu"]["reference_organ_hu"] == 170.0 and abs(res.info["hu"]["hu_scale"] - 1.0) < 0.02


def test_real_ct_rule_tumor_is_darker_than_the_liver_and_above_fat():
    """The 3 mm non-contrast TotalSegmentator sample (liver ~46 HU): rule tumors used to average
    -12 to 20 HU; now between water and the liver."""
    from cohort.layouts import open_cohort
    from tests.conftest import TS_COHORT

    case = open_cohort(TS_COHORT).refs[0].load()
    organ_hu = float(np.median(case.ct[case.label == LIVER]))
    for seed in range(3):
        res = RuleSynthesizer()(case.ct, case.label, case.spacing, TumorSpec("liver"), np.random.default_rng(seed))
        m = float(res.ct[res.label == LESION].mean())
        assert 5.0 < m < organ_hu - 8.0, (seed, m, organ_hu)
