"""The scaling runner on a 2x2 grid of tiny cells: resume, report numbers match the cells."""

import json
import shutil

import pytest

from evaluation.scaling import (
    CohortSource,
    FilterStep,
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
    with pytest.raises(ValueError, match="needs exactly one of path, method or filtered_from"):
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


def test_diffusion_and_filtered_sources_load(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("synthetic:\n"
                 "  - {name: diffusion, method: diffusion, params: {model: /m, steps: 4}}\n"
                 "  - {name: diffusion_filtered, filtered_from: diffusion, filter: {model: /d}}\n"
                 "  - {name: ca_otf, method: ca, onthefly: true}\n"
                 "grid: {sources: [none, diffusion, diffusion_filtered, ca_otf]}\n")
    cfg = load_scaling_config(p)
    assert [s.name for s in cfg.synthetic] == ["diffusion", "diffusion_filtered", "ca_otf"]
    assert cfg.synthetic[0].params == {"model": "/m", "steps": 4} and cfg.synthetic[1].filter.model == "/d"
    for text, match in [
        ("synthetic:\n  - {name: d, method: diffusion}\n", "needs params.model"),
        ("synthetic:\n  - {name: d, method: gan}\n", "unknown synthesizer 'gan'"),
        ("synthetic:\n  - {name: r, method: rules, params: {colour: 1}}\n", "colour"),
        ("synthetic:\n  - {name: f, filtered_from: d, filter: {model: /d}}\n", "must name a source listed before"),
        ("synthetic:\n  - {name: r, method: rules}\n  - {name: f, filtered_from: r}\n", "needs filter.model"),
        ("synthetic:\n  - {name: r, method: rules, onthefly: true}\n  - {name: f, filtered_from: r, filter: {model: /d}}\n",
         "cannot filter the on-the-fly source"),
    ]:
        p.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_scaling_config(p)


@pytest.mark.slow
def test_study_makes_diffusion_and_filtered_diffusion_sources_itself(tmp_path):
    import torch

    from cohort.config import config_dir, load_config
    from cohort.layouts import open_cohort
    from generative.diffusion.config import GenerativeConfig
    from generative.diffusion.training import build_pipeline
    from generative.quality import FilterConfig, train_discriminator
    from tests.generative.test_quality_pipeline import TINY
    from tests.toys import write_toy_lesion_cohort

    torch.manual_seed(0)
    gcfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml",
                       ["data.spacing_mm=[6.0,6.0,6.0]"])
    build_pipeline(gcfg).save_pretrained(tmp_path / "model")
    disc = train_discriminator([write_toy_lesion_cohort(tmp_path / "real", 8, "real", seed=1)],
                               [write_toy_lesion_cohort(tmp_path / "syn", 8, "noise", seed=2)],
                               load_config(FilterConfig, TINY), tmp_path / "disc")
    cfg = tiny_study()
    cfg.synthetic = [
        SyntheticSource(name="diffusion", method="diffusion",
                        params={"model": str(tmp_path / "model"), "steps": 2, "roi_size": [32, 32, 32],
                                "margin_mm": 0.0, "size_mix": {"small": 1.0}, "device": "cpu"}),
        SyntheticSource(name="diffusion_filtered", filtered_from="diffusion",
                        filter=FilterStep(model=str(disc), config=str(TINY))),
    ]
    cfg.grid = Grid(real_sizes=[1], sources=["diffusion", "diffusion_filtered"], ratios=[1.0], seeds=[0])
    out = tmp_path / "study"
    rep = run_study(cfg, out, show=False)
    made = open_cohort(out / "data" / "synthetic_diffusion").refs
    assert made and all("_diffusion_" in r.case_id for r in made)
    manifest = out / "data" / "filtered_diffusion_filtered" / "manifest.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert len(rows) == len(made) and all("accepted" in r for r in rows)
    n_acc = sum(bool(r["accepted"]) for r in rows)
    cell = out / "cells" / "real001_diffusion_filtered_x1_seed0" / "cell.json"
    if n_acc:
        assert rep.ok, rep.summary()
        counts = json.loads(cell.read_text())["source_counts"]["sources"]["diffusion_filtered"]
        assert counts["cases"] == n_acc  # the cell trained on the accepted cases only
    else:  # nothing accepted: the cell says so instead of training on rejected cases
        assert "real001_diffusion_filtered_x1_seed0" in rep.failed
    assert (out / "cells" / "real001_diffusion_x1_seed0" / "cell.json").exists()


def _summary(tumor_sens: float, fp: float, precision: float | None, warnings=()) -> dict:
    """An evaluation summary.json as evaluate writes it (overall block only)."""
    def m(v, n=4):
        return {"value": v, "ci_low": None if v is None else v - 0.1, "ci_high": None if v is None else v + 0.1, "n": n}
    overall = {k: m(0.5) for k in ("dsc", "nsd", "patient_specificity", "early_tumor_sensitivity")}
    overall.update(tumor_sensitivity=m(tumor_sens), patient_sensitivity=m(1.0), patient_sensitivity_localised=m(1.0),
                   false_positive_components_per_case=m(fp), lesion_precision=m(precision, 10))
    return {"overall": overall, "warnings": list(warnings),
            "config": {"overlap_rule": "iou", "warn_fp_per_case": 2.0, "warn_lesion_precision": 0.2}}


def test_headline_carries_false_positives_beside_every_sensitivity():
    from evaluation.scaling import HEADLINE, headline

    keys = [k for k, _ in HEADLINE]
    assert {"fp_per_case", "lesion_precision", "patient_sensitivity_localised"} <= set(keys)
    assert keys.index("fp_per_case") > keys.index("early_tumor_sensitivity")
    h = headline(_summary(1.0, 43.0, 1 / 44, ["WARNING all: ..."]))
    assert h["fp_per_case"] == 43.0 and h["fp_per_case_ci"] == [42.9, 43.1] and h["fp_per_case_n"] == 4
    assert h["lesion_precision"] == pytest.approx(1 / 44) and h["lesion_precision_n"] == 10
    assert h["patient_sensitivity_localised"] == 1.0
    assert h["warnings"] == ["WARNING all: ..."] and h["overlap_rule"] == "iou" and h["warn_fp_per_case"] == 2.0
    # a summary written before these metrics existed still reads (None, and the default limits)
    old = headline({"overall": {"dsc": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 3}}})
    assert old["dsc"] == 0.7 and old["fp_per_case"] is None and old["warn_lesion_precision"] == 0.2


def test_report_flags_sensitivities_with_many_false_positives(tmp_path, monkeypatch):
    import evaluation.scaling_report as report
    from evaluation.scaling import headline

    def cell(n, src, ratio, id_summary, ood_summary):
        d = tmp_path / "cells" / f"real{n:03d}_{src}_x{ratio:g}_seed0"
        d.mkdir(parents=True)
        d.joinpath("cell.json").write_text(json.dumps({
            "cell": d.name, "n_real": n, "source": src, "ratio": ratio, "seed": 0,
            "id": headline(id_summary), "ood": headline(ood_summary)}))

    cell(2, "none", 0.0, _summary(0.5, 0.5, 0.8), _summary(0.5, 0.5, 0.8))
    cell(2, "rules", 1.0, _summary(1.0, 43.0, 1 / 44), _summary(0.5, 0.5, 0.1))
    monkeypatch.setattr(report, "plot_curves", lambda rows, out_dir: [])
    page = report.write_report(tmp_path)
    rows = report.aggregate(report.collect(tmp_path))
    clean, flagged = rows
    assert clean["source"] == "none" and clean["id_warnings"] == [] and clean["ood_warnings"] == []
    assert len(flagged["id_warnings"]) == 1 and "43.00 false-positive" in flagged["id_warnings"][0]
    assert "lesion precision 0.100" in flagged["ood_warnings"][0] and "2 real, rules x1, OOD" in flagged["ood_warnings"][0]
    md = (tmp_path / "report" / "table.md").read_text()
    assert "FP/case (ID)" in md and "lesion prec. (OOD)" in md and "patient sens. (localised) (ID)" in md
    assert "| ⚠ ID, OOD |" in md and md.count("**WARNING") == 2
    html_text = page.read_text()
    assert html_text.count("<p class='warn'>WARNING") == 2
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert len(summary["warnings"]) == 2


# ----------------------------------------------------------------------------- the study from nothing


def every_kind_study() -> ScalingConfig:
    """tiny_study with every source kind the study builds itself: rules, CA, diffusion from a generator it
    trains (the tiny demo config, 2 steps a stage) and that diffusion filtered by a discriminator it trains."""
    from evaluation.scaling import GeneratorStep, ReportConfig

    cfg = tiny_study()
    cfg.healthy = [CohortSource(phantom=PhantomCohort("B", 2, 0.0, 2))]  # the filter holds one case out
    cfg.generators = [GeneratorStep(name="tiny", config="demo/generative_tiny.yaml",
                                    config_set=["data.spacing_mm=[6.0,6.0,6.0]", "train.steps=2",
                                                "data.crop_size=[16,16,16]"])]
    cfg.synthetic = [
        SyntheticSource(name="rules", method="rules"),
        SyntheticSource(name="ca", method="ca"),
        SyntheticSource(name="diffusion", method="diffusion", generator="tiny",
                        params={"steps": 2, "roi_size": [16, 16, 16], "margin_mm": 0.0, "size_mix": {"medium": 1.0},
                                "device": "cpu"}),
        SyntheticSource(name="diffusion_filtered", filtered_from="diffusion",
                        filter=FilterStep(train=True, train_per_case=2, config="generative/filter_tiny.yaml",
                                          config_set=["policy.kind=top_q", "policy.top_q=1.0"])),
    ]
    cfg.grid = Grid(real_sizes=[1], sources=["none", "rules", "ca", "diffusion", "diffusion_filtered"], ratios=[1.0],
                    seeds=[0])
    cfg.report = ReportConfig(n_boot=200)
    return cfg


REPORT_FILES = ("lessons.json", "differences.csv", "table5.csv", "table5.md", "table.csv")


@pytest.mark.slow
def test_study_from_nothing_killed_and_resumed_gives_the_same_report(tmp_path, monkeypatch):
    import evaluation.scaling as scaling
    import segmentation.predict as predict
    from evaluation.scaling_report import run_and_report

    cfg = every_kind_study()
    out = tmp_path / "killed"

    def killed(*a, **k):
        raise KeyboardInterrupt  # not an Exception: nothing catches it, as with a kill

    # 1. killed while filtering: generator, diffusion cohort and discriminator are done and marked
    with monkeypatch.context() as m:
        m.setattr(scaling, "make_filtered_source", killed)
        with pytest.raises(KeyboardInterrupt):
            run_and_report(cfg, out, show=False)
    stages = {p.stem for p in (out / "stages").glob("*.json")}
    assert {"data_real_train", "generator_tiny", "synthetic_diffusion", "synthetic_rules", "synthetic_ca"} <= stages
    assert "filtered_diffusion_filtered" not in stages and not (out / "cells").exists()
    assert (out / "generators" / "tiny" / "controlnet" / "model").is_dir()
    assert (out / "filters" / "diffusion_filtered" / "discriminator").is_dir()
    # 2. killed inside the first cell, after its training and before its cell.json
    with monkeypatch.context() as m:
        m.setattr(predict, "predict_cohort", killed)
        with pytest.raises(KeyboardInterrupt):
            run_and_report(cfg, out, show=False)
    first = out / "cells" / "real001_none_x0_seed0"
    assert (first / "seg" / "model").exists() and not (first / "cell.json").exists()
    # 3. resumed to the end, and published
    rep, page = run_and_report(cfg, out, show=False, publish_to=tmp_path / "published")
    assert rep.ok, rep.summary()
    assert page.exists() and (out / "report" / "figure8.png").exists() and (out / "scaling.yaml").exists()
    made = {c.parent.name for c in out.glob("cells/*/cell.json")}
    assert made == {c.id for c in cells(cfg)}
    # the same study run in one go gives the same report (reusing the trained generator and discriminator,
    # the two slow stages, whose resumption the killed run has shown: the same models, fewer seconds)
    clean = tmp_path / "clean"
    again = every_kind_study()
    again.generators[0].model = str(out / "generators" / "tiny" / "controlnet" / "model")
    f = again.synthetic[-1].filter
    f.train, f.model = False, str(out / "filters" / "diffusion_filtered" / "discriminator")
    rep2, _ = run_and_report(again, clean, show=False)
    assert rep2.ok, rep2.summary()
    for name in REPORT_FILES:
        assert (out / "report" / name).read_text() == (clean / "report" / name).read_text(), name
    lessons = json.loads((out / "report" / "lessons.json").read_text())
    assert all(v["reproduced"] in (True, False, "unclear") for v in lessons.values())
    # the published small results regenerate the same numbers
    pub = tmp_path / "published"
    assert (pub / "scaling.yaml").exists() and not list(pub.glob("cells/*/seg"))
    for name in REPORT_FILES:
        (pub / "report" / name).unlink()
    write_report(pub)
    for name in REPORT_FILES:
        assert (pub / "report" / name).read_text() == (out / "report" / name).read_text(), name
    # the folder is the record: another config is refused there
    other = every_kind_study()
    other.phantom_spacing_mm = 5.0
    with pytest.raises(ValueError, match="made with another config"):
        run_study(other, out, show=False)


def test_generator_and_filter_training_sources_load(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("generators:\n  - {name: g}\n"
                 "synthetic:\n"
                 "  - {name: diffusion, method: diffusion, generator: g}\n"
                 "  - {name: diffusion_filtered, filtered_from: diffusion, filter: {train: true}}\n"
                 "grid: {sources: [none, diffusion, diffusion_filtered]}\n")
    cfg = load_scaling_config(p)
    assert cfg.synthetic[0].generator == "g" and cfg.synthetic[1].filter.train
    for text, match in [
        ("synthetic:\n  - {name: d, method: diffusion, generator: nope}\n", "not among generators"),
        ("generators:\n  - {name: g}\nsynthetic:\n  - {name: d, method: ca, generator: g}\n", "method 'diffusion' only"),
        ("generators:\n  - {name: g, model: /no/such/model}\n", "no such model folder"),
        ("generators:\n  - {name: g, config: nope.yaml}\n", "nope.yaml: no such file"),
        ("synthetic:\n  - {name: r, path: /x}\n  - {name: f, filtered_from: r, filter: {train: true}}\n",
         "filter.train needs 'r' made by a method"),
        ("synthetic:\n  - {name: r, method: rules}\n  - {name: f, filtered_from: r, filter: {train: true, model: /d}}\n",
         "not both"),
    ]:
        p.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_scaling_config(p)


def test_folder_lock_is_exclusive_between_holders_and_released(tmp_path):
    from evaluation.scaling import folder_lock

    p = tmp_path / "cells" / "x.lock"
    with folder_lock(p, wait=False) as first:
        assert first and p.exists()
        with folder_lock(p, wait=False) as second:  # another open file: what a second process would see
            assert second is False
    with folder_lock(p, wait=False) as again:
        assert again


def test_two_runs_of_one_study_share_its_cells(tmp_path, monkeypatch):
    """A cell another process holds is left to it (reported, not run); stages made by another are waited for."""
    import evaluation.scaling as sc

    ran: list[str] = []

    def fake_cell(cfg, cell, data, out, show=True):
        ran.append(cell.id)
        (out / "cells" / cell.id).mkdir(parents=True, exist_ok=True)
        (out / "cells" / cell.id / "cell.json").write_text("{}")

    monkeypatch.setattr(sc, "prepare_data", lambda cfg, out, show=False: None)
    monkeypatch.setattr(sc, "run_cell", fake_cell)
    cfg = tiny_study()
    out = tmp_path / "study"
    held = "real001_rules_x1_seed0"
    with sc.folder_lock(out / "cells" / f"{held}.lock", wait=False) as mine:
        assert mine
        rep = run_study(cfg, out, show=False)
    assert held not in ran and held in rep.skipped and rep.ok
    assert set(ran) == {c.id for c in cells(cfg)} - {held}
    rep2 = run_study(cfg, out, show=False)  # the lock is gone: the rerun takes the cell left over
    assert ran[-1] == held and rep2.done == [held]
    # a stage marker written while a caller waited is read, not made again
    calls = []
    assert sc.stage(out, "s", lambda: calls.append(1) or "p")["path"] == "p"
    assert sc.stage(out, "s", lambda: calls.append(2) or "q")["path"] == "p" and calls == [1]


def test_table_csv_takes_rows_of_one_seed_and_of_several():
    """A row of one seed carries its cell's CIs, a row of two does not: the CSV has every column."""
    import csv as _csv
    import io as _io

    import evaluation.scaling_report as report

    def cell(src, seed, dsc):
        split = {"dsc": dsc, "dsc_ci": [dsc - 0.1, dsc + 0.1], "dsc_n": 20}
        return {"cell": f"real004_{src}_x3_seed{seed}", "n_real": 4, "source": src, "ratio": 3.0, "seed": seed,
                "id": dict(split), "ood": dict(split)}

    rows = report.aggregate([cell("ca", 0, 0.0), cell("ca", 1, 0.28), cell("rules", 0, 0.27)])
    table = list(_csv.DictReader(_io.StringIO(report.table_csv(rows))))
    by = {r["source"]: r for r in table}
    assert by["rules"]["id_dsc_ci"] == "0.17;0.37" and by["ca"]["id_dsc_ci"] == ""
    assert float(by["ca"]["id_dsc"]) == pytest.approx(0.14) and by["ca"]["seeds"] == "2"
