"""Tumor segmentation metrics of the paper: pure functions, structured results.

Per case and lesion class (organ type): DSC, NSD at 2 mm, HD95 and mean
surface distance (mm), patient-level call (predicted lesion volume >= T
mm^3), tumor-level detection of every ground-truth lesion (26-connected
component), early-tumor detection (lesions of at most 20 mm), and the
false-positive side of detection: predicted lesion components that match no
ground-truth lesion. Per organ type over a cohort: means and rates
with percentile-bootstrap 95 % intervals over cases, and the ROC AUC of the
patient-level call over a sweep of T (and of a probability threshold when
probability maps exist); and the same pooled over every reported organ
type (:func:`summarize_overall`, organ ``"all"``: patient-level calls per
patient, DSC/NSD over GT-positive (case, organ type) pairs, tumor-level
rates over all lesions).

Empty cases and NaN (the policy every number in the reports follows):

* DSC and NSD are computed on tumor-positive cases only, i.e. cases whose
  ground truth has at least one voxel of the lesion class. On a GT-negative
  case they are NaN and are left out of the means (a GT-negative case with
  an empty prediction would otherwise score an arbitrary 1, one with a
  false positive an arbitrary 0); false positives on GT-negative cases are
  measured by patient-level specificity and by the false-positive component
  count instead. A GT-positive case with an empty prediction scores 0.
* Patient-level sensitivity is over GT-positive cases, specificity over
  GT-negative ones; a GT-negative case with an empty prediction counts as a
  true negative.
* A case counts for an organ type only when its ground truth contains that
  organ or its lesion (``require_organ``): a liver-only dataset says nothing
  about pancreatic lesions.
* HD95 and MSD (:mod:`evaluation.surface`) are computed on tumor-positive
  cases only, like DSC. A tumor-positive case with an empty prediction of
  the class has no predicted surface: its HD95 and MSD are inf (``inf`` in
  cases.csv), and the cohort means are over the tumor-positive cases with a
  predicted surface; the number left out is ``n_empty_prediction`` beside
  them (those misses already score DSC 0 and NSD 0).
* A summary with no units (e.g. no GT-negative case) is NaN, written as
  ``null`` in JSON, an empty cell in CSV and "n/a" in Markdown.

Localisation (``MetricsConfig.overlap_rule``) decides when a ground-truth
lesion G and a predicted component P of the same class *match*:

* ``any`` (default, the paper's rule): P and G share a voxel;
* ``iou``: IoU(P, G) >= ``iou_threshold``;
* ``centroid``: the centroid of P (mean voxel index, rounded to the nearest
  voxel) is a voxel of G. It is the predicted component's centroid, not the
  lesion's: a false lesion painted over half an organ has its centroid far
  from the small tumor it happens to cover, while "G's centroid inside P"
  would let a prediction covering the whole organ find every tumor.

One rule serves everything built on matching: a GT lesion is *detected* when
some predicted component matches it (tumor and early-tumor sensitivity); a
predicted component is a *false positive* when it matches no GT lesion
(``n_false_positive_components``, its cohort mean per case
``false_positive_components_per_case``, "FP/case"); *lesion precision* is
matched predicted components over all predicted components (NaN with none).
Several components matching one lesion all count as matched (no one-to-one
assignment; with ``iou`` and a threshold above 0.5 matching is one-to-one
anyway). *Patient sensitivity* keeps the paper's definition (a
tumor-positive case called positive by volume);
*patient_sensitivity_localised* also needs at least one of the case's GT
lesions of that organ type to be matched (for ``"all"``: some organ type
both called and matched), so a call made on a false lesion elsewhere does
not count. :func:`detection_warnings` flags sensitivities that come with
many false positives (``warn_fp_per_case``, ``warn_lesion_precision``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.lesions import lesion_components, measure_lesions
from evaluation.bootstrap import (
    Summary,
    auc_summary,
    bootstrap_indices,
    clean_float,
    ratio_summary,
    roc_auc,
)
from evaluation.surface import normalized_surface_dice, surface_metrics

__all__ = [
    "MetricsConfig", "load_metrics_config", "CaseMetrics", "LesionMatch", "CaseResult", "OrganSummary", "Summary",
    "dice", "evaluate_case", "summarize", "summarize_overall", "roc_auc", "roc_points", "equivalent_diameter_mm", "organ_types_for",
    "normalized_surface_dice", "detection_warnings", "OVERLAP_RULES",
]

#: localisation rules (see module docs)
OVERLAP_RULES = ("any", "iou", "centroid")

#: key of a probability map that covers every lesion class
ANY_LESION = "any_lesion"

#: lesion class index -> organ type ("liver", "pancreas", "kidney", ...)
LESION_ORGAN_TYPE: dict[int, str] = {L.NAME_TO_INDEX[n]: t for n, t in L.LESION_TO_ORGAN_TYPE.items()}


@dataclass
class MetricsConfig:
    """Values of configs/evaluation/metrics.yaml (load with :func:`load_metrics_config`)."""

    #: NSD tolerance (mm); 2 mm as in the paper
    nsd_tolerance_mm: float = 2.0
    #: a case is called positive when its predicted lesion volume is > 0 and >= this (mm^3);
    #: 50 mm^3 is about 15 voxels at 1.5 mm, a sphere of 4.6 mm: below that a call is noise
    patient_volume_threshold_mm3: float = 50.0
    #: thresholds (mm^3) at which ROC points are reported; the AUC itself uses every observed volume
    volume_sweep_mm3: list[float] = field(default_factory=lambda: [0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                                                                     1000.0, 2500.0, 5000.0, 10000.0])
    #: probability thresholds at which ROC points are reported when probability maps exist
    probability_sweep: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    #: file name of a probability map next to the predictions ({case_id}, {lesion}: class name)
    probability_pattern: str = "{case_id}_{lesion}_prob.nii.gz"
    #: file name of one map for all lesion classes (what `tumorgen predict --save-prob` writes);
    #: used for the classes that have no map of their own
    any_lesion_probability_pattern: str = "{case_id}_tumor_prob.nii.gz"
    #: when a GT lesion and a predicted component of its class match (module docs): "any" shared voxel
    #: (the paper's rule); "iou": IoU >= iou_threshold; "centroid": the predicted component's centroid
    #: lies in the GT lesion. Used for tumor and early-tumor sensitivity, false-positive components,
    #: lesion precision and localised patient sensitivity.
    overlap_rule: Literal["any", "iou", "centroid"] = "any"
    iou_threshold: float = 0.5
    #: warn (summary.md, summary.json "warnings", scaling report) when a summary with a sensitivity has
    #: more false-positive lesion components per case than this ...
    warn_fp_per_case: float = 2.0
    #: ... or a lesion precision below this
    warn_lesion_precision: float = 0.2
    #: early tumors: diameter <= this (mm)
    early_diameter_mm: float = 20.0
    #: "max_axial": longest in-plane extent over axial slices (tracks radiologists' sizes on KiTS23);
    #: "equivalent_sphere": diameter of the sphere of the lesion's volume
    diameter_rule: Literal["max_axial", "equivalent_sphere"] = "max_axial"
    #: organ types to report; empty: every type with a GT lesion in the cohort
    #: (or, in a cohort without lesions, every type whose organ appears)
    organ_types: list[str] = field(default_factory=list)
    #: count a case for an organ type only when its GT contains the organ or its lesion
    require_organ: bool = True
    bootstrap_n: int = 1000
    seed: int = 0
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        if self.nsd_tolerance_mm < 0:
            raise ValueError(f"nsd_tolerance_mm must be >= 0, got {self.nsd_tolerance_mm}")
        if self.patient_volume_threshold_mm3 < 0:
            raise ValueError(f"patient_volume_threshold_mm3 must be >= 0, got {self.patient_volume_threshold_mm3}")
        if self.overlap_rule not in OVERLAP_RULES:
            raise ValueError(f"overlap_rule must be one of {list(OVERLAP_RULES)}, got {self.overlap_rule!r}")
        if self.warn_fp_per_case < 0:
            raise ValueError(f"warn_fp_per_case must be >= 0, got {self.warn_fp_per_case}")
        if not 0.0 <= self.warn_lesion_precision <= 1.0:
            raise ValueError(f"warn_lesion_precision must be in [0, 1], got {self.warn_lesion_precision}")
        if self.diameter_rule not in ("max_axial", "equivalent_sphere"):
            raise ValueError(f"diameter_rule must be 'max_axial' or 'equivalent_sphere', got {self.diameter_rule!r}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.bootstrap_n < 0:
            raise ValueError(f"bootstrap_n must be >= 0, got {self.bootstrap_n}")
        for t in self.organ_types:
            if t not in L.ORGAN_TYPE_TO_LESION:
                raise ValueError(f"unknown organ type {t!r}; known: {sorted(L.ORGAN_TYPE_TO_LESION)}")


def load_metrics_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> MetricsConfig:
    """MetricsConfig from YAML (None: defaults) plus ``key=value`` overrides; bad keys raise ConfigError."""
    from cohort.config import load_config

    return load_config(MetricsConfig, path, overrides)


# ----------------------------------------------------------------------------- per case


@dataclass
class CaseMetrics:
    """One case, one organ type. Volumes in mm^3, distances in mm.

    ``dsc``, ``nsd``, ``hd95_mm``, ``msd_mm`` are NaN on GT-negative cases;
    ``hd95_mm``/``msd_mm`` are inf on a GT-positive case with an empty prediction.
    ``n_detected``, ``n_early_detected``, ``n_false_positive_components`` follow
    ``MetricsConfig.overlap_rule``.
    """

    case_id: str
    organ: str
    lesion: str
    included: bool  # counts for this organ type (organ or lesion present in GT, or require_organ off)
    gt_positive: bool
    pred_positive: bool
    gt_volume_mm3: float
    pred_volume_mm3: float
    dsc: float
    nsd: float
    hd95_mm: float
    msd_mm: float
    n_lesions: int
    n_detected: int
    n_early: int
    n_early_detected: int
    n_pred_components: int
    n_false_positive_components: int  # predicted components matching no GT lesion of the class (overlap_rule)
    max_probability: float = float("nan")  # NaN when no probability map was given

    def as_dict(self) -> dict:
        return {k: clean_float(v) for k, v in asdict(self).items()}


@dataclass
class LesionMatch:
    """One ground-truth lesion (26-connected component) and whether it was found.

    ``bbox`` is (lo, hi) voxel indices, hi exclusive; ``best_iou`` is the
    largest IoU with a single predicted component of the same class;
    ``detected``: some predicted component matches it under the configured
    ``overlap_rule``.
    """

    case_id: str
    organ: str
    lesion: str
    lesion_id: int  # rank within its class in the case, largest first
    voxels: int
    volume_ml: float
    max_axial_diameter_mm: float
    equivalent_diameter_mm: float
    diameter_mm: float  # by the configured rule
    early: bool
    detected: bool
    overlap_voxels: int
    best_iou: float
    centroid_vox: tuple[float, float, float]
    bbox: tuple[tuple[int, int, int], tuple[int, int, int]]

    def as_dict(self) -> dict:
        d = {k: clean_float(v) for k, v in asdict(self).items()}
        d["centroid_vox"] = list(self.centroid_vox)
        d["bbox"] = [list(self.bbox[0]), list(self.bbox[1])]
        return d


@dataclass
class CaseResult:
    """Every organ type of one case (``rows``) and every GT lesion in it (``lesions``)."""

    case_id: str
    rows: list[CaseMetrics]
    lesions: list[LesionMatch]

    def as_dict(self) -> dict:
        return {"case_id": self.case_id, "rows": [r.as_dict() for r in self.rows],
                "lesions": [m.as_dict() for m in self.lesions]}


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice similarity coefficient of two boolean masks; NaN when the GT is empty (see module docs)."""
    g = int(np.count_nonzero(gt))
    if g == 0:
        return float("nan")
    inter = int(np.count_nonzero(np.logical_and(gt, pred)))
    return 2.0 * inter / (g + int(np.count_nonzero(pred)))


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter (mm) of the sphere of volume ``volume_mm3``."""
    return float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0))


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _component_centroids(cc: np.ndarray, n: int) -> np.ndarray:
    """(n, 3) integer voxel indices of each component's centroid (mean voxel index, rounded to nearest)."""
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64)
    labels = cc.ravel()
    sizes = np.bincount(labels, minlength=n + 1)[1:].astype(np.float64)
    out = np.empty((n, 3), dtype=np.int64)
    for axis in range(3):
        coord = np.broadcast_to(np.arange(cc.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)]),
                                cc.shape).ravel()
        mean = np.bincount(labels, weights=coord, minlength=n + 1)[1:] / sizes
        out[:, axis] = np.floor(mean + 0.5).astype(np.int64)
    return out


def _match_lesions(case_id: str, organ: str, lab: int, gt_crop: np.ndarray, pred_crop: np.ndarray,
                   offset: tuple[int, int, int], spacing: tuple[float, float, float],
                   config: MetricsConfig) -> tuple[list[LesionMatch], int, int]:
    """GT lesions of class ``lab`` in a crop, matched to predicted components under ``config.overlap_rule``.

    Returns (matches, number of predicted components, false-positive components:
    predicted components matching no GT lesion).
    """
    gt_cc, n_gt = lesion_components(gt_crop, lab)
    pred_cc, n_pred = lesion_components(pred_crop, lab)
    gt_sizes = np.bincount(gt_cc.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    # every (GT lesion, predicted component) pair sharing voxels, with the shared count
    both = (gt_cc > 0) & (pred_cc > 0)
    pair_id, inter = np.unique(gt_cc[both].astype(np.int64) * (n_pred + 1) + pred_cc[both], return_counts=True)
    pg, pp = pair_id // (n_pred + 1), pair_id % (n_pred + 1)
    iou = inter / (gt_sizes[pg] + pred_sizes[pp] - inter)
    gt_matched = np.zeros(n_gt + 1, dtype=bool)
    pred_matched = np.zeros(n_pred + 1, dtype=bool)
    if config.overlap_rule == "any":
        gt_matched[pg] = True
        pred_matched[pp] = True
    elif config.overlap_rule == "iou":
        ok = iou >= config.iou_threshold
        gt_matched[pg[ok]] = True
        pred_matched[pp[ok]] = True
    else:  # centroid of the predicted component inside the GT lesion
        c = _component_centroids(pred_cc, n_pred)
        hit = gt_cc[c[:, 0], c[:, 1], c[:, 2]] if n_pred else np.zeros(0, dtype=np.int64)
        gt_matched[hit[hit > 0]] = True
        pred_matched[1:] = hit > 0
    n_fp = int(n_pred - pred_matched[1:].sum())
    voxel_mm3 = float(np.prod(spacing))
    found = []
    boxes = ndimage.find_objects(gt_cc)
    for i, sl in enumerate(boxes, start=1):
        if sl is None:
            continue
        comp = gt_cc[sl] == i
        # measure_lesions on the component's own crop: one record, same sizes as elsewhere in the product
        rec = measure_lesions(comp.astype(np.uint8) * np.uint8(lab), spacing, [lab])[0]
        mine = pg == i
        overlap = int(inter[mine].sum())
        best_iou = float(iou[mine].max()) if mine.any() else 0.0
        eq = equivalent_diameter_mm(rec.voxels * voxel_mm3)
        diam = rec.max_axial_diameter_mm if config.diameter_rule == "max_axial" else eq
        start = tuple(offset[k] + sl[k].start for k in range(3))
        found.append(LesionMatch(
            case_id=case_id, organ=organ, lesion=L.INDEX_TO_NAME[lab], lesion_id=0,
            voxels=rec.voxels, volume_ml=rec.volume_ml, max_axial_diameter_mm=rec.max_axial_diameter_mm,
            equivalent_diameter_mm=round(eq, 3), diameter_mm=round(diam, 3),
            early=bool(diam <= config.early_diameter_mm), detected=bool(gt_matched[i]), overlap_voxels=overlap,
            best_iou=round(best_iou, 4),
            centroid_vox=tuple(round(start[k] + rec.centroid_vox[k], 2) for k in range(3)),
            bbox=(tuple(start[k] + rec.bbox[0][k] for k in range(3)), tuple(start[k] + rec.bbox[1][k] for k in range(3))),
        ))
    found.sort(key=lambda m: (-m.voxels, m.bbox))
    for rank, m in enumerate(found):
        m.lesion_id = rank
    return found, int(n_pred), n_fp


def evaluate_case(case_id: str, gt_label: np.ndarray, pred_label: np.ndarray, spacing: Sequence[float],
                  config: MetricsConfig | None = None,
                  probabilities: Mapping[str, np.ndarray] | None = None) -> CaseResult:
    """Every metric of one case, for every lesion class of the vocabulary.

    gt_label, pred_label: (X, Y, Z) vocabulary label maps on the same grid,
    axis 2 superior (axial slices are [:, :, k]); spacing: mm per axis.
    probabilities: optional {lesion name or "any_lesion": (X, Y, Z) float map in [0, 1]}; a case's
    probability score for an organ type is the maximum of its class map, or, with only the
    any-lesion map, the maximum over the voxels predicted as the organ or its lesion.
    Work is done on the bounding box of each class, so a 512x512x300 case
    costs one pass over the volume plus work proportional to the lesions.
    """
    config = config or MetricsConfig()
    gt = np.asarray(gt_label)
    pred = np.asarray(pred_label)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"{case_id}: prediction shape {pred.shape} does not match ground truth shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing)
    voxel_mm3 = float(np.prod(spacing))
    top = L.NUM_CLASSES - 1
    boxes_gt = ndimage.find_objects(gt if gt.dtype.kind in "iu" else gt.astype(np.int32), max_label=top)
    boxes_pred = ndimage.find_objects(pred if pred.dtype.kind in "iu" else pred.astype(np.int32), max_label=top)
    present = {i + 1 for i, b in enumerate(boxes_gt) if b is not None}
    probs = {k: np.asarray(v) for k, v in (probabilities or {}).items()}
    for k, v in probs.items():
        if k != ANY_LESION and k not in L.LESION_NAMES:
            raise ValueError(f"{case_id}: probability map key {k!r} is neither a lesion class nor {ANY_LESION!r}")
        if v.shape != gt.shape:
            raise ValueError(f"{case_id}: probability map {k!r} has shape {v.shape}, labels {gt.shape}")

    rows: list[CaseMetrics] = []
    lesions: list[LesionMatch] = []
    for lab in L.LESION_LABELS:
        organ = LESION_ORGAN_TYPE[lab]
        name = L.INDEX_TO_NAME[lab]
        organ_present = lab in present or any(i in present for i in L.organ_indices(organ))
        box = _union_box(boxes_gt[lab - 1], boxes_pred[lab - 1])
        g_vox = p_vox = 0
        d = n = hd = msd = float("nan")
        matches: list[LesionMatch] = []
        n_pred = n_fp = 0
        if box is not None:
            g_crop, p_crop = gt[box], pred[box]
            g, p = g_crop == lab, p_crop == lab
            g_vox, p_vox = int(np.count_nonzero(g)), int(np.count_nonzero(p))
            if g_vox:
                d = dice(g, p)
                sm = surface_metrics(g, p, spacing, config.nsd_tolerance_mm)  # one distance pass for all three
                n, hd, msd = sm.nsd, sm.hd95, sm.msd
            matches, n_pred, n_fp = _match_lesions(case_id, organ, lab, g_crop, p_crop,
                                                   tuple(s.start for s in box), spacing, config)
        prob = float("nan")
        if name in probs:
            prob = float(probs[name].max()) if probs[name].size else float("nan")
        elif ANY_LESION in probs:
            # one map for every lesion class (what `tumorgen predict --save-prob` writes): the organ type's score
            # is its maximum over the voxels the prediction gives to the organ or its lesion
            region = (*L.organ_indices(organ), lab)
            rbox = None
            for i in region:
                rbox = _union_box(rbox, boxes_pred[i - 1])
            prob = 0.0
            if rbox is not None:
                inside = np.isin(pred[rbox], region)
                if inside.any():
                    prob = float(probs[ANY_LESION][rbox][inside].max())
        pred_mm3 = p_vox * voxel_mm3
        rows.append(CaseMetrics(
            case_id=case_id, organ=organ, lesion=name,
            included=bool(organ_present or not config.require_organ),
            gt_positive=g_vox > 0,
            pred_positive=bool(p_vox > 0 and pred_mm3 >= config.patient_volume_threshold_mm3),
            gt_volume_mm3=round(g_vox * voxel_mm3, 3), pred_volume_mm3=round(pred_mm3, 3),
            dsc=d, nsd=n, hd95_mm=hd, msd_mm=msd,
            n_lesions=len(matches), n_detected=sum(m.detected for m in matches),
            n_early=sum(m.early for m in matches), n_early_detected=sum(m.early and m.detected for m in matches),
            n_pred_components=n_pred, n_false_positive_components=n_fp, max_probability=prob,
        ))
        lesions += matches
    return CaseResult(case_id, rows, lesions)


# ----------------------------------------------------------------------------- cohort summaries


@dataclass
class OrganSummary:
    """Every cohort-level metric of one organ type (or ``"all"`` pooled), each a :class:`Summary`.

    ``roc_volume`` / ``roc_probability``: [{threshold, sensitivity, specificity}] at the configured sweep.
    For an organ type, n_cases counts the included cases and n_positive / n_negative the
    GT-positive / GT-negative ones; for ``"all"`` they count patients (positive: any lesion of a
    reported type). ``hd95``/``msd`` (mm) are means over the GT-positive (case, organ type) pairs
    with a predicted surface; ``n_empty_prediction`` counts the GT-positive pairs left out of them
    because nothing of the class was predicted (their distances are inf). ``lesion_precision``'s
    ``n`` counts predicted components; ``false_positive_components_per_case``'s counts cases.
    """

    organ: str
    lesion: str
    n_cases: int
    n_positive: int
    n_negative: int
    n_lesions: int
    n_early: int
    dsc: Summary
    nsd: Summary
    hd95: Summary
    msd: Summary
    patient_sensitivity: Summary
    patient_sensitivity_localised: Summary
    patient_specificity: Summary
    auc_volume: Summary
    auc_probability: Summary
    tumor_sensitivity: Summary
    early_tumor_sensitivity: Summary
    false_positive_components_per_case: Summary
    lesion_precision: Summary
    n_empty_prediction: int = 0
    n_pred_components: int = 0
    roc_volume: list[dict] = field(default_factory=list)
    roc_probability: list[dict] = field(default_factory=list)

    METRICS = ("dsc", "nsd", "hd95", "msd", "patient_sensitivity", "patient_sensitivity_localised",
               "patient_specificity", "auc_volume", "auc_probability", "tumor_sensitivity", "early_tumor_sensitivity",
               "false_positive_components_per_case", "lesion_precision")
    COUNTS = ("organ", "lesion", "n_cases", "n_positive", "n_negative", "n_lesions", "n_early", "n_empty_prediction",
              "n_pred_components")

    @property
    def fp_per_case(self) -> Summary:
        """Short name of ``false_positive_components_per_case`` (the scaling study's ``fp_per_case``)."""
        return self.false_positive_components_per_case

    def as_dict(self) -> dict:
        """Flat: counts, then each metric as {value, ci_low, ci_high, n}, then the ROC points."""
        d = {k: getattr(self, k) for k in self.COUNTS}
        d.update({m: getattr(self, m).as_dict() for m in self.METRICS})
        d["roc_volume"] = [{k: clean_float(v) for k, v in p.items()} for p in self.roc_volume]
        d["roc_probability"] = [{k: clean_float(v) for k, v in p.items()} for p in self.roc_probability]
        return d


def roc_points(scores: np.ndarray, positive: np.ndarray, thresholds: Sequence[float]) -> list[dict]:
    """Sensitivity and specificity when a case is called positive at score > 0 and score >= t, per t."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    out = []
    for t in thresholds:
        called = (scores > 0) & (scores >= t)
        sens = float(called[positive].mean()) if positive.any() else float("nan")
        spec = float((~called[~positive]).mean()) if (~positive).any() else float("nan")
        out.append({"threshold": float(t), "sensitivity": sens, "specificity": spec})
    return out


def organ_types_for(rows: Sequence[CaseMetrics], config: MetricsConfig) -> list[str]:
    """The organ types a cohort is reported on (see ``MetricsConfig.organ_types``), in vocabulary order."""
    if config.organ_types:
        return list(config.organ_types)
    order = [LESION_ORGAN_TYPE[lab] for lab in L.LESION_LABELS]
    with_lesion = {r.organ for r in rows if r.gt_positive}
    if with_lesion:
        return [o for o in order if o in with_lesion]
    return [o for o in order if any(r.organ == o and r.included for r in rows)]


def _summary(organ: str, lesion: str, c: dict[str, np.ndarray], config: MetricsConfig) -> OrganSummary:
    """Summaries from per-case arrays (one entry per case; ratio metrics as numerator/denominator)."""
    n = len(c["gt_pos"])
    idx = bootstrap_indices(n, config.bootstrap_n, config.seed)
    level = config.ci_level
    gt_pos, called, prob = c["gt_pos"], c["called"], c["prob"]
    # a probability AUC needs a score for every case: with maps for only some cases it is left undefined
    has_prob = n > 0 and bool(np.isfinite(prob).all())
    nan = Summary(float("nan"), float("nan"), float("nan"), 0)
    return OrganSummary(
        organ=organ, lesion=lesion, n_cases=n, n_positive=int(gt_pos.sum()), n_negative=int((~gt_pos).sum()),
        n_lesions=int(c["n_lesions"].sum()), n_early=int(c["n_early"].sum()),
        n_empty_prediction=int(c["n_empty_pred"].sum()), n_pred_components=int(c["n_pred"].sum()),
        dsc=ratio_summary(c["dsc_sum"], c["dsc_n"], idx, level),
        nsd=ratio_summary(c["nsd_sum"], c["nsd_n"], idx, level),
        hd95=ratio_summary(c["hd95_sum"], c["hd95_n"], idx, level),
        msd=ratio_summary(c["msd_sum"], c["msd_n"], idx, level),
        patient_sensitivity=ratio_summary((gt_pos & called).astype(float), gt_pos.astype(float), idx, level),
        patient_sensitivity_localised=ratio_summary((gt_pos & c["localised"]).astype(float), gt_pos.astype(float),
                                                    idx, level),
        patient_specificity=ratio_summary((~gt_pos & ~called).astype(float), (~gt_pos).astype(float), idx, level),
        auc_volume=auc_summary(c["volume"], gt_pos, idx, level),
        auc_probability=auc_summary(prob, gt_pos, idx, level) if has_prob else nan,
        tumor_sensitivity=ratio_summary(c["n_detected"], c["n_lesions"], idx, level),
        early_tumor_sensitivity=ratio_summary(c["n_early_detected"], c["n_early"], idx, level),
        false_positive_components_per_case=ratio_summary(c["n_fp"], np.ones(n), idx, level),
        lesion_precision=ratio_summary(c["n_pred"] - c["n_fp"], c["n_pred"], idx, level),
        roc_volume=roc_points(c["volume"], gt_pos, config.volume_sweep_mm3),
        roc_probability=roc_points(prob, gt_pos, config.probability_sweep) if has_prob else [],
    )


def _per_case(rows: Sequence[CaseMetrics]) -> dict[str, np.ndarray]:
    """Per-case arrays from the rows of one or several organ types (rows of a case are pooled).

    A case is GT-positive when any of its rows is, called positive when any is, and
    localised when some row is both called positive and has a matched GT lesion; its volume
    score is the summed predicted lesion volume and its probability score the largest one.
    DSC, NSD, HD95 and MSD stay per (case, organ) pair: sums and counts over the GT-positive
    rows (HD95/MSD over the finite ones; the infinite ones, empty predictions, are counted).
    """
    order: dict[str, int] = {}
    for r in rows:
        order.setdefault(r.case_id, len(order))
    g = np.array([order[r.case_id] for r in rows], dtype=np.int64)
    n = len(order)

    def total(values) -> np.ndarray:
        return np.bincount(g, weights=np.asarray(values, dtype=np.float64), minlength=n) if len(rows) else np.zeros(0)

    def any_(values) -> np.ndarray:
        return total(np.asarray(values, dtype=bool).astype(np.float64)) > 0

    dsc = np.array([r.dsc for r in rows], dtype=np.float64)
    nsd = np.array([r.nsd for r in rows], dtype=np.float64)
    hd = np.array([r.hd95_mm for r in rows], dtype=np.float64)
    msd = np.array([r.msd_mm for r in rows], dtype=np.float64)
    prob = np.full(n, -np.inf)
    finite = np.zeros(n, dtype=bool)
    for gi, r in zip(g, rows):
        if math.isfinite(r.max_probability):
            prob[gi] = max(prob[gi], r.max_probability)
            finite[gi] = True
    return {
        "gt_pos": any_([r.gt_positive for r in rows]),
        "called": any_([r.pred_positive for r in rows]),
        "volume": total([r.pred_volume_mm3 for r in rows]),
        "prob": np.where(finite, prob, np.nan),
        "dsc_sum": total(np.nan_to_num(dsc, nan=0.0)), "dsc_n": total(np.isfinite(dsc)),
        "nsd_sum": total(np.nan_to_num(nsd, nan=0.0)), "nsd_n": total(np.isfinite(nsd)),
        "hd95_sum": total(np.where(np.isfinite(hd), hd, 0.0)), "hd95_n": total(np.isfinite(hd)),
        "msd_sum": total(np.where(np.isfinite(msd), msd, 0.0)), "msd_n": total(np.isfinite(msd)),
        "n_empty_pred": total(np.isinf(hd)),
        "localised": any_([r.pred_positive and r.n_detected > 0 for r in rows]),
        "n_pred": total([r.n_pred_components for r in rows]),
        "n_lesions": total([r.n_lesions for r in rows]),
        "n_detected": total([r.n_detected for r in rows]),
        "n_early": total([r.n_early for r in rows]),
        "n_early_detected": total([r.n_early_detected for r in rows]),
        "n_fp": total([r.n_false_positive_components for r in rows]),
    }


def summarize(rows: Sequence[CaseMetrics], config: MetricsConfig | None = None,
              organ_types: Sequence[str] | None = None) -> dict[str, OrganSummary]:
    """Per organ type: every metric with its bootstrap interval over the included cases.

    rows: the :class:`CaseMetrics` of every case (all organ types; the ones
    not included for an organ are skipped). Cases are resampled with
    replacement ``config.bootstrap_n`` times (seed ``config.seed``).
    """
    config = config or MetricsConfig()
    organ_types = list(organ_types) if organ_types is not None else organ_types_for(rows, config)
    out: dict[str, OrganSummary] = {}
    for organ in organ_types:
        rs = [r for r in rows if r.organ == organ and r.included]
        out[organ] = _summary(organ, L.ORGAN_TYPE_TO_LESION[organ], _per_case(rs), config)
    return out


def summarize_overall(rows: Sequence[CaseMetrics], config: MetricsConfig | None = None,
                      organ_types: Sequence[str] | None = None) -> OrganSummary:
    """All reported organ types pooled (``organ="all"``), bootstrapped over patients.

    Patient level: a patient is positive when the GT has any lesion of a
    reported type, and called positive when any organ type is called
    positive; the AUC scores a patient by its summed predicted lesion volume
    (and by its largest probability score). DSC and NSD are means over the
    GT-positive (case, organ type) pairs; tumor-level rates are over all
    lesions.
    """
    config = config or MetricsConfig()
    organ_types = list(organ_types) if organ_types is not None else organ_types_for(rows, config)
    rs = [r for r in rows if r.organ in organ_types and r.included]
    return _summary("all", "all", _per_case(rs), config)


# ----------------------------------------------------------------------------- warnings

#: sensitivities a false-positive warning names, as (key, label)
SENSITIVITIES = (("tumor_sensitivity", "tumor sensitivity"), ("early_tumor_sensitivity", "early-tumor sensitivity"),
                 ("patient_sensitivity", "patient sensitivity"))


def _value(v) -> float:
    """A number from a Summary, a {value: ...} dict, a plain number or None (NaN)."""
    if isinstance(v, Summary):
        v = v.value
    elif isinstance(v, Mapping):
        v = v.get("value")
    return float("nan") if v is None else float(v)


def detection_warnings(name: str, values: OrganSummary | Mapping[str, object], fp_limit: float = 2.0,
                       precision_limit: float = 0.2) -> list[str]:
    """Warning lines for sensitivities that come with many false positives; [] when none.

    values: an :class:`OrganSummary`, or metrics by name (Summary objects, ``{value: ...}`` dicts as in
    summary.json, or plain numbers as in a scaling cell): ``tumor_sensitivity``,
    ``early_tumor_sensitivity``, ``patient_sensitivity``, ``patient_sensitivity_localised``,
    ``fp_per_case`` (or ``false_positive_components_per_case``) and ``lesion_precision``.
    Flags when a sensitivity is reported together with FP/case above ``fp_limit`` or lesion
    precision below ``precision_limit``, and when patient sensitivity exceeds its localised form
    (calls made on false lesions only). ``name`` says what the numbers are ("liver", "ID cell ...").
    """
    if isinstance(values, OrganSummary):
        values = {m: getattr(values, m) for m in values.METRICS}

    def get(key: str) -> float:
        if key in values:
            return _value(values[key])
        if key == "fp_per_case":
            return _value(values.get("false_positive_components_per_case"))
        return float("nan")

    sens = [(label, get(k)) for k, label in SENSITIVITIES]
    sens = [(label, v) for label, v in sens if math.isfinite(v)]
    out: list[str] = []
    if not sens:
        return out
    fp, prec = get("fp_per_case"), get("lesion_precision")
    why = []
    if math.isfinite(fp) and fp > fp_limit:
        why.append(f"{fp:.2f} false-positive lesion components per case (warning above {fp_limit:g})")
    if math.isfinite(prec) and prec < precision_limit:
        why.append(f"lesion precision {prec:.3f} (warning below {precision_limit:g})")
    if why:
        shown = ", ".join(f"{label} {v:.3f}" for label, v in sens)
        out.append(f"WARNING {name}: {shown} come with {' and '.join(why)}; "
                   "these sensitivities are not evidence of detection on their own.")
    ps, loc = get("patient_sensitivity"), get("patient_sensitivity_localised")
    if math.isfinite(ps) and math.isfinite(loc) and ps > loc + 1e-9:
        out.append(f"WARNING {name}: patient sensitivity {ps:.3f} drops to {loc:.3f} when a true lesion must be "
                   "matched: some tumor cases were called positive on false lesions only.")
    return out
