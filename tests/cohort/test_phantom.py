"""The phantom world: determinism, anatomy, sites, tumors, cohorts and the CLI.

Small fields of view (scale 0.5-0.75 at 1.5 mm: 48-72 voxels a side) keep each case well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cohort import labels as L
from cohort.io import ImageMeta
from cohort.lesions import measure_lesions
from cohort.phantom import (
    APPEARANCES,
    FOOTPRINT,
    SITES,
    SiteProfile,
    TumorRequest,
    case_id_for,
    case_seed,
    generate_cohort,
    get_site,
    has_tumors,
    make_pair,
    make_phantom,
    phantom_grid,
    random_requests,
)
from cohort.phantom.anatomy import TISSUE, build_anatomy
from cohort.phantom.render import render

SMALL = dict(spacing=1.5, scale=0.5)  # 48 x 48 x 32 voxels
MID = dict(spacing=1.5, scale=0.75)  # 72 x 72 x 48 voxels


def _centroid_x(case, name):
    return float(np.argwhere(case.mask(name))[:, 0].mean())


def _band_dice(tumor_hu: np.ndarray, organ_hu: np.ndarray, lo=-400.0, hi=500.0, step=2.0) -> float:
    """Dice of the best single HU band [a, b) separating tumor from organ voxels (an oracle threshold)."""
    bins = np.arange(lo, hi + step, step)
    ht, _ = np.histogram(np.clip(tumor_hu, lo, hi - 1e-3), bins)
    ho, _ = np.histogram(np.clip(organ_hu, lo, hi - 1e-3), bins)
    ct = np.concatenate([[0], np.cumsum(ht)])
    co = np.concatenate([[0], np.cumsum(ho)])
    tp = ct[None, :] - ct[:, None]
    fp = co[None, :] - co[:, None]
    dice = np.where(tp > 0, 2.0 * tp / (ht.sum() + tp + fp + 1e-9), 0.0)
    return float(dice.max())


# ---------------------------------------------------------------- grid, geometry, provenance

def test_default_grid_is_96x96x64_at_1p5mm_and_native_spacing_follows_the_site():
    g = phantom_grid("A", spacing=1.5)
    assert g.shape == (96, 96, 64) and g.fov_mm == (144.0, 144.0, 96.0)
    assert phantom_grid("A").spacing == SITES["A"].spacing_mm
    assert phantom_grid("A").shape == (180, 180, 38)  # 144/0.8, 96/2.5
    assert phantom_grid("B").shape[2] == 19  # 5 mm slices
    assert phantom_grid("A", spacing=1.5, shape=(32, 32, 32)).fov_mm == (48.0, 48.0, 48.0)
    assert phantom_grid("A", shape=(48, 48, 32)).spacing == (3.0, 3.0, 3.0)


def test_case_geometry_ras_and_provenance():
    case = make_phantom("A", 5, [TumorRequest("liver", 12.0, "hypo")], **SMALL)
    assert case.ct.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.ct.shape == case.label.shape == (48, 48, 32)
    assert np.allclose(case.spacing, (1.5, 1.5, 1.5))
    assert ImageMeta.from_affine(case.affine, case.shape).orientation == "RAS"
    m = case.meta
    assert (m["kind"], m["generator"], m["site"], m["seed"]) == ("real", "phantom", "A", 5)
    assert m["source"]["dataset"] == "phantom"
    (t,) = m["tumors"]
    for key in ("organ", "label", "voxels", "volume_ml", "max_axial_diameter_mm", "centroid_vox", "appearance",
                "requested_diameter_mm"):
        assert key in t
    assert t["label"] == L.NAME_TO_INDEX["liver_lesion"] and t["appearance"] == "hypo"


def test_labels_use_the_vocabulary_and_left_right_is_correct():
    case = make_phantom("A", 2, None, **MID)
    present = set(case.present_labels())
    for organ in ("aorta", "kidney_left", "kidney_right", "liver", "pancreas", "postcava", "spleen", "stomach"):
        assert organ in present, organ
    assert set(np.unique(case.label)) <= set(range(L.NUM_CLASSES))
    # RAS+: axis 0 runs toward the patient's right, so the liver has the higher index
    assert _centroid_x(case, "liver") > _centroid_x(case, "spleen")
    assert _centroid_x(case, "kidney_right") > _centroid_x(case, "kidney_left")
    assert _centroid_x(case, "postcava") > _centroid_x(case, "aorta")
    # anterior (axis 1): the stomach lies in front of the kidneys; superior (axis 2): liver above the kidneys
    assert np.argwhere(case.mask("stomach"))[:, 1].mean() > np.argwhere(case.mask("kidney"))[:, 1].mean()
    assert np.argwhere(case.mask("liver"))[:, 2].mean() > np.argwhere(case.mask("kidney_right"))[:, 2].mean()


# ---------------------------------------------------------------- determinism

def test_same_seed_identical_different_seed_differs():
    a = make_phantom("B", 11, "random", **SMALL)
    b = make_phantom("B", 11, "random", **SMALL)
    c = make_phantom("B", 12, "random", **SMALL)
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.label, b.label)
    assert a.meta["tumors"] == b.meta["tumors"]
    assert not np.array_equal(a.label, c.label)
    assert np.abs(a.ct - c.ct).mean() > 5.0


def test_one_seed_is_one_patient_at_every_site():
    a = make_phantom("A", 4, None, **SMALL)
    c = make_phantom("C", 4, None, **SMALL)
    assert np.array_equal(a.label, c.label)  # anatomy depends on the seed only
    assert not np.allclose(a.ct, c.ct)
    # at another spacing the organs keep their physical size (within discretisation)
    fine = make_phantom("A", 4, None, spacing=1.0, scale=0.5)
    for organ in ("liver", "spleen"):
        v_coarse = a.mask(organ).sum() * 1.5**3
        v_fine = fine.mask(organ).sum() * 1.0**3
        assert abs(v_fine - v_coarse) / v_coarse < 0.12, organ


def test_pair_matches_separate_calls_and_differs_only_near_tumors():
    reqs = [TumorRequest("liver", 14.0, "hyper"), TumorRequest("kidney", 8.0, None)]
    pair = make_pair("A", 3, reqs, **MID)
    healthy = make_phantom("A", 3, None, **MID)
    tumor = make_phantom("A", 3, reqs, **MID)
    assert np.array_equal(pair.healthy.ct, healthy.ct) and np.array_equal(pair.healthy.label, healthy.label)
    assert np.array_equal(pair.tumor.ct, tumor.ct) and np.array_equal(pair.tumor.label, tumor.label)
    lesion = np.isin(tumor.label, L.LESION_LABELS)
    near = ndimage.binary_dilation(lesion, iterations=6)
    assert np.array_equal(tumor.ct[~near], healthy.ct[~near])
    assert np.array_equal(tumor.label[~lesion], healthy.label[~lesion])


# ---------------------------------------------------------------- tumors

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_lesion_voxel_was_its_organ_before_insertion(seed):
    pair = make_pair("B", seed, [TumorRequest("liver", 25.0), TumorRequest("pancreas", 10.0),
                                 TumorRequest("kidney", 10.0)], **MID)
    before, after = pair.healthy.label, pair.tumor.label
    assert len(pair.tumor.meta["tumors"]) == 3
    for t in pair.tumor.meta["tumors"]:
        lesion = after == t["label"]
        assert lesion.any()
        allowed = [L.NAME_TO_INDEX[n] for n in FOOTPRINT[t["organ_name"]]]
        assert np.isin(before[lesion], allowed).all(), t
    # lesion labels only where the organ type has them
    assert set(np.unique(after[np.isin(after, L.LESION_LABELS)])) <= {27, 28, 29}


@pytest.mark.parametrize("organ,diameter", [("liver", 8.0), ("liver", 20.0), ("liver", 30.0),
                                            ("pancreas", 9.0), ("kidney", 10.0)])
def test_requested_diameter_is_respected(organ, diameter):
    case = make_phantom("A", 7, [TumorRequest(organ, diameter, "hypo")], **MID)
    (t,) = case.meta["tumors"]
    assert not t["shrunk"]
    assert abs(t["max_axial_diameter_mm"] - diameter) <= max(0.15 * diameter, 1.5 * 1.5)
    # the sidecar record is what cohort.lesions measures on the label map
    (rec,) = measure_lesions(case.label, case.spacing)
    assert rec.voxels == t["voxels"]
    assert rec.max_axial_diameter_mm == pytest.approx(t["max_axial_diameter_mm"], abs=1e-3)
    assert rec.early == (diameter <= 20.0)


def test_oversized_request_is_shrunk_to_fit_and_recorded():
    case = make_phantom("A", 7, [TumorRequest("kidney", 60.0, "hypo")], **MID)
    (t,) = case.meta["tumors"]
    assert t["shrunk"] and t["max_axial_diameter_mm"] < 60.0 and t["voxels"] > 0


def test_appearances_hypo_below_and_hyper_above_the_organ():
    for app, sign in (("hypo", -1), ("hyper", 1)):
        diffs = []
        for seed in range(3):
            pair = make_pair("A", seed, [TumorRequest("liver", 20.0, app)], **MID)
            lesion = pair.tumor.label == 27
            ring = ndimage.binary_dilation(lesion, iterations=5) & ~ndimage.binary_dilation(lesion, iterations=2)
            ring &= pair.tumor.label == L.NAME_TO_INDEX["liver"]
            diffs.append(pair.tumor.ct[lesion].mean() - pair.tumor.ct[ring].mean())
        assert all(sign * d > 3.0 for d in diffs), (app, diffs)
    for app in APPEARANCES:  # every appearance renders
        assert make_phantom("A", 1, [TumorRequest("liver", 16.0, app)], **SMALL).meta["tumors"][0]["appearance"] == app


def test_a_global_threshold_band_cannot_segment_the_tumors():
    tumor_hu, organ_hu, per_case = [], [], []
    for seed in range(6):
        case = make_phantom("A", seed, "random", **MID)
        lesion = np.isin(case.label, L.LESION_LABELS)
        organs = np.isin(case.label, [L.NAME_TO_INDEX[n] for names in FOOTPRINT.values() for n in names])
        tumor_hu.append(case.ct[lesion])
        organ_hu.append(case.ct[organs])
        per_case.append(_band_dice(case.ct[lesion], case.ct[organs]))
    pooled = _band_dice(np.concatenate(tumor_hu), np.concatenate(organ_hu))
    assert pooled < 0.5, pooled  # well below 0.8 even with the best band chosen knowing the answer
    assert max(per_case) < 0.8, per_case


def test_random_tumors_count_and_size_mix():
    reqs = [random_requests(np.random.default_rng(s)) for s in range(200)]
    assert {len(r) for r in reqs} == {1, 2, 3}
    liver = [t.diameter_mm for r in reqs for t in r if t.organ == "liver"]
    assert min(liver) >= 5.0 and max(liver) <= 55.0
    assert 0.3 < np.mean(np.array(liver) <= 20.0) < 0.6 and np.mean(np.array(liver) > 35.0) > 0.1
    assert {t.organ for r in reqs for t in r} == {"liver", "pancreas", "kidney"}
    # measured at the default field of view: early tumors and large ones both occur
    diam = [t["max_axial_diameter_mm"] for s in (0, 1, 2, 3) for t in
            make_phantom("A", s, "random", spacing=1.5, organs=("liver",)).meta["tumors"]]
    assert min(diam) <= 20.0 and max(diam) > 30.0, diam


def test_bad_requests_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="organ 'spleen'"):
        TumorRequest("spleen", 10.0)
    with pytest.raises(ValueError, match="appearance"):
        TumorRequest("liver", 10.0, "sparkly")
    with pytest.raises(ValueError, match="diameter_mm"):
        TumorRequest("liver", 0.0)
    with pytest.raises(ValueError, match="unknown phantom site .Z.; known sites: A, B, C"):
        make_phantom("Z", 0)
    with pytest.raises(ValueError, match="seed"):
        make_phantom("A", -1, **SMALL)
    with pytest.raises(ValueError, match="phase"):
        SiteProfile("X", phase="venous-ish")


def test_healthy_controls_have_no_lesions():
    case = make_phantom("C", 9, None, **SMALL)
    assert not np.isin(case.label, L.LESION_LABELS).any() and case.meta["tumors"] == []


# ---------------------------------------------------------------- intensities and sites

def test_hu_ranges_are_plausible_per_tissue():
    grid = phantom_grid("A", **MID)
    anat = build_anatomy(grid, np.random.default_rng([1, 0]))
    ct, _, _ = render(anat, SITES["A"], [], np.random.default_rng(1), np.random.default_rng(2))
    med = {t: float(np.median(ct[anat.tissue == TISSUE[t]])) for t in
           ("air", "fat", "muscle", "liver", "bone_cortex", "bone_trabecular", "aorta", "gas")
           if (anat.tissue == TISSUE[t]).sum() > 20}
    assert -1010 < med["air"] < -980
    assert -130 < med["fat"] < -70
    assert 30 < med["muscle"] < 90
    assert 80 < med["liver"] < 140  # portal-venous liver
    assert med["bone_cortex"] > 350 and 120 < med["bone_trabecular"] < 350
    assert med["aorta"] > med["liver"]
    assert med["gas"] < -850
    assert ct.min() >= -1024 and ct.max() <= 3071


def test_sites_differ_in_noise_phase_and_spacing():
    cases = {s: make_phantom(s, 6, None, **MID) for s in ("A", "B", "C")}

    def interior(case, organ):
        return ndimage.binary_erosion(case.mask(organ), iterations=2)

    noise = {s: float(c.ct[interior(c, "liver")].std()) for s, c in cases.items()}
    assert noise["A"] < noise["B"] < noise["C"], noise
    liver = {s: float(c.ct[interior(c, "liver")].mean()) for s, c in cases.items()}
    assert liver["A"] - liver["B"] > 25  # portal-venous vs arterial liver enhancement
    aorta = {s: float(np.median(c.ct[c.mask("aorta")])) for s, c in cases.items()}
    assert aorta["B"] - aorta["A"] > 80  # arterial aorta is brighter
    # arterial kidneys: cortex brighter than medulla is visible as a wide HU spread
    assert float(cases["B"].ct[cases["B"].mask("kidney")].std()) > float(cases["A"].ct[cases["A"].mask("kidney")].std())
    spacings = {s: p.spacing_mm for s, p in SITES.items()}
    assert len(set(spacings.values())) == 3 and SITES["B"].spacing_mm[2] == 5.0
    assert {p.phase for p in SITES.values()} == {"portal_venous", "arterial", "delayed"}
    assert get_site(SITES["C"]) is SITES["C"] and get_site("c") is SITES["C"]


# ---------------------------------------------------------------- cohorts and the command

def test_tumor_fraction_schedule_is_exact_and_prefix_stable():
    flags = [has_tumors(i, 0.5, seed=3) for i in range(40)]
    assert sum(flags) == 20
    assert abs(sum(has_tumors(i, 0.3, seed=1) for i in range(40)) - 12) <= 1
    assert not any(has_tumors(i, 0.0) for i in range(10)) and all(has_tumors(i, 1.0) for i in range(10))
    assert case_seed(0, "A", 3) != case_seed(0, "B", 3) and case_seed(0, "A", 3) == case_seed(0, "A", 3)
    assert case_id_for("A", 7) == "PHANTOM_As0_0007" and case_id_for("A", 7, seed=12) == "PHANTOM_As12_0007"


def test_generate_cohort_deterministic_resumable_and_layout(tmp_path):
    from cohort.layouts import open_cohort

    kw = dict(site="B", tumor_fraction=0.5, seed=1, spacing=3.0, progress=False)
    r2 = generate_cohort(tmp_path / "two", n=2, **kw)
    r3 = generate_cohort(tmp_path / "three", n=3, **kw)
    assert r2.ok and r3.ok and r2.done == ["PHANTOM_Bs1_0000", "PHANTOM_Bs1_0001"]
    assert (tmp_path / "three" / "manifest.jsonl").exists()
    two, three = open_cohort(tmp_path / "two"), open_cohort(tmp_path / "three")
    assert three.ids() == ["PHANTOM_Bs1_0000", "PHANTOM_Bs1_0001", "PHANTOM_Bs1_0002"]
    for cid in two.ids():  # case i does not depend on n
        a, b = two.get(cid).load(), three.get(cid).load()
        assert np.array_equal(a.label, b.label) and np.array_equal(a.ct, b.ct)
    for cid in three.ids():
        case = three.get(cid).load()
        idx = int(cid[-4:])
        n_les = len(case.meta["tumors"])
        assert (n_les > 0) == has_tumors(idx, 0.5, seed=1)
        assert (n_les > 0) == bool(np.isin(case.label, L.LESION_LABELS).any())
        assert case.meta["site"] == "B" and case.meta["generator"] == "phantom"
        assert np.allclose(case.spacing, 3.0)
    again = generate_cohort(tmp_path / "three", n=4, **kw)
    assert again.skipped == three.ids() and again.done == ["PHANTOM_Bs1_0003"]


def test_cli_phantoms_writes_a_cohort(tmp_path):
    from tumorgen.cli import main

    out = tmp_path / "cli"
    rc = main(["phantoms", "--site", "C", "--n", "2", "--tumor-fraction", "1.0", "--seed", "0", "--spacing", "3",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["PHANTOM_Cs0_0000", "PHANTOM_Cs0_0001"]
    assert (out / "manifest.jsonl").read_text().count("\n") == 2
    assert main(["phantoms", "--site", "Q", "--n", "1", "--out", str(out)]) == 2


def test_sites_file_defines_extra_sites_and_rejects_bad_keys(tmp_path):
    from pathlib import Path

    from cohort.config import ConfigError
    from cohort.phantom import load_sites

    shipped = Path(__file__).resolve().parents[2] / "configs" / "demo" / "phantom_sites.yaml"
    sites = load_sites(shipped)
    assert sites["D"].phase == "non_contrast" and sites["D"].spacing_mm == (0.9, 0.9, 6.0)
    assert sites["A_lowdose"].noise_sigma_hu == 24.0 and sites["A_lowdose"].phase == SITES["A"].phase
    assert get_site("D", sites) is sites["D"]
    case = make_phantom(sites["D"], 0, None, **SMALL)
    assert case.meta["site"] == "D" and case.meta["phase"] == "non_contrast"
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites:\n  E:\n    phase: arterial\n    noise_sigma: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*noise_sigma"):
        load_sites(bad)
    bad.write_text("sites:\n  E:\n    phase: venous\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*phase"):
        load_sites(bad)
    bad.write_text("sites:\n  E:\n    spacing_mm: [1, 1]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*spacing_mm"):
        load_sites(bad)


def test_cli_phantoms_with_a_sites_file(tmp_path):
    from tumorgen.cli import main

    sites = tmp_path / "s.yaml"
    sites.write_text("sites:\n  Z9:\n    base: B\n    noise_sigma_hu: 5.0\n")
    out = tmp_path / "z"
    assert main(["phantoms", "--sites-file", str(sites), "--site", "Z9", "--n", "1", "--spacing", "3",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "PHANTOM_Z9s0_0000" / "ct.nii.gz").exists()


def test_thick_slices_average_subslices_and_keep_lesions_in_their_organ():
    # site B: 5 mm slices are drawn as 2 sub-slices and averaged; records are measured on the 5 mm grid
    reqs = [TumorRequest("liver", 16.0, "hyper"), TumorRequest("kidney", 8.0, "hypo")]
    pair = make_pair("B", 2, reqs, scale=0.75)
    case = pair.tumor
    assert np.allclose(case.spacing, (1.0, 1.0, 5.0)) and case.shape == (108, 108, 14)
    recs = {r.label: r for r in measure_lesions(case.label, case.spacing)}
    for t in case.meta["tumors"]:
        lesion = case.label == t["label"]
        allowed = [L.NAME_TO_INDEX[n] for n in FOOTPRINT[t["organ_name"]]]
        assert np.isin(pair.healthy.label[lesion], allowed).all()
        assert recs[t["label"]].voxels == t["voxels"] > 0
    # the same patient at 1 mm slices has the same organs, just sampled finer
    thin = make_phantom("B", 2, None, spacing=(1.0, 1.0, 1.0), scale=0.75)
    v_thick = pair.healthy.mask("liver").sum() * 5.0
    assert abs(thin.mask("liver").sum() - v_thick) / v_thick < 0.1
