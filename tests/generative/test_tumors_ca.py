"""Pixel2Cancer cellular automaton: rules, rendering, compat switch, determinism."""

import numpy as np
import pytest
import torch

from cohort import labels as L
from generative.tumors import CAConfig, CASynthesizer, SynthesisError, TumorSpec
from generative.tumors.ca import BOUNDARY, NECROTIC, OUT_OF_RANGE, THRESHOLD, grow, quantize_density
from tests.toys import toy_liver

torch.set_num_threads(1)
LIVER, LESION = L.NAME_TO_INDEX["liver"], L.NAME_TO_INDEX["liver_lesion"]
SP = (1.0, 1.0, 1.0)


def quiet(**kw) -> CAConfig:
    """One seed, no satellites, no necrosis unless asked: a single lesion to measure."""
    kw.setdefault("satellite_prob", 0.0)
    kw.setdefault("necrosis_prob", 0.0)
    return CAConfig(**kw)


def test_quantize_three_levels_and_out_of_range():
    ct = np.array([90, 100, 119.9, 120, 139.9, 140, 159.9, 160, 300], np.float32).reshape(9, 1, 1)
    organ = np.ones_like(ct, bool)
    organ[-1] = False
    lv = quantize_density(ct, organ, (100, 160))
    assert lv.ravel().tolist() == [0, 0, 0, 1, 1, 2, 2, OUT_OF_RANGE, OUT_OF_RANGE]
    vessels = np.zeros_like(organ)
    vessels[0] = True
    assert quantize_density(ct, organ, (100, 160), vessels=vessels).ravel()[0] == OUT_OF_RANGE


def test_tumor_inside_organ_and_inputs_untouched():
    ct, lab = toy_liver(32, seed=1)
    ct0, lab0 = ct.copy(), lab.copy()
    res = CASynthesizer(CAConfig(necrosis_prob=1.0))(ct, lab, SP, TumorSpec(steps=40), np.random.default_rng(0))
    assert np.array_equal(ct, ct0) and np.array_equal(lab, lab0)
    assert res.ct.dtype == np.float32 and res.label.dtype == np.uint8
    lesion = res.label == LESION
    assert lesion.any() and not (lesion & (lab0 != LIVER)).any()
    changed = np.abs(res.ct - ct0) > 1e-3
    assert not (changed & (lab0 != LIVER)).any()
    assert (ct0[lesion] - res.ct[lesion]).mean() > 10  # hypodense
    assert res.records and all(r["method"] == "ca" and r["steps"] == 40 for r in res.records)
    assert sum(r["voxels"] for r in res.records) == int(lesion.sum())
    assert {"volume_ml", "max_axial_diameter_mm", "early", "centroid_vox"} <= set(res.records[0])


def test_diameter_grows_with_steps():
    ct, lab = toy_liver(40)
    synth = CASynthesizer(quiet())
    mean_d = []
    for steps in (8, 16, 32, 48):
        ds = [synth(ct, lab, SP, TumorSpec(steps=steps, count=1), np.random.default_rng(k)).records[0]
              ["max_axial_diameter_mm"] for k in range(3)]
        mean_d.append(np.mean(ds))
    assert all(b > a for a, b in zip(mean_d, mean_d[1:])), mean_d
    assert mean_d[-1] > 2.5 * mean_d[0]


def test_necrosis_in_large_tumors_not_small():
    ct, lab = toy_liver(32)
    cfg = quiet(necrosis_prob=1.0, necrosis_gate_steps={"liver": 20})
    synth = CASynthesizer(cfg)
    small = synth(ct, lab, SP, TumorSpec(steps=15, count=1), np.random.default_rng(0))
    large = synth(ct, lab, SP, TumorSpec(steps=35, count=1), np.random.default_rng(0))
    assert not small.info["necrosis"] and small.info["necrotic_voxels"] == 0
    assert large.info["necrosis"] and large.info["necrotic_voxels"] > 0
    # corrected behaviour: necrotic voxels are tumor
    assert int((large.label == LESION).sum()) == large.info["tumor_voxels"] + large.info["necrotic_voxels"]


def test_deterministic_per_seed():
    ct, lab = toy_liver(32)
    synth = CASynthesizer(CAConfig(necrosis_prob=1.0))
    a = synth(ct, lab, SP, TumorSpec(steps=60), np.random.default_rng(7))
    b = synth(ct, lab, SP, TumorSpec(steps=60), np.random.default_rng(7))
    c = synth(ct, lab, SP, TumorSpec(steps=60), np.random.default_rng(8))
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.label, b.label) and a.records == b.records
    assert not np.array_equal(a.label, c.label)


def test_compat_invades_every_density_level():
    """Quirk 1: the kernel truncates its uniform draw to int (0), so 0 < 0.3 and 0 < 0.1 always hold."""
    dense_ct, dense_lab = toy_liver(32, hu=(145.0, 159.0))  # all density level 2 (p = 0.1)
    spec = TumorSpec(steps=30, count=1)
    fixed = CASynthesizer(quiet())(dense_ct, dense_lab, SP, spec, np.random.default_rng(0))
    compat = CASynthesizer(quiet(compat=True))(dense_ct, dense_lab, SP, spec, np.random.default_rng(0))
    assert compat.info["tumor_voxels"] > 5 * fixed.info["tumor_voxels"]
    # in low-density tissue (p = 1.0 either way) the two agree exactly
    low_ct, low_lab = toy_liver(32, hu=(100.0, 115.0))
    a = CASynthesizer(quiet())(low_ct, low_lab, SP, spec, np.random.default_rng(0))
    b = CASynthesizer(quiet(compat=True))(low_ct, low_lab, SP, spec, np.random.default_rng(0))
    assert np.array_equal(a.label, b.label)


def test_compat_leaves_necrosis_unlabelled():
    """Quirk 2: the reference labels ``state > 0`` only, so necrotic (-1) voxels are not tumor."""
    ct, lab = toy_liver(32, hu=(100.0, 115.0))
    cfg = dict(necrosis_prob=1.0, necrosis_gate_steps={"liver": 20})
    spec = TumorSpec(steps=35, count=1)
    fixed = CASynthesizer(quiet(**cfg))(ct, lab, SP, spec, np.random.default_rng(0))
    compat = CASynthesizer(quiet(compat=True, **cfg))(ct, lab, SP, spec, np.random.default_rng(0))
    assert compat.info["necrotic_voxels"] > 0
    assert int((compat.label == LESION).sum()) == compat.info["tumor_voxels"]
    nec_holes = (fixed.label == LESION) & (compat.label == LIVER)
    assert int(nec_holes.sum()) == compat.info["necrotic_voxels"]


def test_grow_rules_on_a_line():
    """A seed (state 5) proliferates: after one step it is 6 and has infected at most one neighbour."""
    level = np.zeros((5, 5, 5), np.int8)
    g = grow(level, np.array([[2, 2, 2]]), 1, np.random.default_rng(0), quiet())
    assert g.state[2, 2, 2] == 6
    assert int(((g.state >= 1) & (g.state <= THRESHOLD)).sum()) == 2
    g = grow(level, np.array([[2, 2, 2]]), 3, np.random.default_rng(0), quiet())
    assert g.state.max() <= THRESHOLD and g.state.min() >= 0


def test_full_cells_press_and_invade_vessels():
    """State-10 cells push on boundary/vessel voxels; a vessel voxel pushed hard enough is invaded."""
    level = np.zeros((15, 15, 15), np.int8)
    level[:, :, 7] = OUT_OF_RANGE  # a vessel sheet
    g = grow(level, np.array([[7, 7, 5]]), 60, np.random.default_rng(0), quiet())
    sheet = g.state[:, :, 7]
    assert ((sheet > BOUNDARY) & (sheet <= BOUNDARY + 2)).any()  # pressure
    assert (g.level[:, :, 7] == 0).any()  # invaded voxels take the lowest density level
    assert ((sheet >= 1) & (sheet <= THRESHOLD)).any()


def test_death_spreads_only_through_full_cells():
    level = np.zeros((21, 21, 21), np.int8)
    g = grow(level, np.array([[10, 10, 10]]), 40, np.random.default_rng(0), quiet(), necrosis=True)
    nec = g.state == NECROTIC
    assert nec[10, 10, 10] and nec.sum() > 1
    assert not (nec & (g.state > 0)).any()


def test_size_targeted_growth():
    ct, lab = toy_liver(40, hu=(100.0, 115.0))
    res = CASynthesizer(quiet())(ct, lab, SP, TumorSpec(diameter_mm=14.0), np.random.default_rng(0))
    assert len(res.records) == 1
    assert 12.0 <= res.records[0]["max_axial_diameter_mm"] <= 24.0
    assert res.info["steps"] < 150


def test_missing_organ_is_a_synthesis_error():
    ct, lab = toy_liver(16)
    with pytest.raises(SynthesisError, match="no pancreas voxels"):
        CASynthesizer()(ct, lab, SP, TumorSpec("pancreas"), np.random.default_rng(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_statistics():
    ct, lab = toy_liver(32)
    spec = TumorSpec(steps=40, count=1)
    cpu = [CASynthesizer(quiet())(ct, lab, SP, spec, np.random.default_rng(k)).info["tumor_voxels"] for k in range(4)]
    gpu = [CASynthesizer(quiet(device="cuda"))(ct, lab, SP, spec, np.random.default_rng(k)).info["tumor_voxels"]
           for k in range(4)]
    assert 0.6 < np.mean(gpu) / np.mean(cpu) < 1.6
    a = CASynthesizer(quiet(device="cuda"))(ct, lab, SP, spec, np.random.default_rng(1))
    b = CASynthesizer(quiet(device="cuda"))(ct, lab, SP, spec, np.random.default_rng(1))
    assert np.array_equal(a.label, b.label)


def test_ca_tumor_mask_provider_inside_organ_off_vessels():
    from generative.tumors.ca import ca_tumor_mask

    ct, lab = toy_liver(40, vessel=True)
    organ, vessel = lab == LIVER, lab == L.NAME_TO_INDEX["hepatic_vessel"]
    m = ca_tumor_mask(organ, SP, 12.0, np.random.default_rng(0), avoid=vessel, margin_mm=1.0)
    assert m.shape == organ.shape and m.sum() > 50
    assert not (m & ~organ).any() and not (m & vessel).any()
    a = ca_tumor_mask(organ, SP, "small", np.random.default_rng(1), avoid=vessel)
    b = ca_tumor_mask(organ, SP, "small", np.random.default_rng(1), avoid=vessel)
    assert np.array_equal(a, b)
