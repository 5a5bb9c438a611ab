"""Draft calibration: what a model does to a drafted tumor, measured on its own samples and undone.

Partial denoising from a draft (:mod:`generative.diffusion.draft`) keeps most of what the draft was
drawn with, but not all: the last denoising steps blur the boundary, so the ring just inside a dark
homogeneous tumor takes some of the brighter organ around it (its rim comes out a few HU above the one
asked), a strong rim comes out weaker, and the tumor's mean moves a little towards the organ. The bias
is systematic, so it can be measured and undone: sample a cohort with the model, read for every tumor
the attributes its draft was drawn with and the ones its output measures (both are in the cohort's
provenance), and keep, per tumor, the residual (measured minus drafted). At sampling, a tumor asked
for attributes ``a`` is drafted with ``a - b(a)``, where ``b(a)`` is the median residual of the ``k``
calibration tumors nearest to ``a`` in (contrast / 30 HU, rim / 20 HU, ln diameter).

Why neighbours and not a fitted line: the bias is not linear in the attributes. A dark homogeneous
tumor's rim is lifted by ~4 HU while a rim-enhancing one's is lowered by ~10, so one slope fits
neither (on the phantom benchmark's 94 tumors, a linear fit on contrast, rim and contrast / diameter left
the rims under 10 HU 1.3 HU high in leave-one-out, the neighbours 0.3 low); a few tumors whose rim cannot
be drawn at all (a 50 HU rim in a 9 mm tumor) are outliers a median ignores. Leave-one-out median
|measured - asked| on those tumors, uncorrected -> corrected: contrast 2.2 -> 1.9 HU (a linear fit 2.6),
rim 7.3 -> 4.4 HU (linear 5.0). :attr:`DraftCalibration.summary` records the same check for every
calibration.

The calibration belongs to one model (it records the pipeline hash and refuses another) and is made
from synthetic samples only: no real tumor enters it, so judging the calibrated sampler against
held-out real tumors stays fair. ``tumorgen generator calibrate`` makes it;
``inpaint.draft_calibration`` applies it; provenance records the drafted attributes beside the asked
and the measured ones. The ControlNet is still conditioned on the asked attributes; only the draft changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cohort.errors import BatchReport, CohortError
from cohort.io import read_json, write_json

VERSION = 2
#: the attributes a calibration corrects
ATTRIBUTES: tuple[str, ...] = ("contrast_hu", "rim_hu")
#: the neighbourhood metric: HU that count as one unit per attribute, and the weight of ln(diameter)
SCALES: dict[str, float] = {"contrast_hu": 30.0, "rim_hu": 20.0}
LOG_DIAMETER_WEIGHT = 1.0
K = 12
#: the most a draft attribute may move from the asked value (HU), whatever the neighbours say
MAX_CHANGE_HU = 40.0
#: below this correlation of drafted and measured values the samples do not follow their drafts
MIN_CORRELATION = 0.5


def _finite(v) -> bool:
    return v is not None and bool(np.isfinite(v))


def _point(x: dict[str, float], diameter_mm: float) -> np.ndarray:
    """Where a tumor lies in the neighbourhood metric; an undefined attribute counts as 0, as in the draft."""
    return np.array([(float(v) if _finite(v := x.get(a)) else 0.0) / s for a, s in SCALES.items()]
                    + [LOG_DIAMETER_WEIGHT * np.log(max(float(diameter_mm), 1.0))])


@dataclass
class DraftCalibration:
    """The calibration tumors (drafted attributes, diameter, residual per attribute) and what they say."""

    model_hash: str
    tumors: list[dict] = field(default_factory=list)  # {"draft": {...}, "diameter_mm": d, "residual": {attr: v}}
    k: int = K
    attributes: tuple[str, ...] = ATTRIBUTES
    fitted_on: str = ""
    #: per attribute: n, bias and rms of measured - drafted, and the leave-one-out error of the correction
    summary: dict[str, dict] = field(default_factory=dict)
    version: int = VERSION

    def _bias(self, attr: str, x: dict[str, float], d: float, skip: int | None = None) -> float | None:
        """Median residual of ``attr`` over the k calibration tumors nearest to (x, d) that have one."""
        idx = [i for i, t in enumerate(self.tumors) if i != skip and _finite(t["residual"].get(attr))]
        if len(idx) < self.k:
            return None
        pts = np.stack([_point(self.tumors[i]["draft"], self.tumors[i]["diameter_mm"]) for i in idx])
        dist = np.sqrt(((pts - _point(x, d)) ** 2).sum(1))
        near = np.argsort(dist, kind="stable")[: self.k]
        return float(np.median([self.tumors[idx[j]]["residual"][attr] for j in near]))

    def draft_values(self, asked: dict[str, float], diameter_mm: float) -> dict[str, float]:
        """The attributes to draw the draft with so that the output measures ``asked``: each corrected
        attribute moved by minus its expected residual there (:meth:`_bias` at the asked attributes),
        at most :data:`MAX_CHANGE_HU`; attributes not calibrated or not finite stay as asked."""
        out = {k: float(v) for k, v in asked.items()}
        for attr in self.attributes:
            if attr not in out or not np.isfinite(out[attr]):
                continue
            b = self._bias(attr, asked, diameter_mm)
            if b is not None:
                out[attr] = float(asked[attr] - np.clip(b, -MAX_CHANGE_HU, MAX_CHANGE_HU))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "model_hash": self.model_hash, "fitted_on": self.fitted_on, "k": self.k,
                "attributes": list(self.attributes), "scales": SCALES, "log_diameter_weight": LOG_DIAMETER_WEIGHT,
                "summary": self.summary, "tumors": self.tumors}

    def write(self, path: str | Path) -> Path:
        write_json(path, self.as_dict())
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> DraftCalibration:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"{p}: draft calibration not found (make one with `tumorgen generator calibrate`)")
        try:
            d = read_json(p)
        except CohortError as e:
            raise ValueError(str(e)) from None
        if not isinstance(d, dict) or d.get("version") != VERSION or not isinstance(d.get("tumors"), list):
            raise ValueError(f"{p}: not a draft calibration of version {VERSION} (`tumorgen generator calibrate` writes one)")
        if d.get("scales") != SCALES or d.get("log_diameter_weight") != LOG_DIAMETER_WEIGHT:
            raise ValueError(f"{p}: made with another neighbourhood metric ({d.get('scales')}); calibrate again")
        if bad := [a for a in d.get("attributes", []) if a not in ATTRIBUTES]:
            raise ValueError(f"{p}: unknown attribute(s) {bad} (calibrated ones: {list(ATTRIBUTES)})")
        for i, t in enumerate(d["tumors"]):
            if not (isinstance(t, dict) and isinstance(t.get("draft"), dict) and isinstance(t.get("residual"), dict)
                    and isinstance(t.get("diameter_mm"), (int, float))):
                raise ValueError(f"{p}: calibration tumor {i} is malformed (needs draft, diameter_mm, residual)")
        return cls(model_hash=str(d.get("model_hash", "")), tumors=d["tumors"], k=int(d.get("k", K)),
                   attributes=tuple(d.get("attributes", ATTRIBUTES)), fitted_on=str(d.get("fitted_on", "")),
                   summary=d.get("summary", {}))


def calibration_rows(records: list[dict]) -> list[dict]:
    """From a synthetic cohort's tumor records (case.json "tumors"), per tumor: the attributes its draft was
    drawn with ("draft" in its appearance provenance, else what was requested), the measured ones, and the
    diameter. Records without an appearance provenance are skipped."""
    rows = []
    for r in records:
        app = r.get("appearance") if isinstance(r, dict) else None
        if not isinstance(app, dict) or "measured" not in app:
            continue
        drafted = app.get("draft") or app.get("requested")
        d = r.get("max_axial_diameter_mm")
        if not isinstance(drafted, dict) or d is None:
            continue
        rows.append({"draft": {k: float(v) for k, v in drafted.items()},
                     "measured": {k: float(v) for k, v in app["measured"].items()}, "diameter_mm": float(d)})
    return rows


def fit_calibration(rows: list[dict], model_hash: str, attributes=ATTRIBUTES, k: int = K,
                    fitted_on: str = "") -> DraftCalibration:
    """A calibration from :func:`calibration_rows` output: the tumors with finite drafted contrast and rim and a
    diameter, each with its residual per attribute (NaN where the output's value is undefined, e.g. the rim of
    a tumor too thin for a core). The summary holds, per attribute, the raw bias and the leave-one-out error of
    the correction. Raises ValueError for an unknown attribute, fewer than 2k usable tumors, or samples whose
    measured values do not follow their drafts (correlation under :data:`MIN_CORRELATION`)."""
    if bad := [a for a in attributes if a not in ATTRIBUTES]:
        raise ValueError(f"draft calibration: unknown attribute(s) {bad}; calibrated ones: {list(ATTRIBUTES)}")
    if k < 1:
        raise ValueError(f"draft calibration: k must be >= 1, got {k}")
    tumors = []
    for r in rows:
        if not all(np.isfinite(r["draft"].get(a, np.nan)) for a in SCALES) or not r["diameter_mm"] > 0:
            continue
        tumors.append({"draft": {a: round(r["draft"][a], 3) for a in SCALES}, "diameter_mm": round(r["diameter_mm"], 3),
                       "residual": {a: (round(v, 3) if np.isfinite(v := r["measured"].get(a, np.nan) - r["draft"][a])
                                        else None) for a in attributes}})  # None: undefined (JSON has no NaN)
    cal = DraftCalibration(model_hash=model_hash, tumors=tumors, k=k, attributes=tuple(attributes), fitted_on=fitted_on)
    for a in attributes:
        ok = [i for i, t in enumerate(tumors) if _finite(t["residual"][a])]
        if len(ok) < 2 * k:
            raise ValueError(f"draft calibration: {len(ok)} tumors with a finite {a} (drafted and measured); need at "
                             f"least {2 * k} (2 k): sample a larger cohort")
        x = np.array([tumors[i]["draft"][a] for i in ok])
        res = np.array([tumors[i]["residual"][a] for i in ok])
        if x.std() > 0 and np.corrcoef(x, x + res)[0, 1] < MIN_CORRELATION:
            raise ValueError(f"draft calibration: the measured {a} hardly follows the drafted one (correlation "
                             f"{np.corrcoef(x, x + res)[0, 1]:.2f} < {MIN_CORRELATION}): the samples ignore their drafts")
        loo = np.array([res[j] - (cal._bias(a, tumors[i]["draft"], tumors[i]["diameter_mm"], skip=i) or 0.0)
                        for j, i in enumerate(ok)])
        cal.summary[a] = {"n": len(ok), "bias_before": round(float(res.mean()), 3),
                          "rmse_before": round(float(np.sqrt((res ** 2).mean())), 3),
                          "median_abs_before": round(float(np.median(np.abs(res))), 3),
                          "loo_bias_after": round(float(loo.mean()), 3),
                          "loo_median_abs_after": round(float(np.median(np.abs(loo))), 3)}
    return cal


def calibrate_cohort(cohort: str | Path, model_hash: str, attributes=ATTRIBUTES, k: int = K,
                     report: BatchReport | None = None) -> DraftCalibration:
    """:func:`fit_calibration` on every tumor of a synthetic cohort's sidecars (no volume is read). Cases whose
    sidecar cannot be read go into ``report``. A sample made by another model (its records' model_hash) is an
    error: the calibration would describe that model, not this one."""
    from cohort.layouts import open_cohort
    from cohort.layouts.base import read_sidecar

    report = report if report is not None else BatchReport()
    records, others = [], set()
    for ref in open_cohort(cohort):
        try:
            meta = read_sidecar(ref.sidecar)
        except (CohortError, OSError) as e:
            report.fail(ref.case_id, e)
            continue
        for r in meta.get("tumors") or []:
            if isinstance(r, dict) and r.get("model_hash") and model_hash and r["model_hash"] != model_hash:
                others.add(ref.case_id)
                continue
            records.append(r)
    if others:
        raise ValueError(f"{cohort}: {len(others)} case(s) were sampled by another model than this one "
                         f"(e.g. {sorted(others)[0]}): calibrate on samples of the model it is for")
    return fit_calibration(calibration_rows(records), model_hash, attributes, k, fitted_on=str(cohort))
