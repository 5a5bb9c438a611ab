"""Detection numbers that cannot flatter: localisation rules, false-positive components, lesion precision,
localised patient sensitivity and the warnings, on label maps built here (project issue 19 item 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohort import labels as L
from evaluation.metrics import MetricsConfig, detection_warnings, evaluate_case, summarize, summarize_overall

LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]
SP = (1.5, 1.5, 2.0)
VOXEL_MM3 = 1.5 * 1.5 * 2.0


def cfg(rule: str = "any", **kw) -> MetricsConfig:
    return MetricsConfig(overlap_rule=rule, bootstrap_n=50, **kw)


def liver(shape=(64, 64, 32)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:62, 2:62, 2:30] = LIVER
    return lab


def painted_liver():
    """One real tumor; the prediction paints 44 false lesion components over the liver, one of
    them a large slab that grazes the tumor (IoU about 0.001)."""
    gt = liver()
    gt[6:10, 6:10, 4:8] = LESION  # 64 voxels
    pred = liver()
    pred[8:30, 8:30, 6:20] = LESION  # 6776 voxels, 8 of them inside the tumor, centroid far from it
    spots = [(x, y) for x in range(34, 60, 3) for y in range(4, 19, 3)][:43]
    for x, y in spots:  # 2x2x2 specks one voxel apart: separate 26-connected components
        pred[x:x + 2, y:y + 2, 22:24] = LESION
    return gt, pred


def row(result, organ="liver"):
    return next(r for r in result.rows if r.organ == organ)


def test_44_false_components_score_full_sensitivity_only_under_any_overlap():
    gt, pred = painted_liver()
    res = {rule: evaluate_case("painted", gt, pred, SP, cfg(rule, iou_threshold=0.1))
           for rule in ("any", "iou", "centroid")}
    (m,) = res["any"].lesions
    assert m.best_iou == pytest.approx(8 / (64 + 6776 - 8), abs=1e-4) and m.best_iou < 0.002
    r = row(res["any"])
    assert r.n_pred_components == 44
    assert (r.n_lesions, r.n_detected) == (1, 1)
    assert r.n_false_positive_components == 43  # the grazing slab counts as matched under "any"
    for rule in ("iou", "centroid"):
        r = row(res[rule])
        assert (r.n_lesions, r.n_detected, r.n_early_detected) == (1, 0, 0), rule
        assert r.n_false_positive_components == 44, rule

    s_any = summarize(res["any"].rows, cfg("any"))["liver"]
    assert s_any.tumor_sensitivity.value == 1.0 and s_any.early_tumor_sensitivity.value == 1.0
    assert s_any.false_positive_components_per_case.value == 43.0 and s_any.fp_per_case.n == 1
    assert s_any.lesion_precision.value == pytest.approx(1 / 44) and s_any.lesion_precision.n == 44
    assert s_any.patient_sensitivity.value == 1.0 and s_any.patient_sensitivity_localised.value == 1.0
    for rule in ("iou", "centroid"):
        s = summarize(res[rule].rows, cfg(rule, iou_threshold=0.1))["liver"]
        assert s.tumor_sensitivity.value == 0.0 and s.early_tumor_sensitivity.value == 0.0, rule
        assert s.false_positive_components_per_case.value == 44.0 and s.lesion_precision.value == 0.0, rule
        assert s.patient_sensitivity.value == 1.0 and s.patient_sensitivity_localised.value == 0.0, rule

    warn = detection_warnings("liver", s_any)
    assert len(warn) == 1 and warn[0].startswith("WARNING liver: tumor sensitivity 1.000")
    assert "43.00 false-positive lesion components per case" in warn[0] and "lesion precision 0.023" in warn[0]


def test_missed_tumors_and_a_distant_false_lesion_are_not_a_localised_detection():
    gt = liver()
    gt[6:10, 6:10, 4:8] = LESION
    gt[50:55, 50:55, 20:24] = LESION
    pred = liver()
    pred[25:33, 25:33, 10:19] = LESION  # 576 voxels = 2.6 mL, far from both tumors
    assert 2000 < 576 * VOXEL_MM3 < 3000
    for rule in ("any", "iou", "centroid"):
        c = cfg(rule)
        res = evaluate_case("missed", gt, pred, SP, c)
        r = row(res)
        assert r.pred_positive and (r.n_lesions, r.n_detected, r.n_false_positive_components) == (2, 0, 1)
        s = summarize(res.rows, c)["liver"]
        assert s.patient_sensitivity.value == 1.0  # the paper's definition: called positive by volume
        assert s.patient_sensitivity_localised.value == 0.0
        assert s.tumor_sensitivity.value == 0.0 and s.lesion_precision.value == 0.0
        overall = summarize_overall(res.rows, c)
        assert overall.patient_sensitivity.value == 1.0 and overall.patient_sensitivity_localised.value == 0.0
        warn = detection_warnings("liver", s)
        assert any("lesion precision 0.000" in w for w in warn)  # one FP/case is under the limit, precision is not
        assert any("drops to 0.000 when a true lesion must be matched" in w for w in warn)


def test_perfect_prediction_has_precision_one_and_no_false_positives():
    gt = liver()
    gt[6:10, 6:10, 4:8] = LESION
    gt[40:46, 40:46, 10:16] = LESION
    for rule in ("any", "iou", "centroid"):
        c = cfg(rule, iou_threshold=0.9)
        res = evaluate_case("perfect", gt, gt.copy(), SP, c)
        r = row(res)
        assert (r.n_pred_components, r.n_false_positive_components, r.n_detected) == (2, 0, 2)
        assert r.hd95_mm == 0.0 and r.msd_mm == 0.0 and r.nsd == 1.0
        s = summarize(res.rows, c)["liver"]
        assert s.lesion_precision.value == 1.0 and s.false_positive_components_per_case.value == 0.0
        assert s.tumor_sensitivity.value == 1.0 and s.patient_sensitivity_localised.value == 1.0
        assert detection_warnings("liver", s) == []


def test_empty_prediction_on_a_healthy_case():
    gt = liver()
    res = evaluate_case("healthy", gt, gt.copy(), SP, cfg())
    r = row(res)
    assert (r.n_pred_components, r.n_false_positive_components, r.n_lesions) == (0, 0, 0)
    assert math.isnan(r.hd95_mm) and math.isnan(r.msd_mm)  # GT-negative: not applicable
    s = summarize(res.rows, cfg(), ["liver"])["liver"]
    assert s.false_positive_components_per_case.value == 0.0
    assert math.isnan(s.lesion_precision.value) and s.lesion_precision.n == 0  # no predicted component
    assert math.isnan(s.tumor_sensitivity.value) and math.isnan(s.patient_sensitivity_localised.value)
    assert s.patient_specificity.value == 1.0
    assert detection_warnings("liver", s) == []
    assert s.as_dict()["lesion_precision"]["value"] is None


def test_centroid_and_iou_rules_accept_a_slightly_shifted_prediction():
    gt = liver()
    gt[10:18, 10:18, 8:14] = LESION
    pred = liver()
    pred[11:19, 10:18, 8:14] = LESION  # one voxel over: IoU 7/9, centroid inside the lesion
    for rule in ("any", "iou", "centroid"):
        r = row(evaluate_case("shift", gt, pred, SP, cfg(rule)))
        assert (r.n_detected, r.n_false_positive_components) == (1, 0), rule
    r = row(evaluate_case("shift", gt, pred, SP, cfg("iou", iou_threshold=0.8)))
    assert (r.n_detected, r.n_false_positive_components) == (0, 1)


def test_centroid_rule_uses_the_predicted_components_centroid():
    # a prediction covering a small lesion but centred elsewhere does not localise it,
    # a ring centred on the lesion does (its centroid falls inside the lesion)
    gt = liver()
    gt[20:24, 20:24, 10:14] = LESION
    cover = liver()
    cover[18:40, 18:26, 8:16] = LESION
    r = row(evaluate_case("cover", gt, cover, SP, cfg("centroid")))
    assert (r.n_detected, r.n_false_positive_components) == (0, 1)
    ring = liver()
    ring[17:27, 17:27, 11:13] = LESION
    ring[19:25, 19:25, 11:13] = LIVER
    r = row(evaluate_case("ring", gt, ring, SP, cfg("centroid")))
    assert (r.n_pred_components, r.n_detected, r.n_false_positive_components) == (1, 1, 0)


def test_warning_limits_and_inputs():
    vals = {"tumor_sensitivity": 0.9, "patient_sensitivity": 1.0, "patient_sensitivity_localised": 1.0,
            "fp_per_case": 2.5, "lesion_precision": 0.5}
    assert len(detection_warnings("x", vals)) == 1
    assert detection_warnings("x", vals, fp_limit=3.0) == []
    assert detection_warnings("x", {**vals, "fp_per_case": 2.0}) == []  # at the limit: no warning
    # summary.json dicts and the long key name work too
    d = {"tumor_sensitivity": {"value": 0.9}, "false_positive_components_per_case": {"value": 5.0},
         "lesion_precision": {"value": None}}
    (w,) = detection_warnings("liver", d)
    assert "5.00 false-positive" in w and "precision" not in w.split("come with")[1]
    # no sensitivity to flatter (a healthy-only cohort): no warning, whatever the false positives
    assert detection_warnings("x", {"fp_per_case": 9.0, "lesion_precision": 0.0}) == []


def test_config_accepts_centroid_and_checks_limits():
    from cohort.config import ConfigError
    from evaluation.metrics import load_metrics_config

    assert load_metrics_config(None, ["overlap_rule=centroid"]).overlap_rule == "centroid"
    c = MetricsConfig()
    assert (c.overlap_rule, c.warn_fp_per_case, c.warn_lesion_precision) == ("any", 2.0, 0.2)
    with pytest.raises(ConfigError, match="warn_lesion_precision"):
        load_metrics_config(None, ["warn_lesion_precision=1.5"])
    with pytest.raises(ConfigError, match="warn_fp_per_case"):
        load_metrics_config(None, ["warn_fp_per_case=-1"])
