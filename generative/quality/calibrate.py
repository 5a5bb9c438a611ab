"""Calibrate a trained discriminator on real tumor cases it never saw (``tumorgen filter calibrate``).

Training keeps a few held-out real patients to set the calibrated cutoff (the split-conformal
alpha cut of their scores, :mod:`generative.quality.policies`); with tens of training cases that
is a handful of tumors, and the promise "at most alpha of real cases rejected" then rests on
noise. A site calibrates properly on its own held-out real tumor cases: this module scores them
and makes their **case** scores (a case scores as its worst tumor, the unit the filter accepts
or rejects) the cutoff's reference. With ``check_fraction`` a share of the given patients is kept
out of the reference and checks the promise at ``train.alpha_checks`` (false-reject rate with a
Wilson CI).

Cases the model trained on, or whose scores chose its checkpoint, are refused by name (the
training run records its patient groups in ``train_log.json``). ``calibration.json`` is rewritten
atomically; the training run's own reference is kept under ``training_calibration_real_scores``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cohort.errors import BatchReport, CohortError
from cohort.io import read_json, write_json
from generative.quality.apply import score_cohort
from generative.quality.config import FilterConfig
from generative.quality.discriminator import CALIBRATION_NAME
from generative.quality.metrics import alpha_check


def _seen_groups(model_dir: Path, cal: dict[str, Any]) -> set[str]:
    """Real patients the model trained on (``train_log.json``) or chose its checkpoint with (``cal``, its
    calibration.json), as "real:<id>" groups."""
    log = model_dir / "train_log.json"
    seen = set(read_json(log).get("train_groups", [])) if log.exists() else set()
    return seen | set(cal.get("selection_groups", []))


def score_real_cases(model_dir: str | Path, cohorts: Sequence[str | Path], config: FilterConfig,
                     report: BatchReport) -> list[dict[str, Any]]:
    """One row per real tumor case of ``cohorts`` (:func:`generative.quality.apply.score_cohort`): case id,
    patient group, case score, tumor scores. Unreadable cases and cases without a tumor go to ``report``."""
    rows = []
    for d in cohorts:
        for s in score_cohort(model_dir, d, config, report=report):
            if s.score is None:
                report.done.remove(s.case_id)
                report.fail(s.case_id, "no tumor to calibrate on (a healthy case?)")
                continue
            rows.append({"case_id": s.case_id, "cohort": s.cohort, "group": f"real:{s.group}", "score": float(s.score),
                         "tumor_scores": [float(t["p_real"]) for t in s.tumors]})
    return rows


def split_check(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The patients kept out of the reference to check it: ``fraction`` of them, at least one when
    there are two or more and ``fraction`` > 0, never all."""
    g = sorted(set(groups))
    if fraction <= 0 or len(g) < 2:
        return set()
    n = min(len(g) - 1, max(1, int(round(fraction * len(g)))))
    return set(np.random.default_rng(seed + 11).permutation(g)[:n].tolist())


def calibrate(model_dir: str | Path, cohorts: Sequence[str | Path], config: FilterConfig | None = None,
              check_fraction: float = 0.0, seed: int = 0, report: BatchReport | None = None) -> dict[str, Any]:
    """Score the real tumor cases of ``cohorts`` and make them the calibrated cutoff's reference.

    Returns the new ``calibration`` block (also written into ``<model_dir>/calibration.json``):
    ``calibration_real_scores`` (case scores of the reference patients), ``check_real_scores`` and
    ``alpha_checks`` when ``check_fraction`` > 0, and ``calibration_source`` (what was given, when, how many).
    """
    model_dir = Path(model_dir)
    cfg = config or FilterConfig()
    report = report if report is not None else BatchReport()
    t0 = time.time()
    rows = score_real_cases(model_dir, cohorts, cfg, report)
    path = model_dir / CALIBRATION_NAME
    cal = read_json(path) if path.exists() else {}
    seen = _seen_groups(model_dir, cal)
    clash = sorted({r["group"] for r in rows} & seen)
    if clash:
        raise CohortError(Path(cohorts[0]), f"{len(clash)} patient(s) were used to train this discriminator or to "
                                            f"choose its checkpoint ({', '.join(clash[:5])}{', ...' if len(clash) > 5 else ''}); "
                                            "calibrate on real cases it never saw")
    if not rows:
        raise CohortError(Path(cohorts[0]) if cohorts else None, "no real tumor case could be scored: nothing to calibrate on")
    check = split_check([r["group"] for r in rows], check_fraction, seed)
    ref = [r["score"] for r in rows if r["group"] not in check]
    chk = [r["score"] for r in rows if r["group"] in check]
    if "training_calibration_real_scores" not in cal:
        cal["training_calibration_real_scores"] = cal.get("calibration_real_scores") or cal.get("real_scores", [])
    cal["calibration_real_scores"] = ref
    cal["check_real_scores"] = chk
    cal["alpha_checks"] = alpha_check(ref, chk, cfg.train.alpha_checks) if chk else []
    cal["calibration_source"] = {
        "kind": "cohorts", "unit": "case", "cohorts": [str(Path(d).resolve()) for d in cohorts],
        "n_cases": len(rows), "n_reference": len(ref), "n_check": len(chk),
        "check_fraction": float(check_fraction), "seed": int(seed),
        "cases": [{k: r[k] for k in ("case_id", "group", "score")} | {"check": r["group"] in check} for r in rows],
        "failed": {k: str(v) for k, v in report.failed.items()},
        "seconds": round(time.time() - t0, 1),
    }
    write_json(path, cal)
    return cal
