"""The scaling runner on a 2x2 grid of tiny cells: resume, report numbers match the cells."""

import json
import shutil

import pytest

from evaluation.scaling import (
    CohortSource,
    Grid,
    PhantomCohort,
    ScalingConfig,
    SyntheticSource,
    cells,
    load_scaling_config,
    run_study,
)
from evaluation.scaling_report import write_report

TINY_SEG = ["train.max_steps=2", "train.val_every=2", "train.save_every=2", "train.tracker=null",
            "data.patch_size=[16,16,16]", "data.spacing=[6.0,6.0,6.0]", "train.threads=1"]


def tiny_study() -> ScalingConfig:
    return ScalingConfig(
        name="tiny",
        real_train=CohortSource(phantom=PhantomCohort("A", 2, 1.0, 1)),
        healthy=[CohortSource(phantom=PhantomCohort("B", 1, 0.0, 2))],
        test_id=CohortSource(phantom=PhantomCohort("A", 2, 0.5, 3)),
        test_ood=CohortSource(phantom=PhantomCohort("C", 2, 0.5, 4)),
        synthetic=[SyntheticSource(name="rules", method="rules", organs=["liver"])],
        grid=Grid(real_sizes=[1, 2], sources=["none", "rules"], ratios=[1.0], seeds=[0]),
        phantom_spacing_mm=6.0,
        segmentation="segmentation/demo.yaml",
        segmentation_set=TINY_SEG,
    )


def test_grid_cells():
    cfg = tiny_study()
    ids = [c.id for c in cells(cfg)]
    assert ids == ["real001_none_x0_seed0", "real001_rules_x1_seed0", "real002_none_x0_seed0", "real002_rules_x1_seed0"]


def test_config_checks(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("grid:\n  sources: [none, ca]\n")
    with pytest.raises(ValueError, match="grid.sources names 'ca'"):
        load_scaling_config(p)
    p.write_text("synthetic:\n  - {name: ca}\n")
    with pytest.raises(ValueError, match="needs exactly one of path or method"):
        load_scaling_config(p)


@pytest.mark.slow
def test_study_runs_resumes_and_reports(tmp_path):
    cfg = tiny_study()
    out = tmp_path / "study"
    rep = run_study(cfg, out, show=False)
    assert rep.ok, rep.summary()
    assert sorted(rep.done) == sorted(c.id for c in cells(cfg))
    first = {p.parent.name: json.loads(p.read_text()) for p in out.glob("cells/*/cell.json")}
    assert len(first) == 4
    for r in first.values():
        assert set(r["id"]) >= {"dsc", "nsd", "tumor_sensitivity", "early_tumor_sensitivity", "patient_sensitivity"}
    # a finished study reruns nothing; removing one cell reruns just that one, deterministically
    rep2 = run_study(cfg, out, show=False)
    assert rep2.done == [] and len(rep2.skipped) == 4
    gone = "real002_rules_x1_seed0"
    shutil.rmtree(out / "cells" / gone)
    rep3 = run_study(cfg, out, show=False)
    assert rep3.done == [gone]
    again = json.loads((out / "cells" / gone / "cell.json").read_text())
    assert again["id"]["dsc"] == pytest.approx(first[gone]["id"]["dsc"], nan_ok=True)
    assert again["source_counts"] == first[gone]["source_counts"]
    # the report's numbers are the cells' numbers
    page = write_report(out)
    assert page.exists() and (out / "report" / "table.csv").exists() and (out / "report" / "scaling_dsc.png").exists()
    summary = json.loads((out / "report" / "summary.json").read_text())
    for row in summary["rows"]:
        cell = next(c for c in first.values() if c["n_real"] == row["n_real"] and c["source"] == row["source"])
        for split in ("id", "ood"):
            assert row[f"{split}_dsc"] == pytest.approx(cell[split]["dsc"], nan_ok=True)
    assert "real + rules x1" in (out / "report" / "report.html").read_text() or (out / "report" / "scaling_dsc.png").exists()
