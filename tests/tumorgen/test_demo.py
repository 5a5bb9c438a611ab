"""`tumorgen demo --smoke`: the whole chain end to end at the smallest sizes (slow tier)."""

import json

import pytest

from tumorgen.cli import main


@pytest.mark.slow
def test_demo_smoke_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    stages = json.loads((out / "stages.json").read_text())
    assert {k for k, v in stages.items() if v["done"]} == {"phantoms", "generator", "diffusion", "baselines",
                                                          "segmentor", "filter", "scaling", "report"}
    page = (out / "report.html").read_text()
    assert "Scaling study" in page and "Quality filter" in page and "montage.png" in page
    assert (out / "filter" / "audit" / "report.html").exists()
    assert (out / "scaling" / "report" / "scaling_dsc.png").exists()
    summary = json.loads((out / "scaling" / "report" / "summary.json").read_text())
    sources = {r["source"] for r in summary["rows"]}
    assert sources == {"none", "ca", "diffusion", "diffusion_filtered"}
    for cell in summary["cells"]:
        assert 0.0 <= cell["id"]["tumor_sensitivity"] <= 1.0
        assert cell["source_counts"]
    # synthetic diffusion cases carry provenance
    case = next((out / "synthetic" / "diffusion").glob("*/case.json"))
    meta = json.loads(case.read_text())
    assert meta["kind"] == "synthetic" and meta["generator"] == "diffusion" and meta["model_hash"]
    # a second run resumes: every stage is skipped (the report is rewritten)
    capsys.readouterr()
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("already done") == 7
