"""The synthesizer registry: a maker registered from inside a test runs through `tumorgen
synthesize`, on-the-fly segmentation training and a scaling-study cell, like the built-ins."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from cohort import labels as L
from cohort.config import ConfigError
from cohort.layouts import open_cohort
from generative import registry as R
from generative.tumors.base import SynthesisResult, organ_mask, tumor_records
from tests.segmentation.helpers import write_cohort
from tumorgen.cli import main


@dataclass
class BlobConfig:
    contrast_hu: float = -60.0
    radius_vox: int = 2


class BlobSynthesizer:
    """A sphere of ``contrast_hu`` at the organ's most central voxel (toy, deterministic)."""

    name = "blob"

    def __init__(self, config: BlobConfig):
        self.config = config

    def __call__(self, ct_hu, label, spacing, spec, rng) -> SynthesisResult:
        from scipy import ndimage

        organ = organ_mask(label, spec.organ)
        depth = ndimage.distance_transform_edt(organ)
        jitter = rng.random(depth.shape) * 1e-3  # ties broken by the rng: determinism is per seed
        c = np.unravel_index(int(np.argmax(depth + jitter)), depth.shape)
        grid = np.indices(label.shape)
        ball = sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= self.config.radius_vox ** 2
        tumor = ball & organ
        lesion = L.lesion_index_for(spec.organ)
        ct, lab = ct_hu.copy(), label.copy()
        ct[tumor] += self.config.contrast_hu
        lab[tumor] = lesion
        return SynthesisResult(ct, lab, tumor_records(tumor, lesion, spacing, spec.organ, self.name), {"steps": None})


@pytest.fixture
def blob():
    R.register_synthesizer("blob", BlobConfig, BlobSynthesizer, organs=("liver",), description="toy sphere")
    yield
    R.unregister_synthesizer("blob")


def test_builtins_are_registered_with_their_configs():
    assert {"ca", "rules", "diffusion"} <= set(R.synthesizer_names())
    assert R.get_entry("diffusion").needs_model and not R.get_entry("ca").needs_model
    rows = {r["name"]: r for r in R.describe()}
    assert rows["ca"]["config"] == "CAConfig" and "liver" in rows["rules"]["organs"]


def test_unknown_names_and_bad_params_are_config_errors(blob):
    with pytest.raises(ValueError, match=r"unknown synthesizer 'gan'; registered: \[.*'blob'"):
        R.get_entry("gan")
    with pytest.raises(ConfigError, match="colour"):
        R.build_synthesizer("blob", {"colour": "red"})
    with pytest.raises(ConfigError, match="contrast_hu: expected a number"):
        R.build_synthesizer("blob", {"contrast_hu": "dark"})
    with pytest.raises(ConfigError, match="needs a trained model folder"):
        R.build_synthesizer("diffusion", {})
    with pytest.raises(ValueError, match="already registered"):
        R.register_synthesizer("blob", BlobConfig, BlobSynthesizer)


def test_toy_maker_through_synthesize(blob, tmp_path):
    healthy = write_cohort(tmp_path / "healthy", 2, "h", seed=3, tumor=False)
    out = tmp_path / "out"
    rc = main(["synthesize", "--method", "blob", "--healthy", str(healthy), "--out", str(out), "--no-progress",
               "--set", "params.contrast_hu=-80", "--spec", "organ=liver"])
    assert rc == 0
    cases = open_cohort(out).refs
    assert sorted(c.case_id for c in cases) == ["h_000_blob_00", "h_001_blob_00"]
    meta = json.loads((out / "h_000_blob_00" / "case.json").read_text())
    assert meta["generator"] == "blob" and meta["specs"] == [{"organ": "liver", "size": None, "diameter_mm": None,
                                                              "steps": None, "count": None}]
    case, src = cases[0].load(), open_cohort(healthy).refs[0].load()
    les = case.label == 27
    assert les.any() and np.allclose(case.ct[les], src.ct[les] - 80)  # the config reached the maker
    assert (out / "tumors.csv").read_text().count("\n") == 3
    # same seed, same cohort: a second run into another folder is identical
    main(["synthesize", "--method", "blob", "--healthy", str(healthy), "--out", str(tmp_path / "again"),
          "--no-progress", "--set", "params.contrast_hu=-80"])
    again = open_cohort(tmp_path / "again").refs[0].load()
    assert np.array_equal(again.label, case.label) and np.array_equal(again.ct, case.ct)


def test_toy_maker_on_the_fly_in_segmentation_training(blob, tmp_path):
    from tests.segmentation.helpers import onthefly_train_args

    healthy = write_cohort(tmp_path / "healthy", 2, "h", seed=4, tumor=False)
    rc = main(onthefly_train_args(tmp_path / "r", healthy, "blob", "{radius_vox: 3}"))
    assert rc == 0
    counts = json.loads((tmp_path / "r" / "source_counts.json").read_text())
    assert counts["sources"]["healthy"]["onthefly_tumors"] >= 1


@pytest.mark.slow
def test_toy_maker_in_a_study_cell_cohort_and_on_the_fly(blob, tmp_path):
    from evaluation.scaling import Grid, SyntheticSource, cells, run_study
    from tests.evaluation.test_scaling import tiny_study

    cfg = tiny_study()
    cfg.synthetic = [SyntheticSource(name="blob", method="blob", params={"contrast_hu": -70.0}),
                     SyntheticSource(name="blob_otf", method="blob", onthefly=True)]
    cfg.grid = Grid(real_sizes=[1], sources=["blob", "blob_otf"], ratios=[1.0], seeds=[0])
    rep = run_study(cfg, tmp_path / "study", show=False)
    assert rep.ok, rep.summary()
    assert sorted(rep.done) == sorted(c.id for c in cells(cfg))
    made = open_cohort(tmp_path / "study" / "data" / "synthetic_blob").refs
    assert made and all(r.case_id.endswith("_blob_00") for r in made)
    otf = json.loads((tmp_path / "study" / "cells" / "real001_blob_otf_x1_seed0" / "cell.json").read_text())
    healthy_counts = [v for k, v in otf["source_counts"]["sources"].items() if k.startswith("blob_otf_healthy")]
    assert healthy_counts and sum(v["onthefly_tumors"] for v in healthy_counts) >= 1
    assert otf["source_counts"]["sources"]["real"]["onthefly_tumors"] == 0  # real tumor cases stay as they are
    assert not (tmp_path / "study" / "data" / "synthetic_blob_otf").exists()
