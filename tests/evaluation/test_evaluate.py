"""`evaluate_cohort` and `tumorgen evaluate` on tiny cohorts written to tmp_path."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cohort import labels as L
from cohort.case import Case
from cohort.io import read_json, write_volume
from cohort.layouts import write_case
from evaluation.evaluate import evaluate_cohort
from evaluation.metrics import MetricsConfig
from tests.conftest import write_lying_header
from tumorgen.cli import main

LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]
SHAPE = (24, 22, 16)
AFFINE = np.array([[1.5, 0, 0, -20.0], [0, 1.5, 0, 10.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1]])
CFG = MetricsConfig(bootstrap_n=100, patient_volume_threshold_mm3=20.0)


def gt_label(lesion: bool) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:22, 2:20, 2:14] = LIVER
    if lesion:
        lab[5:10, 5:10, 4:8] = LESION  # 7.5 x 7.5 mm in plane: early
    return lab


@pytest.fixture()
def cohort(tmp_path):
    """Ground truth (2 tumor-positive, 2 negative cases) and predictions: one perfect, one missed,
    one clean negative, one negative with a false positive."""
    gt_root, pred = tmp_path / "gt", tmp_path / "pred"
    labels = {"case_a": gt_label(True), "case_b": gt_label(True), "case_c": gt_label(False), "case_d": gt_label(False)}
    for cid, lab in labels.items():
        ct = np.where(lab > 0, 60.0, -100.0).astype(np.float32)
        write_case(Case(cid, ct, lab, AFFINE, {"kind": "real"}), gt_root)
    preds = {k: v.copy() for k, v in labels.items()}
    preds["case_b"][preds["case_b"] == LESION] = LIVER
    preds["case_d"][15:19, 12:16, 8:11] = LESION
    for cid, lab in preds.items():
        write_volume(pred / f"{cid}.nii.gz", lab, AFFINE)
    return gt_root, pred


def test_evaluate_cohort_writes_every_report(cohort, tmp_path):
    gt_root, pred = cohort
    out = tmp_path / "out"
    result, report = evaluate_cohort(pred, gt_root, out, CFG, progress=False)
    assert report.ok and sorted(report.done) == ["case_a", "case_b", "case_c", "case_d"]
    liver = result.organs["liver"]
    assert list(result.organs) == ["liver"]
    assert liver.dsc.value == pytest.approx(0.5)  # 1 and 0 over the two positive cases
    assert liver.patient_sensitivity.value == 0.5 and liver.patient_specificity.value == 0.5
    assert liver.tumor_sensitivity.value == 0.5 and liver.early_tumor_sensitivity.value == 0.5
    assert (liver.n_lesions, liver.n_early) == (2, 2)

    with open(out / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["case_a", "case_b", "case_c", "case_d"]
    assert {r["organ"] for r in rows} == {"liver"}
    assert rows[0]["dsc"] == "1.0" and rows[2]["dsc"] == ""  # GT-negative: empty cell
    with open(out / "lesions.csv") as f:
        les = list(csv.DictReader(f))
    assert [(r["case_id"], r["detected"], r["early"]) for r in les] == [("case_a", "True", "True"),
                                                                       ("case_b", "False", "True")]
    assert float(les[0]["max_axial_diameter_mm"]) == pytest.approx(np.hypot(6.0, 6.0) + 1.5, abs=1e-3)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert summary["organs"]["liver"]["dsc"]["value"] == 0.5
    # the pooled block the scaling study reads: same numbers with one organ type
    assert summary["overall"]["dsc"] == summary["organs"]["liver"]["dsc"]
    assert set(summary["overall"]) >= {"dsc", "nsd", "patient_sensitivity", "patient_specificity",
                                       "tumor_sensitivity", "early_tumor_sensitivity"}
    assert summary["n_cases_failed"] == 0 and "tumor-positive" in summary["policy"]
    md = (out / "summary.md").read_text()
    assert "| liver | 4 (2/2) | 2 (2) | 0.500" in md
    assert (out / "metrics.yaml").exists()


def test_surface_distances_and_false_positives_in_every_output(cohort, tmp_path):
    gt_root, pred = cohort
    out = tmp_path / "out"
    result, report = evaluate_cohort(pred, gt_root, out, CFG, progress=False)
    assert report.ok
    with open(out / "cases.csv") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert rows["case_a"]["hd95_mm"] == "0.0" and rows["case_a"]["msd_mm"] == "0.0"  # perfect
    assert rows["case_b"]["hd95_mm"] == "inf" and rows["case_b"]["msd_mm"] == "inf"  # tumor present, nothing predicted
    assert rows["case_c"]["hd95_mm"] == "" and rows["case_d"]["hd95_mm"] == ""  # GT-negative: not applicable
    assert rows["case_d"]["n_false_positive_components"] == "1"
    summary = read_json(out / "summary.json")
    liver = summary["organs"]["liver"]
    assert liver["hd95"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 1}  # the empty prediction is left out
    assert liver["msd"]["value"] == 0.0 and liver["n_empty_prediction"] == 1
    assert liver["false_positive_components_per_case"]["value"] == 0.25  # one FP component over four cases
    assert liver["lesion_precision"]["value"] == 0.5 and liver["lesion_precision"]["n"] == 2
    assert liver["patient_sensitivity_localised"]["value"] == 0.5
    assert summary["warnings"] == []
    md = (out / "summary.md").read_text()
    for col in ("HD95 (mm)", "MSD (mm)", "patient sens. (localised)", "FP/case", "lesion prec."):
        assert col in md
    assert "WARNING" not in md
    assert "score them 0): liver: 1." in md  # the empty prediction left out of HD95/MSD is counted


def test_many_false_positives_are_flagged(cohort, tmp_path):
    gt_root, pred = cohort
    lab = gt_label(True)  # case_a: the tumor found, plus twelve specks of false lesion
    for x in range(11, 21, 3):
        for y in range(11, 20, 3):
            lab[x, y, 10] = LESION
    write_volume(pred / "case_a.nii.gz", lab, AFFINE)
    out = tmp_path / "out"
    result, report = evaluate_cohort(pred, gt_root, out, CFG, progress=False)
    liver = result.organs["liver"]
    assert liver.false_positive_components_per_case.value == pytest.approx(13 / 4)
    assert liver.tumor_sensitivity.value == 0.5  # the sensitivity itself does not move
    summary = read_json(out / "summary.json")
    (w,) = summary["warnings"]
    assert w.startswith("WARNING liver: tumor sensitivity 0.500") and "3.25 false-positive" in w
    md = (out / "summary.md").read_text()
    assert f"**{w}**" in md and md.index("WARNING") < md.index("| organ |")  # above the table, visible
    # a stricter localisation rule is applied and named
    strict = MetricsConfig(bootstrap_n=20, patient_volume_threshold_mm3=20.0, overlap_rule="centroid")
    result, _ = evaluate_cohort(pred, gt_root, out, strict, progress=False)
    assert result.organs["liver"].tumor_sensitivity.value == 0.5
    assert "centroid inside the true lesion" in (out / "summary.md").read_text()


def test_missing_extra_and_mismatched_predictions_are_reported(cohort, tmp_path):
    gt_root, pred = cohort
    (pred / "case_b.nii.gz").unlink()  # missing
    write_volume(pred / "case_c.nii.gz", gt_label(False)[:, :, :12], AFFINE[:, :])  # wrong shape
    shifted = AFFINE.copy()
    shifted[0, 3] += 7.0
    write_volume(pred / "case_d.nii.gz", gt_label(False), shifted)  # same shape, moved grid
    write_volume(pred / "case_zz.nii.gz", gt_label(False), AFFINE)  # no such GT case
    result, report = evaluate_cohort(pred, gt_root, tmp_path / "out", CFG, progress=False)
    assert not report.ok
    assert report.done == ["case_a"]
    assert "missing prediction" in report.failed["case_b"]
    assert "shape (24, 22, 12) does not match the ground truth shape (24, 22, 16)" in report.failed["case_c"]
    assert "case_c.nii.gz" in report.failed["case_c"]
    assert "grid does not match" in report.failed["case_d"] and "origin" in report.failed["case_d"]
    assert "no ground-truth case" in report.failed["case_zz"]
    summary = read_json(tmp_path / "out" / "summary.json")
    assert sorted(summary["failed"]) == ["case_b", "case_c", "case_d", "case_zz"]
    assert "## Failed cases" in (tmp_path / "out" / "summary.md").read_text()
    assert result.organs["liver"].n_cases == 1


def test_values_outside_the_vocabulary_are_an_error(cohort, tmp_path):
    gt_root, pred = cohort
    lab = gt_label(True)
    lab[0, 0, 0] = 77
    write_volume(pred / "case_a.nii.gz", lab, AFFINE)
    _, report = evaluate_cohort(pred, gt_root, None, CFG, progress=False)
    assert "not in the vocabulary" in report.failed["case_a"]


def test_probability_maps_are_read(cohort, tmp_path):
    gt_root, pred = cohort
    for cid, p in {"case_a": 0.9, "case_b": 0.6, "case_c": 0.2, "case_d": 0.5}.items():
        prob = np.zeros(SHAPE, np.float32)
        prob[7, 7, 6] = p
        write_volume(pred / f"{cid}_liver_lesion_prob.nii.gz", prob, AFFINE, dtype=np.float32)
    result, report = evaluate_cohort(pred, gt_root, tmp_path / "out", CFG, progress=False)
    assert report.ok  # probability maps are not taken for stray predictions
    assert result.organs["liver"].auc_probability.value == 1.0
    assert "AUC (probability)" in (tmp_path / "out" / "summary.md").read_text()


def test_any_lesion_probability_map_from_predict(cohort, tmp_path):
    gt_root, pred = cohort
    for cid, p in {"case_a": 0.8, "case_b": 0.3, "case_c": 0.1, "case_d": 0.4}.items():
        prob = np.zeros(SHAPE, np.float32)
        prob[12, 12, 8] = p  # inside the predicted liver
        write_volume(pred / f"{cid}_tumor_prob.nii.gz", prob, AFFINE, dtype=np.float32)
    result, report = evaluate_cohort(pred, gt_root, None, CFG, progress=False)
    assert report.ok
    assert [r.max_probability for r in result.rows] == pytest.approx([0.8, 0.3, 0.1, 0.4])
    assert result.organs["liver"].auc_probability.value == 0.75  # 0.8 and 0.3 vs 0.1 and 0.4: 3 of 4 pairs


def test_cli_evaluate(cohort, tmp_path, capsys):
    gt_root, pred = cohort
    out = tmp_path / "cli"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt_root), "--out", str(out), "--quiet",
               "--set", "bootstrap_n=50", "--set", "overlap_rule=iou"])
    assert rc == 0
    assert read_json(out / "summary.json")["config"]["overlap_rule"] == "iou"
    assert (out / "lesions.csv").exists()
    (pred / "case_a.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt_root), "--out", str(out), "--quiet",
                 "--set", "bootstrap_n=10"]) == 1
    assert "case_a" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt_root), "--out", str(out)]) == 2
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt_root), "--out", str(out),
                 "--set", "tolerance=3"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_lying_headers_are_reported_and_the_other_cases_evaluated(cohort, tmp_path, capsys):
    gt_root, pred = cohort
    write_lying_header(gt_root / "case_c" / "ct.nii.gz", "zero_spacing", SHAPE, AFFINE)  # GT side
    write_lying_header(pred / "case_d.nii.gz", "huge_shape", SHAPE, AFFINE)  # prediction side
    result, report = evaluate_cohort(pred, gt_root, tmp_path / "out", CFG, progress=False)
    assert sorted(report.done) == ["case_a", "case_b"] and sorted(report.failed) == ["case_c", "case_d"]
    assert "case_c/ct.nii.gz: invalid voxel spacing: zero spacing" in report.failed["case_c"]
    assert "case_d.nii.gz: header claims shape (4000, 4000, 4000)" in report.failed["case_d"]
    assert result.organs["liver"].n_cases == 2
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt_root), "--out", str(tmp_path / "cli"), "--quiet",
                 "--set", "bootstrap_n=10"]) == 1
    err = capsys.readouterr().err
    assert "FAILED case_c" in err and "FAILED case_d" in err and "2 done" in err


def test_stale_prediction_temp_is_not_a_case(cohort, tmp_path):
    gt_root, pred = cohort
    # what `tumorgen predict` killed mid-write leaves beside the predictions
    (pred / ".case_e.1a2b3c4d.part.nii.gz").write_bytes(b"partial")
    (pred / ".case_a_tumor_prob.0a0b0c0d.part.nii.gz").write_bytes(b"partial")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".summary.99aa88bb.part.json").write_text("{")  # a killed evaluation's own temp
    (out / "notes.txt").write_text("mine")
    _, report = evaluate_cohort(pred, gt_root, out, CFG, progress=False)
    assert report.ok and sorted(report.done) == ["case_a", "case_b", "case_c", "case_d"]
    assert (pred / ".case_e.1a2b3c4d.part.nii.gz").exists()  # not evaluate's folder: ignored, not deleted
    assert sorted(p.name for p in out.iterdir()) == ["cases.csv", "lesions.csv", "metrics.yaml", "notes.txt",
                                                     "summary.json", "summary.md"]
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt_root), "--out", str(out), "--quiet",
                 "--set", "bootstrap_n=10"]) == 0


def test_every_problem_of_a_case_is_kept(cohort, tmp_path):
    gt_root, pred = cohort
    (gt_root / "case_c" / "ct.nii.gz").unlink()  # GT case unusable: listed as a problem, not as a case
    _, report = evaluate_cohort(pred, gt_root, tmp_path / "out", CFG, progress=False)
    problems = report.problems("case_c")
    assert len(problems) == 2
    assert "ground truth:" in problems[0] and "case folder has no ct.nii.gz" in problems[0]
    assert "case_c.nii.gz: prediction has no ground-truth case" in problems[1]
    summary = read_json(tmp_path / "out" / "summary.json")
    assert "no ct.nii.gz" in summary["failed"]["case_c"] and "no ground-truth case" in summary["failed"]["case_c"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.count("- `case_c`:") == 2


def test_a_refused_evaluation_leaves_no_output_folder(cohort, tmp_path):
    gt_root, pred = cohort
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt_root), "--out", str(out)]) == 2
    assert main(["evaluate", "--pred", str(pred), "--gt", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert not out.exists()
