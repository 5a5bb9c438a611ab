"""Small pure metrics for the filter: rank AUC and ROC curve (no sklearn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def auc(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties count 1/2.

    Mann-Whitney U / (n_pos * n_neg) from mid-ranks. NaN when a class is empty.
    """
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def roc_curve(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds decreasing; starts at (0, 0)."""
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    thr = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.array([0.0] + [(pos >= t).mean() if pos.size else np.nan for t in thr])
    fpr = np.array([0.0] + [(neg >= t).mean() if neg.size else np.nan for t in thr])
    return fpr, tpr, np.concatenate([[np.inf], thr])
