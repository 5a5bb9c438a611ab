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
