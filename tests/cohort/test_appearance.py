"""Appearance attributes on constructed tumors with known answers, and the draws sampling makes."""

from __future__ import annotations

import numpy as np
import pytest

from cohort import labels as L
from cohort.appearance import (
    CONDITION_ATTRIBUTES,
    classify,
    draw_appearance,
    lesion_instances,
    measure_appearance,
    normalise,
    paint_drawn,
    size_class,
)

SP = (1.0, 1.0, 1.0)
LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]


def _grid(n=48):
    c = (n - 1) / 2
    x, y, z = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    return np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)


def _case(r_tumor=8.0, organ_hu=100.0, n=48):
    """A liver ball of ``organ_hu`` with a central tumor sphere of radius ``r_tumor`` voxels."""
    r = _grid(n)
    label = np.zeros(r.shape, np.uint8)
    label[r <= 20] = LIVER
    label[r <= r_tumor] = LESION
    ct = np.full(r.shape, -100.0, np.float32)
    ct[label == LIVER] = organ_hu
    return r, ct, label


def test_sphere_of_known_contrast_has_that_contrast_no_rim_and_a_sharp_edge():
    r, ct, label = _case()
    ct[label == LESION] = 60.0  # 40 HU below the organ
    (a,) = measure_appearance(ct, label, SP)
    assert a.organ == "liver" and a.label == LESION
    assert a.contrast_hu == pytest.approx(-40.0, abs=1e-6) and a.organ_hu == pytest.approx(100.0)
    assert a.heterogeneity_hu == pytest.approx(0.0, abs=1e-6) and a.rim_hu == pytest.approx(0.0, abs=1e-6)
    assert a.necrotic_fraction == 0.0
    assert a.edge_hu_per_mm == pytest.approx(40.0)  # the whole 40 HU step within one 1 mm voxel
    assert a.diameter_mm == pytest.approx(17.0, abs=1.5) and a.size_class == "early"
    assert classify(a) == "hypo"


def test_blurred_edge_scores_lower_than_a_sharp_one():
    from scipy import ndimage

    _, ct, label = _case()
    ct[label == LESION] = 40.0
    sharp = measure_appearance(ct, label, SP)[0].edge_hu_per_mm
    blurred = ndimage.gaussian_filter(ct, 2.0)
    blurred[label == 0] = -100
    soft = measure_appearance(blurred, label, SP)[0].edge_hu_per_mm
    assert soft < 0.6 * sharp


def test_rim_of_known_hu_gives_that_rim_contrast():
    r, ct, label = _case(r_tumor=10.0)
    ct[label == LESION] = 70.0
    ct[(label == LESION) & (r > 6.0)] = 150.0  # the outer ring, 80 HU above the core
    (a,) = measure_appearance(ct, label, SP)
    assert a.rim_hu == pytest.approx(80.0, abs=1e-6)
    assert a.core_contrast_hu == pytest.approx(-30.0, abs=1e-6)
    assert classify(a) == "rim"


def test_necrotic_core_of_known_fraction():
    r, ct, label = _case(r_tumor=10.0)
    tumor = label == LESION
    ct[tumor] = 80.0
    core = tumor & (r <= 6.0)
    ct[core] = 10.0  # fluid
    (a,) = measure_appearance(ct, label, SP)
    assert a.necrotic_fraction == pytest.approx(core.sum() / tumor.sum(), abs=1e-4)  # rounded to 4 places
    assert classify(a) == "necrotic"


def test_contrast_follows_the_organ_not_absolute_hu():
    """The same tumor-to-organ difference in a phase-shifted scan (all +50 HU) measures the same."""
    _, ct, label = _case()
    ct[label == LESION] = 60.0
    a = measure_appearance(ct, label, SP)[0]
    b = measure_appearance(ct + 50.0 * (label > 0), label, SP)[0]
    assert a.contrast_hu == pytest.approx(b.contrast_hu) and b.organ_hu == pytest.approx(150.0)


def test_two_lesions_are_measured_separately_largest_first():
    r, ct, label = _case(r_tumor=0.0, n=64)
    x = np.indices(label.shape)
    big = ((x[0] - 24) ** 2 + (x[1] - 31) ** 2 + (x[2] - 31) ** 2) <= 36
    small = ((x[0] - 42) ** 2 + (x[1] - 31) ** 2 + (x[2] - 31) ** 2) <= 9
    label[big | small] = LESION
    ct[big], ct[small] = 60.0, 160.0
    inst, classes = lesion_instances(label)
    assert classes == [LESION, LESION] and (inst == 1).sum() == big.sum()
    a, b = measure_appearance(ct, label, SP)
    assert a.contrast_hu == pytest.approx(-40) and b.contrast_hu == pytest.approx(60)


def test_size_class_edges():
    assert [size_class(d) for d in (20.0, 20.1, 50.0, 50.1)] == ["early", "medium", "medium", "large"]


def test_normalise_scales_and_zeroes_undefined():
    v = normalise({"contrast_hu": -50.0, "rim_hu": float("nan"), "necrotic_fraction": 0.4})
    assert v.dtype == np.float32 and v.tolist() == pytest.approx([-0.5, 0.0, 0.0, 0.4, 0.0])


TABLE = [{"case_id": f"c{i}", "organ": o, "size_class": s, "contrast_hu": c, "heterogeneity_hu": 10.0 + i,
          "rim_hu": 0.0, "necrotic_fraction": 0.0, "edge_hu_per_mm": 20.0}
         for i, (o, s, c) in enumerate([("liver", "early", -30.0), ("liver", "early", -35.0),
                                        ("liver", "large", 40.0), ("pancreas", "early", -60.0)])]


def test_draws_keep_organ_and_size_class_and_are_deterministic_per_seed():
    draws = [draw_appearance(TABLE, "liver", "early", np.random.default_rng([s, 1]))[0]["contrast_hu"] for s in range(20)]
    assert set(draws) == {-30.0, -35.0}  # only the liver's early tumors
    again = [draw_appearance(TABLE, "liver", "early", np.random.default_rng([s, 1]))[0]["contrast_hu"] for s in range(20)]
    assert draws == again
    v, src = draw_appearance(TABLE, "liver", "medium", np.random.default_rng(0))  # no liver medium: the organ's pool
    assert src["drawn_from"] == "organ" and src["pool_size"] == 3
    v, src = draw_appearance(TABLE, "kidney", "early", np.random.default_rng(0))
    assert src["drawn_from"] == "all training tumors"


def test_asked_values_replace_drawn_ones_and_the_joint_row_is_kept():
    v, src = draw_appearance(TABLE, "pancreas", "early", np.random.default_rng(0), asked={"rim_hu": 25.0})
    assert v["rim_hu"] == 25.0 and v["contrast_hu"] == -60.0 and v["heterogeneity_hu"] == 13.0
    assert src["asked"] == {"rim_hu": 25.0} and src["row"] == "c3"
    assert list(v) == list(CONDITION_ATTRIBUTES)


def test_paint_drawn_fills_each_lesion_inside_its_voxels_only():
    _, _, label = _case()
    ch = paint_drawn(label, SP, TABLE, np.random.default_rng(0))
    inside = label == LESION
    assert ch.shape == (5, *label.shape)
    assert np.all(ch[:, ~inside] == 0) and np.unique(ch[0][inside]).size == 1
    assert ch[0][inside][0] * 100 in (-30.0, -35.0)
