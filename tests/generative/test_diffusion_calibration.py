"""Draft calibration: the model's measured bias on drafted attributes, fitted and inverted."""

import json

import numpy as np
import pytest
import torch

from generative.diffusion.calibration import (
    FEATURES,
    MAX_CHANGE_HU,
    DraftCalibration,
    calibration_rows,
    fit_calibration,
)


def _rows(n=40, seed=0, noise=0.0):
    """Tumors whose output follows a known blur: the contrast shrinks by 2 % and 4 mm / d of it, the rim
    takes 0.9 of the draft's and is lifted by 0.3 x contrast x (10 mm / d) (a dark tumor's ring brightens)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        c, r, d = rng.uniform(-80, 50), rng.uniform(-10, 50), rng.uniform(6, 40)
        mc = -1.0 + 0.98 * c - 4.0 * c / d
        mr = 1.5 + 0.9 * r - 0.02 * c - 3.0 * c / d
        rows.append({"draft": {"contrast_hu": c, "rim_hu": r, "heterogeneity_hu": 20.0},
                     "measured": {"contrast_hu": mc + rng.normal(0, noise), "rim_hu": mr + rng.normal(0, noise)},
                     "diameter_mm": d})
    return rows


def _predict(cal, x, d):
    out = {}
    for attr, feats in FEATURES.items():
        w = cal.fits[attr].coef
        out[attr] = sum(wi * (1.0 if a is None else x[a]) / (d if per_d else 1.0) for (a, per_d), wi in zip(feats, w))
    return out


def test_fit_recovers_a_known_bias_and_its_inverse_asks_the_right_draft():
    cal = fit_calibration(_rows(), "h" * 64)
    assert cal.fits["contrast_hu"].coef == pytest.approx([-1.0, 0.98, -4.0], abs=1e-4)
    assert cal.fits["rim_hu"].coef == pytest.approx([1.5, 0.9, -0.02, -3.0], abs=1e-4)
    assert cal.fits["rim_hu"].rmse_fit < 1e-3 < cal.fits["rim_hu"].rmse_before
    asked = {"contrast_hu": -60.0, "rim_hu": 10.0, "heterogeneity_hu": 25.0}
    for d in (12.0, 20.0, 35.0):
        drafted = cal.draft_values(asked, d)
        assert drafted["heterogeneity_hu"] == 25.0  # not calibrated: as asked
        got = _predict(cal, drafted, d)  # what the model makes of that draft: what was asked
        assert got["contrast_hu"] == pytest.approx(-60.0, abs=1e-6)
        assert got["rim_hu"] == pytest.approx(10.0, abs=1e-6)
    # a dark small tumor's rim comes out too bright: its draft asks less
    assert cal.draft_values(asked, 12.0)["rim_hu"] < 10.0 - 5.0
    # with noise the fit still lands near the truth
    noisy = fit_calibration(_rows(200, seed=1, noise=3.0), "h")
    assert noisy.fits["rim_hu"].coef[1] == pytest.approx(0.9, abs=0.05)


def test_draft_values_are_bounded_and_leave_undefined_attributes_alone():
    cal = fit_calibration(_rows(), "h")
    far = cal.draft_values({"contrast_hu": -80.0, "rim_hu": 0.0}, 1.0)  # 1 mm: an absurd correction
    assert abs(far["contrast_hu"] + 80.0) <= MAX_CHANGE_HU + 1e-9 and abs(far["rim_hu"]) <= MAX_CHANGE_HU + 1e-9
    nan = cal.draft_values({"contrast_hu": -40.0, "rim_hu": float("nan")}, 20.0)
    assert np.isnan(nan["rim_hu"]) and nan["contrast_hu"] != -40.0
    only = DraftCalibration("h", fits={"rim_hu": cal.fits["rim_hu"]})
    assert only.draft_values({"contrast_hu": -40.0, "rim_hu": 5.0}, 20.0)["contrast_hu"] == -40.0


def test_fit_refuses_too_few_tumors_unknown_attributes_and_samples_that_ignore_their_drafts():
    with pytest.raises(ValueError, match="need at least 12"):
        fit_calibration(_rows(8), "h")
    rows = _rows()
    for r in rows[:35]:
        r["measured"]["rim_hu"] = float("nan")  # thin tumors: no core, no rim
    with pytest.raises(ValueError, match="5 tumors with a finite rim_hu"):
        fit_calibration(rows, "h")
    assert set(fit_calibration(rows, "h", attributes=("contrast_hu",)).fits) == {"contrast_hu"}
    with pytest.raises(ValueError, match="unknown attribute 'necrotic_fraction'"):
        fit_calibration(_rows(), "h", attributes=("necrotic_fraction",))
    flat = _rows()
    for r in flat:
        r["measured"]["contrast_hu"] = 3.0  # the output does not follow the draft at all
    with pytest.raises(ValueError, match="slope of contrast_hu"):
        fit_calibration(flat, "h")


def test_round_trip_and_read_errors_name_the_file(tmp_path):
    cal = fit_calibration(_rows(), "a" * 64, fitted_on="somewhere")
    p = cal.write(tmp_path / "cal.json")
    back = DraftCalibration.read(p)
    assert back.model_hash == "a" * 64 and back.fitted_on == "somewhere"
    assert back.draft_values({"contrast_hu": -50.0, "rim_hu": 5.0}, 12.0) == pytest.approx(
        cal.draft_values({"contrast_hu": -50.0, "rim_hu": 5.0}, 12.0), abs=1e-3)
    assert (p.stat().st_mode & 0o777) == 0o644 or (p.stat().st_mode & 0o600) == 0o600
    with pytest.raises(FileNotFoundError, match="missing.json: draft calibration not found"):
        DraftCalibration.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        DraftCalibration.read(tmp_path / "bad.json")
    d = json.loads(p.read_text())
    d["fits"]["rim_hu"]["features"] = ["1", "rim_hu"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="old.json: the features of rim_hu"):
        DraftCalibration.read(tmp_path / "old.json")
    (tmp_path / "v0.json").write_text(json.dumps({**d, "version": 0}))
    with pytest.raises(ValueError, match="not a draft calibration of version 1"):
        DraftCalibration.read(tmp_path / "v0.json")


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
def test_calibrate_cli_then_sampling_draws_calibrated_drafts(tmp_path, monkeypatch):
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
                 "--out", str(out), "--attributes", "contrast_hu"]) == 0
    cal = DraftCalibration.read(out)
    assert cal.model_hash == pipeline_hash(tmp_path / "model") and cal.fits["contrast_hu"].n == 12
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
    with pytest.raises(ValueError, match="needs draft_strength < 1"):
        spec(8, draft_calibration=str(out), draft_strength=1.0)
    # the CLI names a missing folder and too small a cohort
    assert main(["generator", "calibrate", "--model", str(tmp_path / "nope"), "--synthetic", str(tmp_path / "calib"),
                 "--out", str(tmp_path / "c2.json")]) == 2
    assert not (tmp_path / "c2.json").exists()
