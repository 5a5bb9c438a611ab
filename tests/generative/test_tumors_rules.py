"""SyntheticTumors rule-based synthesis: size classes, counts, placement, HU changes."""

import numpy as np
import pytest

from cohort import labels as L
from generative.tumors import RulesConfig, RuleSynthesizer, SynthesisError, TumorSpec
from generative.tumors.shapes import SIZE_CLASSES_MM
from tests.toys import toy_liver

LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]


def extents_mm(mask: np.ndarray, spacing) -> np.ndarray:
    ext = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        ext.append((idx[-1] - idx[0] + 1) * spacing[ax])
    return np.array(ext)


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
