"""Kill at the rename that finishes a write (os.replace raising after the temp is written), then
rerun: the result equals an uninterrupted run, for `synthesize` and `scaling run`."""

from __future__ import annotations

import json
import os

import pytest

from cohort.io import is_temp_name
from tests.toys import assert_same_cohorts, cohort_arrays


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in the product catches it."""


def _kill_at(monkeypatch, n: int) -> list[str]:
    """Make the n-th os.replace raise (its temp file or folder is left behind)."""
    calls: list[str] = []
    real = os.replace

    def replace(src, dst, *a, **k):
        calls.append(str(dst))
        if len(calls) == n:
            raise Killed(f"killed at rename {n}: {dst}")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def _no_paths(node):
    if isinstance(node, dict):
        return {k: _no_paths(v) for k, v in node.items() if k != "path"}
    return node


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 3, 5, 8])
def test_synthesize_killed_at_a_rename_resumes_to_the_same_cohort(tmp_path, monkeypatch, kill_at):
    from tests.segmentation.helpers import write_cohort
    from tumorgen.cli import main

    healthy = write_cohort(tmp_path / "healthy", 3, "h", seed=5, tumor=False)
    args = ["synthesize", "--method", "rules", "--healthy", str(healthy), "--spec", "organ=liver,size=tiny",
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    calls = _kill_at(monkeypatch, kill_at)
    with pytest.raises(Killed):
        main([*args, "--out", str(tmp_path / "out")])
    assert len(calls) == kill_at
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert_same_cohorts(cohort_arrays(tmp_path / "ref"), cohort_arrays(tmp_path / "out"))
    assert not [p for p in (tmp_path / "out").iterdir() if is_temp_name(p.name)]  # stale temps cleaned
    ref_rows = (tmp_path / "ref" / "manifest.jsonl").read_text().splitlines()
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == len(ref_rows)


@pytest.mark.slow
def test_scaling_cell_killed_at_renames_resumes_to_the_same_result(tmp_path, monkeypatch):
    from evaluation.scaling import Grid, run_study
    from tests.evaluation.test_scaling import tiny_study

    cfg = tiny_study()
    cfg.grid = Grid(real_sizes=[1], sources=["rules"], ratios=[1.0], seeds=[0])
    ref = run_study(cfg, tmp_path / "ref", show=False)
    assert ref.ok, ref.summary()
    calls = _kill_at(monkeypatch, 10**9)  # never fires: counts the renames of a whole run
    run_study(cfg, tmp_path / "count", show=False)
    total = len(calls)
    monkeypatch.undo()
    assert total > 10
    cid = "real001_rules_x1_seed0"
    a = json.loads((tmp_path / "ref" / "cells" / cid / "cell.json").read_text())
    # killed at a rename early (data), in the middle (training/prediction) and near the end (evaluation)
    for k in (2, total // 2, total - 2):
        out = tmp_path / f"out{k}"
        _kill_at(monkeypatch, k)
        with pytest.raises(Killed):
            run_study(cfg, out, show=False)
        monkeypatch.undo()
        rep = run_study(cfg, out, show=False)
        assert rep.ok, rep.summary()
        b = json.loads((out / "cells" / cid / "cell.json").read_text())
        for split in ("id", "ood"):
            for key, value in a[split].items():
                assert b[split][key] == pytest.approx(value, nan_ok=True), (k, split, key)
        assert _no_paths(b["source_counts"]) == _no_paths(a["source_counts"]), k
