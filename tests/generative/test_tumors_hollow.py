"""Colon, esophagus and uterine tumors from every hand-made maker: wall placement, the registry's
tumor types, determinism per seed, and `tumorgen synthesize` on a full-anatomy phantom cohort."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cohort import labels as L
from cohort.layouts import open_cohort
from cohort.phantom import generate_cohort, make_phantom
from cohort.tubes import WALL_MM
from generative import registry as R
from generative.tumors import CASynthesizer, RuleSynthesizer, TumorSpec
from generative.tumors.config import SynthesisConfig
from generative.tumors.placement import PlacementSampler, WallPlacementSampler, sampler_for

NEW = ("colon", "esophagus", "uterus")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("A", 3, None, spacing=1.5, scale=0.75, anatomy="full", sex="F")


def _tube(shape=(24, 24, 32), r=6.0):
    """A straight cylinder along z (radius ``r`` voxels) labelled colon, 1 mm voxels."""
    x, y = np.meshgrid(np.arange(shape[0]) - shape[0] / 2 + 0.5, np.arange(shape[1]) - shape[1] / 2 + 0.5,
                       indexing="ij")
    disk = np.hypot(x, y) <= r
    label = np.zeros(shape, np.uint8)
    label[disk] = L.NAME_TO_INDEX["colon"]
    return label


@pytest.fixture()
def solid_only():
    """A registered maker that supports the solid organs only (the rules maker under another name)."""
    from generative.tumors.rules import RulesConfig

    R.register_synthesizer("solid_only", RulesConfig, RuleSynthesizer, organs=R.SOLID_ORGANS, description="test")
    yield "solid_only"
    R.unregister_synthesizer("solid_only")


def test_registry_lists_the_tumor_types_of_every_maker_and_refuses_the_others(solid_only):
    rows = {r["name"]: r for r in R.describe()}
    for name in ("ca", "rules", "diffusion"):
        assert set(rows[name]["organs"]) == {"liver", "pancreas", "kidney", *NEW}
        assert all(R.supports(name, o) for o in ("colon", "esophagus", "uterus", "kidney_left"))
    assert set(rows[solid_only]["organs"]) == {"liver", "pancreas", "kidney"}
    assert not R.supports(solid_only, "colon")
    with pytest.raises(ValueError, match=r"tumor maker 'solid_only' does not support tumors of 'colon'.*supports "
                                         r"liver, pancreas, kidney"):
        R.check_supported(solid_only, ["liver", "colon"])
    with pytest.raises(ValueError, match="specs: tumor maker 'solid_only' does not support tumors of 'uterus'"):
        SynthesisConfig(method=solid_only, specs=[TumorSpec("uterus")])
    _, spec_for = R.resolve_onthefly("rules", {"size": "small"})
    assert spec_for("esophagus", None).organ == "esophagus"


def test_cli_refuses_an_unsupported_tumor_type(tmp_path, capsys, solid_only):
    from tumorgen.cli import main

    rc = main(["synthesize", "--method", solid_only, "--healthy", str(tmp_path),
               "--out", str(tmp_path / "o"), "--spec", "organ=colon,size=small", "--no-progress"])
    assert rc == 2
    cap = capsys.readouterr()
    assert "does not support tumors of 'colon'" in (cap.out + cap.err).replace("\n", " ")
    assert not (tmp_path / "o").exists()


def test_diffusion_places_colon_and_esophagus_tumors_in_the_wall(phantom):
    """The diffusion maker uses the rules' placement: the wall band of a tubular organ."""
    import torch

    from cohort.config import config_dir, load_config
    from generative.diffusion.config import GenerativeConfig, InpaintSettings
    from generative.diffusion.inpaint import DiffusionSynthesizer
    from generative.diffusion.training import build_pipeline

    torch.manual_seed(0)
    pipe = build_pipeline(load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml"))
    synth = DiffusionSynthesizer(pipe, InpaintSettings(steps=1, roi_size=[32, 32, 32], margin_mm=0.0))
    for organ in ("colon", "esophagus"):
        res = synth(phantom.ct, phantom.label, phantom.spacing, TumorSpec(organ=organ, size=8.0),
                    np.random.default_rng(1))
        new = (res.label == L.lesion_index_for(organ)) & (phantom.label != res.label)
        assert new.any() and np.all(np.isin(phantom.label[new], L.organ_indices(organ)))
        from scipy.ndimage import distance_transform_edt

        depth = distance_transform_edt(np.isin(phantom.label, L.organ_indices(organ)), sampling=phantom.spacing)
        c = tuple(int(round(v)) for v in res.records[0]["centroid_vox"])
        assert depth[c] <= WALL_MM[organ] + 8.0  # centred near the wall, not deep in the lumen


def test_wall_sampler_centres_tumors_in_the_wall_not_the_lumen():
    label = _tube()
    organ = label > 0
    wall = WallPlacementSampler(organ, (1.0, 1.0, 1.0), wall_mm=3.0)
    solid = PlacementSampler(organ, (1.0, 1.0, 1.0))
    assert isinstance(sampler_for("colon", organ, (1, 1, 1)), WallPlacementSampler)
    assert type(sampler_for("liver", organ, (1, 1, 1))) is PlacementSampler
    depth_w, depth_s = [], []
    for s in range(12):
        p = wall.place(np.random.default_rng(s), 5.0)
        assert p.site == "wall" and (p.full(organ.shape) <= organ).all()
        c = tuple(int(v - b.start) for v, b in zip(p.center_vox, wall.box))
        depth_w.append(float(wall.dist_mm[c]))
        q = solid.place(np.random.default_rng(s), 5.0)
        c = tuple(int(v - b.start) for v, b in zip(q.center_vox, solid.box))
        depth_s.append(float(solid.dist_mm[c]))
    assert max(depth_w) <= 3.0 and min(depth_s) > 3.0  # wall band vs deep interior


@pytest.mark.parametrize("organ", NEW)
@pytest.mark.parametrize("maker", [RuleSynthesizer, CASynthesizer])
def test_each_maker_inserts_each_new_type_into_a_phantom(phantom, maker, organ):
    synth = maker()
    spec = TumorSpec(organ, size="small")
    a = synth(phantom.ct, phantom.label, phantom.spacing, spec, np.random.default_rng(11))
    b = synth(phantom.ct, phantom.label, phantom.spacing, spec, np.random.default_rng(11))
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.label, b.label)  # deterministic per seed
    c = synth(phantom.ct, phantom.label, phantom.spacing, spec, np.random.default_rng(12))
    assert not np.array_equal(a.label, c.label)
    lesion = L.lesion_index_for(organ)
    les = a.label == lesion
    assert les.any() and a.records and all(r["label"] == lesion for r in a.records)
    assert (phantom.label[les] == L.NAME_TO_INDEX[organ]).all()  # inside the organ's label
    assert sum(r["voxels"] for r in a.records) == int(les.sum())
    changed = np.abs(a.ct - phantom.ct) > 1e-3
    assert (phantom.label[changed] == L.NAME_TO_INDEX[organ]).all()  # nothing outside the organ changes
    if organ in ("colon", "esophagus"):
        from scipy.ndimage import distance_transform_edt

        organ_m = phantom.label == L.NAME_TO_INDEX[organ]
        depth = distance_transform_edt(organ_m, sampling=phantom.spacing)
        assert (depth[les] <= WALL_MM[organ] + 1e-6).any()  # attached to the wall
        # the tumor is soft tissue, not the gas it grew over
        assert float(np.median(a.ct[les])) > -100.0, float(np.median(a.ct[les]))


@pytest.mark.parametrize("method", ["ca", "rules"])
def test_synthesize_cli_inserts_the_new_types_into_phantoms(tmp_path, method):
    from tumorgen.cli import main

    healthy = tmp_path / "healthy"
    rep = generate_cohort(healthy, "A", n=1, tumor_fraction=0.0, seed=1, spacing=1.5, scale=0.75,
                          organs=NEW, sex="F", progress=False)
    assert rep.ok
    for organ in NEW:
        out = tmp_path / f"{method}_{organ}"
        rc = main(["synthesize", "--method", method, "--healthy", str(healthy), "--out", str(out), "--no-progress",
                   "--spec", f"organ={organ},size=small"])
        assert rc == 0, organ
        ref = open_cohort(out).refs[0]
        case = ref.load()
        meta = json.loads((out / ref.case_id / "case.json").read_text())
        assert meta["tumors"] and {t["organ"] for t in meta["tumors"]} == {organ}
        assert (case.label == L.lesion_index_for(organ)).sum() == sum(t["voxels"] for t in meta["tumors"])
