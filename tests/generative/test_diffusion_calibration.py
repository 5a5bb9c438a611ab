"""Draft calibration: the model's measured bias on drafted attributes, fitted and inverted."""

import json

import numpy as np
import pytest
import torch

from generative.diffusion.calibration import (
    MAX_CHANGE_HU,
    DraftCalibration,
    calibration_rows,
    fit_calibration,
)


def _rows(n=60, seed=0, noise=0.0):
    """Tumors whose output has a known, non-linear bias: a rim under 20 HU comes out 4 HU higher, a stronger one
    10 HU lower; a dark tumor's contrast comes out 3 HU weaker, a bright one's 2 HU stronger."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        c, r, d = rng.uniform(-80, 50), rng.choice([rng.uniform(-8, 10), rng.uniform(35, 70)]), rng.uniform(6, 40)
        mc = c + (3.0 if c < 0 else 2.0)
        mr = r + (4.0 if r < 20 else -10.0)
        rows.append({"draft": {"contrast_hu": c, "rim_hu": r, "heterogeneity_hu": 20.0},
                     "measured": {"contrast_hu": mc + rng.normal(0, noise), "rim_hu": mr + rng.normal(0, noise)},
                     "diameter_mm": d})
    return rows


def test_drafts_undo_a_known_non_linear_bias():
    cal = fit_calibration(_rows(), "h" * 64)
    low = cal.draft_values({"contrast_hu": -50.0, "rim_hu": 0.0, "heterogeneity_hu": 25.0}, 15.0)
    assert low["rim_hu"] == pytest.approx(-4.0) and low["contrast_hu"] == pytest.approx(-53.0)
    assert low["heterogeneity_hu"] == 25.0  # not calibrated: as asked
    high = cal.draft_values({"contrast_hu": 30.0, "rim_hu": 55.0}, 25.0)
    assert high["rim_hu"] == pytest.approx(65.0) and high["contrast_hu"] == pytest.approx(28.0)
    s = cal.summary["rim_hu"]
    assert s["n"] == 60 and s["median_abs_before"] >= 4.0 and s["loo_median_abs_after"] < 0.5
    # with noise the correction still lands near the truth, and the leave-one-out check says it helps
    noisy = fit_calibration(_rows(200, seed=1, noise=3.0), "h")
    assert noisy.draft_values({"contrast_hu": -50.0, "rim_hu": 0.0}, 15.0)["rim_hu"] == pytest.approx(-4.0, abs=2.0)
    assert noisy.summary["rim_hu"]["loo_median_abs_after"] < noisy.summary["rim_hu"]["median_abs_before"]


def test_draft_values_are_bounded_and_leave_undefined_or_uncalibrated_attributes_alone():
    rows = _rows()
    for r in rows:
        r["measured"]["rim_hu"] = r["draft"]["rim_hu"] - 90.0  # an absurd bias
    far = fit_calibration(rows, "h").draft_values({"contrast_hu": -40.0, "rim_hu": 0.0}, 20.0)
    assert far["rim_hu"] == pytest.approx(MAX_CHANGE_HU)
    cal = fit_calibration(_rows(), "h")
    nan = cal.draft_values({"contrast_hu": -40.0, "rim_hu": float("nan")}, 20.0)
    assert np.isnan(nan["rim_hu"]) and nan["contrast_hu"] == pytest.approx(-43.0)
    only = fit_calibration(_rows(), "h", attributes=("rim_hu",))
    assert only.draft_values({"contrast_hu": -40.0, "rim_hu": 5.0}, 20.0)["contrast_hu"] == -40.0
    # a residual undefined in the output (a rim too thin for a core) is not a neighbour
    rows = _rows()
    for r in rows[:5]:
        r["measured"]["rim_hu"] = float("nan")
    thin = fit_calibration(rows, "h")
    assert thin.summary["rim_hu"]["n"] == 55 and thin.tumors[0]["residual"]["rim_hu"] is None


def test_fit_refuses_too_few_tumors_unknown_attributes_and_samples_that_ignore_their_drafts():
    with pytest.raises(ValueError, match=r"need at least 24 \(2 k\)"):
        fit_calibration(_rows(20), "h")
    assert fit_calibration(_rows(20), "h", k=4).k == 4
    rows = _rows()
    for r in rows[:45]:
        r["measured"]["rim_hu"] = float("nan")
    with pytest.raises(ValueError, match="15 tumors with a finite rim_hu"):
        fit_calibration(rows, "h")
    with pytest.raises(ValueError, match="unknown attribute"):
        fit_calibration(_rows(), "h", attributes=("necrotic_fraction",))
    with pytest.raises(ValueError, match="k must be >= 1"):
        fit_calibration(_rows(), "h", k=0)
    flat = _rows()
    for r in flat:
        r["measured"]["contrast_hu"] = 3.0 + np.sin(r["diameter_mm"])  # the output does not follow the draft
    with pytest.raises(ValueError, match="measured contrast_hu hardly follows"):
        fit_calibration(flat, "h")


def test_round_trip_and_read_errors_name_the_file(tmp_path):
    rows = _rows()
    rows[0]["measured"]["rim_hu"] = float("nan")
    cal = fit_calibration(rows, "a" * 64, fitted_on="somewhere")
    p = cal.write(tmp_path / "cal.json")
    assert "NaN" not in p.read_text()  # undefined residuals are null: the file is plain JSON
    back = DraftCalibration.read(p)
    assert back.model_hash == "a" * 64 and back.fitted_on == "somewhere" and back.summary == cal.summary
    for asked, d in [({"contrast_hu": -50.0, "rim_hu": 5.0}, 12.0), ({"contrast_hu": 20.0, "rim_hu": 60.0}, 30.0)]:
        assert back.draft_values(asked, d) == pytest.approx(cal.draft_values(asked, d), abs=1e-3)
    with pytest.raises(ValueError, match="missing.json: draft calibration not found"):
        DraftCalibration.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        DraftCalibration.read(tmp_path / "bad.json")
    d = json.loads(p.read_text())
    for name, change, msg in [("v1", {"version": 1}, "not a draft calibration of version 2"),
                              ("metric", {"scales": {"contrast_hu": 10.0}}, "another neighbourhood metric"),
                              ("attr", {"attributes": ["edge"]}, r"unknown attribute\(s\) \['edge'\]"),
                              ("tumor", {"tumors": [{"draft": {}}]}, "calibration tumor 0 is malformed")]:
        (tmp_path / f"{name}.json").write_text(json.dumps({**d, **change}))
        with pytest.raises(ValueError, match=msg):
            DraftCalibration.read(tmp_path / f"{name}.json")


def test_rows_come_from_the_provenance_draft_first():
    recs = [{"max_axial_diameter_mm": 12.0, "appearance": {"requested": {"contrast_hu": -40.0}, "measured": {"contrast_hu": -35.0}}},
            {"max_axial_diameter_mm": 9.0, "appearance": {"requested": {"contrast_hu": -40.0}, "draft": {"contrast_hu": -46.0},
                                                          "measured": {"contrast_hu": -39.0}}},
            {"max_axial_diameter_mm": 9.0, "appearance": "rim"},  # a phantom's own type: not a synthetic record
            {"max_axial_diameter_mm": 9.0}]
    rows = calibration_rows(recs)
    assert [r["draft"]["contrast_hu"] for r in rows] == [-40.0, -46.0] and rows[1]["diameter_mm"] == 9.0


# ---- end to end: sample, calibrate with the CLI, sample with the calibration -----------------------------

@pytest.mark.slow
def test_calibrate_cli_then_sampling_draws_calibrated_drafts(tmp_path, capsys):
    from cohort.layouts import write_case
    from generative.diffusion import sample as S
    from generative.diffusion.config import SampleSpec
    from generative.diffusion.models import pipeline_hash
    from tests.generative.test_diffusion_appearance import _tiny_pipe
    from tests.toys import toy_abdomen_case
    from tumorgen.cli import main

    torch.set_num_threads(2)
    p = _tiny_pipe()
    p.appearance_table = [{"case_id": f"r{i}", "organ": "liver", "size_class": s, "contrast_hu": c, "heterogeneity_hu": 12.0,
                           "rim_hu": rim, "necrotic_fraction": 0.0, "edge_hu_per_mm": 20.0}
                          for i, (c, rim) in enumerate([(-70.0, 0.0), (-40.0, 20.0), (-20.0, 5.0), (25.0, 0.0), (40.0, 30.0),
                                                        (-55.0, -10.0)]) for s in ("early", "medium")]
    p.save_pretrained(tmp_path / "model")
    for i in range(3):
        write_case(toy_abdomen_case(f"h{i}", seed=30 + i, tumor=False), tmp_path / "healthy")

    def spec(seed, n=4, **inp):
        s = SampleSpec(seed=seed, cases_per_source=n, size_mix={"small": 1.0})
        s.inpaint.steps, s.inpaint.roi_size, s.inpaint.margin_mm = 4, [32, 32, 32], 1.5
        s.inpaint.draft_strength, s.inpaint.draft_detail = 0.25, True
        for k, v in inp.items():
            setattr(s.inpaint, k, v)
        s.inpaint.__post_init__()
        return s

    rep = S.sample_cohort(tmp_path / "healthy", tmp_path / "model", spec(7), tmp_path / "calib", rank=0, world_size=1,
                          progress=False, device="cpu")
    assert rep.ok and len(rep.done) == 12
    out = tmp_path / "cal.json"
    assert main(["generator", "calibrate", "--model", str(tmp_path / "model"), "--synthetic", str(tmp_path / "calib"),
                 "--out", str(out), "--attributes", "contrast_hu", "--k", "4"]) == 0
    cal = DraftCalibration.read(out)
    assert cal.model_hash == pipeline_hash(tmp_path / "model") and cal.summary["contrast_hu"]["n"] == 12 and cal.k == 4
    S.sample_cohort(tmp_path / "healthy", tmp_path / "model", spec(8, 1, draft_calibration=str(out)), tmp_path / "cal",
                    rank=0, world_size=1, progress=False, device="cpu")
    recs = [r for c in sorted((tmp_path / "cal").glob("*/case.json")) for r in json.loads(c.read_text())["tumors"]]
    assert len(recs) == 3
    for r in recs:
        app = r["appearance"]
        assert app["draft_calibration"] == str(out)
        want = cal.draft_values(app["requested"], r["max_axial_diameter_mm"])
        assert app["draft"]["contrast_hu"] == pytest.approx(want["contrast_hu"], abs=0.01)  # provenance rounds
        assert app["draft"]["rim_hu"] == pytest.approx(app["requested"]["rim_hu"], abs=0.01)  # not calibrated here
    assert any(abs(r["appearance"]["draft"]["contrast_hu"] - r["appearance"]["requested"]["contrast_hu"]) > 0.1 for r in recs)
    # a calibration belongs to its model
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(out.read_text()), "model_hash": "0" * 64}))
    with pytest.raises(ValueError, match="fitted for the model 000000000000, not this one"):
        S.sample_cohort(tmp_path / "healthy", tmp_path / "model", spec(8, draft_calibration=str(other)), tmp_path / "x",
                        rank=0, world_size=1, progress=False, device="cpu")
    capsys.readouterr()
    assert main(["sample", "--healthy", str(tmp_path / "healthy"), "--model", str(tmp_path / "model"), "--out",
                 str(tmp_path / "y"), "--quiet", "--set", "inpaint.draft_strength=0.25",
                 "--set", f"inpaint.draft_calibration={tmp_path / 'nope.json'}"]) == 2
    err = capsys.readouterr()
    assert "nope.json: draft calibration not found" in (err.out + err.err).replace("\n", "")
    with pytest.raises(ValueError, match="needs draft_strength < 1"):
        spec(8, draft_calibration=str(out), draft_strength=1.0)
    # the CLI names a missing folder and too small a cohort, and writes nothing
    assert main(["generator", "calibrate", "--model", str(tmp_path / "nope"), "--synthetic", str(tmp_path / "calib"),
                 "--out", str(tmp_path / "c2.json")]) == 2
    assert main(["generator", "calibrate", "--model", str(tmp_path / "model"), "--synthetic", str(tmp_path / "calib"),
                 "--out", str(tmp_path / "c2.json")]) == 2  # 12 tumors < 2 x the default 12 neighbours
    assert not (tmp_path / "c2.json").exists()
