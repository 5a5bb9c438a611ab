"""Pixel2Cancer cellular automaton: rules, rendering, compat switch, determinism."""

import numpy as np
import pytest
import torch

from cohort import labels as L
from generative.tumors import CAConfig, CASynthesizer, SynthesisError, TumorSpec
from generative.tumors.ca import BOUNDARY, NECROTIC, OUT_OF_RANGE, THRESHOLD, grow, quantize_density
from tests.toys import extents_mm, toy_liver

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
    # compat uses the reference's absolute HU range; the corrected arm is given the same one so that
    # only the probability quirk differs
    dense_ct, dense_lab = toy_liver(32, hu=(145.0, 159.0))  # all density level 2 (p = 0.1) in [100, 160)
    spec = TumorSpec(steps=30, count=1)
    fixed = CASynthesizer(quiet(hu_mode="absolute"))(dense_ct, dense_lab, SP, spec, np.random.default_rng(0))
    compat = CASynthesizer(quiet(compat=True))(dense_ct, dense_lab, SP, spec, np.random.default_rng(0))
    assert compat.info["tumor_voxels"] > 5 * fixed.info["tumor_voxels"]
    assert compat.info["hu"]["hu_mode"] == "absolute" and compat.info["hu"]["density_range_hu"] == [100.0, 160.0]
    # in low-density tissue (p = 1.0 either way) the two agree exactly
    low_ct, low_lab = toy_liver(32, hu=(100.0, 115.0))
    a = CASynthesizer(quiet(hu_mode="absolute"))(low_ct, low_lab, SP, spec, np.random.default_rng(0))
    b = CASynthesizer(quiet(compat=True))(low_ct, low_lab, SP, spec, np.random.default_rng(0))
    assert np.array_equal(a.label, b.label)


def test_compat_leaves_necrosis_unlabelled():
    """Quirk 2: the reference labels ``state > 0`` only, so necrotic (-1) voxels are not tumor."""
    ct, lab = toy_liver(32, hu=(100.0, 115.0))
    cfg = dict(necrosis_prob=1.0, necrosis_gate_steps={"liver": 20})
    spec = TumorSpec(steps=35, count=1)
    fixed = CASynthesizer(quiet(hu_mode="absolute", **cfg))(ct, lab, SP, spec, np.random.default_rng(0))
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


# --- issue 19: growth on a physical (mm) grid, HU relative to the organ -------------------------------------------


def physical_liver(spacing, fov_mm: float = 72.0, radii_mm=(30.0, 28.0, 28.0), hu: float = 130.0,
                   noise_hu: float = 15.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One ellipsoid liver in fat, defined in mm and sampled at ``spacing``: the same patient on any
    scanner. Liver HU ~ N(hu, noise_hu) per voxel."""
    sp = np.asarray(spacing, float)
    shape = tuple(int(round(fov_mm / s)) for s in sp)
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[(np.arange(n) + 0.5) * s - fov_mm / 2 for n, s in zip(shape, sp)], indexing="ij")
    liver = sum((x / r) ** 2 for x, r in zip(g, radii_mm)) <= 1
    ct = (-100.0 + rng.normal(0, 5, shape)).astype(np.float32)
    ct[liver] = (hu + rng.normal(0, noise_hu, int(liver.sum()))).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[liver] = LIVER
    return ct, lab


def sizes(cfg: CAConfig, spacing, spec: TumorSpec, seeds=range(6), **liver) -> tuple[float, np.ndarray]:
    """Mean tumor volume (mL) and mean extents (mm per axis) over ``seeds``."""
    ct, lab = physical_liver(spacing, **liver)
    vols, exts = [], []
    for k in seeds:
        m = CASynthesizer(cfg)(ct, lab, spacing, spec, np.random.default_rng(k)).label == LESION
        vols.append(m.sum() * np.prod(spacing) / 1000.0)
        exts.append(extents_mm(m, spacing))
    return float(np.mean(vols)), np.mean(exts, axis=0)


@pytest.mark.parametrize("spec", [TumorSpec(steps=40, count=1), TumorSpec(diameter_mm=30.0)], ids=["steps", "diameter"])
def test_size_is_physical_on_any_grid(spec):
    """The CA grows on a 1 mm grid: a thin-pixel/thick-slice scan and a coarse 3 mm scan of the same
    liver get tumors of the size a 1 mm scan gets (homogeneous tissue: only the grid differs)."""
    cfg = quiet(invasion_prob=[1.0, 1.0, 1.0])
    # noise-free tissue (no scattered out-of-range voxels) with room around most seeds: size, not the
    # medium or clipping at the organ's edge, is compared
    big = dict(fov_mm=84.0, radii_mm=(36.0, 34.0, 34.0), noise_hu=0.0)
    ref_vol, ref_ext = sizes(cfg, (1.0, 1.0, 1.0), spec, **big)
    for sp in [(0.75, 0.75, 2.0), (3.0, 3.0, 3.0)]:
        vol, ext = sizes(cfg, sp, spec, **big)
        assert abs(vol / ref_vol - 1) < 0.2, (sp, vol, ref_vol)
        assert np.all(np.abs(ext - ref_ext) <= 3.0), (sp, ext, ref_ext)


def test_diameter_target_holds_along_z():
    """On 0.75 x 0.75 x 2 mm voxels a 30 mm target is 30 mm along z too (it was ~60 mm when the CA
    counted voxels: ``grid_mm=0`` keeps that old behaviour)."""
    sp = (0.75, 0.75, 2.0)
    ct, lab = physical_liver(sp)
    for k in range(3):
        res = CASynthesizer(quiet())(ct, lab, sp, TumorSpec(diameter_mm=30.0), np.random.default_rng(k))
        ext = extents_mm(res.label == LESION, sp)
        assert np.all((ext >= 21.0) & (ext <= 38.0)), ext
        assert 0.75 <= ext[2] / ext[:2].mean() <= 1.33, ext
        assert res.info["grid_mm"] == 1.0 and res.info["resampled"]
        assert all(r["grid_mm"] == 1.0 for r in res.records)
    old = CASynthesizer(quiet(grid_mm=0.0))(ct, lab, sp, TumorSpec(diameter_mm=30.0), np.random.default_rng(0))
    ext = extents_mm(old.label == LESION, sp)
    assert ext[2] > 1.5 * ext[:2].mean() and not old.info["resampled"]


def test_resampled_growth_changes_only_the_organ():
    ct, lab = toy_liver((40, 40, 16), vessel=True)
    sp = (0.8, 0.8, 2.5)
    ct0, lab0 = ct.copy(), lab.copy()
    res = CASynthesizer(CAConfig(necrosis_prob=1.0))(ct, lab, sp, TumorSpec(steps=60), np.random.default_rng(2))
    assert np.array_equal(ct, ct0) and np.array_equal(lab, lab0)
    region = (lab0 == LIVER) | (lab0 == L.NAME_TO_INDEX["hepatic_vessel"])
    lesion = res.label == LESION
    assert lesion.any() and not (lesion & ~region).any()
    assert not ((np.abs(res.ct - ct0) > 1e-4) & ~region).any()
    assert np.array_equal(res.label[~lesion], lab0[~lesion])
    assert sum(r["voxels"] for r in res.records) == int(lesion.sum())
    assert int(lesion.sum()) == res.info["tumor_voxels"] + res.info["necrotic_voxels"]
    seeds = np.array(res.info["seeds"])
    assert np.all(region[tuple(seeds.T)] | (lab0[tuple(seeds.T)] > 0))


def tumor_vs_organ(cfg: CAConfig, hu: float, seeds=range(3), spec=None) -> tuple[list[float], float]:
    """Mean tumor HU per seed and the organ's median HU, on a 1.5 mm liver at ``hu`` +- 12 HU."""
    sp = (1.5, 1.5, 1.5)
    ct, lab = physical_liver(sp, hu=hu, noise_hu=12.0)
    spec = spec or TumorSpec(steps=50, count=1)
    means = []
    for k in seeds:
        res = CASynthesizer(cfg)(ct, lab, sp, spec, np.random.default_rng(k))
        means.append(float(res.ct[res.label == LESION].mean()))
    return means, float(np.median(ct[lab == LIVER]))


def test_non_contrast_organ_gets_a_hypodense_tumor_above_water():
    """A 45 HU liver (non-contrast): darker than the organ, not at fat density; the reference's
    absolute HU (compat / hu_mode absolute) put it near or below 0 HU."""
    means, organ = tumor_vs_organ(quiet(necrosis_prob=0.5), 45.0)
    assert all(5.0 < m < organ - 8.0 for m in means), (means, organ)
    necrotic, _ = tumor_vs_organ(quiet(necrosis_prob=1.0, necrosis_gate_steps={"liver": 10}), 45.0)
    assert all(-5.0 < m < organ - 8.0 for m in necrotic), necrotic
    absolute, _ = tumor_vs_organ(quiet(hu_mode="absolute"), 45.0)
    compat, _ = tumor_vs_organ(quiet(compat=True), 45.0)
    assert np.mean(absolute) < np.mean(means) - 10 and np.mean(compat) < np.mean(means) - 10


def test_non_contrast_pancreas_and_kidney_stay_above_water():
    """The pancreas' fat fill and the kidney's reference (170 HU) follow the organ too."""
    sp = (1.5, 1.5, 1.5)
    for organ, name, hu in (("pancreas", "pancreas", 40.0), ("kidney", "kidney_left", 30.0)):
        ct, lab = physical_liver(sp, hu=hu, noise_hu=10.0)
        lab[lab == LIVER] = L.NAME_TO_INDEX[name]
        res = CASynthesizer(quiet())(ct, lab, sp, TumorSpec(organ, steps=40, count=1), np.random.default_rng(0))
        m = float(res.ct[res.label == L.lesion_index_for(organ)].mean())
        assert 0.0 < m < hu - 4.0, (organ, m)
        assert res.info["hu"]["reference_organ_hu"] == (130.0 if organ == "pancreas" else 170.0)


def test_contrast_enhanced_organ_keeps_the_reference_values():
    """A liver at 130 +- 15 HU (the centre of the reference's 100-160 range): the measured density
    range is the reference's and the darkening scale ~1; a homogeneous 130 HU liver gets exactly the
    absolute-mode tumor; noisy contrast-enhanced livers get tumors in the same band as before."""
    sp = (1.0, 1.0, 1.0)
    ct, lab = physical_liver(sp, hu=130.0, noise_hu=15.0)
    res = CASynthesizer(quiet())(ct, lab, sp, TumorSpec(steps=40, count=1), np.random.default_rng(0))
    hu = res.info["hu"]
    assert hu["hu_mode"] == "relative" and abs(hu["organ_median_hu"] - 130) < 2
    assert np.allclose(hu["density_range_hu"], [100.0, 160.0], atol=4.0)
    assert abs(hu["hu_scale"] - 1.0) < 0.02 and 64 <= hu["hu_difference"] <= 146
    flat_ct, flat_lab = physical_liver(sp, hu=130.0, noise_hu=0.0)
    spec = TumorSpec(steps=40)
    rel = CASynthesizer(CAConfig(necrosis_prob=1.0))(flat_ct, flat_lab, sp, spec, np.random.default_rng(1))
    ab = CASynthesizer(CAConfig(necrosis_prob=1.0, hu_mode="absolute"))(flat_ct, flat_lab, sp, spec,
                                                                        np.random.default_rng(1))
    assert np.array_equal(rel.label, ab.label) and np.allclose(rel.ct, ab.ct, atol=1e-3)
    for hu_organ in (110.0, 130.0):
        for cfg in (quiet(), quiet(hu_mode="absolute")):
            means, organ = tumor_vs_organ(cfg, hu_organ)
            assert all(organ - 90 < m < organ - 15 for m in means), (hu_organ, cfg.hu_mode, means)


def test_absolute_mode_on_the_scans_voxels_is_the_old_maker():
    """grid_mm=0 + hu_mode absolute is the maker before issue 19 (fixed ranges, voxel counts):
    the quantization range is the reference's, the darkening unscaled, no resampling."""
    ct, lab = toy_liver(32, hu=(30.0, 60.0))
    res = CASynthesizer(quiet(grid_mm=0.0, hu_mode="absolute"))(ct, lab, (0.8, 0.8, 2.0), TumorSpec(steps=30),
                                                                  np.random.default_rng(0))
    assert res.info["hu"] == {"hu_mode": "absolute", "density_range_hu": [100.0, 160.0], "reference_organ_hu": 130.0,
                              "hu_floor": 0.0, "hu_scale": 1.0, "hu_difference": res.info["hu"]["hu_difference"],
                              "necrosis_hu": None}
    assert 65 <= res.info["hu"]["hu_difference"] <= 145 and res.info["grid_mm"] == 0.0
    assert res.records[0]["hu_mode"] == "absolute" and res.records[0]["organ_median_hu"] is None


def test_ca_tumor_mask_is_round_on_thick_slices():
    from generative.tumors.ca import ca_tumor_mask

    sp = (0.75, 0.75, 2.0)
    _, lab = physical_liver(sp)
    m = ca_tumor_mask(lab == LIVER, sp, 20.0, np.random.default_rng(0), margin_mm=1.0)
    ext = extents_mm(m, sp)
    assert np.all((ext >= 14.0) & (ext <= 26.0)), ext
    assert not (m & (lab != LIVER)).any()


def test_real_ct_default_liver_tumor_is_plausible():
    """The 3 mm non-contrast TotalSegmentator sample: the default draw used to fill 65-99 % of the
    liver at fat density (-11 to -35 HU); now a fraction of it, darker than the liver, above fat."""
    from cohort.layouts import open_cohort
    from tests.conftest import TS_COHORT

    case = open_cohort(TS_COHORT).refs[0].load()
    liver = case.label == LIVER
    organ_hu = float(np.median(case.ct[liver]))
    for k in range(3):
        res = CASynthesizer()(case.ct, case.label, case.spacing, TumorSpec("liver"), np.random.default_rng(k))
        lesion = res.label == LESION
        assert 0 < lesion.sum() < 0.35 * liver.sum()
        assert 0.0 < float(res.ct[lesion].mean()) < organ_hu - 10, (k, float(res.ct[lesion].mean()), organ_hu)
        assert abs(res.info["hu"]["organ_median_hu"] - organ_hu) < 5 and res.info["hu"]["hu_scale"] < 0.5


def test_growth_grid_round_trip():
    """The grid covers the organ box at grid_mm; back on the scan, footprint averages keep the volume
    (coarse scans) and linear interpolation keeps a constant (fine scans)."""
    from generative.tumors.ca import GrowthGrid

    mask = np.zeros((20, 20, 12), bool)
    mask[4:16, 5:15, 2:10] = True
    for sp in [(3.0, 3.0, 3.0), (0.75, 0.75, 2.0), (1.5, 1.5, 1.5)]:
        grid = GrowthGrid.over(mask, sp, 1.0)
        assert not grid.identity and grid.box == tuple(slice(s.start - 1, s.stop + 1) for s in bbox_slices(mask))
        extent = [(b.stop - b.start - 1) * v for b, v in zip(grid.box, sp)]
        assert all(abs((n - 1) * 1.0 - e) < 1.0 for n, e in zip(grid.shape, extent))
        cube = np.zeros(grid.shape, bool)
        c = np.array(grid.shape) // 2
        cube[tuple(slice(int(ci) - 3, int(ci) + 3) for ci in c)] = True
        sub = bbox_slices(cube, margin=3)
        ssub, occ = grid.to_scan(cube[sub], sub)
        if min(sp) >= 1:  # footprint averages: the volume (mm^3) is kept exactly
            assert abs(occ.sum() * np.prod(sp) - cube.sum()) < 1e-3 * cube.sum()
        else:  # linear interpolation of the occupancy: the volume is kept to a voxel layer
            assert abs((occ >= 0.5).sum() * np.prod(sp) / cube.sum() - 1) < 0.35
        assert all(0 <= s.start < s.stop <= b.stop - b.start for s, b in zip(ssub, grid.box))
        ones = grid.to_grid(np.full(tuple(b.stop - b.start for b in grid.box), 7.0, np.float32), order=1)
        assert ones.shape == grid.shape and np.allclose(ones, 7.0)
    assert GrowthGrid.over(mask, (1.0, 1.0, 1.0), 1.0).identity
    native = GrowthGrid.over(mask, (0.8, 0.8, 2.0), 0.0)
    assert native.identity and native.native and native.stop_vox(16.0) == (20.0, 20.0)


def bbox_slices(mask, margin: int = 0):
    from generative.tumors.base import bbox_of

    return bbox_of(mask, margin=margin)


def test_hu_mode_is_checked_for_configs_built_in_code():
    from cohort.config import ConfigError

    with pytest.raises(ConfigError, match="hu_mode"):
        CASynthesizer(CAConfig(hu_mode="relativ"))  # type: ignore[arg-type]
