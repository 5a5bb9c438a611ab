"""Policies and metrics on hand-made scores: each accepts and rejects exactly as specified."""

import math

import numpy as np
import pytest

from generative.quality.metrics import alpha_check, auc, auc_breakdown, auc_ci, roc_curve, wilson_ci
from generative.quality.policies import PolicyConfig, PolicyError, apply_policy, case_score, cutoff_for, decide


def test_threshold_policy_accepts_at_or_above_threshold():
    cut, ds = apply_policy(PolicyConfig(kind="threshold", threshold=0.5), [0.2, 0.5, 0.51, 0.99, None])
    assert cut.value == 0.5
    assert [d.accepted for d in ds] == [False, True, True, True, True]
    assert "0.200 < cutoff 0.500" in ds[0].reason and "fixed threshold" in ds[0].reason
    assert ds[4].score is None and "no tumor" in ds[4].reason


def test_top_q_keeps_the_best_fraction():
    scores = [0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.05]
    cut, ds = apply_policy(PolicyConfig(kind="top_q", top_q=0.3), scores)
    kept = sorted(s for s, d in zip(scores, ds) if d.accepted)
    assert kept == [0.7, 0.8, 0.9]
    assert cut.value == 0.7 and "3 kept" in cut.how
    # q = 1 keeps everything; a tiny q still keeps one case
    assert all(d.accepted for d in apply_policy(PolicyConfig(kind="top_q", top_q=1.0), scores)[1])
    assert sum(d.accepted for d in apply_policy(PolicyConfig(kind="top_q", top_q=0.01), scores)[1]) == 1


def test_calibrated_uses_the_conformal_cut_of_real_scores():
    real = np.linspace(0.0, 1.0, 11)  # 0.0, 0.1, ..., 1.0; floor(0.1 * 12) = 1 -> the lowest, 0.0
    cut, ds = apply_policy(PolicyConfig(kind="calibrated", alpha=0.1), [0.05, 0.1, 0.3], real)
    assert math.isclose(cut.value, 0.0) and all(d.accepted for d in ds)
    assert "held-out real" in ds[0].reason
    cut, ds = apply_policy(PolicyConfig(kind="calibrated", alpha=0.5), [0.05, 0.1, 0.3, 0.6], real)
    assert math.isclose(cut.value, 0.5) and [d.accepted for d in ds] == [False, False, False, True]  # floor(6) = 6th
    cut, _ = apply_policy(PolicyConfig(kind="calibrated", alpha=0.1), [0.5], real[:5])  # 0.1 * 6 < 1: no promise
    assert cut.value == 0.0 and "nothing is cut" in cut.how


def test_conformal_cut_keeps_its_promise_on_new_real_scores():
    """Over many calibration draws, the share of new real scores falling under the cut is at most alpha."""
    rng = np.random.default_rng(0)
    for alpha in (0.05, 0.1, 0.2):
        rates = []
        for _ in range(400):
            cal, new = rng.beta(5, 2, 30), rng.beta(5, 2, 200)
            c = cutoff_for(PolicyConfig(kind="calibrated", alpha=alpha), [], cal).value
            rates.append(float((new < c).mean()))
        assert alpha - 0.03 <= float(np.mean(rates)) <= alpha + 1e-9 + 0.005


def test_calibrated_without_real_scores_is_an_error():
    with pytest.raises(PolicyError, match="held-out real"):
        cutoff_for(PolicyConfig(kind="calibrated"), [0.5], None)


@pytest.mark.parametrize("cfg", [PolicyConfig(kind="threshold", threshold=1.5), PolicyConfig(kind="top_q", top_q=0.0),
                                 PolicyConfig(kind="calibrated", alpha=1.0)])
def test_bad_parameters_are_errors(cfg):
    with pytest.raises(PolicyError):
        cutoff_for(cfg, [0.5], [0.5])


def test_case_takes_its_worst_tumor():
    assert case_score([0.9, 0.2, 0.7]) == 0.2
    assert case_score([]) is None
    d = decide(case_score([0.9, 0.2]), cutoff_for(PolicyConfig(kind="threshold", threshold=0.5), []))
    assert not d.accepted


def test_auc_matches_pairwise_definition_with_ties():
    pos, neg = [0.9, 0.8, 0.5, 0.5], [0.5, 0.3, 0.1]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert math.isclose(auc(pos, neg), sum(pairs) / len(pairs))
    assert auc([1, 2], [0]) == 1.0 and auc([0], [1, 2]) == 0.0
    assert math.isnan(auc([], [1.0]))


def test_roc_curve_runs_from_origin_to_one():
    fpr, tpr, thr = roc_curve([0.9, 0.6], [0.4, 0.7])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(thr[1:]) < 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert math.isclose(area, auc([0.9, 0.6], [0.4, 0.7]))


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_calibrated_cutoff_gives_the_asked_false_reject_rate(alpha):
    """On a synthetic score distribution, the alpha-quantile cutoff of one real sample rejects about alpha
    of another real sample (inside its Wilson CI), and far more of a worse-scoring synthetic sample."""
    rng = np.random.default_rng(0)
    calib, check = rng.beta(5, 2, 4000), rng.beta(5, 2, 4000)
    synthetic = rng.beta(2, 5, 2000)
    cut, ds = apply_policy(PolicyConfig(kind="calibrated", alpha=alpha), list(check), calib)
    rate = 1 - np.mean([d.accepted for d in ds])
    assert abs(rate - alpha) < 0.02
    row = alpha_check(calib, check, [alpha], {"synthetic": synthetic})[0]
    assert row["cutoff"] == pytest.approx(cut.value) and row["false_reject"] == pytest.approx(rate, abs=1e-4)
    assert row["holds"] and row["within_ci"] and row["ci"][0] <= alpha <= row["ci"][1]
    assert row["rejected_synthetic"] > 0.7


def test_alpha_check_flags_a_broken_promise_and_empty_halves():
    row = alpha_check([0.5] * 10 + [0.9] * 90, [0.1] * 50, [0.1])[0]  # every check tumor scores below the cut
    assert row["false_reject"] == 1.0 and row["holds"] is False
    assert alpha_check([0.5], [], [0.1])[0]["holds"] is None


def test_wilson_and_bootstrap_intervals():
    lo, hi = wilson_ci(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)
    assert wilson_ci(0, 20)[0] == 0.0 and math.isnan(wilson_ci(0, 0)[0])
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 60), rng.normal(0, 1, 60)
    a, lo, hi = auc_ci(pos, neg, n_boot=300)
    assert a == pytest.approx(auc(pos, neg)) and lo < a < hi and hi - lo < 0.3


def test_auc_breakdown_groups_by_size_organ_and_generator():
    t = ([{"kind": "real", "score": 0.9, "size_bin": b, "organ": o} for b in ("early", "medium") for o in ("liver", "kidney")]
         + [{"kind": "synthetic", "score": 0.2, "size_bin": "early", "organ": "liver", "source": "ca"},
            {"kind": "synthetic", "score": 0.95, "size_bin": "large", "organ": "kidney", "source": "rules"},
            {"kind": "probe", "score": 0.1, "size_bin": "early", "organ": "liver", "source": "probe:blur"}])
    b = auc_breakdown(t, n_boot=50)
    assert b["overall"]["n_real"] == 4 and b["overall"]["n_synthetic"] == 2  # probes are not a generator
    assert b["by_size"]["early"]["auc"] == 1.0 and b["by_size"]["larger"]["auc"] == 0.0
    assert set(b["by_generator"]) == {"ca", "rules", "probe:blur"} and b["by_generator"]["ca"]["auc"] == 1.0
    assert b["by_organ"]["kidney"]["auc"] == 0.0 and b["by_organ"]["liver"]["n_synthetic"] == 1
