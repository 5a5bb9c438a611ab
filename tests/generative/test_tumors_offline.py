"""Offline cohort synthesis and the `tumorgen synthesize` command."""

import json

import numpy as np
import pytest
import torch

from cohort.case import Case
from cohort.io import read_image, read_label
from cohort.layouts import open_cohort, write_case
from generative.tumors import CASynthesizer, RuleSynthesizer, TumorSpec, synthesize_cohort
from generative.tumors.offline import case_rng, output_id
from tests.toys import toy_liver
from tumorgen.cli import main

torch.set_num_threads(1)
LESION = 27


def healthy_cohort(root, n=3, bad=False, size=24):
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    for i in range(n):
        ct, lab = toy_liver(size, seed=i)
        write_case(Case(f"H{i:02d}", ct, lab, aff, {"kind": "real", "site": "T", "source": {"dataset": "toy"}}), root)
    if bad:
        ct, lab = toy_liver(size, seed=9)
        lab[:] = 0
        write_case(Case("NOLIVER", ct, lab, aff, {"kind": "real"}), root)
    return root


def test_rules_cohort_with_provenance_resume_and_bad_case(tmp_path):
    src = healthy_cohort(tmp_path / "healthy", bad=True)
    out = tmp_path / "synth"
    rep = synthesize_cohort(src, out, RuleSynthesizer(), TumorSpec("liver", size="small", count=1), seed=4,
                            progress=False)
    assert sorted(rep.done) == ["H00_rules_00", "H01_rules_00", "H02_rules_00"]
    assert list(rep.failed) == ["NOLIVER_rules_00"] and "none of the spec organs ['liver']" in rep.failed["NOLIVER_rules_00"]
    meta = json.loads((out / "H01_rules_00" / "case.json").read_text())
    assert meta["kind"] == "synthetic" and meta["generator"] == "rules" and meta["seed"] == 4
    assert meta["source"]["case_id"] == "H01" and meta["site"] == "T"
    t = meta["tumors"][0]
    assert t["organ"] == "liver" and t["voxels"] > 0 and t["max_axial_diameter_mm"] > 0 and "early" in t
    lab, _ = read_label(out / "H01_rules_00" / "combined_labels.nii.gz")
    assert int((lab == LESION).sum()) == sum(x["voxels"] for x in meta["tumors"])
    assert len(open_cohort(out)) == 3
    assert (out / "manifest.jsonl").exists() and (out / "tumors.csv").read_text().count("\n") == 4
    summary = json.loads((out / "synthesis_summary.json").read_text())
    assert summary["tumors"] == 3 and summary["cases_with_tumors"] == 3
    # resume: nothing redone
    rep2 = synthesize_cohort(src, out, RuleSynthesizer(), TumorSpec("liver", size="small", count=1), seed=4,
                             progress=False)
    assert rep2.done == [] and sorted(rep2.skipped) == sorted(rep.done)


def test_results_do_not_depend_on_order_or_subset(tmp_path):
    src = healthy_cohort(tmp_path / "healthy", n=3)
    spec = TumorSpec("liver", steps=15)
    synthesize_cohort(src, tmp_path / "all", CASynthesizer(), spec, seed=1, n_per_case=2, progress=False)
    # only the third case, in a separate run: same output
    refs = open_cohort(src).refs
    single = tmp_path / "one"
    healthy_cohort(tmp_path / "h_one", n=0)
    write_case(refs[2].load(), tmp_path / "h_one")
    synthesize_cohort(tmp_path / "h_one", single, CASynthesizer(), spec, seed=1, n_per_case=2, progress=False)
    for k in range(2):
        cid = output_id("H02", "ca", k)
        a, _ = read_image(tmp_path / "all" / cid / "ct.nii.gz")
        b, _ = read_image(single / cid / "ct.nii.gz")
        assert np.array_equal(a, b)
    a0, _ = read_label(tmp_path / "all" / "H02_ca_00" / "combined_labels.nii.gz")
    a1, _ = read_label(tmp_path / "all" / "H02_ca_01" / "combined_labels.nii.gz")
    assert not np.array_equal(a0, a1)  # k gives an independent draw
    assert case_rng(1, "H02", 0).random() == case_rng(1, "H02", 0).random() != case_rng(1, "H02", 1).random()


@pytest.mark.parametrize("method", ["ca", "rules"])
def test_cli_synthesize(tmp_path, method):
    src = healthy_cohort(tmp_path / "healthy", n=2)
    out = tmp_path / f"out_{method}"
    spec = "organ=liver,steps=12" if method == "ca" else "organ=liver,size=tiny,count=2"
    rc = main(["synthesize", "--method", method, "--healthy", str(src), "--out", str(out), "--spec", spec,
               "--seed", "2", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"H00_{method}_00", f"H01_{method}_00"]
    assert "method: " + method in (out / "synthesis_config.yaml").read_text()
    rows = (out / "tumors.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,generator,organ") and len(rows) > 2


def test_cli_bad_spec_and_config_errors(tmp_path, capsys):
    src = healthy_cohort(tmp_path / "healthy", n=1)
    rc = main(["synthesize", "--method", "ca", "--healthy", str(src), "--out", str(tmp_path / "o"),
               "--spec", "organ=liver,colour=red"])
    assert rc == 2
    rc = main(["synthesize", "--method", "ca", "--healthy", str(src), "--out", str(tmp_path / "o"),
               "--set", "params.no_such_key=1"])
    assert rc == 2
    assert "no_such_key" in capsys.readouterr().err


def _disk_fills_after(monkeypatch, n_saves):
    """NIfTI writes succeed ``n_saves`` times, then write a few bytes and fail as a full disk does."""
    import errno

    import cohort.io

    real_save, calls = cohort.io.nib.save, []

    def save(img, path):
        calls.append(path)
        if len(calls) > n_saves:
            with open(path, "wb") as f:
                f.write(b"\x1f\x8b partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(img, path)

    monkeypatch.setattr(cohort.io.nib, "save", save)
    return calls


def _no_partial_output(out, expected_cases):
    from cohort.io import is_temp_name

    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if is_temp_name(n)], names
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == expected_cases


def test_full_disk_stops_the_loop_and_leaves_no_partial_case(tmp_path, monkeypatch):
    src = healthy_cohort(tmp_path / "healthy", n=3)
    out = tmp_path / "synth"
    calls = _disk_fills_after(monkeypatch, 2)  # the first case (CT + labels) fits, the second does not
    rep = synthesize_cohort(src, out, RuleSynthesizer(), TumorSpec("liver", size="small"), seed=4, progress=False)
    assert rep.done == ["H00_rules_00"] and not rep.ok
    why = rep.failed["H01_rules_00"]
    assert "No space left on device" in why and str(out / "H01_rules_00") in why
    assert "not attempted" in rep.failed["H02_rules_00"] and "No space left on device" in rep.failed["H02_rules_00"]
    assert len(calls) == 3  # nothing computed or written after the disk was full
    _no_partial_output(out, ["H00_rules_00"])
    assert [c.case_id for c in open_cohort(out).refs] == ["H00_rules_00"]
    assert (out / "manifest.jsonl").read_text().count("\n") == 1
    # space again: the rerun keeps the finished case and writes the rest
    monkeypatch.undo()
    rep2 = synthesize_cohort(src, out, RuleSynthesizer(), TumorSpec("liver", size="small"), seed=4, progress=False)
    assert rep2.ok and rep2.skipped == ["H00_rules_00"] and sorted(rep2.done) == ["H01_rules_00", "H02_rules_00"]


def test_cli_synthesize_full_disk_exits_1_naming_case_and_path(tmp_path, monkeypatch, capsys):
    src = healthy_cohort(tmp_path / "healthy", n=2)
    out = tmp_path / "synth"
    _disk_fills_after(monkeypatch, 0)
    rc = main(["synthesize", "--method", "rules", "--healthy", str(src), "--out", str(out),
               "--spec", "organ=liver,size=tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    assert "FAILED H00_rules_00" in err and str(out / "H00_rules_00") in err and "No space left on device" in err
    assert "FAILED H01_rules_00: not attempted" in err
    _no_partial_output(out, [])


@pytest.mark.parametrize("method", ["rules", "ca"])
def test_a_case_with_a_lesion_gains_a_second_one_and_keeps_the_first(tmp_path, method):
    from generative.registry import build_synthesizer

    ct, label = toy_liver(40, seed=3)
    c = np.argwhere(label == 5).mean(0).astype(int)
    label[c[0] + 4:c[0] + 8, c[1] - 2:c[1] + 2, c[2] - 2:c[2] + 2] = 27  # an existing real tumor
    case = Case("T01", ct, label, np.diag([1.5, 1.5, 1.5, 1.0]), {"kind": "real"})
    first = case.label == 27
    assert first.any()
    write_case(case, tmp_path / "src")
    spec = TumorSpec("liver", steps=20) if method == "ca" else TumorSpec("liver", size="tiny")
    rep = synthesize_cohort(tmp_path / "src", tmp_path / "out", build_synthesizer(method), spec, seed=2, progress=False)
    assert rep.ok, rep.summary()
    out = open_cohort(tmp_path / "out").refs[0].load()
    src = open_cohort(tmp_path / "src").refs[0].load()  # as stored (HU rounded on disk)
    assert np.all(out.label[first] == 27) and np.array_equal(out.ct[first], src.ct[first])  # kept as it was
    new = (out.label == 27) & ~first
    assert new.any()
    meta = json.loads((tmp_path / "out" / out.case_id / "case.json").read_text())
    assert len(meta["existing_lesions"]) == 1 and meta["existing_lesions"][0]["voxels"] == int(first.sum())
    assert meta["tumors"] and sum(t["voxels"] for t in meta["tumors"]) == int(new.sum())


def test_per_organ_masks_come_back_when_the_source_had_them(tmp_path):
    ct, lab = toy_liver(24)
    write_case(Case("P01", ct, lab, np.diag([1.5, 1.5, 1.5, 1.0]), {"kind": "real"}), tmp_path / "src",
               per_organ_masks=True)
    rep = synthesize_cohort(tmp_path / "src", tmp_path / "out", RuleSynthesizer(), TumorSpec("liver", size="tiny"),
                            progress=False)
    assert rep.ok, rep.summary()
    seg = tmp_path / "out" / "P01_rules_00" / "segmentations"
    assert (seg / "liver.nii.gz").exists() and (seg / "liver_lesion.nii.gz").exists()
    assert read_label(seg / "liver_lesion.nii.gz")[0].any()
