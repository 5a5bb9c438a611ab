"""Bootstrap confidence intervals over cases, and the rank-based ROC AUC.

Cases are the resampling unit for every metric, lesion-level ones included
(a cluster bootstrap): lesions of one patient are not independent, so
resampling lesions would give intervals that are too narrow. All metrics of
one organ type share the same resampled index sets (paired), so their
intervals come from the same pseudo-cohorts.

Comparisons between training runs (the scaling study's sources) use
:func:`paired_bootstrap`: differences of ratio metrics over (seed, test case)
pairs, seeds and cases resampled jointly for every arm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class Summary:
    """One metric over a cohort: point value, percentile-bootstrap interval, and n.

    ``n`` counts the units the value is computed over (cases for DSC, NSD,
    patient-level metrics and AUC; lesions for tumor-level sensitivity).
    Any field may be NaN: no units (e.g. no GT-negative case for
    specificity) or every resample undefined.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict:
        return {k: clean_float(v) for k, v in asdict(self).items()}

    def format(self, digits: int = 3) -> str:
        """'0.812 [0.754, 0.861]' or 'n/a'."""
        if math.isnan(self.value):
            return "n/a"
        if math.isnan(self.ci_low):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


def clean_float(v):
    """NaN/inf -> None so JSON stays strict; other values unchanged."""
    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def bootstrap_indices(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_units) case indices drawn with replacement, reproducible from ``seed``."""
    if n_units == 0 or n_boot == 0:
        return np.zeros((n_boot, n_units), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


def ratio_summary(num: np.ndarray, den: np.ndarray, idx: np.ndarray, level: float = 0.95) -> Summary:
    """sum(num) / sum(den) over cases with its bootstrap interval.

    num, den: (N,) per-case numerators and denominators (e.g. detected and
    total lesions; or a case's DSC and 1 for a mean over the cases with
    den = 1). idx: (B, N) resampled case indices. Resamples with a zero
    denominator are left out of the interval.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    total = float(den.sum())
    value = float(num.sum()) / total if total > 0 else float("nan")
    if idx.size == 0:
        return Summary(value, float("nan"), float("nan"), int(round(total)))
    bn, bd = num[idx].sum(axis=1), den[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = np.where(bd > 0, bn / np.where(bd > 0, bd, 1.0), np.nan)
    lo, hi = _interval(stats, level)
    return Summary(value, lo, hi, int(round(total)))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (N,) for labels ``positive`` (N,) bool.

    The Mann-Whitney statistic: the probability that a random positive case
    scores above a random negative one, ties counting one half. It equals
    the trapezoidal area under the ROC traced by sweeping the threshold over
    every observed score. NaN when either class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc_summary(scores: np.ndarray, positive: np.ndarray, idx: np.ndarray, level: float = 0.95) -> Summary:
    """ROC AUC with its bootstrap interval; resamples lacking a class are left out. ``n`` = cases."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    value = roc_auc(scores, positive)
    if idx.size == 0 or math.isnan(value):
        return Summary(value, float("nan"), float("nan"), int(positive.size))
    s, p = scores[idx], positive[idx]
    ranks = rankdata(s, axis=1)
    n_pos = p.sum(axis=1).astype(np.float64)
    n_neg = p.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = ((ranks * p).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    stats[(n_pos == 0) | (n_neg == 0)] = np.nan
    lo, hi = _interval(stats, level)
    return Summary(value, lo, hi, int(positive.size))


# ----------------------------------------------------------------------------- paired, over cases and seeds


@dataclass(frozen=True)
class Term:
    """One arm of a contrast: ``coef`` times a ratio metric sum(num) / sum(den) over seeds and cases.

    num, den: (S, N) per (seed, test case) numerators and denominators, seeds in the order every
    term of the contrast shares, cases in the order every term on the same ``cases`` set shares
    (e.g. a case's DSC and 1 over tumor-positive cases; detected and total lesions).
    """

    coef: float
    num: np.ndarray
    den: np.ndarray
    cases: str = "id"


@dataclass(frozen=True)
class Contrast:
    """A linear contrast of ratio metrics (e.g. a difference between two arms) with its paired
    percentile-bootstrap interval; ``n_cases`` per case set, ``n_seeds`` shared by all terms."""

    value: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n_cases: dict

    def verdict(self) -> bool | str:
        """True when the interval lies above 0, False when below, else "unclear" (an interval
        touching or covering 0, or none at all, excludes neither side)."""
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            return "unclear"
        if self.ci_low > 0:
            return True
        if self.ci_high < 0:
            return False
        return "unclear"

    def as_dict(self) -> dict:
        return {"value": clean_float(self.value), "ci_low": clean_float(self.ci_low),
                "ci_high": clean_float(self.ci_high), "n_seeds": self.n_seeds, "n_cases": dict(self.n_cases)}


def _counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) how often each unit was drawn in each resample (with replacement)."""
    idx = rng.integers(0, n_units, size=(n_boot, n_units))
    w = np.zeros((n_boot, n_units))
    np.add.at(w, (np.repeat(np.arange(n_boot), n_units), idx.ravel()), 1.0)
    return w


def paired_bootstrap(terms: list[Term], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Contrast:
    """sum_t coef_t * metric_t, and its interval from a two-level paired bootstrap.

    Each resample draws the seeds with replacement (one draw shared by every term) and, for each
    case set, the test cases with replacement (one draw shared by every term on that set), so both
    arms of a difference are judged on the same pseudo-cohort of (seed, case) pairs: the case-to-case
    and seed-to-seed variation the arms share cancels. A resample where some term has a zero
    denominator is left out of the interval. Point value: every seed and case once.
    """
    if not terms:
        raise ValueError("paired_bootstrap needs at least one term")
    shapes = {t.num.shape[0] for t in terms} | {t.den.shape[0] for t in terms}
    if len(shapes) != 1:
        raise ValueError(f"every term needs the same seeds (got seed counts {sorted(shapes)})")
    n_seeds = shapes.pop()
    sets: dict[str, int] = {}
    for t in terms:
        if t.num.shape != t.den.shape or t.num.ndim != 2:
            raise ValueError(f"num and den must both be (seeds, cases), got {t.num.shape} and {t.den.shape}")
        if sets.setdefault(t.cases, t.num.shape[1]) != t.num.shape[1]:
            raise ValueError(f"case set {t.cases!r}: terms disagree on the number of cases")

    def value(ws: np.ndarray, wc: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(ws.shape[0])
        for t in terms:
            num = np.einsum("bs,sn,bn->b", ws, np.asarray(t.num, float), wc[t.cases])
            den = np.einsum("bs,sn,bn->b", ws, np.asarray(t.den, float), wc[t.cases])
            with np.errstate(invalid="ignore", divide="ignore"):
                total = total + t.coef * np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return total

    point = float(value(np.ones((1, n_seeds)), {k: np.ones((1, n)) for k, n in sets.items()})[0])
    if n_boot == 0 or n_seeds == 0 or 0 in sets.values():
        return Contrast(point, float("nan"), float("nan"), n_seeds, sets)
    rng = np.random.default_rng(seed)
    ws = _counts(n_seeds, n_boot, rng)
    wc = {k: _counts(sets[k], n_boot, rng) for k in sorted(sets)}
    lo, hi = _interval(value(ws, wc), level)
    return Contrast(point, lo, hi, n_seeds, sets)


def paired_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_boot: int = 2000,
                      seed: int = 0, level: float = 0.95) -> Contrast:
    """metric(a) - metric(b) for two arms evaluated on the same (seed, case) pairs; a, b: (num, den), (S, N) each."""
    return paired_bootstrap([Term(1.0, *a), Term(-1.0, *b)], n_boot, seed, level)
