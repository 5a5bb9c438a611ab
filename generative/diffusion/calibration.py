"""Draft calibration: what a model does to a drafted tumor, measured on its own samples and undone.

Partial denoising from a draft (:mod:`generative.diffusion.draft`) keeps most of what the draft was
drawn with, but not all: the last denoising steps blur the boundary, so the ring just inside a dark
tumor takes some of the brighter organ around it (its rim comes out above the one asked, by more the
smaller the tumor and the stronger its contrast), and the tumor's mean moves a little towards the
organ. The bias is systematic, so it can be measured and undone: sample a cohort with the model,
read for every tumor the attributes its draft was drawn with and the ones its output measures
(both are in the cohort's provenance), fit for each attribute a linear model

    measured = w . features(draft attributes, diameter)

(features: :data:`FEATURES`; ``contrast_hu/d`` is the contrast over the tumor's diameter in mm, the
shape of a boundary blur of fixed width: it moves a ring of thickness ~ diameter by ~ contrast x
width / diameter), and at sampling solve it for the draft attributes whose predicted output is the
one asked. The ControlNet is still conditioned on the asked attributes; only the draft changes.

The calibration belongs to one model (it records the pipeline hash and refuses another) and is fitted
on synthetic samples only: no real tumor enters it, so judging the calibrated sampler against held-out
real tumors stays fair. ``tumorgen generator calibrate`` fits it; ``inpaint.draft_calibration``
applies it; provenance records the drafted attributes beside the asked and the measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cohort.errors import BatchReport, CohortError
from cohort.io import read_json, write_json

VERSION = 1
#: attribute -> its model's features, each (attribute or None for a constant, divided by the diameter);
#: an attribute's features may use only itself and the attributes before it (solved in this order)
FEATURES: dict[str, tuple[tuple[str | None, bool], ...]] = {
    "contrast_hu": ((None, False), ("contrast_hu", False), ("contrast_hu", True)),
    "rim_hu": ((None, False), ("rim_hu", False), ("contrast_hu", False), ("contrast_hu", True)),
}
#: a fitted slope (measured per drafted unit) outside this range means the fit is not to be trusted
SLOPE_RANGE = (0.3, 3.0)
#: the most a draft attribute may move from the asked value (HU), whatever the fit says
MAX_CHANGE_HU = 40.0
MIN_TUMORS = 12


def _feature_name(f: tuple[str | None, bool]) -> str:
    a, per_d = f
    return ("1" if a is None else a) + ("/d" if per_d else "")


def _design(rows: list[tuple[dict[str, float], float]], feats) -> np.ndarray:
    return np.array([[(1.0 if a is None else x[a]) / (d if per_d else 1.0) for a, per_d in feats] for x, d in rows])


@dataclass
class AttributeFit:
    features: list[str]
    coef: list[float]
    n: int
    bias_before: float  # mean of measured - drafted on the fitting samples
    rmse_before: float  # root mean square of measured - drafted
    rmse_fit: float  # root mean square residual of the fitted model (in sample)


@dataclass
class DraftCalibration:
    """Per attribute, the fitted map from drafted attributes (and the tumor's diameter) to measured ones."""

    model_hash: str
    fits: dict[str, AttributeFit] = field(default_factory=dict)
    fitted_on: str = ""
    version: int = VERSION

    def draft_values(self, asked: dict[str, float], diameter_mm: float) -> dict[str, float]:
        """The attributes to draw the draft with so that the output measures ``asked``: each fitted
        attribute solved in :data:`FEATURES` order (the others as asked), moved at most
        :data:`MAX_CHANGE_HU` and left as asked where its slope at this diameter is out of
        :data:`SLOPE_RANGE` or its asked value is not finite."""
        d = max(float(diameter_mm), 1.0)
        out = {k: float(v) for k, v in asked.items()}
        for attr in FEATURES:
            fit = self.fits.get(attr)
            if fit is None or attr not in out or not np.isfinite(out[attr]):
                continue
            slope, rest = 0.0, 0.0
            for (a, per_d), w in zip(FEATURES[attr], fit.coef):
                g = 1.0 / d if per_d else 1.0
                if a == attr:
                    slope += w * g
                else:
                    rest += w * g * (1.0 if a is None else out.get(a, 0.0))
            if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
                continue
            want = float(asked[attr])
            x = (want - rest) / slope
            out[attr] = float(np.clip(x, want - MAX_CHANGE_HU, want + MAX_CHANGE_HU))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "model_hash": self.model_hash, "fitted_on": self.fitted_on,
                "features": {a: [_feature_name(f) for f in FEATURES[a]] for a in self.fits},
                "fits": {a: vars(f) for a, f in self.fits.items()}}

    def write(self, path: str | Path) -> Path:
        write_json(path, self.as_dict())
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> DraftCalibration:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: draft calibration not found (make one with `tumorgen generator calibrate`)")
        try:
            d = read_json(p)
        except CohortError as e:
            raise ValueError(str(e)) from None
        if not isinstance(d, dict) or d.get("version") != VERSION or "fits" not in d:
            raise ValueError(f"{p}: not a draft calibration of version {VERSION} (`tumorgen generator calibrate` writes one)")
        fits = {}
        for a, f in d["fits"].items():
            if a not in FEATURES:
                raise ValueError(f"{p}: unknown attribute {a!r} (calibrated ones: {list(FEATURES)})")
            try:
                fit = AttributeFit(**f)
            except TypeError as e:
                raise ValueError(f"{p}: the fit of {a} is malformed ({e})") from None
            if fit.features != [_feature_name(x) for x in FEATURES[a]] or len(fit.coef) != len(FEATURES[a]):
                raise ValueError(f"{p}: the features of {a} are {fit.features}, this version uses "
                                 f"{[_feature_name(x) for x in FEATURES[a]]}")
            fits[a] = fit
        return cls(model_hash=str(d.get("model_hash", "")), fits=fits, fitted_on=str(d.get("fitted_on", "")))


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


def fit_calibration(rows: list[dict], model_hash: str, attributes=tuple(FEATURES), fitted_on: str = "") -> DraftCalibration:
    """Least-squares fit of :data:`FEATURES` per attribute on :func:`calibration_rows` output (rows whose
    values are not all finite are left out of that attribute's fit). Raises ValueError when an attribute
    has fewer than :data:`MIN_TUMORS` usable tumors or a slope out of :data:`SLOPE_RANGE` at the median
    diameter."""
    cal = DraftCalibration(model_hash=model_hash, fitted_on=fitted_on)
    for attr in attributes:
        if attr not in FEATURES:
            raise ValueError(f"draft calibration: unknown attribute {attr!r}; calibrated ones: {list(FEATURES)}")
        feats = FEATURES[attr]
        need = {a for a, _ in feats if a} | {attr}
        use = [r for r in rows if all(np.isfinite(r["draft"].get(a, np.nan)) for a in need)
               and np.isfinite(r["measured"].get(attr, np.nan)) and r["diameter_mm"] > 0]
        if len(use) < max(MIN_TUMORS, 3 * len(feats)):
            raise ValueError(f"draft calibration: {len(use)} tumors with a finite {attr} (drafted and measured); "
                             f"need at least {max(MIN_TUMORS, 3 * len(feats))}: sample a larger cohort")
        X = _design([(r["draft"], r["diameter_mm"]) for r in use], feats)
        y = np.array([r["measured"][attr] for r in use])
        x0 = np.array([r["draft"][attr] for r in use])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        d_med = float(np.median([r["diameter_mm"] for r in use]))
        slope = sum(w / (d_med if per_d else 1.0) for (a, per_d), w in zip(feats, coef) if a == attr)
        if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
            raise ValueError(f"draft calibration: the fitted slope of {attr} is {slope:.2f} at the median diameter "
                             f"{d_med:.1f} mm (outside {SLOPE_RANGE}); the samples do not follow their drafts")
        cal.fits[attr] = AttributeFit(
            features=[_feature_name(f) for f in feats], coef=[round(float(w), 6) for w in coef], n=len(use),
            bias_before=round(float(np.mean(y - x0)), 3), rmse_before=round(float(np.sqrt(np.mean((y - x0) ** 2))), 3),
            rmse_fit=round(float(np.sqrt(np.mean((y - X @ coef) ** 2))), 3))
    return cal


def calibrate_cohort(cohort: str | Path, model_hash: str, attributes=tuple(FEATURES),
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
    return fit_calibration(calibration_rows(records), model_hash, attributes, fitted_on=str(cohort))
