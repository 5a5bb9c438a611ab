"""The lessons table and the paired report from constructed cells (cell.json + eval_<split>/cases.csv)."""

import json
import math

import numpy as np
import pytest

from cohort.config import save_config
from evaluation.evaluate import cases_csv
from evaluation.metrics import CaseMetrics
from evaluation.scaling import Grid, ReportConfig, ScalingConfig
from evaluation.scaling_report import publish, write_report
from evaluation.scaling_stats import combine

SOURCES = ["none", "rules", "ca", "diffusion", "diffusion_filtered"]
SIZES = [4, 8, 16, 32]
RANK = {"none": 0, "rules": 1, "ca": 2, "diffusion": 3, "diffusion_filtered": 4}


def _case(cid: str, dsc: float, early_hit: bool, positive: bool) -> CaseMetrics:
    nan = float("nan")
    return CaseMetrics(case_id=cid, organ="liver", lesion="liver_lesion", included=True, gt_positive=positive,
                       pred_positive=positive and dsc > 0.1, gt_volume_mm3=1000.0 if positive else 0.0,
                       pred_volume_mm3=900.0 if positive else 0.0, dsc=dsc if positive else nan,
                       nsd=min(1.0, dsc + 0.05) if positive else nan, hd95_mm=5.0 if positive else nan,
                       msd_mm=2.0 if positive else nan, n_lesions=2 if positive else 0,
                       n_detected=(2 if dsc > 0.3 else 1) if positive else 0, n_early=1 if positive else 0,
                       n_early_detected=int(early_hit) if positive else 0, n_pred_components=2 if positive else 0,
                       n_false_positive_components=0)


def write_cells(root, effect, seeds=(0, 1), n_cases=20, sources=SOURCES, sizes=SIZES):
    """A study folder of constructed cells; ``effect(source, n, split)`` is the DSC shift of a cell, the
    case-to-case and seed-to-seed spread is shared by every cell (what pairing removes)."""
    rng = np.random.default_rng(0)
    base = {s: rng.uniform(0.2, 0.6, size=n_cases) for s in ("id", "ood")}
    seed_shift = {sd: rng.normal(0, 0.05) for sd in seeds}
    save_config(ScalingConfig(name="constructed", grid=Grid(sizes, list(sources), [3.0], list(seeds)),
                              report=ReportConfig(n_boot=500)),
                root / "scaling.yaml")
    for sd in seeds:
        for n in sizes:
            for src in sources:
                ratio = 0.0 if src == "none" else 3.0
                cid = f"real{n:03d}_{src}_x{ratio:g}_seed{sd}"
                d = root / "cells" / cid
                result = {"cell": cid, "n_real": n, "source": src, "ratio": ratio, "seed": sd}
                for split in ("id", "ood"):
                    shift = effect(src, n, split)
                    noise = rng.normal(0, 0.005, size=n_cases)
                    dsc = np.clip(base[split] + seed_shift[sd] + shift + noise, 0, 1)
                    # early tumors: found when the case's DSC clears a bar the shift moves
                    rows = [_case(f"{split}_{i:03d}", float(v), bool(v > 0.45), positive=i % 2 == 0)
                            for i, v in enumerate(dsc)]
                    (d / f"eval_{split}").mkdir(parents=True, exist_ok=True)
                    (d / f"eval_{split}" / "cases.csv").write_text(cases_csv(rows))
                    pos = [r.dsc for r in rows if r.gt_positive]
                    result[split] = {"dsc": float(np.mean(pos))}
                (d / "cell.json").write_text(json.dumps(result))
    return root


def lessons_of(tmp_path, name, effect):
    root = write_cells(tmp_path / name, effect)
    write_report(root)
    return json.loads((root / "report" / "lessons.json").read_text()), root


def follows_the_paper(src, n, split):
    real = 0.04 * math.log2(n / 4)  # more real data helps
    gain = 0.0 if src == "none" else 0.03 * RANK[src] * (4 / n)  # most at small sizes, in the source order
    return real + gain * (1.5 if split == "ood" else 1.0)  # more OOD


def against_the_paper(src, n, split):
    real = -0.04 * math.log2(n / 4)
    gain = 0.0 if src == "none" else -0.03 * RANK[src] * (4 / n)  # the order reversed
    return real + gain * (1.5 if split == "ood" else 1.0)


def test_each_lesson_verdict_is_reachable(tmp_path, monkeypatch):
    import evaluation.scaling_report as report

    monkeypatch.setattr(report, "plot_curves", lambda rows, out_dir: [])  # the verdicts, not the figures
    monkeypatch.setattr(report, "plot_figure8", lambda values, path: path)
    keys = ["a_more_real_data_helps", "b_synthetic_helps_most_at_small_sizes", "c_ood_gain_exceeds_id_gain",
            "d_early_tumor_sensitivity_gains", "e_filtered_ge_diffusion_ge_ca_ge_rules"]
    yes, _ = lessons_of(tmp_path, "yes", follows_the_paper)
    assert list(yes) == keys
    assert {k: v["reproduced"] for k, v in yes.items()} == dict.fromkeys(keys, True), yes
    no, _ = lessons_of(tmp_path, "no", against_the_paper)
    assert {k: v["reproduced"] for k, v in no.items()} == dict.fromkeys(keys, False), no
    flat, _ = lessons_of(tmp_path, "flat", lambda s, n, split: 0.0)  # every cell the same: nothing shown
    assert {k: v["reproduced"] for k, v in flat.items()} == dict.fromkeys(keys, "unclear"), flat
    # the numbers behind a verdict: value and interval of each part, on the primary source
    a = yes["a_more_real_data_helps"]["numbers"]
    assert a["id"]["value"] == pytest.approx(0.12, abs=0.01) and a["id"]["ci_low"] > 0
    assert yes["b_synthetic_helps_most_at_small_sizes"]["source"] == "diffusion_filtered x3"
    assert set(yes["e_filtered_ge_diffusion_ge_ca_ge_rules"]["numbers"]) == {
        "ca x3 - rules x3", "diffusion x3 - ca x3", "diffusion_filtered x3 - diffusion x3"}


def test_combine_rule():
    assert combine([True, True]) is True
    assert combine([True, False]) is False and combine(["unclear", False]) is False
    assert combine([True, "unclear"]) == "unclear" and combine([]) == "unclear"


def test_missing_sources_are_unclear_not_guessed(tmp_path):
    root = write_cells(tmp_path / "s", follows_the_paper, sources=["none", "rules"], sizes=[4])
    write_report(root)
    les = json.loads((root / "report" / "lessons.json").read_text())
    assert les["a_more_real_data_helps"]["reproduced"] == "unclear" and "missing" in les["a_more_real_data_helps"]
    assert les["e_filtered_ge_diffusion_ge_ca_ge_rules"]["reproduced"] == "unclear"


def test_report_tables_and_a_published_copy_give_the_same_numbers(tmp_path):
    les, root = lessons_of(tmp_path, "study", follows_the_paper)
    rdir = root / "report"
    for name in ("differences.csv", "table5.csv", "table5.md", "figure8.png", "report.html", "lessons.json"):
        assert (rdir / name).exists(), name
    summary = json.loads((rdir / "summary.json").read_text())
    diffs = summary["differences"]
    metrics = {d["metric"] for d in diffs}
    assert metrics == {"dsc", "nsd", "patient_sensitivity", "patient_specificity", "tumor_sensitivity",
                       "early_tumor_sensitivity"}
    assert len([d for d in diffs if d["metric"] == "dsc"]) == 4 * 4 * 2  # sources x sizes x splits
    # a source's point value equals the cell mean over seeds of its cell.json number
    t5 = {(r["source"], r["n_real"], r["split"]): r for r in summary["table5"]}
    cells = [json.loads(p.read_text()) for p in root.glob("cells/*/cell.json")]
    for (src, n, split), r in t5.items():
        mine = [c[split]["dsc"] for c in cells if c["n_real"] == n and (c["source"] == src or
                                                                       f"{c['source']} x3" == src)]
        assert r["value"] == pytest.approx(np.mean(mine))
    md = (rdir / "table5.md").read_text()
    assert "| #real | real only | real + rules x3 |" in md and "diffusion_filtered" in md
    assert "Lessons" in (rdir / "report.html").read_text()
    # publish the small results; the report regenerated from the copy has the same numbers
    dest = tmp_path / "published"
    copied = publish(root, dest)
    assert (dest / "scaling.yaml") in copied and (dest / "report" / "lessons.json").exists()
    assert not list(dest.glob("cells/*/pred_*"))
    for f in (rdir / "lessons.json", rdir / "differences.csv", rdir / "table5.csv"):
        f2 = dest / "report" / f.name
        f2.unlink()
    write_report(dest)
    for name in ("lessons.json", "differences.csv", "table5.csv", "table5.md", "table.csv"):
        assert (dest / "report" / name).read_text() == (rdir / name).read_text(), name


def test_cells_whose_lesion_output_collapsed_are_flagged_not_dropped(tmp_path, monkeypatch):
    import evaluation.scaling_report as report

    monkeypatch.setattr(report, "plot_curves", lambda rows, out_dir: [])
    monkeypatch.setattr(report, "plot_figure8", lambda values, path: path)
    root = write_cells(tmp_path / "s", follows_the_paper)
    write_report(root)
    before = json.loads((root / "report" / "lessons.json").read_text())
    dead = {"patches": 24, "final_layer_positive_weights": [7, 2, 0], "collapse_prob": 0.5,
            "classes": {"liver_lesion": {"voxels": 900, "recall": 0.0, "max_prob": 0.31, "p99_prob": 0.3,
                                         "collapsed": True}}}
    for cid in ("real004_ca_x3_seed0", "real004_ca_x3_seed1", "real008_ca_x3_seed0"):
        (root / "cells" / cid / "seg").mkdir()
        (root / "cells" / cid / "seg" / "train_fit.json").write_text(json.dumps(dead))
    write_report(root)
    les = json.loads((root / "report" / "lessons.json").read_text())
    e = les["e_filtered_ge_diffusion_ge_ca_ge_rules"]
    assert e["collapsed_cells"] == {"ca x3": ["real004_ca_x3_seed0", "real004_ca_x3_seed1", "real008_ca_x3_seed0"]}
    assert "3 cells of ca x3" in e["caveat"] and e["reproduced"] == before["e_filtered_ge_diffusion_ge_ca_ge_rules"][
        "reproduced"]  # flagged, the verdict still computed on every cell
    assert "caveat" not in les["b_synthetic_helps_most_at_small_sizes"]  # rests on diffusion_filtered and none
    md = (root / "report" / "table.md").read_text()
    assert md.count("collapsed 2/2") == 1 and md.count("collapsed 1/2") == 1
    assert "4 real, ca x3: the lesion output collapsed in 2 of 2 seeds" in md
    assert "⚠ the lesion output collapsed in 3 cells of ca x3" in (root / "report" / "table5.md").read_text()
    copied = publish(root, tmp_path / "pub")
    assert tmp_path / "pub" / "cells" / "real004_ca_x3_seed0" / "train_fit.json" in copied
    assert not list((tmp_path / "pub").glob("cells/*/seg"))  # no run folders in the copy
    write_report(tmp_path / "pub")
    assert (tmp_path / "pub" / "report" / "lessons.json").read_text() == (root / "report" / "lessons.json").read_text()
