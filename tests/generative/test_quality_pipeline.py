"""Train -> score -> apply -> audit on toy cohorts, through the Python API and the `tumorgen filter` CLI."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cohort.config import load_config
from cohort.errors import CohortError
from cohort.layouts import open_cohort
from generative.quality import (
    FilterConfig,
    TumorDiscriminator,
    apply_filter,
    auc,
    audit,
    read_scores,
    score_cohort,
    train_discriminator,
)
from generative.quality.apply import Scorer
from tests.toys import toy_lesion_case, write_toy_lesion_cohort

TINY = Path(__file__).resolve().parents[2] / "configs" / "generative" / "filter_tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("quality")
    real = write_toy_lesion_cohort(root / "real", 12, "real", seed=1)
    syn = write_toy_lesion_cohort(root / "syn", 12, "noise", seed=2)
    cfg = load_config(FilterConfig, TINY)
    model = train_discriminator([real], [syn], cfg, root / "model")
    return {"root": root, "real": real, "syn": syn, "cfg": cfg, "model": model}


def _digest(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_discriminator_separates_real_from_noise_filled(world):
    cal = json.loads((world["model"] / "calibration.json").read_text())
    assert cal["val_auc"] > 0.75, cal
    assert len(cal["real_scores"]) > 0 and len(cal["synthetic_scores"]) > 0
    # and on cases it never saw
    fresh = write_toy_lesion_cohort(world["root"] / "fresh_real", 6, "real", seed=11)
    fresh_bad = write_toy_lesion_cohort(world["root"] / "fresh_bad", 6, "noise", seed=12)
    pr = [t["p_real"] for s in score_cohort(world["model"], fresh, world["cfg"]) for t in s.tumors]
    pb = [t["p_real"] for s in score_cohort(world["model"], fresh_bad, world["cfg"]) for t in s.tumors]
    assert auc(pr, pb) > 0.8, (pr, pb)


def test_model_folder_round_trip(world):
    cfgj = json.loads((world["model"] / "config.json").read_text())
    assert cfgj["model_type"] == "tumor_discriminator" and cfgj["format"] == 1
    assert cfgj["kwargs"]["channels"] == [8, 16] and cfgj["crop"]["size"] == 16
    assert {"model.safetensors", "calibration.json", "hu_bounds.json", "train_log.json", "filter.yaml"} <= {
        p.name for p in world["model"].iterdir()}
    a = TumorDiscriminator.from_pretrained(world["model"])
    b = TumorDiscriminator.from_pretrained(world["model"])
    x = torch.rand(3, 2, 16, 16, 16)
    assert torch.equal(a.predict_proba(x), b.predict_proba(x))
    with pytest.raises(CohortError, match="config.json missing"):
        TumorDiscriminator.from_pretrained(world["root"])


def test_split_is_by_case_and_early_stopping_keeps_the_best(world):
    log = json.loads((world["model"] / "train_log.json").read_text())
    assert log["best_val_auc"] == max(e["val_auc"] for e in log["log"])
    cal = json.loads((world["model"] / "calibration.json").read_text())
    val_cases = {f"{t['kind']}:{t['case_id']}" for t in cal["tumors"]}
    assert val_cases == set(cal["val_groups"])
    assert any(g.startswith("real:") for g in val_cases) and any(g.startswith("synthetic:") for g in val_cases)


def test_too_few_cases_is_a_clear_error(world, tmp_path):
    one = write_toy_lesion_cohort(tmp_path / "one", 1, "real", seed=5)
    with pytest.raises(CohortError, match="at least 2 real"):
        train_discriminator([one], [world["syn"]], world["cfg"], tmp_path / "m")


def test_apply_writes_manifest_and_never_touches_cases(world, tmp_path):
    before = _digest(world["syn"])
    scores = score_cohort(world["model"], world["syn"], world["cfg"], out_path=tmp_path / "scores.jsonl")
    manifest = apply_filter(tmp_path / "scores.jsonl", world["model"], tmp_path / "out", world["cfg"])
    assert _digest(world["syn"]) == before
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 12 == len(scores)
    for r, s in zip(rows, scores):
        assert {"case_id", "ct", "label", "accepted", "score", "reasons", "tumors"} <= set(r)
        assert r["score"] == s.score == min(t["p_real"] for t in r["tumors"])
        assert r["reasons"] and all(x.split(":")[0] in ("discriminator", "hu_check") for x in r["reasons"])
        assert Path(r["ct"]).exists()
    # noise-filled tumors are rejected (by the discriminator or the HU check)
    assert sum(r["accepted"] for r in rows) <= 2
    # the manifest is a cohort the rest of the product can open, and it keeps the decision
    co = open_cohort(manifest)
    assert len(co) == 12 and len(open_cohort(manifest, accepted_only=True)) == sum(r["accepted"] for r in rows)
    with pytest.raises(CohortError, match="refusing"):
        apply_filter(scores, world["model"], world["syn"], world["cfg"])
    assert _digest(world["syn"]) == before


def test_apply_with_a_blind_freetumor_gate_abstains(world, tmp_path):
    cfg = load_config(FilterConfig, TINY, ["policy.kind=threshold", "policy.threshold=0.0", "filters=[discriminator,freetumor]"])
    seg = lambda ct, sp: np.zeros(ct.shape, np.uint8)  # noqa: E731 - finds nothing: it must not vote
    scores = score_cohort(world["model"], world["real"], cfg, segmentor=seg, gate_validation=world["real"])
    manifest = apply_filter(scores, world["model"], tmp_path, cfg)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert all(r["filters"]["discriminator"]["accepted"] for r in rows)
    assert all(r["accepted"] for r in rows)  # a blind gate no longer rejects everything
    assert all(not r["filters"]["freetumor"]["voting"] and not r["filters"]["freetumor"]["active"] for r in rows)
    assert all(any(x.startswith("freetumor: not voting") and "found 0 of" in x for x in r["reasons"]) for r in rows)
    summ = json.loads((tmp_path / "filter_summary.json").read_text())
    assert summ["active_filters"] == ["discriminator"] and "found 0 of" in summ["skipped_filters"]["freetumor"]
    # and the audit shows it
    page = audit(scores, world["model"], tmp_path / "audit", cfg, segmentor=seg, gate_validation=world["real"],
                 overrides=())
    s = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert s["freetumor_gate"]["voting"] is False and s["freetumor_gate"]["validation"]["sensitivity"] == 0.0
    assert "not voting: segmentor found 0 of" in page.read_text()


def test_audit_writes_html_pngs_and_json_matching_scores(world, tmp_path):
    scores = score_cohort(world["model"], world["syn"], world["cfg"])
    page = audit(scores, world["model"], tmp_path / "audit", world["cfg"])
    assert page.name == "report.html" and page.exists()
    text = page.read_text()
    figs = {p.name for p in (tmp_path / "audit" / "figures").iterdir()}
    assert {"roc.png", "score_hist.png", "acceptance_by_organ.png", "acceptance_by_size.png",
            "montage_most_real.png", "montage_least_real.png", "probe_rejection.png", "montage_rejected.png"} <= figs
    for f in figs:
        assert f"figures/{f}" in text
    s = json.loads((tmp_path / "audit" / "summary.json").read_text())
    cal = json.loads((world["model"] / "calibration.json").read_text())
    assert s["held_out"]["auc"] == pytest.approx(cal["val_auc"])
    assert f"{s['held_out']['auc']:.3f}" in text
    got = {(t["case_id"], t["index"]): t["p_real"] for t in s["cohort"]["tumor_scores"]}
    want = {(sc.case_id, t["index"]): t["p_real"] for sc in scores for t in sc.tumors}
    assert got == want
    assert [c["score"] for c in s["cohort"]["case_scores"]] == [sc.score for sc in scores]
    assert s["cohort"]["n_accepted"] == sum(c["accepted"] for c in s["cohort"]["case_scores"])
    assert s["montages"]["most_real"][0]["p_real"] == max(want.values())
    assert s["montages"]["least_real"][0]["p_real"] == min(want.values())
    rates = s["cohort"]["tumor_acceptance_by_size"]
    assert sum(e["n"] for e in rates.values()) == len(want)
    pr = s["probes"]["rejection"]
    assert set(pr) == {"noise", "wrong_hu", "blocky", "outside", "seam", "blur", "overall"}
    assert pr["wrong_hu"]["all"] == 1.0 and pr["overall"]["n"] > 0
    # the audit's numbers are the decisions: rejected list, acceptance by size and organ, probe rates
    dec = {c["case_id"]: c["accepted"] for c in s["cohort"]["case_scores"]}
    assert [r["case_id"] for r in s["rejected"]] == [k for k, v in dec.items() if not v]
    assert all(r["by"] and r["reasons"] for r in s["rejected"])
    rows = [(t, dec[t["case_id"]]) for t in s["cohort"]["tumor_scores"]]
    for key, table in (("size_bin", rates), ("organ", s["cohort"]["tumor_acceptance_by_organ"])):
        for g, e in table.items():
            sub = [t for t, _ in rows if t[key] == g]
            assert e["n"] == len(sub)
    n_probe = {k: e["n"] for k, e in pr.items() if k != "overall"}
    assert sum(n_probe.values()) == pr["overall"]["n"] == len(s["probes"]["scores"])
    # the calibration check is stored by training and shown
    assert [r["alpha"] for r in s["calibration_check"]["alpha_checks"]] == [0.05, 0.1, 0.2]
    assert s["calibration_check"]["alpha_checks"] == cal["alpha_checks"]
    assert "Calibration check" in text and "FreeTumor gate" in text and "95 % CI" in text
    assert s["skipped_filters"]["freetumor"].startswith("no segmentor")
    held = {g.split(":", 1)[1] for g in cal["val_groups"] if g.startswith("synthetic:")}
    assert s["cohort"]["n_cases_seen_in_training"] == 12 - len(held)


def test_probe_scoring_on_a_good_case_is_consistent(world):
    scorer = Scorer(world["model"], world["cfg"])
    good = toy_lesion_case("g", np.random.default_rng(99), "real")
    tumors, score, verdicts = scorer.score_case(good)
    assert score == min(t["p_real"] for t in tumors) and verdicts["hu_check"]["accepted"]


def test_cli_train_score_apply_audit(world, tmp_path, capsys):
    from tumorgen.cli import main

    m = tmp_path / "m"
    assert main(["filter", "train", "--config", str(TINY), "--real", str(world["real"]), "--synthetic",
                 f"toy_noise={world['syn']}", "--out", str(m), "--set", "train.max_steps=10"]) == 0
    assert (m / "model.safetensors").exists()
    assert json.loads((m / "train_log.json").read_text())["synthetic_cohorts"][0]["name"] == "toy_noise"
    assert "toy_noise" in json.loads((m / "calibration.json").read_text())["evaluation"]["by_generator"]
    # no synthetic cohort at all is a clear error, not a crash
    assert main(["filter", "train", "--config", str(TINY), "--real", str(world["real"]), "--out", str(tmp_path / "x")]) == 2
    out = tmp_path / "o"
    assert main(["filter", "score", "--config", str(TINY), "--model", str(m), "--cohort", str(world["syn"]),
                 "--out", str(out)]) == 0
    assert len(read_scores(out)) == 12
    assert main(["filter", "apply", "--config", str(TINY), "--model", str(m), "--scores", str(out),
                 "--out", str(out)]) == 0
    assert (out / "manifest.jsonl").exists() and (out / "filter_summary.json").exists()
    # the printed count is the manifest's case-level decisions (per-filter "accepted" keys do not count)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    n_acc = sum(bool(r.get("accepted")) for r in rows)
    assert f"{n_acc} of {len(rows)} cases accepted" in capsys.readouterr().err
    assert json.loads((out / "filter_summary.json").read_text())["n_accepted"] == n_acc
    assert main(["filter", "audit", "--config", str(TINY), "--model", str(m), "--scores", str(out),
                 "--out", str(out / "audit"), "--set", "audit.probes=[noise]", "--probe-cohort", str(world["real"])]) == 0
    assert (out / "audit" / "report.html").exists()
    s = json.loads((out / "audit" / "summary.json").read_text())
    assert s["probes"]["sources"] and all(c.startswith("real_") for c in s["probes"]["sources"])
    assert s["probes"]["source_acceptance"]["n"] == len(s["probes"]["sources"])
    assert main(["filter", "apply", "--config", str(TINY), "--model", str(m), "--scores", str(out),
                 "--out", str(out), "--set", "policy.kind=nonsense"]) == 2


def test_hard_negatives_only_train(world, tmp_path):
    cfg = load_config(FilterConfig, TINY, ["train.hard_negatives=[noise,wrong_hu]", "train.max_steps=20"])
    m = train_discriminator([world["real"]], [world["syn"]], cfg, tmp_path / "m")
    log = json.loads((m / "train_log.json").read_text())
    cal = json.loads((m / "calibration.json").read_text())
    base = json.loads((world["model"] / "calibration.json").read_text())
    # two broken copies of each training real case (the held-out patients' copies are dropped)
    n_real_val = sum(g.startswith("real:") for g in cal["val_groups"])
    assert log["n_hard_negatives"] == 2 * (12 - n_real_val)
    assert {t["kind"] for t in cal["tumors"]} == {"real", "synthetic"}
    assert cal["val_groups"] == base["val_groups"] and log["n_val"] == len(cal["tumors"])
    # the held-out patients' broken copies are the evaluation's known-bad probes
    assert log["n_probe_eval"] == 2 * n_real_val == len(cal["probe_tumors"])
    assert {t["source"] for t in cal["probe_tumors"]} == {"probe:noise", "probe:wrong_hu"}


def test_named_sources_and_probe_negatives_report_per_generator_auc(world, tmp_path):
    """Several named synthetic cohorts plus probe hard negatives: the evaluation breaks the held-out AUC
    down by generator (with a 95 % CI), size class and organ, and checks the calibrated cutoff."""
    syn2 = write_toy_lesion_cohort(tmp_path / "syn2", 6, "noise", seed=21, prefix="other")
    cfg = load_config(FilterConfig, TINY, ["train.hard_negatives=[wrong_hu,blur]", "train.max_steps=30",
                                           f"train.synthetic=[{{name: toy_noise_b, path: {syn2}}}]"])
    m = train_discriminator([world["real"]], [f"toy_noise_a={world['syn']}"], cfg, tmp_path / "m")
    cal = json.loads((m / "calibration.json").read_text())
    ev = cal["evaluation"]
    assert {"toy_noise_a", "toy_noise_b", "probe:wrong_hu", "probe:blur"} <= set(ev["by_generator"])
    for e in ev["by_generator"].values():
        assert e["n_real"] == ev["overall"]["n_real"] and len(e["ci"]) == 2
    assert ev["overall"]["ci"][0] <= ev["overall"]["auc"] <= ev["overall"]["ci"][1]
    assert set(ev["by_size"]) == {"early", "larger"} and "liver" in ev["by_organ"]
    assert {t["source"] for t in cal["tumors"] if t["kind"] == "synthetic"} <= {"toy_noise_a", "toy_noise_b"}
    # calibration and check halves are different patients
    assert cal["calibration_groups"] and cal["check_groups"]
    assert not set(cal["calibration_groups"]) & set(cal["check_groups"])
    # the real patients early stopping saw neither calibrate nor check
    assert cal["selection_groups"] and not set(cal["selection_groups"]) & (set(cal["calibration_groups"])
                                                                             | set(cal["check_groups"]))
    assert [r["alpha"] for r in cal["alpha_checks"]] == [0.05, 0.1, 0.2]
    assert all(r["n_check"] == len(cal["check_real_scores"]) for r in cal["alpha_checks"])
    log = json.loads((m / "train_log.json").read_text())
    assert [c["name"] for c in log["synthetic_cohorts"]] == ["toy_noise_b", "toy_noise_a"]


def test_calibrate_on_unseen_real_cases_and_refuse_training_ones(world, tmp_path, capsys):
    import shutil

    from tumorgen.cli import main

    model = tmp_path / "model"
    shutil.copytree(world["model"], model)
    before = json.loads((model / "calibration.json").read_text())
    held = write_toy_lesion_cohort(tmp_path / "held", 8, "real", seed=21, prefix="held")
    (held / "held_007" / "ct.nii.gz").write_bytes(b"not a nifti")  # one broken case: reported, the rest calibrate
    rc = main(["filter", "calibrate", "--model", str(model), "--real", str(held), "--config", str(TINY),
               "--check-fraction", "0.5"])
    out = capsys.readouterr().err
    assert rc == 1 and "held_007" in out, out
    cal = json.loads((model / "calibration.json").read_text())
    src = cal["calibration_source"]
    assert src["n_cases"] == 7 and src["n_reference"] + src["n_check"] == 7 and src["n_check"] >= 1
    assert cal["training_calibration_real_scores"] == before["calibration_real_scores"]
    # the reference is the case score (worst tumor) of each reference patient, as the filter decides cases
    scores = {s.case_id: s.score for s in score_cohort(model, held, world["cfg"])}
    ref = sorted(c["score"] for c in src["cases"] if not c["check"])
    assert sorted(cal["calibration_real_scores"]) == pytest.approx(ref)
    assert ref == pytest.approx(sorted(scores[c["case_id"]] for c in src["cases"] if not c["check"]))
    assert [r["alpha"] for r in cal["alpha_checks"]] == world["cfg"].train.alpha_checks
    assert all(r["n_check"] == src["n_check"] for r in cal["alpha_checks"])
    # the training cohort holds patients the model was trained on: refused, calibration.json unchanged
    rc = main(["filter", "calibrate", "--model", str(model), "--real", str(world["real"]), "--config", str(TINY)])
    assert rc == 2 and "were used to train" in capsys.readouterr().err
    assert json.loads((model / "calibration.json").read_text()) == cal
