"""Shapes, size classes and placement shared by the rule-based and diffusion tumor makers."""

import numpy as np
import pytest

from generative.tumors.base import SynthesisError, TumorSpec
from generative.tumors.placement import PlacementSampler, place_tumor, place_tumor_mask
from generative.tumors.shapes import (
    EARLY_CLASSES,
    SIZE_CLASSES_MM,
    count_for_class,
    ellipsoid_mask,
    sample_radii_mm,
    sample_size_class,
)
from tests.toys import toy_liver


def test_size_classes_match_synthetictumors():
    assert SIZE_CLASSES_MM == {"tiny": 4.0, "small": 8.0, "medium": 16.0, "large": 32.0}
    assert EARLY_CLASSES == ("tiny", "small")


def test_ellipsoid_volume_and_extent_without_elastic():
    rng = np.random.default_rng(0)
    m = ellipsoid_mask((40, 40, 40), (20, 20, 20), (8, 5, 3), rng, elastic=False)
    assert m.dtype == bool and m.shape == (40, 40, 40)
    assert abs(m.sum() / (4 / 3 * np.pi * 8 * 5 * 3) - 1) < 0.1
    xs, ys, zs = (np.flatnonzero(m.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    assert (xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1, zs[-1] - zs[0] + 1) == (17, 11, 7)


def test_ellipsoid_elastic_deforms_but_keeps_size_and_is_deterministic():
    plain = ellipsoid_mask((48,) * 3, (24, 24, 24), (10, 10, 10), np.random.default_rng(0), elastic=False)
    a = ellipsoid_mask((48,) * 3, (24, 24, 24), (10, 10, 10), np.random.default_rng(1), elastic=True)
    b = ellipsoid_mask((48,) * 3, (24, 24, 24), (10, 10, 10), np.random.default_rng(1), elastic=True)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, plain)
    assert 0.6 < a.sum() / plain.sum() < 1.5


def test_ellipsoid_clipped_at_array_edge():
    m = ellipsoid_mask((20, 20, 20), (0, 10, 10), (5, 5, 5), np.random.default_rng(0), elastic=False)
    assert 0 < m.sum() < 4 / 3 * np.pi * 125 * 0.6


def test_sample_radii_jitter_range():
    rng = np.random.default_rng(0)
    r = np.array([sample_radii_mm(rng, "medium") for _ in range(200)])
    assert r.shape == (200, 3)
    assert r.min() >= 0.75 * 16 and r.max() <= 1.25 * 16
    d = np.array([sample_radii_mm(rng, diameter_mm=10.0) for _ in range(100)]) / 5.0
    assert d.min() >= 0.75 and d.max() <= 1.25


def test_count_ranges():
    rng = np.random.default_rng(0)
    tiny = {count_for_class(rng, "tiny") for _ in range(300)}
    large = {count_for_class(rng, "large") for _ in range(300)}
    assert tiny == set(range(3, 11)) and large == {1, 2, 3}
    assert {count_for_class(rng, "small", mix=True) for _ in range(300)} == set(range(5, 11))


def test_sample_size_class_mix_and_early_fraction():
    rng = np.random.default_rng(0)
    assert {sample_size_class(rng, {"medium": 1.0}) for _ in range(20)} == {"medium"}
    early = [sample_size_class(rng, early_fraction=1.0) for _ in range(50)]
    late = [sample_size_class(rng, early_fraction=0.0) for _ in range(50)]
    assert set(early) <= {"tiny", "small"} and set(late) <= {"medium", "large"}
    half = [sample_size_class(rng, {"tiny": 1, "large": 1}, early_fraction=0.5) for _ in range(400)]
    assert set(half) == {"tiny", "large"} and 0.4 < half.count("tiny") / 400 < 0.6
    with pytest.raises(ValueError, match="unknown size class 'huge'"):
        sample_size_class(rng, {"huge": 1.0})


def test_place_tumor_inside_organ_away_from_vessel():
    ct, lab = toy_liver(40, vessel=True)
    organ = lab == 5
    vessel = lab == 19
    for seed in range(5):
        m = place_tumor_mask(organ, (1.0, 1.0, 1.0), 8.0, np.random.default_rng(seed), avoid=vessel, margin_mm=2.0)
        assert m.shape == organ.shape and m.any()
        assert not (m & ~organ).any()
        assert not (m & vessel).any()
        from scipy.ndimage import distance_transform_edt
        dist = distance_transform_edt(organ & ~vessel)
        assert dist[m].min() > 2.0


def test_place_tumor_center_in_middle_band():
    ct, lab = toy_liver(40)
    organ = lab == 5
    zs = np.flatnonzero(organ.any(axis=(0, 1)))
    for seed in range(10):
        p = place_tumor(organ, (1.0, 1.0, 1.0), "tiny", np.random.default_rng(seed))
        frac = (p.center_vox[2] - zs[0]) / (zs[-1] - zs[0])
        assert 0.28 <= frac <= 0.72
        assert not p.clipped


def test_place_tumor_too_big_is_clipped_not_refused():
    ct, lab = toy_liver(24)
    organ = lab == 5
    p = place_tumor(organ, (1.0, 1.0, 1.0), "large", np.random.default_rng(0))
    assert p.clipped
    full = p.full(organ.shape)
    assert full.any() and not (full & ~organ).any()


def test_sampler_rejects_empty_organ():
    with pytest.raises(SynthesisError, match="organ mask is empty"):
        PlacementSampler(np.zeros((8, 8, 8), bool), (1, 1, 1))


def test_tumor_spec_validation_and_parse():
    assert TumorSpec.parse("organ=pancreas, size=small,count=2") == TumorSpec("pancreas", size="small", count=2)
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        TumorSpec.parse("organ=liver,colour=red")
    with pytest.raises(ValueError, match="no lesion class"):
        TumorSpec("spleen")
