"""The phantom's full anatomy (haustral colon, esophagus, uterus), its wall tumors, and the three
new tumor types through the CLI, the AbdomenAtlas layout and the nnU-Net export.

Grids are 72 x 72 x 48 voxels at 1.5 mm (scale 0.75): the anatomy scales with the field of view.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from cohort import labels as L
from cohort.layouts import open_cohort, write_case
from cohort.phantom import TumorRequest, make_pair, make_phantom
from cohort.phantom.anatomy import TISSUE
from cohort.phantom.core import _setup
from cohort.phantom.hollow import LUMEN_TISSUES
from cohort.tubes import WallMap

MID = dict(spacing=1.5, scale=0.75)
NEW = ("colon", "esophagus", "uterus")
S26 = np.ones((3, 3, 3), bool)


def _anat(seed, **kw):
    """The anatomy (tissue map included) a phantom of ``seed`` is drawn from."""
    args = dict(tumors=None, spacing=1.5, fov_mm=None, shape=None, scale=0.75, organs=NEW, anatomy="full", sex="F")
    args.update(kw)
    return _setup("A", seed, args["tumors"], args["spacing"], args["fov_mm"], args["shape"], args["scale"],
                  args["organs"], args["anatomy"], args["sex"])[6]


def test_default_phantoms_keep_the_basic_anatomy_and_full_adds_only_the_new_organs():
    basic = make_phantom("A", 4, None, **MID)
    assert basic.meta["phantom"]["anatomy"] == "basic" and basic.meta["phantom"]["version"] == 1
    assert not np.isin(basic.label, [L.NAME_TO_INDEX["esophagus"], L.NAME_TO_INDEX["uterus"]]).any()
    # the sex does not change a basic patient: same voxels for F and M
    other = make_phantom("A", 4, None, sex="M" if basic.meta["sex"] == "F" else "F", **MID)
    assert np.array_equal(basic.ct, other.ct) and np.array_equal(basic.label, other.label)
    full = make_phantom("A", 4, None, anatomy="full", sex="F", **MID)
    assert full.meta["phantom"]["anatomy"] == "full" and full.meta["phantom"]["version"] == 2
    names = {L.INDEX_TO_NAME[int(v)] for v in np.unique(full.label)}
    assert {"colon", "esophagus", "uterus"} <= names
    # same patient: every voxel whose label changed is (or was) colon, esophagus or uterus
    changed = basic.label != full.label
    new_ids = [L.NAME_TO_INDEX[n] for n in NEW]
    assert changed.any()
    assert (np.isin(basic.label[changed], new_ids) | np.isin(full.label[changed], new_ids)).all()
    # the vessels and the stomach are never painted over
    for n in ("aorta", "postcava", "stomach"):
        assert (basic.label == L.NAME_TO_INDEX[n]).sum() == (full.label == L.NAME_TO_INDEX[n]).sum(), n


def test_tumor_organs_choose_the_anatomy_and_the_sex_is_recorded():
    c = make_phantom("A", 1, None, organs=("colon",), **MID)
    assert c.meta["phantom"]["anatomy"] == "full"
    sexes = {make_phantom("A", s, None, organs=("liver",), **MID).meta["sex"] for s in range(12)}
    assert sexes == {"F", "M"}
    a = make_phantom("A", 5, None, organs=("esophagus",), **MID)
    b = make_phantom("A", 5, None, organs=("esophagus",), **MID)
    assert a.meta["sex"] == b.meta["sex"] and a.meta["phantom"]["sex_source"] == "drawn"
    u = make_phantom("A", 5, None, organs=("uterus",), **MID)
    assert u.meta["sex"] == "F" and (u.label == L.NAME_TO_INDEX["uterus"]).any()
    m = make_phantom("A", 5, None, organs=NEW, sex="M", **MID)
    assert m.meta["sex"] == "M" and not (m.label == L.NAME_TO_INDEX["uterus"]).any()
    assert m.meta["phantom"]["sex_source"] == "given"
    with pytest.raises(ValueError, match="uterus tumor was requested for a phantom of sex 'M'"):
        make_phantom("A", 5, [TumorRequest("uterus", 10.0)], sex="M", **MID)
    with pytest.raises(ValueError, match="sex must be one of"):
        make_phantom("A", 5, None, sex="X", **MID)
    # a male patient's random tumors skip the uterus
    for s in range(4):
        men = make_phantom("A", s, "random", organs=NEW, sex="M", **MID)
        assert all(t["organ"] in ("colon", "esophagus") for t in men.meta["tumors"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tubes_are_continuous_and_walls_are_in_range(seed):
    anat = _anat(seed)
    for organ in ("colon", "esophagus", "uterus"):
        m = anat.label == L.NAME_TO_INDEX[organ]
        _, n = ndimage.label(m, S26)
        assert n == 1, (organ, n)
    eso = anat.label == L.NAME_TO_INDEX["esophagus"]
    assert eso[:, :, -1].any()  # it enters through the top slice ...
    stomach = anat.label == L.NAME_TO_INDEX["stomach"]
    assert (ndimage.binary_dilation(eso, S26) & stomach).any()  # ... and reaches the stomach
    # the colon leaves the grid through the bottom slice on both sides (ascending and descending limbs)
    bottom = anat.label[:, :, 0] == L.NAME_TO_INDEX["colon"]
    _, n_bottom = ndimage.label(bottom)
    assert n_bottom >= 2
    lumen = np.isin(anat.tissue, [TISSUE[t] for t in LUMEN_TISSUES])
    sp = anat.grid.spacing
    # wall thickness measured to the first lumen voxel (so about a voxel above the drawn 1.5-3 mm)
    for organ, lo, hi in (("colon", 1.5, 4.0), ("esophagus", 2.0, 4.5)):
        m = anat.label == L.NAME_TO_INDEX[organ]
        wm = WallMap(m, sp, lumen=lumen & m)
        assert lo <= wm.thickness_mm() <= hi, (organ, wm.thickness_mm())
    # esophagus: the ring in an upper slice is 0.12-0.2 anatomy units across (11 mm at the default
    # field of view, 8 mm at this one) with a lumen inside
    z = anat.grid.shape[2] - 3
    ring = eso[:, :, z]
    outer_d = 2 * np.sqrt(ring.sum() * sp[0] * sp[1] / np.pi)
    assert 0.12 * anat.grid.unit_mm <= outer_d <= 0.2 * anat.grid.unit_mm, outer_d
    assert (lumen[:, :, z] & ring).any() and (ring & ~lumen[:, :, z]).sum() > (lumen[:, :, z] & ring).sum()
    # colon content: gas (anterior), fluid and stool all occur
    colon = anat.label == L.NAME_TO_INDEX["colon"]
    for t in ("gas", "bowel_content", "bowel_wall"):
        assert (colon & (anat.tissue == TISSUE[t])).sum() > 20, t
    # supine: within a cross-section of the tube the gas lies anterior (+y) to the fluid
    votes = []
    for z in range(anat.grid.shape[2]):
        comps, n = ndimage.label(colon[:, :, z])
        for i in range(1, n + 1):
            part = comps == i
            gas = np.argwhere(part & (anat.tissue[:, :, z] == TISSUE["gas"]))
            fluid = np.argwhere(part & (anat.tissue[:, :, z] == TISSUE["bowel_content"]))
            if len(gas) >= 3 and len(fluid) >= 3:
                votes.append(gas[:, 1].mean() > fluid[:, 1].mean())
    assert len(votes) >= 5 and np.mean(votes) >= 0.8, votes


def test_haustra_make_the_colon_lumen_vary_along_the_tube():
    anat = _anat(0)
    colon = anat.label == L.NAME_TO_INDEX["colon"]
    lumen = colon & np.isin(anat.tissue, [TISSUE[t] for t in LUMEN_TISSUES])
    # the ascending limb runs along z near the right edge: its lumen area per slice rises and falls
    x0 = int(np.argwhere(colon[:, :, 0])[:, 0].max())
    limb = lumen[x0 - 14: x0 + 1, :, : anat.grid.shape[2] // 3]
    areas = limb.sum(axis=(0, 1)).astype(float)
    assert areas.min() < 0.75 * areas.max(), areas


def test_new_organs_have_plausible_hu():
    c = make_phantom("A", 2, None, anatomy="full", sex="F", **MID)
    anat = _anat(2)
    med = {t: float(np.median(c.ct[anat.tissue == TISSUE[t]])) for t in ("esophagus_wall", "myometrium",
                                                                      "endometrium", "bowel_wall")}
    assert 50 < med["esophagus_wall"] < 120 and 90 < med["myometrium"] < 170
    assert med["endometrium"] < med["myometrium"] - 20


@pytest.mark.parametrize("organ,kind,diam", [("colon", "focal", 12.0), ("colon", "annular", 18.0),
                                             ("colon", "polypoid", 10.0), ("esophagus", "focal", 9.0),
                                             ("esophagus", "annular", 12.0), ("esophagus", "polypoid", 7.0),
                                             ("uterus", None, 14.0)])
def test_wall_tumors_sit_on_the_wall_inside_the_organ_with_their_size(organ, kind, diam):
    req = TumorRequest(organ, diam, kind=kind)
    pair = make_pair("A", 3, [req], sex="F", **MID)
    t = pair.tumor.meta["tumors"][0]
    assert t["organ"] == organ and t.get("kind") == kind
    les = pair.tumor.label == L.lesion_index_for(organ)
    assert les.sum() == t["voxels"] > 0
    assert (pair.healthy.label[les] == L.NAME_TO_INDEX[organ]).all()  # inside the organ's label
    assert abs(t["max_axial_diameter_mm"] - diam) <= max(0.3 * diam, 3.0) or t["shrunk"]
    assert t["max_axial_diameter_mm"] <= 20.0 and t["early"]
    if kind is not None:
        anat = _anat(3)
        wall = (anat.label == L.NAME_TO_INDEX[organ]) & ~np.isin(anat.tissue, [TISSUE[x] for x in LUMEN_TISSUES])
        assert (les & wall).sum() >= 0.2 * les.sum()  # grown in and from the wall
    # healthy and tumor scans differ only around the lesion
    diff = np.abs(pair.tumor.ct - pair.healthy.ct) > 1e-3
    assert not (diff & ~ndimage.binary_dilation(les, iterations=4)).any()


def test_annular_masses_go_round_the_tube_and_focal_ones_do_not():
    def quadrants(kind):
        pair = make_pair("A", 3, [TumorRequest("esophagus", 12.0, kind=kind)], sex="F", **MID)
        les = pair.tumor.label == L.lesion_index_for("esophagus")
        z = int(round(pair.tumor.meta["tumors"][0]["centroid_vox"][2]))
        eso = pair.healthy.label[:, :, z] == L.NAME_TO_INDEX["esophagus"]
        cx, cy = np.argwhere(eso).mean(0)
        pts = np.argwhere(les[:, :, z]) - [cx, cy]
        return {(int(p[0] > 0), int(p[1] > 0)) for p in pts if abs(p[0]) + abs(p[1]) > 0.5}

    assert len(quadrants("annular")) == 4
    assert len(quadrants("focal")) <= 3


def test_early_wall_tumors_never_measure_above_20mm():
    for s in range(3):
        for kind in ("focal", "annular", "polypoid"):
            c = make_phantom("A", s, [TumorRequest("colon", 19.5, kind=kind)], sex="M", **MID)
            t = c.meta["tumors"][0]
            assert t["max_axial_diameter_mm"] <= 20.0, (s, kind, t)


def test_random_tumors_in_the_new_organs_are_deterministic():
    a = make_phantom("A", 7, "random", organs=NEW, sex="F", **MID)
    b = make_phantom("A", 7, "random", organs=NEW, sex="F", **MID)
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.label, b.label)
    assert a.meta["tumors"] == b.meta["tumors"] and a.meta["tumors"]
    assert {t["organ"] for t in a.meta["tumors"]} <= set(NEW)
    for t in a.meta["tumors"]:
        assert t["voxels"] > 0 and t["max_axial_diameter_mm"] > 0
        assert ("kind" in t) == (t["organ"] in ("colon", "esophagus"))


def test_cli_phantoms_writes_the_three_new_tumor_types(tmp_path):
    from tumorgen.cli import main

    out = tmp_path / "hollow"
    rc = main(["phantoms", "--n", "6", "--tumor-fraction", "1", "--organs", "colon,esophagus,uterus", "--sex", "F",
               "--spacing", "1.5", "--fov", "108,108,72", "--seed", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    found = set()
    for ref in open_cohort(out).refs:
        case = ref.load()
        meta = json.loads((out / ref.case_id / "case.json").read_text())
        assert meta["sex"] == "F" and meta["phantom"]["anatomy"] == "full"
        found |= {t["organ"] for t in meta["tumors"]}
        assert set(np.unique(case.label)) & set(L.LESION_LABELS) <= {30, 31, 32}
        assert {t["label"] for t in meta["tumors"]} == set(np.unique(case.label)) & set(L.LESION_LABELS)
    assert found == set(NEW)


def _three_lesion_case():
    reqs = [TumorRequest("colon", 12.0, kind="annular"), TumorRequest("esophagus", 8.0, kind="focal"),
            TumorRequest("uterus", 12.0)]
    return make_phantom("A", 3, reqs, sex="F", case_id="HOLLOW_0001", **MID)


def test_abdomenatlas_per_organ_masks_round_trip_the_three_names(tmp_path):
    case = _three_lesion_case()
    assert {30, 31, 32} <= set(np.unique(case.label))
    d = write_case(case, tmp_path / "atlas", per_organ_masks=True)
    names = {p.name for p in (d / "segmentations").iterdir()}
    assert {"colon_lesion.nii.gz", "esophagus_tumor.nii.gz", "endometrioma_tumor.nii.gz"} <= names
    assert "uterine_lesion.nii.gz" not in names  # the AbdomenAtlas name is written
    (d / "combined_labels.nii.gz").unlink()  # read from the per-organ masks only
    back = open_cohort(tmp_path / "atlas").refs[0].load()
    assert np.array_equal(back.label, case.label)
    assert L.canonical_name("endometrioma_tumor") == "uterine_lesion"


def test_nnunet_export_carries_the_three_types(tmp_path):
    from tumorgen.cli import main

    case = _three_lesion_case()
    write_case(case, tmp_path / "src")
    classes = ["colon", "esophagus", "uterus", "colon_lesion", "esophagus_tumor", "endometrioma_tumor"]
    rc = main(["export", "nnunet", "--sources", str(tmp_path / "src"), "--classes", *classes, "--dataset-id", "18",
               "--out", str(tmp_path / "raw")])
    assert rc == 0
    root = tmp_path / "raw" / "Dataset018_TumorGen"
    ds = json.loads((root / "dataset.json").read_text())
    assert ds["labels"]["colon_lesion"] == 4 and ds["labels"]["esophagus_tumor"] == 5
    assert ds["labels"]["uterine_lesion"] == 6
    back = open_cohort(root).refs[0].load()
    for name in ("colon_lesion", "esophagus_tumor", "uterine_lesion"):
        idx = L.NAME_TO_INDEX[name]
        assert np.array_equal(back.label == idx, case.label == idx), name
