"""Paired statistics of the scaling study: source-vs-none differences and the lessons table.

Every cell predicted the same fixed ID and OOD test cases, and cells of one seed share
their real subset, so two cells are compared case by case and seed by seed
(:func:`evaluation.bootstrap.paired_bootstrap`): resample the test cases, and the seeds,
jointly for both arms. The per-case numbers come from each cell's
``eval_<split>/cases.csv`` (what :mod:`evaluation.evaluate` writes), pooled over the
reported organ types the way the evaluation's "overall" row pools them, so a cell's
point value here equals its ``cell.json`` number.

Metrics (each a ratio over cases): DSC and NSD (mean over tumor-positive cases),
patient sensitivity (over tumor-positive cases) and specificity (over tumor-free
cases), tumor and early-tumor sensitivity (over lesions).

Lessons (Bassi et al.; ``lessons.json``: id -> {claim, reproduced, numbers}), judged on
DSC unless named, ``reproduced`` true only when every interval the lesson rests on
excludes the opposite, false when one shows the opposite, else "unclear":

- ``a_more_real_data_helps``: none at the largest size minus none at the smallest, ID and OOD.
- ``b_synthetic_helps_most_at_small_sizes``: the primary source's gain over none at the
  smallest size (> 0) and that gain minus its gain at the largest size (> 0); ID and OOD pooled.
- ``c_ood_gain_exceeds_id_gain``: the primary source's OOD gain minus its ID gain, mean over sizes.
- ``d_early_tumor_sensitivity_gains``: the primary source's early-tumor sensitivity gain,
  mean over sizes and splits.
- ``e_filtered_ge_diffusion_ge_ca_ge_rules``: each neighbour of ``report.order`` in the grid
  minus the one before it, mean over sizes and splits.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cohort.config import load_config
from cohort.io import read_json
from evaluation.bootstrap import Contrast, Term, paired_bootstrap
from evaluation.scaling import NONE, RECORD, ReportConfig, ScalingConfig

#: (key, label) of the metrics compared case by case
PAIRED = (
    ("dsc", "DSC"),
    ("nsd", "NSD"),
    ("patient_sensitivity", "patient sens."),
    ("patient_specificity", "patient spec."),
    ("tumor_sensitivity", "tumor sens."),
    ("early_tumor_sensitivity", "early tumor sens."),
)
SPLITS = ("id", "ood")


def _bool(v: str) -> bool:
    return v.strip().lower() in ("true", "1")


def _num(v: str) -> float:
    return float(v) if v not in ("", None) else float("nan")


def case_metrics(path: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """case id -> metric -> (numerator, denominator) from an evaluation's cases.csv (rows of one case pooled)."""
    acc: dict[str, dict[str, Any]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if not _bool(r["included"]):
                continue
            c = acc.setdefault(r["case_id"], {"gt": False, "called": False, "dsc": [0.0, 0.0], "nsd": [0.0, 0.0],
                                              "lesions": [0.0, 0.0], "early": [0.0, 0.0]})
            c["gt"] |= _bool(r["gt_positive"])
            c["called"] |= _bool(r["pred_positive"])
            for key in ("dsc", "nsd"):
                v = _num(r[key])
                if math.isfinite(v):
                    c[key][0] += v
                    c[key][1] += 1.0
            c["lesions"][0] += _num(r["n_detected"])
            c["lesions"][1] += _num(r["n_lesions"])
            c["early"][0] += _num(r["n_early_detected"])
            c["early"][1] += _num(r["n_early"])
    out = {}
    for cid, c in acc.items():
        gt, called = c["gt"], c["called"]
        out[cid] = {"dsc": tuple(c["dsc"]), "nsd": tuple(c["nsd"]),
                    "patient_sensitivity": (float(gt and called), float(gt)),
                    "patient_specificity": (float(not gt and not called), float(not gt)),
                    "tumor_sensitivity": tuple(c["lesions"]), "early_tumor_sensitivity": tuple(c["early"])}
    return out


def arm_name(source: str, ratio: float) -> str:
    return NONE if source == NONE else f"{source} x{ratio:g}"


@dataclass
class StudyCases:
    """Per-case numbers of every finished cell: (arm, n_real, split) -> seed -> case id -> metric -> (num, den)."""

    cells: dict[tuple[str, int, str], dict[int, dict]] = field(default_factory=dict)
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95
    order: list[str] = field(default_factory=list)  # arm names in the grid's order (tables, figures)

    @classmethod
    def load(cls, out: str | Path, results: list[dict[str, Any]], rcfg: ReportConfig) -> StudyCases:
        out = Path(out)
        table: dict[tuple[str, int, str], dict[int, dict]] = defaultdict(dict)
        for r in results:
            for split in SPLITS:
                p = out / "cells" / r["cell"] / f"eval_{split}" / "cases.csv"
                if p.exists():
                    table[(arm_name(r["source"], r["ratio"]), r["n_real"], split)][r["seed"]] = case_metrics(p)
        return cls(dict(table), rcfg.n_boot, rcfg.seed, rcfg.ci_level)

    def __bool__(self) -> bool:
        return bool(self.cells)

    def arms(self) -> list[str]:
        """none first, then the grid's order (``order``), then the rest by name."""
        rank = {a: i for i, a in enumerate(self.order)}
        return sorted({a for a, _, _ in self.cells}, key=lambda a: (a != NONE, rank.get(a, len(rank)), a))

    def sizes(self, arm: str | None = None) -> list[int]:
        return sorted({n for a, n, _ in self.cells if arm is None or a == arm})

    def has(self, arm: str, n: int, split: str) -> bool:
        return bool(self.cells.get((arm, n, split)))

    def contrast(self, terms: list[tuple[float, str, int, str]], metric: str) -> Contrast | None:
        """sum coef * metric(arm, n, split) over seeds and test cases all the named cells share; None when
        a named cell is missing."""
        if any(not self.has(a, n, s) for _, a, n, s in terms):
            return None
        seeds = sorted(set.intersection(*(set(self.cells[(a, n, s)]) for _, a, n, s in terms)))
        if not seeds:
            return None
        cases: dict[str, list[str]] = {}
        for split in {s for _, _, _, s in terms}:
            ids = [set(self.cells[(a, n, s)][sd]) for _, a, n, s in terms if s == split for sd in seeds]
            cases[split] = sorted(set.intersection(*ids))
        built = []
        for coef, a, n, s in terms:
            per = self.cells[(a, n, s)]
            arr = np.array([[per[sd][cid][metric] for cid in cases[s]] for sd in seeds], float).reshape(
                len(seeds), len(cases[s]), 2)
            built.append(Term(coef, arr[..., 0], arr[..., 1], s))
        return paired_bootstrap(built, self.n_boot, self.seed, self.level)


def differences(sc: StudyCases) -> list[dict[str, Any]]:
    """Every source against none at every size, split and paired metric: the difference with its CI."""
    rows = []
    for metric, _ in PAIRED:
        for split in SPLITS:
            for arm in sc.arms():
                if arm == NONE:
                    continue
                for n in sc.sizes(arm):
                    c = sc.contrast([(1.0, arm, n, split), (-1.0, NONE, n, split)], metric)
                    if c is not None:
                        rows.append({"metric": metric, "split": split, "n_real": n, "source": arm,
                                     "verdict": c.verdict(), **c.as_dict()})
    return rows


def arm_values(sc: StudyCases, metric: str = "dsc") -> list[dict[str, Any]]:
    """Each arm's value at each size and split with its CI (bootstrap over cases and seeds): Table 5, Figure 8."""
    rows = []
    for arm in sc.arms():
        for n in sc.sizes(arm):
            for split in SPLITS:
                c = sc.contrast([(1.0, arm, n, split)], metric)
                if c is not None:
                    rows.append({"metric": metric, "split": split, "n_real": n, "source": arm, **c.as_dict()})
    return rows


# ----------------------------------------------------------------------------- lessons


def combine(verdicts: list[bool | str]) -> bool | str:
    """All true -> true; any false -> false; otherwise (or nothing to judge) "unclear"."""
    if not verdicts:
        return "unclear"
    if any(v is False for v in verdicts):
        return False
    if all(v is True for v in verdicts):
        return True
    return "unclear"


def _judged(parts: dict[str, Contrast | None]) -> tuple[bool | str, dict[str, Any]]:
    numbers = {k: (c.as_dict() | {"verdict": c.verdict()}) if c is not None else None for k, c in parts.items()}
    if any(c is None for c in parts.values()):
        return "unclear", numbers
    return combine([c.verdict() for c in parts.values() if c is not None]), numbers


def primary_arm(sc: StudyCases, rcfg: ReportConfig, sources: list[str], ratio: float) -> str | None:
    syn = [s for s in sources if s != NONE]
    name = rcfg.primary or ("diffusion_filtered" if "diffusion_filtered" in syn else (syn[-1] if syn else None))
    return arm_name(name, ratio) if name else None


def lessons(sc: StudyCases, rcfg: ReportConfig, sources: list[str], ratio: float,
            collapsed: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """The five lessons (module docstring), each {claim, reproduced, numbers, (missing)}.

    ``collapsed``: arm -> ids of its cells whose lesion output collapsed (:mod:`segmentation.health`).
    The verdicts are computed on every cell as it is; a lesson resting on such an arm carries
    ``collapsed_cells`` and a ``caveat``, since those cells measure a failed training."""
    out: dict[str, dict[str, Any]] = {}
    collapsed = collapsed or {}
    sizes = sc.sizes(NONE)
    small, large = (sizes[0], sizes[-1]) if len(sizes) >= 2 else (None, None)
    p = primary_arm(sc, rcfg, sources, ratio)

    def lesson(key: str, claim: str, parts: dict[str, Contrast | None], missing: str | None = None,
               **extra: Any) -> None:
        verdict, numbers = _judged(parts) if parts else ("unclear", {})
        out[key] = {"claim": claim, "reproduced": verdict, "numbers": numbers, **extra}
        if missing or not parts:
            out[key]["missing"] = missing or "not in the grid"

    def gain(n: int, split: str, coef: float = 1.0, arm: str | None = None) -> list[tuple[float, str, int, str]]:
        return [(coef, arm or p, n, split), (-coef, NONE, n, split)]

    # (a) more real data helps, ID and OOD
    if small is not None:
        lesson("a_more_real_data_helps", "more real data helps, ID and OOD (real only, largest minus smallest size)",
               {s: sc.contrast([(1.0, NONE, large, s), (-1.0, NONE, small, s)], "dsc") for s in SPLITS},
               sizes=[small, large], metric="dsc")
    else:
        lesson("a_more_real_data_helps", "more real data helps, ID and OOD", {}, "needs real only at two sizes")
    p_sizes = [n for n in sc.sizes(p) if n in sizes] if p else []
    # (b) synthetic data helps most at small sizes
    claim_b = "synthetic data helps most at small sizes (gain at the smallest size > 0 and > gain at the largest)"
    if p and len(p_sizes) >= 2:
        s0, s1 = p_sizes[0], p_sizes[-1]
        at_small = [t for s in SPLITS for t in gain(s0, s, 0.5)]
        lesson("b_synthetic_helps_most_at_small_sizes", claim_b,
               {"gain_at_smallest": sc.contrast(at_small, "dsc"),
                "gain_smallest_minus_largest": sc.contrast(at_small + [t for s in SPLITS for t in gain(s1, s, -0.5)],
                                                           "dsc")},
               source=p, sizes=[s0, s1], metric="dsc", splits="ID and OOD pooled (mean)")
    else:
        lesson("b_synthetic_helps_most_at_small_sizes", claim_b, {}, f"needs {p} and none at two sizes", source=p)
    # (c) the OOD gain exceeds the ID gain
    claim_c = "the OOD gain from synthetic data exceeds the ID gain (mean over sizes)"
    if p and p_sizes:
        k = 1.0 / len(p_sizes)
        terms = [t for n in p_sizes for t in gain(n, "ood", k) + gain(n, "id", -k)]
        lesson("c_ood_gain_exceeds_id_gain", claim_c, {"ood_minus_id_gain": sc.contrast(terms, "dsc")},
               source=p, sizes=p_sizes, metric="dsc")
    else:
        lesson("c_ood_gain_exceeds_id_gain", claim_c, {}, f"needs {p} and none", source=p)
    # (d) early-tumor sensitivity gains
    claim_d = "synthetic data raises early-tumor sensitivity (mean over sizes, ID and OOD)"
    if p and p_sizes:
        k = 0.5 / len(p_sizes)
        terms = [t for n in p_sizes for s in SPLITS for t in gain(n, s, k)]
        lesson("d_early_tumor_sensitivity_gains", claim_d, {"gain": sc.contrast(terms, "early_tumor_sensitivity")},
               source=p, sizes=p_sizes, metric="early_tumor_sensitivity")
    else:
        lesson("d_early_tumor_sensitivity_gains", claim_d, {}, f"needs {p} and none", source=p)
    # (e) filtered diffusion >= diffusion >= CA >= rules
    chain = [arm_name(s, ratio) for s in rcfg.order if s in sources]
    claim_e = " >= ".join(reversed(chain)) + " (DSC, mean over sizes, ID and OOD)" if chain else "source order"
    parts: dict[str, Contrast | None] = {}
    for lo, hi in zip(chain, chain[1:]):
        common = sorted(set(sc.sizes(lo)) & set(sc.sizes(hi)))
        if not common:
            parts[f"{hi} - {lo}"] = None
            continue
        k = 0.5 / len(common)
        parts[f"{hi} - {lo}"] = sc.contrast([t for n in common for s in SPLITS
                                             for t in ((k, hi, n, s), (-k, lo, n, s))], "dsc")
    missing = None if len(chain) == len(rcfg.order) else f"order {rcfg.order}: only {chain} in the grid"
    lesson("e_filtered_ge_diffusion_ge_ca_ge_rules", claim_e, parts, missing, order=chain, metric="dsc")
    arms = {"a_more_real_data_helps": [NONE], "b_synthetic_helps_most_at_small_sizes": [NONE, p],
            "c_ood_gain_exceeds_id_gain": [NONE, p], "d_early_tumor_sensitivity_gains": [NONE, p],
            "e_filtered_ge_diffusion_ge_ca_ge_rules": chain}
    for key, used in arms.items():
        hit = {a: sorted(collapsed[a]) for a in used if a in collapsed}
        if hit:
            out[key]["collapsed_cells"] = hit
            out[key]["caveat"] = ("the lesion output collapsed in " + "; ".join(
                f"{len(ids)} cell{'s' if len(ids) > 1 else ''} of {a}" for a, ids in hit.items())
                + ": those cells never predict a lesion, not even on their own training tumors (a failed training, "
                "not the source's effect); the verdict includes them")
    return out


def report_config(out: str | Path) -> ReportConfig:
    """The study's report settings from its recorded config (defaults when there is none)."""
    path = Path(out) / RECORD
    return _record(path).report if path.exists() else ReportConfig()


def study_sources(out: str | Path, results: list[dict[str, Any]]) -> tuple[list[str], float]:
    """The grid's sources (config order when recorded) and the lessons' ratio."""
    path = Path(out) / RECORD
    found = sorted({r["source"] for r in results})
    ratios = sorted({float(r["ratio"]) for r in results if r["source"] != NONE}) or [0.0]
    if path.exists():
        cfg = _record(path)
        order = [s for s in cfg.grid.sources if s in found] + [s for s in found if s not in cfg.grid.sources]
        ratio = cfg.report.ratio if cfg.report.ratio is not None else max(cfg.grid.ratios)
        return order, float(ratio)
    return found, float(ratios[-1])


def _record(path: Path) -> ScalingConfig:
    """The recorded config, read without the run-time checks (a published study has no model folders)."""
    return load_config(ScalingConfig, path)


def read_cells(out: str | Path) -> list[dict[str, Any]]:
    return [read_json(p) for p in sorted(Path(out).glob("cells/*/cell.json"))]
