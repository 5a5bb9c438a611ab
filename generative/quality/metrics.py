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


def auc_ci(pos_scores: Sequence[float], neg_scores: Sequence[float], n_boot: int = 1000, level: float = 0.95,
           seed: int = 0) -> tuple[float, float, float]:
    """(AUC, lower, upper): the percentile bootstrap CI, resampling each class with replacement.

    Tumors are resampled independently within their class (stratified), so each replicate keeps
    the class sizes. NaNs when a class is empty; a single tumor per class gives a degenerate interval.
    """
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    a = auc(pos, neg)
    if pos.size == 0 or neg.size == 0:
        return a, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # P(pos > neg) + 0.5 P(pos == neg) for every pair, then bootstrap by drawing rows and columns
    pair = (pos[:, None] > neg[None, :]).astype(np.float64) + 0.5 * (pos[:, None] == neg[None, :])
    vals = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, pos.size, pos.size)
        j = rng.integers(0, neg.size, neg.size)
        vals[b] = pair[np.ix_(i, j)].mean()
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return a, float(lo), float(hi)


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k / n; (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf((1 + level) / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _clean(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def auc_entry(pos: Sequence[float], neg: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict:
    """{"auc", "ci": [lo, hi], "n_real", "n_synthetic"}; None for numbers a class too small cannot give."""
    a, lo, hi = auc_ci(pos, neg, n_boot, seed=seed)
    return {"auc": _clean(a), "ci": [_clean(lo), _clean(hi)], "n_real": len(pos), "n_synthetic": len(neg)}


def auc_breakdown(tumors: Sequence[dict], n_boot: int = 1000, seed: int = 0,
                  early_bin: str = "early") -> dict:
    """Held-out AUC with 95 % bootstrap CIs: overall, per size class, per organ, per generator.

    tumors: dicts with "score" (P(real)), "kind" ("real" / "synthetic" / "probe"), "size_bin",
    "organ", and for negatives "source" (generator or "probe:<kind>"). Probes are left out of
    ``overall``, ``by_size`` and ``by_organ`` (they are broken copies of real tumors, not a
    generator) and get their own rows in ``by_generator``. Size classes: ``early`` (<= 20 mm)
    against ``larger`` (every other bin). Each generator is compared with every real tumor.
    """
    real = [t for t in tumors if t["kind"] == "real"]
    syn = [t for t in tumors if t["kind"] == "synthetic"]
    neg_all = [t for t in tumors if t["kind"] != "real"]

    def sc(rows):
        return [float(t["score"]) for t in rows]

    def size_cls(t):
        return "early" if t.get("size_bin") == early_bin else "larger"

    out: dict = {"overall": auc_entry(sc(real), sc(syn), n_boot, seed)}
    out["by_size"] = {c: auc_entry(sc([t for t in real if size_cls(t) == c]), sc([t for t in syn if size_cls(t) == c]),
                                   n_boot, seed) for c in ("early", "larger")}
    organs = sorted({t["organ"] for t in real + syn})
    out["by_organ"] = {o: auc_entry(sc([t for t in real if t["organ"] == o]), sc([t for t in syn if t["organ"] == o]),
                                    n_boot, seed) for o in organs}
    sources = sorted({str(t.get("source")) for t in neg_all})
    out["by_generator"] = {g: auc_entry(sc(real), sc([t for t in neg_all if str(t.get("source")) == g]), n_boot, seed)
                           for g in sources}
    return out


def alpha_check(calib_real: Sequence[float], check_real: Sequence[float], alphas: Sequence[float],
                negatives: dict[str, Sequence[float]] | None = None, level: float = 0.95) -> list[dict]:
    """Does the calibrated cutoff keep its promise? One row per alpha.

    cutoff = the calibrated policy's own cut of ``calib_real`` (:func:`generative.quality.policies.cutoff_for`,
    the split-conformal alpha cut); the false-reject rate is measured on ``check_real``, other real
    tumors, with a Wilson CI; ``holds``: the promise "at most alpha" is not refuted (the CI's lower
    bound is at most alpha); ``within_ci``: alpha lies inside the CI (the rate is alpha, not less). ``negatives``: {name: scores} whose rejection rate at the same cutoff
    is reported too (synthetic tumors, probes).
    """
    cal = np.asarray(calib_real, dtype=np.float64)
    chk = np.asarray(check_real, dtype=np.float64)
    rows = []
    for a in alphas:
        row: dict = {"alpha": float(a), "n_calibration": int(cal.size), "n_check": int(chk.size)}
        if cal.size == 0 or chk.size == 0:
            row.update({"cutoff": None, "false_reject": None, "ci": [None, None], "holds": None, "within_ci": None})
        else:
            from generative.quality.policies import PolicyConfig, cutoff_for

            cut = cutoff_for(PolicyConfig(kind="calibrated", alpha=float(a)), [], cal.tolist()).value
            k = int((chk < cut).sum())
            lo, hi = wilson_ci(k, int(chk.size), level)
            row.update({"cutoff": round(cut, 6), "false_reject": round(k / chk.size, 4), "n_rejected": k,
                        "ci": [round(lo, 4), round(hi, 4)], "holds": bool(lo <= a), "within_ci": bool(lo <= a <= hi)})
            for name, vals in (negatives or {}).items():
                v = np.asarray(vals, dtype=np.float64)
                row[f"rejected_{name}"] = round(float((v < cut).mean()), 4) if v.size else None
        rows.append(row)
    return rows
