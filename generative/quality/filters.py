"""Quality filters behind one interface, and their composition.

Every filter returns a :class:`FilterVerdict` per case: accepted or not, a
case-level number, a reason per decision and a verdict per tumor. Filters
compose: a case passes only when every filter accepts it.

- :class:`FreeTumorGate`: FreeTumor's released code keeps a synthetic tumor
  only if a segmentor trained on real tumors finds it (Luffy03/FreeTumor);
  here a tumor passes when the segmentor labels at least
  ``min_detected_fraction`` (default 70 %) of its voxels as lesion.
  The segmentor is any callable ``predict(ct_hu (X, Y, Z), spacing mm) ->
  label map (integer, vocabulary) or lesion probability map (float, [0, 1])``.
- :class:`HUCheck`: MAISI's quality check (Project-MONAI MAISI
  ``scripts/quality_check.py``) flags a generated CT whose per-organ median
  HU falls outside [min(mean - 3 sd, p0.5), max(mean + 3 sd, p99.5)] of real
  cases' medians. Bounds are learned here from real cases, for organs and,
  per tumor component, for lesion classes (a tumor's voxels carry the lesion
  label, so organ medians alone would never see a wrong-HU tumor).
- The discriminator is scored in :mod:`generative.quality.apply` and decided
  by a policy (:mod:`generative.quality.policies`); it returns the same
  verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cohort import labels as L
from cohort.case import Case
from cohort.config import bounded
from generative.quality.crops import TumorInfo

#: duck-typed segmentor: (ct HU (X, Y, Z), spacing mm) -> label map or lesion probability map (X, Y, Z)
Segmentor = Callable[[np.ndarray, tuple[float, float, float]], np.ndarray]


@dataclass
class TumorVerdict:
    """One filter's verdict on one tumor. ``value``: the number it judged (P(real), fraction found, HU)."""

    index: int
    accepted: bool
    value: float | None
    reason: str


@dataclass
class FilterVerdict:
    """One filter's verdict on one case."""

    filter: str
    accepted: bool
    score: float | None
    reasons: list[str]
    tumors: list[TumorVerdict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FilterVerdict:
        return FilterVerdict(d["filter"], bool(d["accepted"]), d.get("score"), list(d.get("reasons", [])),
                             [TumorVerdict(**t) for t in d.get("tumors", [])])


def compose(verdicts: Sequence[FilterVerdict]) -> tuple[bool, list[str]]:
    """All filters must accept. Returns (accepted, reasons prefixed with the filter's name)."""
    accepted = all(v.accepted for v in verdicts)
    reasons = [f"{v.filter}: {r}" for v in verdicts for r in v.reasons]
    return accepted, reasons


# ------------------------------------------------------------------ FreeTumor gate
@dataclass
class FreeTumorConfig:
    """FreeTumor-style gate. A tumor passes when the segmentor finds >= ``min_detected_fraction`` of it."""

    min_detected_fraction: float = 0.7
    #: probability maps are binarised at this value
    prob_threshold: float = 0.5
    #: count only the tumor's own lesion class as found (False: any lesion class)
    same_class: bool = False


def lesion_prediction(pred: np.ndarray, prob_threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(any-lesion mask, label map or None) from a segmentor's output."""
    pred = np.asarray(pred)
    if pred.dtype == bool:
        return pred, None
    if np.issubdtype(pred.dtype, np.floating):
        return pred >= prob_threshold, None
    return np.isin(pred, L.LESION_LABELS), pred


class FreeTumorGate:
    """Keep a synthetic tumor only when a segmentor trained on real data finds it."""

    name = "freetumor"

    def __init__(self, segmentor: Segmentor, config: FreeTumorConfig | None = None):
        self.segmentor = segmentor
        self.config = config or FreeTumorConfig()

    def judge(self, case: Case, tumors: Sequence[tuple[TumorInfo, np.ndarray]]) -> FilterVerdict:
        """Run the segmentor once on the case; check each tumor's detected fraction."""
        cfg = self.config
        if not tumors:
            return FilterVerdict(self.name, True, None, ["no tumor: nothing to gate"])
        pred = np.asarray(self.segmentor(case.ct, case.spacing))
        if pred.shape != case.ct.shape:
            raise ValueError(f"segmentor returned shape {pred.shape} for case {case.case_id} of shape {case.ct.shape}")
        found_any, lab = lesion_prediction(pred, cfg.prob_threshold)
        verdicts = []
        for info, mask in tumors:
            found = (lab == info.label) if (cfg.same_class and lab is not None) else found_any
            frac = float((found & mask).sum()) / max(int(mask.sum()), 1)
            ok = frac >= cfg.min_detected_fraction
            verdicts.append(TumorVerdict(info.index, ok, round(frac, 4),
                                         f"tumor {info.index} ({info.lesion}, {info.diameter_mm:.0f} mm): segmentor found "
                                         f"{frac:.0%} of its voxels {'>=' if ok else '<'} {cfg.min_detected_fraction:.0%}"))
        worst = min(v.value for v in verdicts)
        accepted = all(v.accepted for v in verdicts)
        reasons = [v.reason for v in verdicts if not v.accepted] or [
            f"segmentor found >= {cfg.min_detected_fraction:.0%} of every tumor (worst {worst:.0%})"]
        return FilterVerdict(self.name, accepted, worst, reasons, verdicts)


# ------------------------------------------------------------------ MAISI-style HU check
@dataclass
class HUCheckConfig:
    """Bounds on per-organ median HU learned from real cases (MAISI quality_check)."""

    sigma: float = bounded(3.0, gt=0)
    percentile_low: float = bounded(0.5, ge=0, le=100)
    percentile_high: float = bounded(99.5, ge=0, le=100)
    #: widen every bound by this much (HU): a handful of phantom cases gives too tight a spread
    margin_hu: float = bounded(15.0, ge=0)
    #: organs (and tumors) with fewer voxels are not checked: their median is noise
    min_voxels: int = bounded(20, ge=0)
    #: also bound each tumor component's median HU by its lesion class's real tumors
    include_lesions: bool = True


@dataclass
class HUBound:
    """Bounds on one structure's median HU (HU), from ``n`` real medians."""

    low: float
    high: float
    mean: float
    std: float
    n: int


def _median_hu(ct: np.ndarray, mask: np.ndarray) -> float:
    return float(np.median(ct[mask]))


def structure_medians(case: Case, config: HUCheckConfig, tumors: Sequence[tuple[TumorInfo, np.ndarray]] = ()
                      ) -> tuple[dict[str, float], list[tuple[TumorInfo, float]]]:
    """Per-organ median HU (organs with >= min_voxels voxels) and each tumor's median HU."""
    organs: dict[str, float] = {}
    counts = np.bincount(case.label.ravel().astype(np.int64), minlength=L.NUM_CLASSES)
    for idx in range(1, 27):
        if idx < counts.size and counts[idx] >= config.min_voxels:
            organs[L.INDEX_TO_NAME[idx]] = _median_hu(case.ct, case.label == idx)
    lesions = [(info, _median_hu(case.ct, mask)) for info, mask in tumors if int(mask.sum()) >= config.min_voxels]
    return organs, lesions


def fit_hu_bounds(medians: dict[str, Sequence[float]], config: HUCheckConfig) -> dict[str, HUBound]:
    """Bounds per structure from real medians: [min(mean - k sd, p_low), max(mean + k sd, p_high)] -+ margin."""
    out = {}
    for name, vals in medians.items():
        v = np.asarray(vals, dtype=np.float64)
        if v.size == 0:
            continue
        mean, std = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
        lo = min(mean - config.sigma * std, float(np.percentile(v, config.percentile_low))) - config.margin_hu
        hi = max(mean + config.sigma * std, float(np.percentile(v, config.percentile_high))) + config.margin_hu
        out[name] = HUBound(round(lo, 2), round(hi, 2), round(mean, 2), round(std, 2), int(v.size))
    return out


def collect_real_medians(cases: Iterable[tuple[Case, Sequence[tuple[TumorInfo, np.ndarray]]]],
                         config: HUCheckConfig) -> dict[str, list[float]]:
    """Medians per structure over real cases; tumors pooled per lesion class."""
    acc: dict[str, list[float]] = {}
    for case, tumors in cases:
        organs, lesions = structure_medians(case, config, tumors if config.include_lesions else ())
        for k, v in organs.items():
            acc.setdefault(k, []).append(v)
        for info, v in lesions:
            acc.setdefault(info.lesion, []).append(v)
    return acc


class HUCheck:
    """Reject a case whose organ (or tumor) median HU leaves the range seen in real cases."""

    name = "hu_check"

    def __init__(self, bounds: dict[str, HUBound], config: HUCheckConfig | None = None):
        self.bounds = bounds
        self.config = config or HUCheckConfig()

    @staticmethod
    def bounds_to_json(bounds: dict[str, HUBound]) -> dict[str, dict[str, float]]:
        return {k: asdict(v) for k, v in sorted(bounds.items())}

    @staticmethod
    def bounds_from_json(d: dict[str, dict[str, float]]) -> dict[str, HUBound]:
        return {k: HUBound(**v) for k, v in d.items()}

    def _check(self, name: str, median: float) -> tuple[bool, float, str] | None:
        b = self.bounds.get(name)
        if b is None:
            return None
        ok = b.low <= median <= b.high
        z = abs(median - b.mean) / b.std if b.std > 0 else (0.0 if ok else 999.0)
        where = "inside" if ok else ("below" if median < b.low else "above")
        return ok, z, f"{name} median {median:.0f} HU {where} real range [{b.low:.0f}, {b.high:.0f}] HU (n={b.n})"

    def judge(self, case: Case, tumors: Sequence[tuple[TumorInfo, np.ndarray]]) -> FilterVerdict:
        organs, lesions = structure_medians(case, self.config, tumors if self.config.include_lesions else ())
        failures, zs = [], []
        for name, med in organs.items():
            r = self._check(name, med)
            if r is not None:
                zs.append(r[1])
                if not r[0]:
                    failures.append(r[2])
        verdicts = []
        for info, med in lesions:
            r = self._check(info.lesion, med)
            if r is None:
                verdicts.append(TumorVerdict(info.index, True, round(med, 1),
                                             f"tumor {info.index}: no real {info.lesion} to compare with"))
                continue
            zs.append(r[1])
            verdicts.append(TumorVerdict(info.index, r[0], round(med, 1), f"tumor {info.index}: {r[2]}"))
            if not r[0]:
                failures.append(f"tumor {info.index}: {r[2]}")
        worst = round(float(max(zs)), 3) if zs else None
        if failures:
            return FilterVerdict(self.name, False, worst, failures, verdicts)
        checked = len(organs) + len(lesions)
        return FilterVerdict(self.name, True, worst,
                             [f"{checked} organ/tumor median HU values inside real ranges (worst |z| {worst})"
                              if worst is not None else "no structure with learned bounds to check"], verdicts)
