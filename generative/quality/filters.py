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
  ``mode: relative`` (the default) follows the scan's contrast phase: a tumor
  is judged by its contrast to its own organ in the same scan (tumor median
  minus organ median, HU) and by its texture relative to that organ (robust
  sd difference, HU); organ medians only get the phase-tolerant bounds (real
  range widened by ``phase_margin_hu``). ``mode: absolute`` is MAISI's rule
  on absolute medians, which rejects a site whose contrast phase differs
  from the real cases'.
- The discriminator is scored in :mod:`generative.quality.apply` and decided
  by a policy (:mod:`generative.quality.policies`); it returns the same
  verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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
    #: False: the filter abstains (e.g. a FreeTumor gate whose segmentor cannot see tumors); ``reasons`` say why
    voting: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FilterVerdict:
        return FilterVerdict(d["filter"], bool(d["accepted"]), d.get("score"), list(d.get("reasons", [])),
                             [TumorVerdict(**t) for t in d.get("tumors", [])], bool(d.get("voting", True)))


def compose(verdicts: Sequence[FilterVerdict]) -> tuple[bool, list[str]]:
    """Every voting filter must accept; an abstaining one (``voting`` False) does not count either way.

    Returns (accepted, reasons prefixed with the filter's name; an abstainer's as "not voting").
    """
    accepted = all(v.accepted for v in verdicts if v.voting)
    reasons = [f"{v.filter}: {r}" if v.voting or r.startswith("not voting") else f"{v.filter}: not voting: {r}"
               for v in verdicts for r in v.reasons]
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
    #: the gate votes only when its segmentor found (>= min_detected_fraction of) at least this fraction of
    #: held-out real tumors; below it, or when never measured, the gate abstains with the reason
    min_sensitivity: float = bounded(0.5, ge=0, le=1)
    #: held-out real tumor cohort on which the sensitivity is measured once, when the gate is built
    #: (``--gate-validation`` on the command line wins); None: the gate abstains unless given a sensitivity
    validation_cohort: str | None = None
    #: at most this many tumor cases of the validation cohort are segmented (cost: one segmentor run each)
    validation_cases: int = bounded(8, ge=1)


def lesion_prediction(pred: np.ndarray, prob_threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(any-lesion mask, label map or None) from a segmentor's output."""
    pred = np.asarray(pred)
    if pred.dtype == bool:
        return pred, None
    if np.issubdtype(pred.dtype, np.floating):
        return pred >= prob_threshold, None
    return np.isin(pred, L.LESION_LABELS), pred


@dataclass
class GateValidation:
    """The segmentor's tumor sensitivity on held-out real tumors: ``detected`` of ``n`` found.

    A tumor counts as detected when the segmentor labels >= min_detected_fraction of its voxels
    (the same rule the gate applies to synthetic tumors). ``source``: where it was measured.
    """

    sensitivity: float | None
    n: int
    detected: int
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FreeTumorGate:
    """Keep a synthetic tumor only when a segmentor trained on real data finds it.

    The gate votes only when its segmentor has shown it can see real tumors: ``validation``
    (a measured :class:`GateValidation`, e.g. from :meth:`measure` on held-out real cases, or read
    from a segmentation run's evaluation) must reach ``config.min_sensitivity``. Otherwise every
    verdict is "not voting" with the reason, and :func:`compose` ignores it: a blind segmentor
    would otherwise reject every tumor.
    """

    name = "freetumor"

    def __init__(self, segmentor: Segmentor, config: FreeTumorConfig | None = None,
                 validation: GateValidation | None = None):
        self.segmentor = segmentor
        self.config = config or FreeTumorConfig()
        self.validation = validation

    @property
    def voting(self) -> bool:
        v = self.validation
        return v is not None and v.sensitivity is not None and v.sensitivity >= self.config.min_sensitivity

    @property
    def status(self) -> str:
        """Why the gate votes or not, in words."""
        v, need = self.validation, self.config.min_sensitivity
        if v is None:
            return ("not voting: the segmentor's tumor sensitivity was never validated (give held-out real tumors: "
                    "freetumor.validation_cohort or --gate-validation COHORT)")
        if v.sensitivity is None:
            return f"not voting: no held-out real tumor to validate the segmentor on ({v.source})"
        word = "voting" if self.voting else "not voting"
        rel = ">=" if self.voting else "<"
        return (f"{word}: segmentor found {v.detected} of {v.n} held-out real tumors (sensitivity "
                f"{v.sensitivity:.0%} {rel} {need:.0%}; {v.source})")

    def detected_fractions(self, case: Case, tumors: Sequence[tuple[TumorInfo, np.ndarray]]) -> list[float]:
        """Run the segmentor once on ``case``: the fraction of each tumor's voxels it labels as lesion."""
        cfg = self.config
        pred = np.asarray(self.segmentor(case.ct, case.spacing))
        if pred.shape != case.ct.shape:
            raise ValueError(f"segmentor returned shape {pred.shape} for case {case.case_id} of shape {case.ct.shape}")
        found_any, lab = lesion_prediction(pred, cfg.prob_threshold)
        out = []
        for info, mask in tumors:
            found = (lab == info.label) if (cfg.same_class and lab is not None) else found_any
            out.append(float((found & mask).sum()) / max(int(mask.sum()), 1))
        return out

    def measure(self, cases: Iterable[tuple[Case, Sequence[tuple[TumorInfo, np.ndarray]]]],
                source: str = "held-out real cases") -> GateValidation:
        """Measure (and keep) the segmentor's sensitivity on real tumor cases: (case, its tumors) pairs."""
        n = det = 0
        for case, tumors in cases:
            if not tumors:
                continue
            fr = self.detected_fractions(case, tumors)
            n += len(fr)
            det += sum(f >= self.config.min_detected_fraction for f in fr)
        self.validation = GateValidation(round(det / n, 4) if n else None, n, det, source)
        return self.validation

    def judge(self, case: Case, tumors: Sequence[tuple[TumorInfo, np.ndarray]]) -> FilterVerdict:
        """Run the segmentor once on the case; check each tumor's detected fraction (or abstain)."""
        cfg = self.config
        if not self.voting:
            return FilterVerdict(self.name, True, None, [self.status], voting=False)
        if not tumors:
            return FilterVerdict(self.name, True, None, ["no tumor: nothing to gate"])
        verdicts = []
        for (info, _mask), frac in zip(tumors, self.detected_fractions(case, tumors)):
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
    #: relative: tumors judged against their own organ in the same scan (contrast phase followed), organs
    #: with phase-tolerant bounds; absolute: MAISI's absolute medians (site-specific)
    mode: Literal["relative", "absolute"] = "relative"
    #: relative mode: organ median bounds widened by this much (HU), so another contrast phase passes (the
    #: phantom sites' largest phase-to-phase change is the aorta's 130 HU) while a gross error does not
    phase_margin_hu: float = bounded(150.0, ge=0)
    #: relative mode: margin (HU) on the tumor-minus-organ texture bounds (robust sd difference)
    texture_margin_hu: float = bounded(4.0, ge=0)
    #: a statistic learned from fewer real values than this is not checked (its spread is unknown)
    min_real: int = bounded(5, ge=1)


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


def _robust_sd(vals: np.ndarray) -> float:
    """IQR / 1.349: the sd of a Gaussian with that IQR, blind to a few outlier voxels (HU)."""
    q1, q3 = np.percentile(vals, [25, 75])
    return float(q3 - q1) / 1.349


#: keys of the relative statistics in the bounds: "<lesion>/contrast" and "<lesion>/texture"
CONTRAST, TEXTURE = "contrast", "texture"


@dataclass
class TumorHU:
    """One tumor's HU numbers: its median, and relative to its own organ in the same scan (HU).

    contrast: tumor median - organ median; texture: tumor robust sd - organ robust sd.
    Both None when the organ has too few voxels to compare with.
    """

    info: TumorInfo
    median: float
    contrast: float | None
    texture: float | None


def _organ_stats(case: Case, organ: str, lesions: np.ndarray, min_voxels: int) -> tuple[float, float] | None:
    """(median, robust sd) of an organ type's voxels without its lesions, or None if too small."""
    m = np.isin(case.label, L.organ_indices(organ)) & ~lesions
    if int(m.sum()) < max(min_voxels, 1):
        return None
    v = case.ct[m]
    return float(np.median(v)), _robust_sd(v)


def tumor_hu(case: Case, config: HUCheckConfig, tumors: Sequence[tuple[TumorInfo, np.ndarray]]) -> list[TumorHU]:
    """Every tumor with >= min_voxels voxels: median HU and its contrast / texture against its organ."""
    lesions = np.isin(case.label, L.LESION_LABELS)
    organ_cache: dict[str, tuple[float, float] | None] = {}
    out = []
    for info, mask in tumors:
        if int(mask.sum()) < config.min_voxels:
            continue
        v = case.ct[mask]
        if info.organ not in organ_cache:
            organ_cache[info.organ] = _organ_stats(case, info.organ, lesions, config.min_voxels)
        org = organ_cache[info.organ]
        med = float(np.median(v))
        out.append(TumorHU(info, med, None if org is None else med - org[0],
                           None if org is None else _robust_sd(v) - org[1]))
    return out


def structure_medians(case: Case, config: HUCheckConfig, tumors: Sequence[tuple[TumorInfo, np.ndarray]] = ()
                      ) -> tuple[dict[str, float], list[tuple[TumorInfo, float]]]:
    """Per-organ median HU (organs with >= min_voxels voxels) and each tumor's median HU."""
    organs: dict[str, float] = {}
    counts = np.bincount(case.label.ravel().astype(np.int64), minlength=L.NUM_CLASSES)
    for idx in range(1, 27):
        if idx < counts.size and counts[idx] >= config.min_voxels:
            organs[L.INDEX_TO_NAME[idx]] = _median_hu(case.ct, case.label == idx)
    lesions = [(t.info, t.median) for t in tumor_hu(case, config, tumors)]
    return organs, lesions


def fit_hu_bounds(medians: dict[str, Sequence[float]], config: HUCheckConfig) -> dict[str, HUBound]:
    """Bounds per statistic from real values: [min(mean - k sd, p_low), max(mean + k sd, p_high)] -+ margin.

    The margin is ``margin_hu``, or ``texture_margin_hu`` for the "<lesion>/texture" statistics.
    """
    out = {}
    for name, vals in medians.items():
        v = np.asarray(vals, dtype=np.float64)
        if v.size == 0:
            continue
        margin = config.texture_margin_hu if name.endswith("/" + TEXTURE) else config.margin_hu
        mean, std = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
        lo = min(mean - config.sigma * std, float(np.percentile(v, config.percentile_low))) - margin
        hi = max(mean + config.sigma * std, float(np.percentile(v, config.percentile_high))) + margin
        out[name] = HUBound(round(lo, 2), round(hi, 2), round(mean, 2), round(std, 2), int(v.size))
    return out


def collect_real_medians(cases: Iterable[tuple[Case, Sequence[tuple[TumorInfo, np.ndarray]]]],
                         config: HUCheckConfig) -> dict[str, list[float]]:
    """Real values per statistic: organ medians, tumor medians per lesion class and, per lesion class,
    the tumors' contrast ("<lesion>/contrast") and texture ("<lesion>/texture") against their organ.

    Both modes' statistics are collected, so one ``hu_bounds.json`` serves either ``mode``.
    """
    acc: dict[str, list[float]] = {}
    for case, tumors in cases:
        organs, _ = structure_medians(case, config, ())
        for k, v in organs.items():
            acc.setdefault(k, []).append(v)
        if not config.include_lesions:
            continue
        for t in tumor_hu(case, config, tumors):
            acc.setdefault(t.info.lesion, []).append(t.median)
            if t.contrast is not None:
                acc.setdefault(f"{t.info.lesion}/{CONTRAST}", []).append(t.contrast)
                acc.setdefault(f"{t.info.lesion}/{TEXTURE}", []).append(t.texture)
    return acc


class HUCheck:
    """Reject a case whose tumors (or organs) leave the HU range seen in real cases.

    ``mode`` relative (default): a tumor's contrast and texture against its own organ in the same
    scan, organs within phase-tolerant bounds; absolute: MAISI's absolute medians.
    """

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

    def _check(self, name: str, value: float, what: str = "median", widen: float = 0.0
               ) -> tuple[bool, float, str] | None:
        b = self.bounds.get(name)
        if b is None or b.n < self.config.min_real:
            return None
        lo, hi = b.low - widen, b.high + widen
        ok = lo <= value <= hi
        z = abs(value - b.mean) / b.std if b.std > 0 else (0.0 if ok else 999.0)
        where = "inside" if ok else ("below" if value < lo else "above")
        label = name.split("/")[0]
        more = f", phase margin {widen:.0f} HU" if widen else ""
        num = f"{value:.0f}" if what == "median" else f"{value:+.0f}"
        return ok, z, f"{label} {what} {num} HU {where} real range [{lo:.0f}, {hi:.0f}] HU (n={b.n}{more})"

    def _tumor_checks(self, t: TumorHU) -> list[tuple[bool, float, str]]:
        if self.config.mode == "absolute":
            r = self._check(t.info.lesion, t.median)
            return [] if r is None else [r]
        out = []
        if t.contrast is not None:
            for key, val, what in ((CONTRAST, t.contrast, "contrast to its organ"),
                                   (TEXTURE, t.texture, "texture (robust sd) minus its organ's")):
                r = self._check(f"{t.info.lesion}/{key}", val, what)
                if r is not None:
                    out.append(r)
        return out

    def judge(self, case: Case, tumors: Sequence[tuple[TumorInfo, np.ndarray]]) -> FilterVerdict:
        cfg = self.config
        organs, _ = structure_medians(case, cfg, ())
        widen = cfg.phase_margin_hu if cfg.mode == "relative" else 0.0
        failures, zs = [], []
        for name, med in organs.items():
            r = self._check(name, med, widen=widen)
            if r is not None:
                zs.append(0.0 if widen and r[0] else r[1])  # in relative mode a phase shift is no deviation
                if not r[0]:
                    failures.append(r[2])
        verdicts = []
        n_t = 0
        for t in (tumor_hu(case, cfg, tumors) if cfg.include_lesions else []):
            info = t.info
            checks = self._tumor_checks(t)
            if not checks:
                why = (f"no real {info.lesion} to compare with" if cfg.mode == "absolute" or t.contrast is not None
                       else f"no {info.organ} voxels to compare with")
                verdicts.append(TumorVerdict(info.index, True, round(t.median, 1), f"tumor {info.index}: {why}"))
                continue
            n_t += 1
            zs.extend(c[1] for c in checks)
            bad = [c[2] for c in checks if not c[0]]
            value = round(t.median if cfg.mode == "absolute" else t.contrast, 1)
            verdicts.append(TumorVerdict(info.index, not bad, value,
                                         f"tumor {info.index}: " + "; ".join(bad or [c[2] for c in checks])))
            failures.extend(f"tumor {info.index}: {b}" for b in bad)
        worst = round(float(max(zs)), 3) if zs else None
        if failures:
            return FilterVerdict(self.name, False, worst, failures, verdicts)
        checked = len(organs) + n_t
        what = ("organ medians (phase-tolerant) and tumor contrast/texture against their organ" if cfg.mode == "relative"
                else "organ/tumor median HU values")
        return FilterVerdict(self.name, True, worst,
                             [f"{checked} {what} inside real ranges (worst |z| {worst})"
                              if worst is not None else "no structure with learned bounds to check"], verdicts)
