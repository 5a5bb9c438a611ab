"""Synthetic cohorts: provenance, sharding across processes, resuming after a kill, bad inputs."""

import json
import subprocess

import numpy as np
import pytest
import torch

from cohort.config import config_dir, load_config
from cohort.layouts import open_cohort, write_case
from generative.diffusion import sample as S
from generative.diffusion.config import GenerativeConfig, SampleSpec
from generative.diffusion.training import build_pipeline
from tests.conftest import cpu_processes_cmd
from tests.toys import assert_same_cohorts, cohort_arrays, toy_abdomen_case

SPEC = config_dir() / "demo" / "sample_tiny.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    torch.manual_seed(0)
    cfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml")
    build_pipeline(cfg).save_pretrained(root / "model")
    for i in range(3):
        write_case(toy_abdomen_case(f"h{i}", seed=20 + i, tumor=False), root / "healthy")
    return root


def _spec(**kw) -> SampleSpec:
    spec = load_config(SampleSpec, SPEC)
    for k, v in kw.items():
        setattr(spec, k, v)
    return spec


def test_cohort_is_written_with_provenance(setup, tmp_path):
    rep = S.sample_cohort(setup / "healthy", setup / "model", _spec(cases_per_source=2), tmp_path / "out",
                          rank=0, world_size=1, progress=False, device="cpu")
    assert rep.ok and len(rep.done) == 6
    cohort = open_cohort(tmp_path / "out")
    assert len(cohort) == 6 and (tmp_path / "out" / "manifest.jsonl").exists()
    case = cohort.refs[0].load()
    meta = json.loads((tmp_path / "out" / case.case_id / "case.json").read_text())
    assert meta["kind"] == "synthetic" and meta["generator"] == "diffusion" and len(meta["model_hash"]) == 64
    assert meta["source"]["case_id"] in {"h0", "h1", "h2"} and meta["sampler"] == "rflow" and meta["steps"] == 4
    assert meta["tumors"] and meta["tumors"][0]["organ"] == "liver" and meta["seconds"] > 0
    # one provenance schema for every maker
    assert meta["rng_key"] == [0, meta["source"]["case_id"], int(case.case_id[-2:])]
    assert meta["specs"] and meta["specs"][0]["organ"] == "liver" and "synthesis" in meta
    assert case.case_id.startswith(meta["source"]["case_id"] + "_diffusion_")
    assert (tmp_path / "out" / "tumors.csv").read_text().count("\n") == 1 + sum(
        len(json.loads((tmp_path / "out" / c.case_id / "case.json").read_text())["tumors"]) for c in cohort.refs)
    assert (case.label == 27).any()
    src = open_cohort(setup / "healthy").get(meta["source"]["case_id"]).load()
    assert np.all(src.label[case.label == 27] == 5)  # lesions only inside the liver


def test_killed_run_resumes_to_the_same_cohort(setup, tmp_path, monkeypatch):
    spec = _spec()
    S.sample_cohort(setup / "healthy", setup / "model", spec, tmp_path / "ref", rank=0, world_size=1, progress=False, device="cpu")
    import generative.tumors.offline as O

    real_write = O.write_case
    calls = []

    def dying_write(case, root, **kw):
        calls.append(case.case_id)
        if len(calls) == 2:
            (root / f".{case.case_id}.half.part").mkdir(parents=True)  # what a kill mid-write leaves
            raise KeyboardInterrupt
        return real_write(case, root, **kw)

    monkeypatch.setattr(O, "write_case", dying_write)
    with pytest.raises(KeyboardInterrupt):
        S.sample_cohort(setup / "healthy", setup / "model", spec, tmp_path / "out", rank=0, world_size=1, progress=False, device="cpu")
    monkeypatch.setattr(O, "write_case", real_write)
    rep = S.sample_cohort(setup / "healthy", setup / "model", spec, tmp_path / "out", rank=0, world_size=1, progress=False, device="cpu")
    assert len(rep.skipped) == 1 and len(rep.done) == 2
    assert_same_cohorts(cohort_arrays(tmp_path / "ref"), cohort_arrays(tmp_path / "out"))


def test_bad_source_case_is_reported_and_skipped(setup, tmp_path):
    import shutil

    shutil.copytree(setup / "healthy", tmp_path / "healthy")
    (tmp_path / "healthy" / "h1" / "ct.nii.gz").write_bytes(b"\x1f\x8b not a nifti")
    from tumorgen.cli import main

    code = main(["sample", "--healthy", str(tmp_path / "healthy"), "--model", str(setup / "model"), "--spec", str(SPEC),
                 "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"])
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["h0_diffusion_00", "h2_diffusion_00"]


@pytest.mark.slow
def test_two_processes_write_the_same_cohort_as_one(setup, tmp_path):
    S.sample_cohort(setup / "healthy", setup / "model", _spec(), tmp_path / "one", rank=0, world_size=1, progress=False, device="cpu")
    cmd, env = cpu_processes_cmd(2, "generative.diffusion.sample", "--healthy", str(setup / "healthy"),
                                 "--model", str(setup / "model"), "--spec", str(SPEC),
                                 "--out", str(tmp_path / "two"), "--device", "cpu", "--no-progress")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr  # each rank took its share (3 jobs: rank 0 two, rank 1 one)
    assert "rank 0 of 2: 2 written" in out and "rank 1 of 2: 1 written" in out, out[-3000:]
    assert_same_cohorts(cohort_arrays(tmp_path / "one"), cohort_arrays(tmp_path / "two"))
    assert (tmp_path / "two" / "manifest.jsonl").read_text().count("\n") == 3


def test_cli_sample_full_disk_stops_and_exits_1(setup, tmp_path, monkeypatch, capsys):
    import errno

    import generative.tumors.offline as O
    from tumorgen.cli import main

    calls = []

    def full_disk(case, root, **kw):
        calls.append(case.case_id)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(O, "write_case", full_disk)
    out = tmp_path / "out"
    code = main(["sample", "--healthy", str(setup / "healthy"), "--model", str(setup / "model"), "--spec", str(SPEC),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert calls == ["h0_diffusion_00"]  # no case sampled after the disk was full
    assert "FAILED h0_diffusion_00" in err and str(out / "h0_diffusion_00") in err and "No space left on device" in err
    assert "FAILED h1_diffusion_00: not attempted" in err and "FAILED h2_diffusion_00: not attempted" in err
    assert not [p for p in out.iterdir() if p.is_dir()]
