"""cohort.runs: the one checkpoint scheme and the rerun rule."""

import json

import pytest

from cohort import runs
from cohort.errors import CohortError


class FakeAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.bin").write_text("weights")


def test_checkpoints_appear_whole_and_only_the_newest_are_kept(tmp_path):
    acc = FakeAccelerator()
    for step in (10, 20, 30):
        runs.save_checkpoint(acc, tmp_path, step, keep=2, state={"step": step})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000020", "step_0000030"]
    assert runs.latest_checkpoint(tmp_path, need_state=True).name == "step_0000030"
    assert runs.read_checkpoint_state(tmp_path / "checkpoints" / "step_0000030") == {"step": 30}


def test_a_killed_checkpoint_is_never_taken(tmp_path):
    acc = FakeAccelerator()
    runs.save_checkpoint(acc, tmp_path, 5, keep=2, state={"step": 5})
    (tmp_path / "checkpoints" / "step_0000009.tmp").mkdir()  # killed mid-save
    (tmp_path / "checkpoints" / "step_0000008").mkdir()  # old in-place scheme, killed before its state file
    assert runs.latest_checkpoint(tmp_path, need_state=True).name == "step_0000005"
    runs.save_checkpoint(acc, tmp_path, 10, keep=0, state={"step": 10})
    assert not (tmp_path / "checkpoints" / "step_0000009.tmp").exists()  # stale temps go on the next save


def test_legacy_segmentation_state_file_still_loads(tmp_path):
    old = tmp_path / "checkpoints" / "step_0000004"
    old.mkdir(parents=True)
    (old / "training_state.json").write_text(json.dumps({"step": 4}))
    assert runs.latest_checkpoint(tmp_path, need_state=True) == old
    assert runs.read_checkpoint_state(old)["step"] == 4


def test_rerun_rule(tmp_path):
    assert runs.check_run_dir(tmp_path, resume=False, overwrite=False) == []  # nothing there yet
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(CohortError, match="already holds a run .*--resume.*--overwrite"):
        runs.check_run_dir(tmp_path, resume=False, overwrite=False)
    assert runs.check_run_dir(tmp_path, resume=True, overwrite=False) == []
    assert runs.check_run_dir(tmp_path, resume=False, overwrite=True) == ["an exported model/"]
    with pytest.raises(ValueError, match="exclude each other"):
        runs.check_run_dir(tmp_path, resume=True, overwrite=True)
    runs.clear_run(tmp_path, ["model", "summary.json"])
    assert not (tmp_path / "model").exists()
