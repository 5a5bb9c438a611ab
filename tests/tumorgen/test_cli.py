"""The `tumorgen` command: every subcommand parses and prints help; cohort info on real and phantom data."""

import json
import subprocess
import sys

import pytest

from tests.conftest import TS_COHORT
from tumorgen.cli import COMMAND_MODULES, build_parser, main


def test_every_command_module_registers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("phantoms", "cohort", "synthesize", "evaluate", "scaling", "train", "sample", "segment",
                 "predict", "export", "filter", "demo"):
        assert name in sub.choices, name
    assert set(sub.choices) <= set(COMMAND_MODULES) | {"generator"}


@pytest.mark.parametrize("cmd", [[], ["cohort", "info"], ["phantoms"], ["synthesize"], ["evaluate"], ["scaling", "run"],
                                 ["train"], ["sample"], ["segment", "train"], ["predict"], ["filter", "audit"], ["demo"]])
def test_help_works(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: tumorgen" in capsys.readouterr().out


def test_cohort_info_real_ct_json(capsys):
    assert main(["cohort", "info", str(TS_COHORT), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cases"] == 1 and info["layout"] == "abdomenatlas"
    assert set(info["organs"]) == {"kidney_left", "kidney_right", "liver", "pancreas", "spleen"}


def test_cohort_info_bad_case_exits_nonzero(tmp_path, make_case, capsys):
    from cohort.layouts import write_case

    write_case(make_case("good"), tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ct.nii.gz").write_bytes(b"junk")
    assert main(["cohort", "info", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "1 cases" in captured.out
    assert "broken" in captured.err and "ct.nii.gz" in captured.err


def test_cohort_info_reports_lying_headers_and_reads_the_rest(tmp_path, make_case, capsys):
    from cohort.layouts import write_case
    from tests.conftest import write_lying_header

    for cid in ("good", "zero", "huge"):
        write_case(make_case(cid), tmp_path)
    write_lying_header(tmp_path / "zero" / "ct.nii.gz", "zero_spacing")
    write_lying_header(tmp_path / "huge" / "ct.nii.gz", "huge_shape")
    assert main(["cohort", "info", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "1 cases" in captured.out
    assert "FAILED huge" in captured.err and "FAILED zero" in captured.err


@pytest.mark.parametrize("argv", [
    ["synthesize", "--method", "rules", "--healthy", "{missing}", "--out", "{out}", "--no-progress"],
    ["phantoms", "--n", "-1", "--out", "{out}", "--no-progress"],
])
def test_a_refused_run_leaves_no_output_folder(tmp_path, argv):
    # evaluate, export nnunet and predict: tests/evaluation/test_evaluate.py, tests/segmentation/test_export.py,
    # tests/segmentation/test_predict.py
    out = tmp_path / "out"
    assert main([a.format(missing=tmp_path / "nope", out=out) for a in argv]) == 2
    assert not out.exists()


def test_phantoms_then_info_console_script(tmp_path):
    out = tmp_path / "siteA"
    r = subprocess.run([sys.executable, "-m", "tumorgen.cli", "phantoms", "--site", "A", "--n", "2", "--tumor-fraction",
                        "0.5", "--seed", "0", "--spacing", "3", "--out", str(out), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "tumorgen.cli", "cohort", "info", str(out), "--json"],
                       capture_output=True, text=True)
    info = json.loads(r.stdout)
    assert info["cases"] == 2 and info["sites"] == {"A": 2} and info["spacing_mm"] == {"3.00x3.00x3.00": 2}
    assert sum(t["cases"] for t in info["tumors"].values()) >= 1


# Every subcommand that reads a config file (--config, or --spec for `sample`): the argv (with {cfg} for the
# file and {tmp} for a scratch folder) and a wrong-typed value (YAML text, the key the message must name).
CONFIG_COMMANDS = {
    "train": (["train", "--stage", "autoencoder", "--config", "{cfg}", "--run-dir", "{tmp}/run", "--quiet"],
              ("train:\n  steps: many\n", "train.steps")),
    "sample": (["sample", "--healthy", "{tmp}/healthy", "--model", "{tmp}/model", "--spec", "{cfg}", "--out",
                "{tmp}/out", "--quiet"], ("seed: many\n", "seed")),
    "synthesize": (["synthesize", "--method", "rules", "--healthy", "{tmp}/healthy", "--out", "{tmp}/out",
                    "--config", "{cfg}", "--no-progress"], ("seed: many\n", "seed")),
    "filter train": (["filter", "train", "--config", "{cfg}", "--real", "{tmp}/real", "--synthetic", "{tmp}/syn",
                      "--out", "{tmp}/out"], ("train:\n  max_steps: many\n", "train.max_steps")),
    "filter calibrate": (["filter", "calibrate", "--config", "{cfg}", "--model", "{tmp}/disc", "--real", "{tmp}/real"],
                         ("train:\n  max_steps: many\n", "train.max_steps")),
    "filter score": (["filter", "score", "--config", "{cfg}", "--model", "{tmp}/disc", "--cohort", "{tmp}/syn",
                      "--out", "{tmp}/out"], ("train:\n  max_steps: many\n", "train.max_steps")),
    "filter apply": (["filter", "apply", "--config", "{cfg}", "--model", "{tmp}/disc", "--scores", "{tmp}/scores",
                      "--out", "{tmp}/out"], ("train:\n  max_steps: many\n", "train.max_steps")),
    "filter audit": (["filter", "audit", "--config", "{cfg}", "--model", "{tmp}/disc", "--scores", "{tmp}/scores",
                      "--out", "{tmp}/out"], ("train:\n  max_steps: many\n", "train.max_steps")),
    "segment train": (["segment", "train", "--config", "{cfg}", "--run-dir", "{tmp}/run", "--quiet"],
                      ("train:\n  max_steps: many\n", "train.max_steps")),
    "evaluate": (["evaluate", "--pred", "{tmp}/pred", "--gt", "{tmp}/gt", "--out", "{tmp}/out", "--config", "{cfg}",
                  "--quiet"], ("nsd_tolerance_mm: many\n", "nsd_tolerance_mm")),
    "export nnunet": (["export", "nnunet", "--config", "{cfg}", "--dataset-id", "1", "--out", "{tmp}/out"],
                      ("train:\n  max_steps: many\n", "train.max_steps")),
    "scaling run": (["scaling", "run", "--config", "{cfg}", "--out", "{tmp}/out"],
                    ("phantom_spacing_mm: many\n", "phantom_spacing_mm")),
    "demo": (["demo", "--config", "{cfg}", "--out", "{tmp}/out"], ("spacing_mm: many\n", "spacing_mm")),
}


def _commands_with_config_files():
    """'<command> [<action>]' of every parser with --config (or --spec, when it names a file) in the CLI."""
    import argparse

    found = set()

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
            elif {"--config", "--spec"} & set(action.option_strings) and action.type is not str and (
                    action.metavar != "SPEC"):  # synthesize's --spec is an inline tumor spec, not a file
                found.add(prefix)

    walk(build_parser(), "")
    return found


def test_every_config_command_is_in_the_config_error_test():
    assert _commands_with_config_files() == set(CONFIG_COMMANDS)


@pytest.mark.parametrize("fault", ["missing", "unknown_key", "wrong_type"])
@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_config_errors_are_one_line_naming_file_and_key_exit_2(command, fault, tmp_path, monkeypatch, capsys):
    import evaluation.scaling
    import tumorgen.demo

    def no_work(*a, **k):
        raise AssertionError("the config error must stop the command before any work")

    monkeypatch.setattr(tumorgen.demo, "run_demo", no_work)
    monkeypatch.setattr(evaluation.scaling, "run_study", no_work)
    argv, (wrong, wrong_key) = CONFIG_COMMANDS[command]
    cfg = tmp_path / f"{fault}.yaml"
    key = {"missing": None, "unknown_key": "no_such_key", "wrong_type": wrong_key}[fault]
    if fault == "unknown_key":
        cfg.write_text("no_such_key: 1\n")
    elif fault == "wrong_type":
        cfg.write_text(wrong)
    capsys.readouterr()
    code = main([a.format(cfg=cfg, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert str(cfg) in lines[0]
    assert ("does not exist" in lines[0]) if key is None else (key in lines[0]), lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
