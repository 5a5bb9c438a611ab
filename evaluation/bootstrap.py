"""Bootstrap confidence intervals over cases, and the rank-based ROC AUC.

Cases are the resampling unit for every metric, lesion-level ones included
(a cluster bootstrap): lesions of one patient are not independent, so
resampling lesions would give intervals that are too narrow. All metrics of
one organ type share the same resampled index sets (paired), so their
intervals come from the same pseudo-cohorts.
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
