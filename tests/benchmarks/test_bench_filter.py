"""The filter benchmark's statistics on constructed scores (benchmarks/bench_filter.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_filter import crossed_alpha_check, operating_points


def test_operating_points_cut_at_the_real_quantile():
    real = np.linspace(0.01, 1.0, 100).tolist()  # 100 real cases, evenly spread
    probes = [0.005] * 50 + [0.065] * 30 + [0.5] * 20
    rows = {r["real_false_reject_target"]: r for r in operating_points(real, probes, (0.05, 0.1, 0.2))}
    assert rows[0.1]["real_false_reject"] == pytest.approx(0.10)
    assert rows[0.05]["real_false_reject"] <= 0.05 and rows[0.2]["real_false_reject"] <= 0.2
    assert rows[0.05]["probe_rejection"] == pytest.approx(0.5)  # cutoff 0.06: only the 0.005 probes lie below it
    assert rows[0.1]["probe_rejection"] == pytest.approx(0.8)
    assert operating_points([], probes, (0.1,))[0]["cutoff"] is None


def test_crossed_check_pools_both_halves():
    rng = np.random.default_rng(0)
    a, b = rng.random(200).tolist(), rng.random(200).tolist()  # the same distribution: each promise holds
    rows = crossed_alpha_check(a, b, [0.1, 0.2], {"probes": [0.0] * 10})
    for r in rows:
        assert r["n"] == 400 and r["holds"]
        assert abs(r["false_reject"] - r["alpha"]) < 0.05
        assert r["rejected_probes"] == 1.0
    # a check half scored at half the reference's: one way about 20 % are rejected, the other way about 5 %;
    # pooled, the rate lies between, and the two cutoffs differ by about 2x
    low = (np.asarray(b) * 0.5).tolist()
    r = crossed_alpha_check(a, low, [0.1], {})[0]
    assert 0.09 < r["false_reject"] < 0.16 and r["n_rejected"] == round(r["false_reject"] * 400)
    assert r["cutoffs"][0] == pytest.approx(2 * r["cutoffs"][1], rel=0.35)
