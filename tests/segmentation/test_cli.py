"""`tumorgen segment train` (the command composes segmentation with the generators' synthesizers)."""

import json

from segmentation.config import default_config_path
from tests.segmentation.helpers import onthefly_train_args
from tumorgen.cli import main


def test_segment_train_with_onthefly_rules(cohorts, tmp_path):
    rc = main(onthefly_train_args(tmp_path / "r", cohorts["healthy"], "rules", "{size: tiny}"))
    assert rc == 0
    counts = json.loads((tmp_path / "r" / "source_counts.json").read_text())
    src = counts["sources"]["healthy"]
    assert src["patches"] == 6
    assert src["onthefly_tumors"] >= 1  # the rule-based synthesizer ran on the healthy patches
    assert counts["onthefly_seconds"] > 0


def test_segment_train_resume_flag(cohorts, tmp_path):
    args = ["segment", "train", "--config", str(default_config_path("tiny")), "--run-dir", str(tmp_path / "r"),
            "--quiet", "--set", f"sources=[{{name: real, path: {cohorts['real']}}}]"]
    assert main(args) == 0
    assert main([*args, "--resume", "--set", "train.max_steps=4"]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["steps"] == 4 and s["steps_this_session"] == 1


def test_segment_train_config_error_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {}\n")
    assert main(["segment", "train", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2


def test_unknown_onthefly_method_is_reported(cohorts, tmp_path, capsys):
    rc = main(["segment", "train", "--config", str(default_config_path("tiny")), "--run-dir", str(tmp_path / "r"),
               "--quiet", "--set", f"sources=[{{name: real, path: {cohorts['real']}}}]", "--set", "onthefly.method=gan"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown synthesizer 'gan'" in err and "'ca'" in err and "'rules'" in err


def test_segment_train_refuses_to_train_over_a_run_without_resume_or_overwrite(cohorts, tmp_path, capsys):
    from segmentation.train import main as train_main

    run = tmp_path / "r"
    sources = ["--set", f"sources=[{{name: real, path: {cohorts['real']}}}]"]
    args = ["segment", "train", "--config", str(default_config_path("tiny")), "--run-dir", str(run), "--quiet", *sources]
    assert main(args) == 0
    weights = (run / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(run) in lines[0] and "--resume" in lines[0] and "--overwrite" in lines[0], lines
    assert (run / "model" / "model.safetensors").read_bytes() == weights
    # `python -m segmentation.train` refuses the same way
    assert train_main(["--config", str(default_config_path("tiny")), "--run-dir", str(run), *sources]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--set", "train.max_steps=2", "--set", "train.save_every=2"]) == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 2 and s["steps_this_session"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000002"]
