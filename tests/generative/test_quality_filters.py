"""The FreeTumor gate and the HU check reject planted bad cases and accept good ones; filters compose."""

import numpy as np
import pytest

from generative.quality.crops import CropConfig, find_tumors
from generative.quality.filters import (
    FilterVerdict,
    FreeTumorConfig,
    FreeTumorGate,
    HUCheck,
    HUCheckConfig,
    collect_real_medians,
    compose,
    fit_hu_bounds,
)
from generative.quality.probes import make_probe
from tests.toys import LIVER_LESION, toy_lesion_case


def _case(seed, kind="real"):
    c = toy_lesion_case(f"c{seed}", np.random.default_rng(seed), kind)
    return c, find_tumors(c, CropConfig())


class FakeSegmentor:
    """Finds a fixed fraction of every lesion voxel (the first ``frac`` of them along axis 0)."""

    def __init__(self, frac: float, prob: bool = False):
        self.frac, self.prob, self.calls = frac, prob, 0

    def __call__(self, ct, spacing):
        self.calls += 1
        assert ct.ndim == 3 and len(spacing) == 3
        les = self.truth
        idx = np.argwhere(les)
        keep = idx[: int(round(self.frac * len(idx)))]
        out = np.zeros(ct.shape, np.float32 if self.prob else np.uint8)
        out[tuple(keep.T)] = 0.9 if self.prob else LIVER_LESION
        return out


@pytest.mark.parametrize("prob", [False, True])
def test_freetumor_gate_threshold(prob):
    case, tumors = _case(1)
    seg = FakeSegmentor(0.9, prob)
    seg.truth = case.label == LIVER_LESION
    gate = FreeTumorGate(seg, FreeTumorConfig(min_detected_fraction=0.7))
    v = gate.judge(case, tumors)
    assert v.accepted and v.tumors[0].accepted and v.score == pytest.approx(0.9, abs=0.01)
    seg.frac = 0.5
    v = gate.judge(case, tumors)
    assert not v.accepted and v.score == pytest.approx(0.5, abs=0.01)
    assert f"{v.score:.0%}" in v.reasons[0] and "< 70%" in v.reasons[0]
    assert seg.calls == 2  # one segmentor run per case, not per tumor


def test_freetumor_gate_without_tumor_accepts_without_running():
    case = toy_lesion_case("h", np.random.default_rng(0), None)
    seg = FakeSegmentor(1.0)
    v = FreeTumorGate(seg).judge(case, [])
    assert v.accepted and seg.calls == 0


def test_freetumor_gate_rejects_wrong_shape():
    case, tumors = _case(2)
    with pytest.raises(ValueError, match="shape"):
        FreeTumorGate(lambda ct, sp: np.zeros((2, 2, 2))).judge(case, tumors)


@pytest.fixture(scope="module")
def hu_check():
    cfg = HUCheckConfig()
    real = [_case(s) for s in range(8)]
    bounds = fit_hu_bounds(collect_real_medians(real, cfg), cfg)
    return HUCheck(bounds, cfg)


def test_hu_bounds_follow_maisi_rule():
    cfg = HUCheckConfig(sigma=3.0, margin_hu=0.0)
    vals = [100.0, 110.0, 120.0, 130.0]
    b = fit_hu_bounds({"liver": vals}, cfg)["liver"]
    m, s = np.mean(vals), np.std(vals, ddof=1)
    assert b.low == pytest.approx(min(m - 3 * s, np.percentile(vals, 0.5)), abs=0.01)
    assert b.high == pytest.approx(max(m + 3 * s, np.percentile(vals, 99.5)), abs=0.01)
    assert b.n == 4


def test_hu_check_accepts_real_and_rejects_planted_bad(hu_check):
    assert "liver" in hu_check.bounds and "liver_lesion" in hu_check.bounds
    good, gt = _case(100)
    assert hu_check.judge(good, gt).accepted
    bad = make_probe(good, "wrong_hu", np.random.default_rng(0))
    v = hu_check.judge(bad.case, find_tumors(bad.case, CropConfig()))
    assert not v.accepted and not v.tumors[0].accepted
    assert "liver_lesion median" in v.reasons[0] and "above real range" in v.reasons[0]
    # a whole organ shifted by +150 HU (a generator with the wrong contrast phase)
    shifted = good.copy()
    shifted.ct[shifted.label == 5] += 150.0
    v = hu_check.judge(shifted, gt)
    assert not v.accepted and any(r.startswith("liver median") for r in v.reasons)


def test_compose_needs_every_filter():
    a = FilterVerdict("a", True, 1.0, ["fine"])
    b = FilterVerdict("b", False, 0.0, ["bad thing"])
    ok, reasons = compose([a, b])
    assert not ok and reasons == ["a: fine", "b: bad thing"]
    assert compose([a])[0]
    d = b.as_dict()
    assert FilterVerdict.from_dict(d) == b
