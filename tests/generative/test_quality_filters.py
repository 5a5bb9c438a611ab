"""The FreeTumor gate and the HU check reject planted bad cases and accept good ones; filters compose."""

import numpy as np
import pytest

from generative.quality.crops import CropConfig, find_tumors
from generative.quality.filters import (
    FilterVerdict,
    FreeTumorConfig,
    FreeTumorGate,
    GateValidation,
    HUCheck,
    HUCheckConfig,
    collect_real_medians,
    compose,
    fit_hu_bounds,
)
from generative.quality.probes import PROBE_KINDS, make_probe
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
    gate = FreeTumorGate(seg, FreeTumorConfig(min_detected_fraction=0.7), GateValidation(0.9, 10, 9, "test"))
    assert gate.voting and "voting: segmentor found 9 of 10" in gate.status
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
    v = FreeTumorGate(seg, validation=GateValidation(1.0, 3, 3, "test")).judge(case, [])
    assert v.accepted and v.voting and seg.calls == 0


def test_freetumor_gate_rejects_wrong_shape():
    case, tumors = _case(2)
    with pytest.raises(ValueError, match="shape"):
        FreeTumorGate(lambda ct, sp: np.zeros((2, 2, 2)), validation=GateValidation(1.0, 1, 1, "t")).judge(case, tumors)


def test_freetumor_gate_abstains_with_a_reason_when_its_segmentor_is_blind():
    real = [_case(s) for s in range(4)]
    blind = FreeTumorGate(lambda ct, sp: np.zeros(ct.shape, np.uint8), FreeTumorConfig(min_sensitivity=0.5))
    # never validated: abstains without running the segmentor
    v = blind.judge(*real[0])
    assert not v.voting and v.accepted and "never validated" in v.reasons[0]
    val = blind.measure(real, "4 toy real cases")
    assert val.sensitivity == 0.0 and val.n == 4 and not blind.voting
    v = blind.judge(*real[1])
    assert not v.voting and v.accepted and "found 0 of 4 held-out real tumors" in v.reasons[0] and "< 50%" in v.reasons[0]
    # composition treats the abstainer as not voting: another filter's rejection decides alone
    ok, reasons = compose([FilterVerdict("hu_check", True, 0.0, ["fine"]), v])
    assert ok and reasons[1].startswith("freetumor: not voting")
    assert not compose([FilterVerdict("hu_check", False, 9.0, ["bad"]), v])[0]
    assert FilterVerdict.from_dict(v.as_dict()) == v
    # a segmentor that sees the tumors earns its vote and then judges
    seer = FakeSegmentor(1.0)

    class Seer:
        def __call__(self, ct, sp):
            seer.truth = next(c.label for c, _ in real + [_case(9)] if c.ct is ct) == LIVER_LESION
            return seer(ct, sp)

    gate = FreeTumorGate(Seer(), FreeTumorConfig(min_sensitivity=0.5))
    assert gate.measure(real).sensitivity == 1.0 and gate.voting
    v = gate.judge(*real[2])
    assert v.voting and v.accepted and v.tumors


def test_probe_kinds_change_the_tumor():
    case, tumors = _case(3)
    info, mask = tumors[0]
    for kind in PROBE_KINDS:
        p = make_probe(case, kind, np.random.default_rng(0))
        assert p is not None and p.kind == kind, kind
        assert not np.array_equal(p.case.ct, case.ct) or not np.array_equal(p.case.label, case.label), kind
    seam = make_probe(case, "seam", np.random.default_rng(0)).case
    assert np.median(seam.ct[mask] - case.ct[mask]) == pytest.approx(60.0)
    blur = make_probe(case, "blur", np.random.default_rng(0)).case
    assert blur.ct[mask].std() < case.ct[mask].std()


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
    assert {"liver_lesion/contrast", "liver_lesion/texture"} <= set(hu_check.bounds)
    assert hu_check.config.mode == "relative"
    good, gt = _case(100)
    assert hu_check.judge(good, gt).accepted
    bad = make_probe(good, "wrong_hu", np.random.default_rng(0))
    v = hu_check.judge(bad.case, find_tumors(bad.case, CropConfig()))
    assert not v.accepted and not v.tumors[0].accepted
    assert "liver_lesion contrast to its organ" in v.reasons[0] and "above real range" in v.reasons[0]
    # noise-filled: right median, wrong texture against its organ
    noisy = make_probe(good, "noise", np.random.default_rng(0))
    v = hu_check.judge(noisy.case, find_tumors(noisy.case, CropConfig()))
    assert not v.accepted and any("texture" in r for r in v.reasons)
    # absolute mode (MAISI) still catches a whole organ shifted by +150 HU by its median alone
    absolute = HUCheck(hu_check.bounds, HUCheckConfig(mode="absolute"))
    shifted = good.copy()
    shifted.ct[shifted.label == 5] += 150.0
    v = absolute.judge(shifted, gt)
    assert not v.accepted and any(r.startswith("liver median") for r in v.reasons)
    v = absolute.judge(bad.case, find_tumors(bad.case, CropConfig()))
    assert not v.accepted and "liver_lesion median" in v.reasons[0]


def test_relative_hu_follows_the_contrast_phase(hu_check):
    """A real tumor in a phase-shifted background (the whole organ, tumor included, +40 HU) passes the
    relative check and fails the absolute one; a wrong-HU probe in that scan is still rejected."""
    good, gt = _case(101)
    phase = good.copy()
    phase.ct[np.isin(phase.label, [5, LIVER_LESION])] += 40.0
    v = hu_check.judge(phase, gt)
    assert v.accepted and v.voting, v.reasons
    assert not HUCheck(hu_check.bounds, HUCheckConfig(mode="absolute")).judge(phase, gt).accepted
    bad = make_probe(phase, "wrong_hu", np.random.default_rng(1))
    v = hu_check.judge(bad.case, find_tumors(bad.case, CropConfig()))
    assert not v.accepted and "contrast to its organ" in v.reasons[0]
    # an organ far beyond any contrast phase (+300 HU) is still an error
    gross = good.copy()
    gross.ct[np.isin(gross.label, [5, LIVER_LESION])] += 300.0
    v = hu_check.judge(gross, gt)
    assert not v.accepted and any(r.startswith("liver median") and "phase margin" in r for r in v.reasons)


def test_compose_needs_every_filter():
    a = FilterVerdict("a", True, 1.0, ["fine"])
    b = FilterVerdict("b", False, 0.0, ["bad thing"])
    ok, reasons = compose([a, b])
    assert not ok and reasons == ["a: fine", "b: bad thing"]
    assert compose([a])[0]
    d = b.as_dict()
    assert FilterVerdict.from_dict(d) == b
