"""Does the quality filter earn its place? Train it, then judge it on held-out real and synthetic tumors.

    python benchmarks/bench_filter.py --real-train data/siteA --real-heldout data/siteA_test \
        --synthetic ca=data/ca rules=data/rules --synthetic-heldout ca=data/ca_test rules=data/rules_test
    python benchmarks/bench_filter.py --quick      # builds tiny phantom cohorts itself (a couple of minutes)
    python benchmarks/bench_filter.py --medium     # 40 real + 40 synthetic held-out tumor cases or more (CPU: ~20 min)
    python benchmarks/bench_filter.py --large      # 80 real training cases, 60 real + 80 synthetic held out (CPU: ~25 min)
    python benchmarks/bench_filter.py --xlarge     # the same held-out cohorts, twice the training cases
    python benchmarks/bench_filter.py --xlarge --reuse-data \
        --synthetic diffusion_a=runs/diff_a_train --synthetic-heldout diffusion_a=runs/diff_a_heldout
                                                   # plus diffusion tumors sampled into the mode's healthy phantoms

Steps: (1) cohorts (given, or built from the phantom world: real tumor cases of sites A and B, and
rules / CA tumors synthesized into healthy phantoms with ``generative.tumors.offline.synthesize_cohort``);
(2) ``train_discriminator`` on the training cohorts (named synthetic sources + probe hard negatives);
(2b) ``filter calibrate`` on the held-out real cohort: half its patients (``--check-fraction``) set the
calibrated cutoff from their case scores, the other half are the real cases every false-reject rate is
measured on; (3) every held-out case scored by the discriminator and the HU check; the known-bad probes of
``generative.quality.probes`` built from the held-out real cases; (4) numbers: held-out AUC with a 95 %
bootstrap CI (overall, size class, organ, generator), probe rejection and real false rejects at the
calibrated cutoff (policy.alpha), and the calibrated cutoff's false-reject rate on the check patients' cases at alpha 0.05 / 0.1 / 0.2 (Wilson CIs). Writes ``benchmarks/results/filter_<name>.json`` and a
RESULTS.md-ready ``filter_<name>.md`` (also printed).
Targets (full run): AUC >= 0.9 with CI lower bound >= 0.8; probe rejection >= 80 % at <= 10 % real
false rejects; calibrated false-reject rate within its CI of alpha.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine_line  # noqa: E402
from cohort.hardware import cpu_kind  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ORGANS = ("liver", "pancreas", "kidney")

#: (real train A, real train B, real held-out A, B, healthy train A, B, healthy held-out A, B), spacing mm
SIZES = {"quick": ((12, 10, 6, 6, 6, 6, 5, 5), 2.0), "medium": ((20, 20, 20, 20, 16, 16, 14, 14), 2.0),
         # twice the training cases, and 60 held-out real cases so the check half (about 30) can tell 10 % from 20 %
         "large": ((40, 40, 30, 30, 30, 30, 20, 20), 2.0),
         "xlarge": ((80, 80, 30, 30, 60, 60, 20, 20), 2.0)}
#: filter overrides per mode (the shipped filter.yaml otherwise)
MODE_SET = {
    "quick": ["crop.size=24", "model.channels=[8,16,32]", "train.max_steps=150", "train.eval_every=25",
              "train.patience=6", "train.lr=0.002", "train.cpu=true", "train.torch_threads=2",
              "train.n_bootstrap=300"],
    "medium": ["crop.size=24", "model.channels=[8,16,32]", "train.max_steps=400", "train.eval_every=25",
               "train.patience=8", "train.lr=0.002", "train.cpu=true", "train.torch_threads=2"],
    "large": ["crop.size=24", "model.channels=[8,16,32]", "train.max_steps=800", "train.eval_every=50",
              "train.patience=8", "train.lr=0.002", "train.cpu=true", "train.torch_threads=2"],
    "xlarge": ["crop.size=24", "model.channels=[8,16,32]", "train.max_steps=1200", "train.eval_every=50",
               "train.patience=8", "train.lr=0.002", "train.cpu=true", "train.torch_threads=2"],
}


# ------------------------------------------------------------------ 1. cohorts
def _made(d: Path, reuse: bool) -> bool:
    """With ``reuse``, a cohort folder an earlier run finished (it holds cases) is kept as it is."""
    return reuse and d.is_dir() and any(d.iterdir())


def build_phantom_cohorts(root: Path, mode: str, reuse: bool = False) -> dict[str, Any]:
    """Phantom cohorts for ``mode``: real tumor cases (sites A, B) and rules / CA synthetic cohorts
    made from healthy phantoms (train and held-out from different patients). ``reuse`` keeps the
    folders an earlier run of the same mode made (the phantoms and syntheses are seeded: the same cases)."""
    from cohort.phantom import generate_cohort
    from generative.registry import build_synthesizer
    from generative.tumors.base import TumorSpec
    from generative.tumors.offline import synthesize_cohort

    (ra, rb, ha, hb, sa, sb, ta, tb), spacing = SIZES[mode]
    jobs = {"real_train_A": ("A", ra, 1.0, 11), "real_train_B": ("B", rb, 1.0, 12),
            "real_heldout_A": ("A", ha, 1.0, 13), "real_heldout_B": ("B", hb, 1.0, 14),
            "healthy_train_A": ("A", sa, 0.0, 15), "healthy_train_B": ("B", sb, 0.0, 16),
            "healthy_heldout_A": ("A", ta, 0.0, 17), "healthy_heldout_B": ("B", tb, 0.0, 18)}
    for name, (site, n, frac, seed) in jobs.items():
        if _made(root / name, reuse):
            continue
        rep = generate_cohort(root / name, site=site, n=n, tumor_fraction=frac, seed=seed, spacing=spacing,
                              organs=ORGANS, progress=False)
        if not rep.ok:
            raise RuntimeError(f"phantoms {name}: {rep.summary()}")
    specs = [TumorSpec(o) for o in ORGANS]
    syn_train, syn_held = {}, {}
    for method in ("rules", "ca"):
        synth = build_synthesizer(method)
        for split, out in (("train", syn_train), ("heldout", syn_held)):
            dirs = []
            for site in ("A", "B"):
                d = root / f"{method}_{split}_{site}"
                dirs.append(d)
                if _made(d, reuse):
                    continue
                rep = synthesize_cohort(root / f"healthy_{split}_{site}", d, synth, specs, seed=7, progress=False)
                if rep.failed:
                    raise RuntimeError(f"{method} {split} {site}: {rep.summary()}")
            out[method] = dirs
    return {"real_train": [root / "real_train_A", root / "real_train_B"],
            "real_heldout": [root / "real_heldout_A", root / "real_heldout_B"],
            "synthetic": syn_train, "synthetic_heldout": syn_held, "spacing_mm": spacing}


def _named(items: Sequence[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for it in items:
        name, sep, path = it.partition("=")
        if not sep:
            name, path = Path(it).name, it
        out.setdefault(name, []).append(Path(path))
    return out


# ------------------------------------------------------------------ 3. scoring
def _load_cases(dirs: Sequence[Path]):
    from cohort.layouts import open_cohort
    from cohort.preprocess import to_ras

    for d in dirs:
        for ref in open_cohort(d).refs:
            yield to_ras(ref.load())


def score_all(model: Path, cfg, real_dirs: Sequence[Path], synthetic: dict[str, list[Path]]) -> dict[str, Any]:
    """Score held-out real, held-out synthetic and probe cases: tumor rows and case rows (HU check verdicts)."""
    from generative.quality.apply import Scorer
    from generative.quality.policies import case_score
    from generative.quality.probes import make_probe

    scorer = Scorer(model, cfg)
    tumors: list[dict] = []
    cases: list[dict] = []
    rng = np.random.default_rng(cfg.audit.seed)

    def add(case, kind: str, source: str) -> bool:
        ts, score, verdicts = scorer.score_case(case)
        if not ts:
            return False
        hu = verdicts.get("hu_check", {})
        cases.append({"case_id": case.case_id, "kind": kind, "source": source, "score": score,
                      "hu_accepted": bool(hu.get("accepted", True)), "hu_reasons": hu.get("reasons", [])})
        for part in ("cnn", "trees"):  # each opinion alone (the discriminator with feature trees)
            if all(f"p_{part}" in t for t in ts):
                cases[-1][f"score_{part}"] = case_score([t[f"p_{part}"] for t in ts])
        if kind != "probe":
            tumors.extend({**t, "score": t["p_real"], "kind": kind, "source": source} for t in ts)
        return True

    for case in _load_cases(real_dirs):
        add(case, "real", "real")
        for kind in cfg.audit.probes:
            p = make_probe(case, kind, rng, scorer.crop)
            if p is not None and add(p.case, "probe", f"probe:{kind}"):
                # the probe's AUC row uses the case score (its worst tumor), as the decisions do
                tumors.append({**{k: v for k, v in cases[-1].items()
                                  if k in ("score", "kind", "source", "score_cnn", "score_trees")},
                               "organ": "probe", "size_bin": "probe"})
    for name, dirs in synthetic.items():
        for case in _load_cases(dirs):
            add(case, "synthetic", name)
    return {"tumors": tumors, "cases": cases}


# ------------------------------------------------------------------ 4. numbers
def _rate(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def opinions(scored: dict[str, Any], model: Path, cfg) -> dict[str, Any]:
    """The CNN and the feature trees each alone, in the same run: held-out AUC (tumors, real vs synthetic)
    and, at each one's own cutoff (alpha quantile of the same reference real cases' scores), the real
    false-reject rate on the check cases and the probe rejection. Empty without feature trees."""
    from cohort.io import read_json
    from generative.quality.metrics import auc, wilson_ci
    from generative.quality.policies import PolicyConfig, cutoff_for

    tumors, cases = scored["tumors"], scored["cases"]
    cal = read_json(model / "calibration.json")
    src = cal.get("calibration_source")
    check = {c["case_id"] for c in src["cases"] if c["check"]} if src else set()
    out: dict[str, Any] = {}
    for part in ("cnn", "trees"):
        key = f"score_{part}"
        if not cases or not all(key in c for c in cases if c["score"] is not None):
            continue
        real = [c for c in cases if c["kind"] == "real" and c["score"] is not None]
        ref = [c[key] for c in real if c["case_id"] not in check] if src else [c[key] for c in real]
        chk = [c for c in real if c["case_id"] in check] if src else real
        cut = cutoff_for(PolicyConfig(kind="calibrated", alpha=cfg.policy.alpha), [], ref).value
        pr = [c for c in cases if c["kind"] == "probe" and c["score"] is not None]
        t_real = [t[f"p_{part}"] for t in tumors if t["kind"] == "real" and f"p_{part}" in t]
        t_syn = [t[f"p_{part}"] for t in tumors if t["kind"] == "synthetic" and f"p_{part}" in t]
        k = sum(c[key] < cut for c in chk)
        kinds = sorted({c["source"] for c in pr})
        out[part] = {"auc": round(float(auc(np.asarray(t_real), np.asarray(t_syn))), 4) if t_real and t_syn else None,
                     "cutoff": round(float(cut), 6), "real_false_reject": _rate([c[key] < cut for c in chk]),
                     "real_false_reject_ci": [round(x, 4) for x in wilson_ci(k, len(chk))],
                     "probe_rejection": _rate([c[key] < cut for c in pr]),
                     "probe_rejection_by_kind": {kd.split(":", 1)[1]: _rate([c[key] < cut for c in pr if c["source"] == kd])
                                                 for kd in kinds}}
    return out


def operating_points(real: Sequence[float], probes: Sequence[float], rates: Sequence[float]) -> list[dict]:
    """Per false-reject rate r: the cutoff = the r-quantile of ``real`` (lower empirical), the real share below
    it and the probes' share below it."""
    r_ = np.sort(np.asarray([x for x in real if x is not None], np.float64))
    p_ = np.asarray([x for x in probes if x is not None], np.float64)
    out = []
    for r in rates:
        if r_.size == 0 or p_.size == 0:
            out.append({"real_false_reject_target": r, "cutoff": None})
            continue
        k = int(np.floor(r * r_.size))  # at most k of the n real cases fall below the cutoff
        cut = float(r_[k]) if k < r_.size else float(r_[-1]) + 1e-9
        out.append({"real_false_reject_target": r, "cutoff": round(cut, 6), "n_real": int(r_.size),
                    "real_false_reject": round(float((r_ < cut).mean()), 4),
                    "probe_rejection": round(float((p_ < cut).mean()), 4), "n_probes": int(p_.size)})
    return out


def crossed_alpha_check(a: Sequence[float], b: Sequence[float], alphas: Sequence[float],
                        negatives: dict[str, Sequence[float]]) -> list[dict]:
    """``alpha_check`` both ways (a sets the cutoff, b is checked; then b sets it and a is checked), the
    false rejects pooled over a + b with a Wilson CI: twice the cases behind the rate, each still judged by
    a cutoff it did not set. Rejection rates of the negatives are the mean of the two cutoffs'."""
    from generative.quality.metrics import alpha_check, wilson_ci

    rows = []
    for ra, rb in zip(alpha_check(a, b, alphas, negatives), alpha_check(b, a, alphas, negatives)):
        if ra["cutoff"] is None or rb["cutoff"] is None:
            rows.append({"alpha": ra["alpha"], "false_reject": None, "ci": [None, None], "n": 0, "holds": None})
            continue
        k, n = ra["n_rejected"] + rb["n_rejected"], ra["n_check"] + rb["n_check"]
        lo, hi = wilson_ci(k, n)
        row = {"alpha": ra["alpha"], "cutoffs": [ra["cutoff"], rb["cutoff"]], "false_reject": round(k / n, 4),
               "n_rejected": k, "n": n, "ci": [round(lo, 4), round(hi, 4)], "holds": bool(lo <= ra["alpha"]),
               "within_ci": bool(lo <= ra["alpha"] <= hi)}
        for name in negatives:
            va, vb = ra.get(f"rejected_{name}"), rb.get(f"rejected_{name}")
            row[f"rejected_{name}"] = None if va is None or vb is None else round((va + vb) / 2, 4)
        rows.append(row)
    return rows


def summarize(scored: dict[str, Any], model: Path, cfg) -> dict[str, Any]:
    """The numbers of one run. With ``filter calibrate`` run on the held-out real cohort (the default), the
    cutoff rests on its reference patients (case scores) and every false-reject rate and alpha check is
    measured on its check patients only; otherwise on the training run's own calibration tumors."""
    from cohort.io import read_json
    from generative.quality.metrics import alpha_check, auc_breakdown, wilson_ci
    from generative.quality.policies import PolicyConfig, cutoff_for

    tumors, cases = scored["tumors"], scored["cases"]
    cal = read_json(model / "calibration.json")
    cal_real = cal.get("calibration_real_scores") or cal["real_scores"]
    src = cal.get("calibration_source")
    if src:  # calibrated on held-out real cases: judge on the others
        check = {c["case_id"] for c in src["cases"] if c["check"]}
        cases = [c for c in cases if c["kind"] != "real" or c["case_id"] in check]
    alpha = cfg.policy.alpha
    cut = cutoff_for(PolicyConfig(kind="calibrated", alpha=alpha), [], cal_real).value
    breakdown = auc_breakdown(tumors, cfg.train.n_bootstrap, cfg.train.seed)

    def rej(c: dict) -> dict[str, bool]:
        d = c["score"] is not None and c["score"] < cut
        return {"discriminator": d, "hu_check": not c["hu_accepted"], "both": d or not c["hu_accepted"]}

    real_cases = [c for c in cases if c["kind"] == "real"]
    probe_cases = [c for c in cases if c["kind"] == "probe"]
    syn_cases = [c for c in cases if c["kind"] == "synthetic"]
    real_fr = {f: _rate([rej(c)[f] for c in real_cases]) for f in ("discriminator", "hu_check", "both")}
    k = sum(rej(c)["both"] for c in real_cases)
    real_fr["both_ci"] = [round(x, 4) for x in wilson_ci(k, len(real_cases))]
    real_fr["tumor_level_discriminator"] = _rate([t["score"] < cut for t in tumors if t["kind"] == "real"])
    kinds = sorted({c["source"] for c in probe_cases})
    probe_rej = {kd.split(":", 1)[1]: {f: _rate([rej(c)[f] for c in probe_cases if c["source"] == kd])
                                       for f in ("discriminator", "hu_check", "both")}
                 | {"n": sum(c["source"] == kd for c in probe_cases)} for kd in kinds}
    probe_rej["overall"] = {f: _rate([rej(c)[f] for c in probe_cases]) for f in ("discriminator", "hu_check", "both")}
    probe_rej["overall"]["n"] = len(probe_cases)
    syn_rej = {name: {f: _rate([rej(c)[f] for c in syn_cases if c["source"] == name])
                      for f in ("discriminator", "hu_check", "both")} for name in sorted({c["source"] for c in syn_cases})}
    # the promise is about cases (a case scores as its worst tumor) when calibrated on cases
    real_scores = ([c["score"] for c in real_cases] if src else [t["score"] for t in tumors if t["kind"] == "real"])
    negs = {"synthetic": [t["score"] for t in tumors if t["kind"] == "synthetic"],
            "probes": [c["score"] for c in probe_cases]}
    ov = breakdown["overall"]
    return {
        "auc": ov["auc"], "auc_ci": ov["ci"], "n_real": ov["n_real"], "n_synthetic": ov["n_synthetic"],
        "n_real_cases": len(real_cases), "n_synthetic_cases": len(syn_cases),
        "auc_breakdown": breakdown,
        "cutoff": {"alpha": alpha, "value": round(cut, 6), "n_calibration": len(cal_real),
                   "calibrated_on": ("held-out real cases (filter calibrate), case scores" if src else
                                     "the training run's calibration tumors")},
        "probe_rejection": probe_rej,
        "real_false_reject": real_fr,
        "synthetic_rejection": syn_rej,
        # the calibrated cutoff checked on held-out real cases that did not set it
        "alpha_checks": alpha_check(cal_real, real_scores, cfg.train.alpha_checks, negs),
        # the ROC view, no calibration: probes rejected at the score below which a given share of every held-out
        # real case falls (the cutoff is chosen on the cases it is judged on: an operating point, not a promise)
        "probe_rejection_at_real_fr": operating_points(cal_real + real_scores, negs["probes"], (0.05, 0.1, 0.2))
        if src else operating_points(real_scores, negs["probes"], (0.05, 0.1, 0.2)),
        # both halves in turn: each sets the cutoff, the other is checked; the rates pooled over every held-out case
        "alpha_checks_crossed": crossed_alpha_check(cal_real, real_scores, cfg.train.alpha_checks, negs) if src else [],
        # the same check inside training (calibration half vs check half of the validation patients)
        "alpha_checks_internal": cal.get("alpha_checks", []),
        "internal_val_auc": cal.get("evaluation", {}).get("overall"),
        "hu_check_real_rejections": [c["hu_reasons"][:2] for c in real_cases if not c["hu_accepted"]][:10],
    }


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def markdown(res: dict[str, Any], name: str, command: str) -> str:
    b = res["auc_breakdown"]

    def ci(e):
        lo, hi = e["ci"]
        return "n/a" if lo is None else f"{lo:.3f}-{hi:.3f}"

    def auc(e):
        return "n/a" if e["auc"] is None else f"{e['auc']:.3f}"

    lines = [f"<!-- filter_{name}:begin -->", f"## Quality filter on phantoms ({name})", "",
             f"`{command}` - {res['seconds']:.0f} s. Machine: {res['machine']}.", "",
             f"Held-out: {res['n_real_cases']} real tumor cases ({res['n_real']} tumors) and "
             f"{res['n_synthetic_cases']} synthetic cases ({res['n_synthetic']} tumors) of patients never trained on; "
             f"probes built from the held-out real cases. Calibrated cutoff alpha = {res['cutoff']['alpha']} "
             f"({res['cutoff']['n_calibration']} calibration tumors): P(real) >= {res['cutoff']['value']:.3f}.", "",
             "| AUC (95 % bootstrap CI) | group | AUC | CI | real | synthetic |", "|---|---|---|---|---|---|"]
    lines.append(f"| overall | all | {auc(b['overall'])} | {ci(b['overall'])} | {b['overall']['n_real']} | "
                 f"{b['overall']['n_synthetic']} |")
    for key, label in (("by_size", "size"), ("by_organ", "organ"), ("by_generator", "generator")):
        for g, e in b[key].items():
            lines.append(f"| {label} | {g} | {auc(e)} | {ci(e)} | {e['n_real']} | {e['n_synthetic']} |")
    fr = res["real_false_reject"]
    lines += ["", "| at the calibrated cutoff | discriminator | HU check | both (the filter) |", "|---|---|---|---|",
              f"| real cases falsely rejected | {_pct(fr['discriminator'])} | {_pct(fr['hu_check'])} | "
              f"{_pct(fr['both'])} (CI {_pct(fr['both_ci'][0])}-{_pct(fr['both_ci'][1])}) |"]
    for k, e in res["probe_rejection"].items():
        lines.append(f"| probe {k} rejected (n={e['n']}) | {_pct(e['discriminator'])} | {_pct(e['hu_check'])} | "
                     f"{_pct(e['both'])} |")
    for k, e in res["synthetic_rejection"].items():
        lines.append(f"| held-out {k} rejected | {_pct(e['discriminator'])} | {_pct(e['hu_check'])} | {_pct(e['both'])} |")
    lines += ["", "| alpha | cutoff | real false-reject (held-out cohort) | Wilson 95 % CI | holds | synthetic rejected "
              "| probes rejected |", "|---|---|---|---|---|---|---|"]
    for r in res["alpha_checks"]:
        lines.append(f"| {r['alpha']:.2f} | {r['cutoff']:.3f} | {_pct(r['false_reject'])} | {_pct(r['ci'][0])}-"
                     f"{_pct(r['ci'][1])} | {'yes' if r['holds'] else 'NO'} | {_pct(r.get('rejected_synthetic'))} | "
                     f"{_pct(r.get('rejected_probes'))} |" if r["cutoff"] is not None else f"| {r['alpha']} | n/a |")
    def table(cols: Sequence[str], rows: Sequence[str]) -> list[str]:
        return ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols), *rows] if rows else []

    lines += table(["operating point (every held-out real case; no calibration)", "cutoff", "real cases below",
                    "probes rejected"],
                   [f"| real false rejects <= {_pct(r['real_false_reject_target'])} | {r['cutoff']:.3f} | "
                    f"{_pct(r['real_false_reject'])} of {r['n_real']} | {_pct(r['probe_rejection'])} of {r['n_probes']} |"
                    for r in res.get("probe_rejection_at_real_fr", []) if r.get("cutoff") is not None])
    lines += table(["alpha, halves crossed (each sets the cutoff for the other)", "real false-reject", "Wilson 95 % CI",
                    "real cases", "holds", "synthetic rejected", "probes rejected"],
                   [f"| {r['alpha']:.2f} | {_pct(r['false_reject'])} | {_pct(r['ci'][0])}-{_pct(r['ci'][1])} | {r['n']} | "
                    f"{'yes' if r['holds'] else 'NO'} | {_pct(r.get('rejected_synthetic'))} | {_pct(r.get('rejected_probes'))} |"
                    for r in res.get("alpha_checks_crossed", []) if r["false_reject"] is not None])
    lines += table(["each opinion alone (same run)", "held-out AUC", "cutoff", "real false-reject (CI)", "probes rejected",
                    "by kind"],
                   [f"| {part} | {e['auc'] if e['auc'] is not None else 'n/a'} | {e['cutoff']:.3f} | "
                    f"{_pct(e['real_false_reject'])} ({_pct(e['real_false_reject_ci'][0])}-{_pct(e['real_false_reject_ci'][1])}) | "
                    f"{_pct(e['probe_rejection'])} | "
                    + ", ".join(f"{k} {_pct(v)}" for k, v in e["probe_rejection_by_kind"].items()) + " |"
                    for part, e in res.get("opinions", {}).items()])
    lines += ["", f"<!-- filter_{name}:end -->", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real-train", nargs="+", type=Path, default=[])
    ap.add_argument("--real-heldout", nargs="+", type=Path, default=[])
    ap.add_argument("--synthetic", nargs="+", default=[], metavar="NAME=PATH", help="training synthetic cohorts")
    ap.add_argument("--synthetic-heldout", nargs="+", default=[], metavar="NAME=PATH",
                    help="held-out synthetic cohorts (other patients than the training ones)")
    ap.add_argument("--quick", action="store_true", help="build tiny phantom cohorts (a couple of minutes)")
    ap.add_argument("--medium", action="store_true", help="build 40+40 held-out phantom cohorts (CPU: ~20 min)")
    ap.add_argument("--large", action="store_true", help="build 80 real training and 60+80 held-out cohorts (CPU: ~25 min)")
    ap.add_argument("--xlarge", action="store_true", help="as --large with 160 real and 120 healthy training cases")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "generative" / "filter.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: /tmp/bench_filter_<name>)")
    ap.add_argument("--model", type=Path, default=None,
                    help="skip training: judge this model folder (trained and calibrated on the same cohorts)")
    ap.add_argument("--reuse-data", action="store_true",
                    help="keep the phantom cohorts an earlier run of this mode left in the work folder")
    ap.add_argument("--check-fraction", type=float, default=0.5,
                    help="`filter calibrate` on the held-out real cohort, keeping this share of its patients to "
                         "check the promise (0: no calibration step; the training run's own calibration tumors)")
    ap.add_argument("--name", default=None, help="result name: benchmarks/results/filter_<name>.json")
    a = ap.parse_args(argv)

    from cohort.config import load_config
    from cohort.io import write_json, write_text
    from generative.quality.config import FilterConfig
    from generative.quality.train import train_discriminator

    mode = "quick" if a.quick else "medium" if a.medium else "large" if a.large else "xlarge" if a.xlarge else None
    name = a.name or "phantom"
    work = a.work or Path(f"/tmp/bench_filter_{mode or name}")
    t0 = time.perf_counter()
    if mode:
        co = build_phantom_cohorts(work / "data", mode, reuse=a.reuse_data)
        real_train, real_held = co["real_train"], co["real_heldout"]
        synthetic, synthetic_held = co["synthetic"], co["synthetic_heldout"]
        # cohorts given beside a mode join its synthetic sources (e.g. diffusion tumors sampled into its healthy
        # phantoms: `tumorgen sample --healthy <work>/data/healthy_train_A ...`)
        for mine, given in ((synthetic, _named(a.synthetic)), (synthetic_held, _named(a.synthetic_heldout))):
            for k, v in given.items():
                mine.setdefault(k, []).extend(v)
    else:
        if not (a.real_train and a.real_heldout and a.synthetic and a.synthetic_heldout):
            ap.error("give --real-train, --real-heldout, --synthetic and --synthetic-heldout (or --quick / --medium)")
        real_train, real_held = a.real_train, a.real_heldout
        synthetic, synthetic_held = _named(a.synthetic), _named(a.synthetic_heldout)
    t_data = time.perf_counter() - t0
    cfg = load_config(FilterConfig, a.config, [*MODE_SET.get(mode, []), *a.overrides])
    # 2. train on named sources (one name may span several folders)
    named = [f"{n}={d}" for n, ds in synthetic.items() for d in ds]
    t1 = time.perf_counter()
    if a.model:  # judge a model folder a run already trained (and calibrated) on these cohorts
        model = a.model
    else:
        model = train_discriminator(real_train, named, cfg, work / "model")
    if a.check_fraction > 0 and not a.model:
        from generative.quality.calibrate import calibrate

        calibrate(model, real_held, cfg, check_fraction=a.check_fraction, seed=cfg.train.seed)
    t_train = time.perf_counter() - t1
    # 3. held-out scoring; 4. numbers
    t2 = time.perf_counter()
    scored = score_all(model, cfg, real_held, synthetic_held)
    res = summarize(scored, model, cfg)
    res["opinions"] = opinions(scored, model, cfg)
    res.update({"cpu_capability": cpu_kind(), "machine": machine_line(), "mode": mode or "given cohorts",
                "seconds": round(time.perf_counter() - t0, 1),
                "seconds_by_step": {"data": round(t_data, 1), "train": round(t_train, 1),
                                    "evaluate": round(time.perf_counter() - t2, 1)},
                "cohorts": {"real_train": [str(p) for p in real_train], "real_heldout": [str(p) for p in real_held],
                            "synthetic": {k: [str(p) for p in v] for k, v in synthetic.items()},
                            "synthetic_heldout": {k: [str(p) for p in v] for k, v in synthetic_held.items()}},
                "overrides": [*MODE_SET.get(mode, []), *a.overrides]})
    command = "python benchmarks/bench_filter.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(RESULTS / f"filter_{name}.json", res)
    md = markdown(res, name, command.strip())
    write_text(RESULTS / f"filter_{name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
