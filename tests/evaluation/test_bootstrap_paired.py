"""The paired bootstrap over test cases and seeds on constructed arms with a known difference."""

import numpy as np
import pytest

from evaluation.bootstrap import Term, paired_bootstrap, paired_difference


def _arms(diff: float, n_cases: int = 40, n_seeds: int = 2, noise: float = 0.02, seed: int = 0):
    """Per-(seed, case) DSC of a baseline arm with wide case-to-case and seed-to-seed spread, and an arm
    that is the baseline plus ``diff`` plus small zero-sum noise (the difference is exactly ``diff``)."""
    rng = np.random.default_rng(seed)
    case = rng.uniform(0.1, 0.9, size=n_cases)
    seed_shift = rng.normal(0.0, 0.1, size=(n_seeds, 1))
    base = np.clip(case[None, :] + seed_shift, 0, 1)
    e = rng.normal(0.0, noise, size=base.shape)
    other = base + diff + (e - e.mean())
    ones = np.ones_like(base)
    return (other, ones), (base, ones)


def test_ci_covers_a_known_difference_and_excludes_zero():
    a, b = _arms(0.05)
    c = paired_difference(a, b, n_boot=2000, seed=0)
    assert c.value == pytest.approx(0.05)
    assert c.ci_low < 0.05 < c.ci_high
    assert c.ci_low > 0 and c.verdict() is True
    assert c.n_seeds == 2 and c.n_cases == {"id": 40}
    # the opposite order: the same interval mirrored, the opposite verdict
    r = paired_difference(b, a, n_boot=2000, seed=0)
    assert r.value == pytest.approx(-0.05) and r.ci_high < 0 and r.verdict() is False


def test_equal_arms_include_zero():
    a, b = _arms(0.0)
    c = paired_difference(a, b, n_boot=2000, seed=0)
    assert c.value == pytest.approx(0.0, abs=1e-12)
    assert c.ci_low < 0 < c.ci_high and c.verdict() == "unclear"
    same = paired_difference(b, b, n_boot=500)
    assert same.ci_low == same.ci_high == 0.0 and same.verdict() == "unclear"  # [0, 0] excludes neither side


def test_pairing_cancels_the_spread_the_arms_share():
    a, b = _arms(0.05)
    paired = paired_difference(a, b, n_boot=2000, seed=1)
    # the arms alone: their intervals are wide (cases from 0.1 to 0.9, seeds shifted), the paired one is not
    alone = [paired_bootstrap([Term(1.0, *arm)], 2000, 1) for arm in (a, b)]
    assert all(x.ci_high - x.ci_low > 5 * (paired.ci_high - paired.ci_low) for x in alone)
    # resampling the cases of the two arms independently would not be paired: a known wide interval
    unpaired = paired_bootstrap([Term(1.0, *a, cases="x"), Term(-1.0, *b, cases="y")], 2000, 1)
    assert unpaired.ci_high - unpaired.ci_low > 5 * (paired.ci_high - paired.ci_low)
    assert unpaired.n_cases == {"x": 40, "y": 40}


def test_ratio_metrics_pool_over_cases_and_skip_undefined_resamples():
    # tumor sensitivity: detected / lesions; one case in four has lesions
    lesions = np.tile(np.array([2.0, 0.0, 0.0, 0.0] * 5), (2, 1))
    hits_a, hits_b = lesions.copy(), lesions * 0.5
    c = paired_difference((hits_a, lesions), (hits_b, lesions), n_boot=1000)
    assert c.value == pytest.approx(0.5) and c.ci_low == pytest.approx(0.5) and c.ci_high == pytest.approx(0.5)
    none = paired_difference((hits_a * 0, lesions * 0), (hits_b * 0, lesions * 0), n_boot=100)
    assert np.isnan(none.value) and none.verdict() == "unclear"


def test_reproducible_and_checked():
    a, b = _arms(0.03)
    assert paired_difference(a, b, seed=3) == paired_difference(a, b, seed=3)
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap([Term(1.0, *a), Term(-1.0, b[0][:1], b[1][:1])])
    with pytest.raises(ValueError, match="disagree on the number of cases"):
        paired_bootstrap([Term(1.0, *a), Term(-1.0, b[0][:, :5], b[1][:, :5])])
