"""Case and cohort metrics on hand-built volumes with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cohort import labels as L
from cohort.config import ConfigError, config_dir
from evaluation.bootstrap import Summary, auc_summary, bootstrap_indices, ratio_summary, roc_auc
from evaluation.evaluate import axial_last
from evaluation.metrics import (
    MetricsConfig,
    dice,
    equivalent_diameter_mm,
    evaluate_case,
    load_metrics_config,
    roc_points,
    summarize,
    summarize_overall,
)

LIVER, LIVER_LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]
PANCREAS, PANC_LESION = L.NAME_TO_INDEX["pancreas"], L.NAME_TO_INDEX["pancreatic_lesion"]
KIDNEY_L, KIDNEY_LESION = L.NAME_TO_INDEX["kidney_left"], L.NAME_TO_INDEX["kidney_lesion"]
SP = (1.5, 1.5, 2.0)
CFG = MetricsConfig(bootstrap_n=200, patient_volume_threshold_mm3=20.0)


def liver_volume(shape=(32, 28, 20)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:30, 2:26, 2:18] = LIVER
    return lab


def row(result, organ):
    return next(r for r in result.rows if r.organ == organ)


# ----------------------------------------------------------------------------- DSC


def test_dice_known_values_and_empty_policy():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[0:4, 0:5, 0:5] = True  # 100 voxels
    b[2:6, 0:5, 0:5] = True  # 100 voxels, 50 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(dice(np.zeros_like(a), b))  # GT-negative: undefined, excluded from means


def test_case_dsc_and_nsd_on_positive_case_only():
    gt = liver_volume()
    pred = gt.copy()
    gt[5:11, 5:11, 5:9] = LIVER_LESION
    pred[5:11, 5:11, 6:10] = LIVER_LESION  # shifted by one slice: 6*6*3 of 6*6*4 shared
    res = evaluate_case("c", gt, pred, SP, CFG)
    r = row(res, "liver")
    assert r.gt_positive and r.included
    assert r.dsc == pytest.approx(0.75)
    assert 0.9 < r.nsd <= 1.0  # one 2 mm slice of shift, 2 mm tolerance: surfaces all within
    assert r.gt_volume_mm3 == pytest.approx(144 * 4.5)
    p = row(res, "pancreas")
    assert not p.gt_positive and math.isnan(p.dsc) and math.isnan(p.nsd)
    assert not p.included  # no pancreas in this GT: says nothing about pancreatic lesions


# ----------------------------------------------------------------------------- patient level


def test_patient_level_call_uses_volume_threshold():
    gt = liver_volume()
    cfg = MetricsConfig(patient_volume_threshold_mm3=50.0, bootstrap_n=0)
    empty = evaluate_case("neg", gt, gt.copy(), SP, cfg)
    r = row(empty, "liver")
    assert not r.gt_positive and not r.pred_positive and r.pred_volume_mm3 == 0.0
    small = gt.copy()
    small[4:6, 4:6, 4:6] = LIVER_LESION  # 8 voxels * 4.5 mm^3 = 36 mm^3 < 50
    r = row(evaluate_case("fp_small", gt, small, SP, cfg), "liver")
    assert not r.pred_positive and r.pred_volume_mm3 == pytest.approx(36.0)
    assert r.n_false_positive_components == 1
    big = gt.copy()
    big[4:7, 4:7, 4:6] = LIVER_LESION  # 18 voxels = 81 mm^3
    assert row(evaluate_case("fp_big", gt, big, SP, cfg), "liver").pred_positive


def test_specificity_and_sensitivity_over_a_small_cohort():
    cfg = MetricsConfig(patient_volume_threshold_mm3=20.0, bootstrap_n=300, seed=1)
    rows = []
    base = liver_volume()
    # two negatives (one clean, one false positive), three positives (two found, one missed)
    rows += evaluate_case("n0", base, base.copy(), SP, cfg).rows
    fp = base.copy()
    fp[20:24, 20:24, 10:13] = LIVER_LESION
    rows += evaluate_case("n1", base, fp, SP, cfg).rows
    for i, found in enumerate([True, True, False]):
        gt = base.copy()
        gt[5:10, 5:10, 5:9] = LIVER_LESION
        pred = gt.copy() if found else base.copy()
        rows += evaluate_case(f"p{i}", gt, pred, SP, cfg).rows
    s = summarize(rows, cfg)
    assert list(s) == ["liver"]  # only organ types with GT lesions are reported
    liver = s["liver"]
    assert (liver.n_cases, liver.n_positive, liver.n_negative) == (5, 3, 2)
    assert liver.patient_sensitivity.value == pytest.approx(2 / 3) and liver.patient_sensitivity.n == 3
    assert liver.patient_specificity.value == pytest.approx(1 / 2) and liver.patient_specificity.n == 2
    assert liver.dsc.value == pytest.approx(2 / 3) and liver.dsc.n == 3  # 1, 1, 0 over positives only
    assert liver.tumor_sensitivity.value == pytest.approx(2 / 3)
    assert liver.false_positive_components_per_case.value == pytest.approx(1 / 5)
    # volume AUC: positives score 450 mm^3, 450, 0; negatives 0 and 216 (mm^3).
    # pairs: (450 vs 0) win, (450 vs 216) win, twice; (0 vs 0) tie = 1/2; (0 vs 216) loss
    assert liver.auc_volume.value == pytest.approx((4 + 0.5) / 6)
    for m in OrganSummaryMetrics:
        sm = getattr(liver, m)
        if not math.isnan(sm.ci_low):
            assert sm.ci_low <= sm.value + 1e-12 and sm.value - 1e-12 <= sm.ci_high
    # deterministic given the seed
    again = summarize(rows, cfg)["liver"]
    assert again.dsc == liver.dsc and again.auc_volume == liver.auc_volume
    pts = {p["threshold"]: p for p in liver.roc_volume}
    assert pts[0.0]["sensitivity"] == pytest.approx(2 / 3) and pts[0.0]["specificity"] == pytest.approx(1 / 2)
    assert pts[250.0]["specificity"] == 1.0 and pts[250.0]["sensitivity"] == pytest.approx(2 / 3)
    assert pts[500.0]["sensitivity"] == 0.0


OrganSummaryMetrics = ("dsc", "nsd", "patient_sensitivity", "patient_specificity", "tumor_sensitivity")


def test_probability_maps_give_a_probability_auc():
    cfg = MetricsConfig(bootstrap_n=50)
    base = liver_volume()
    rows = []
    for i, (lesion, p) in enumerate([(True, 0.9), (True, 0.4), (False, 0.3), (False, 0.1)]):
        gt = base.copy()
        if lesion:
            gt[5:10, 5:10, 5:9] = LIVER_LESION
        prob = np.zeros(gt.shape, np.float32)
        prob[8, 8, 8] = p
        rows += evaluate_case(f"c{i}", gt, base.copy(), SP, cfg, {"liver_lesion": prob}).rows
    s = summarize(rows, cfg)["liver"]
    assert s.auc_probability.value == 1.0
    assert s.auc_volume.value == 0.5  # nothing predicted: every case ties
    assert [p["threshold"] for p in s.roc_probability] == cfg.probability_sweep


def test_any_lesion_probability_map_scores_within_the_predicted_organ():
    gt = liver_volume()
    pred = gt.copy()
    pred[26:30, 22:26, 2:6] = PANCREAS
    prob = np.zeros(gt.shape, np.float32)
    prob[8, 8, 8] = 0.7  # inside the predicted liver
    prob[0, 0, 0] = 0.99  # background: ignored
    prob[27, 23, 3] = 0.4  # predicted pancreas
    res = evaluate_case("c", gt, pred, SP, CFG, {"any_lesion": prob})
    assert row(res, "liver").max_probability == pytest.approx(0.7)
    assert row(res, "pancreas").max_probability == pytest.approx(0.4)
    assert row(res, "kidney").max_probability == 0.0  # nothing predicted there
    # a class map of its own wins over the any-lesion map
    own = np.full(gt.shape, 0.2, np.float32)
    res = evaluate_case("c", gt, pred, SP, CFG, {"any_lesion": prob, "liver_lesion": own})
    assert row(res, "liver").max_probability == pytest.approx(0.2)
    with pytest.raises(ValueError, match="neither a lesion class"):
        evaluate_case("c", gt, pred, SP, CFG, {"liver": prob})


def test_overall_pools_organ_types_per_patient():
    cfg = MetricsConfig(bootstrap_n=100, patient_volume_threshold_mm3=20.0)
    base = liver_volume()
    base[26:31, 20:27, 12:18] = PANCREAS
    rows = []
    a = base.copy()
    a[5:9, 5:9, 5:9] = LIVER_LESION  # liver lesion found
    rows += evaluate_case("a", a, a.copy(), SP, cfg).rows
    b = base.copy()
    b[27:30, 21:24, 13:16] = PANC_LESION  # pancreatic lesion missed, but a liver false positive
    pb = base.copy()
    pb[5:9, 5:9, 5:9] = LIVER_LESION
    rows += evaluate_case("b", b, pb, SP, cfg).rows
    rows += evaluate_case("c", base, base.copy(), SP, cfg).rows  # healthy, clean
    per = summarize(rows, cfg)
    assert list(per) == ["liver", "pancreas"]
    assert per["liver"].patient_specificity.value == 0.5  # b is liver-negative but called
    allx = summarize_overall(rows, cfg)
    assert (allx.organ, allx.n_cases, allx.n_positive, allx.n_negative) == ("all", 3, 2, 1)
    assert allx.patient_sensitivity.value == 1.0  # both patients with a tumor got a (some) call
    assert allx.patient_sensitivity_localised.value == 0.5  # b's call is a false lesion in another organ
    assert allx.lesion_precision.value == 0.5 and allx.lesion_precision.n == 2
    assert allx.patient_specificity.value == 1.0 and allx.patient_specificity.n == 1
    assert allx.dsc.value == pytest.approx(0.5) and allx.dsc.n == 2  # liver in a: 1, pancreas in b: 0
    assert allx.tumor_sensitivity.value == 0.5 and allx.tumor_sensitivity.n == 2
    assert allx.false_positive_components_per_case.value == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- tumor level and early tumors


def test_lesions_of_known_diameter_and_early_rule():
    gt = liver_volume((40, 40, 20))
    gt[4:14, 4:8, 4:7] = LIVER_LESION  # 10 x 4 voxels in plane: Feret sqrt(13.5^2 + 4.5^2) + 1.5 mm
    gt[20:36, 20:36, 4:10] = LIVER_LESION  # 16 x 16: sqrt(2) * 22.5 + 1.5 = 33.3 mm
    pred = gt.copy()
    pred[pred == LIVER_LESION] = LIVER
    pred[5, 5, 5] = LIVER_LESION  # one voxel inside the small lesion
    res = evaluate_case("c", gt, pred, SP, CFG)
    small, large = sorted(res.lesions, key=lambda m: m.voxels)
    assert small.max_axial_diameter_mm == pytest.approx(math.hypot(13.5, 4.5) + 1.5, abs=1e-3)
    assert large.max_axial_diameter_mm == pytest.approx(math.hypot(22.5, 22.5) + 1.5, abs=1e-3)
    assert small.early and not large.early
    assert small.detected and not large.detected
    assert small.overlap_voxels == 1 and small.best_iou == pytest.approx(1 / 120, abs=1e-4)
    assert large.lesion_id == 0 and small.lesion_id == 1  # largest first
    assert small.bbox == ((4, 4, 4), (14, 8, 7)) and small.centroid_vox == (8.5, 5.5, 5.0)
    r = row(res, "liver")
    assert (r.n_lesions, r.n_detected, r.n_early, r.n_early_detected) == (2, 1, 1, 1)
    # IoU rule: one voxel of 120 is not enough
    iou = evaluate_case("c", gt, pred, SP, MetricsConfig(overlap_rule="iou", iou_threshold=0.1))
    assert not any(m.detected for m in iou.lesions)


def test_equivalent_sphere_rule_changes_what_is_early():
    gt = liver_volume((40, 40, 20))
    gt[4:24, 10:12, 8:10] = LIVER_LESION  # 20 x 2 x 2 voxels: 30+ mm long, volume 360 mm^3
    res = evaluate_case("c", gt, gt.copy(), SP, MetricsConfig(diameter_rule="equivalent_sphere"))
    (m,) = res.lesions
    assert m.max_axial_diameter_mm > 20.0
    assert m.equivalent_diameter_mm == pytest.approx(equivalent_diameter_mm(80 * 4.5), abs=1e-3)
    assert m.diameter_mm == m.equivalent_diameter_mm < 20.0 and m.early
    assert not evaluate_case("c", gt, gt.copy(), SP, MetricsConfig()).lesions[0].early


def test_26_connected_lesions_and_class_specific_matching():
    gt = liver_volume()
    gt[5:8, 5:8, 5:8] = LIVER_LESION
    gt[8:11, 8:11, 8:11] = LIVER_LESION  # touches the first only at a corner: one 26-connected lesion
    gt[20:23, 20:23, 10:13] = LIVER_LESION
    pred = liver_volume()
    pred[20:23, 20:23, 10:13] = PANC_LESION  # right place, wrong class: not a detection
    res = evaluate_case("c", gt, pred, SP, CFG)
    liver = [m for m in res.lesions if m.organ == "liver"]
    assert sorted(m.voxels for m in liver) == [27, 54]
    assert not any(m.detected for m in liver)
    assert row(res, "pancreas").n_false_positive_components == 1


def test_kidney_lesion_counts_for_the_kidney_type_with_either_kidney():
    gt = np.zeros((20, 20, 12), np.uint8)
    gt[2:8, 2:10, 2:10] = KIDNEY_L
    gt[3:6, 3:6, 3:6] = KIDNEY_LESION
    res = evaluate_case("k", gt, gt.copy(), SP, CFG)
    r = row(res, "kidney")
    assert r.included and r.gt_positive and r.dsc == 1.0 and r.nsd == 1.0 and r.n_detected == 1


# ----------------------------------------------------------------------------- helpers, config, structure


def test_roc_auc_and_points():
    assert roc_auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert roc_auc([4, 3, 2, 1], [False, False, True, True]) == 0.0
    assert roc_auc([1, 1, 1, 1], [False, True, False, True]) == 0.5
    assert math.isnan(roc_auc([1, 2], [True, True]))
    pts = roc_points([0, 10, 100], [False, True, True], [0, 50])
    assert pts[0] == {"threshold": 0.0, "sensitivity": 1.0, "specificity": 1.0}  # score 0 is never positive
    assert pts[1]["sensitivity"] == 0.5


def test_bootstrap_summaries_are_reproducible_and_bracket_the_value():
    rng = np.random.default_rng(0)
    num = rng.integers(0, 3, 40).astype(float)
    den = num + rng.integers(0, 2, 40)
    idx = bootstrap_indices(40, 500, seed=7)
    a = ratio_summary(num, den, idx)
    assert a == ratio_summary(num, den, bootstrap_indices(40, 500, seed=7))
    assert a.ci_low < a.value < a.ci_high and a.n == int(den.sum())
    scores, pos = rng.random(40), rng.random(40) < 0.5
    s = auc_summary(scores, pos, idx)
    assert s.ci_low <= s.value <= s.ci_high and s.n == 40
    empty = ratio_summary(np.zeros(0), np.zeros(0), bootstrap_indices(0, 10, 0))
    assert math.isnan(empty.value) and empty.n == 0 and empty.format() == "n/a"
    assert Summary(0.5, 0.4, 0.6, 3).format() == "0.500 [0.400, 0.600]"


def test_results_serialise_to_strict_json():
    gt = liver_volume()
    gt[5:9, 5:9, 5:9] = LIVER_LESION
    res = evaluate_case("c", gt, gt.copy(), SP, CFG)
    text = json.dumps(res.as_dict(), allow_nan=False)  # NaN became null
    assert '"dsc": null' in text
    s = summarize(res.rows, CFG)["liver"].as_dict()
    json.dumps(s, allow_nan=False)
    assert s["dsc"]["value"] == 1.0 and s["patient_specificity"]["value"] is None


def test_metrics_config_yaml_and_errors(tmp_path):
    cfg = load_metrics_config(config_dir() / "evaluation" / "metrics.yaml")
    assert cfg == MetricsConfig()
    assert load_metrics_config(None, ["overlap_rule=iou", "iou_threshold=0.3"]).iou_threshold == 0.3
    bad = tmp_path / "m.yaml"
    bad.write_text("nsd_tolerance: 2.0\n")
    with pytest.raises(ConfigError, match="nsd_tolerance"):
        load_metrics_config(bad)
    with pytest.raises(ConfigError, match="overlap_rule"):
        load_metrics_config(None, ["overlap_rule=dice"])
    with pytest.raises(ConfigError, match="organ type"):
        load_metrics_config(None, ["organ_types=[brain]"])


def test_axial_axis_moved_last_before_measuring():
    # the same lesion stored slices-first (axis 0 superior) measures the same diameter
    gt = liver_volume((40, 40, 20))
    gt[4:14, 4:8, 4:7] = LIVER_LESION
    ras = np.diag([1.5, 1.5, 2.0, 1.0])
    ref = evaluate_case("a", gt, gt, SP, CFG).lesions[0].max_axial_diameter_mm
    stored = np.transpose(gt, (2, 0, 1))
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 2.0, 1.5, 1.5, 1.0
    (g, p), spacing = axial_last([stored, stored], affine)
    assert spacing == (1.5, 1.5, 2.0) and g.shape == gt.shape
    assert evaluate_case("b", g, p, spacing, CFG).lesions[0].max_axial_diameter_mm == ref
    (g2, _), sp2 = axial_last([gt, gt], ras)
    assert g2.shape == gt.shape and sp2 == SP
