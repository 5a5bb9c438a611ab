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
