"""Evaluate a folder of predictions against a ground-truth cohort (`tumorgen evaluate`).

Predictions are ``<pred_dir>/<case id>.nii.gz`` label maps in the canonical
vocabulary on the ground truth's grid (what `tumorgen predict` writes);
optional probability maps sit beside them, float in [0, 1]: one per lesion
class (``MetricsConfig.probability_pattern``, default
``<case id>_<lesion name>_prob.nii.gz``) or one for any lesion
(``any_lesion_probability_pattern``, default ``<case id>_tumor_prob.nii.gz``,
what `tumorgen predict --save-prob` writes). The ground truth
is any cohort layout :func:`cohort.layouts.open_cohort` reads.

Nothing is dropped silently: a GT case without a prediction, a prediction
without a GT case, a prediction on another grid or with values outside the
vocabulary, and a GT case that cannot be read are each recorded in the
returned :class:`~cohort.errors.BatchReport` (the command exits non-zero)
and listed in ``summary.json`` and ``summary.md``; every other case is
evaluated.

Outputs in ``out_dir`` (each written atomically):
``cases.csv`` (one row per case and organ type, with DSC, NSD, HD95 and MSD in
mm, ``inf`` where a present lesion class was not predicted at all),
``lesions.csv`` (one row per ground-truth lesion: size, diameter, early,
detected), ``summary.json`` (``overall``: every reported organ type pooled,
and ``organs``: per organ type; each metric as {value, ci_low, ci_high, n}
with its 95 % bootstrap interval, ROC points; ``warnings``: sensitivities
that come with many false positives, see
:func:`evaluation.metrics.detection_warnings`; the config and the failures),
``summary.md`` (the same as a Markdown table, warnings as visible lines above
it) and ``metrics.yaml`` (the resolved config).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from rich.progress import track

from cohort import labels as L
from cohort.config import save_config, to_dict
from cohort.errors import BatchReport, CohortError
from cohort.io import (
    ImageMeta,
    clean_stale_temps,
    is_temp_name,
    read_image,
    read_label,
    same_grid,
    write_json,
    write_text,
)
from cohort.layouts import open_cohort
from evaluation.bootstrap import clean_float
from evaluation.metrics import (
    ANY_LESION,
    CaseMetrics,
    CaseResult,
    LesionMatch,
    MetricsConfig,
    OrganSummary,
    detection_warnings,
    evaluate_case,
    load_metrics_config,
    organ_types_for,
    summarize,
    summarize_overall,
)

__all__ = ["EvaluationResult", "evaluate_cohort", "write_outputs", "load_metrics_config", "axial_last"]

#: grids that differ by less than this (mm, affine entries) are the same grid
GRID_TOLERANCE_MM = 1e-2

POLICY = ("DSC and NSD are averaged over tumor-positive cases only (GT has the lesion class); on GT-negative "
          "cases they are undefined (NaN, null in JSON, empty in CSV) and left out. A GT-positive case with an empty "
          "prediction scores 0. HD95 and MSD (mm) are computed on the same tumor-positive cases; one with an empty "
          "prediction has no predicted surface (inf in cases.csv) and is left out of their means and counted as "
          "n_empty_prediction. Patient-level specificity is over GT-negative cases, where an empty prediction is a "
          "true negative. A case counts for an organ type only when its GT contains the organ or its lesion "
          "(require_organ). Patient sensitivity is the paper's (called positive by volume); the localised one also "
          "needs a matched true lesion. FP/case counts predicted lesion components matching no true lesion, lesion "
          "precision is matched over all predicted components, both under the tumor detection rule.")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_cohort` measured: per-case results and per-organ summaries."""

    pred_dir: str
    gt_dir: str
    config: MetricsConfig
    cases: list[CaseResult] = field(default_factory=list)
    organs: dict[str, OrganSummary] = field(default_factory=dict)
    #: every reported organ type pooled (organ "all"); see :func:`evaluation.metrics.summarize_overall`
    overall: OrganSummary | None = None
    failed: dict[str, str] = field(default_factory=dict)
    #: every problem of each failed case (``failed`` joins them into one line)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rows(self) -> list[CaseMetrics]:
        """Case rows of the reported organ types."""
        return [r for c in self.cases for r in c.rows if r.organ in self.organs]

    @property
    def lesions(self) -> list[LesionMatch]:
        """GT lesions of the reported organ types."""
        return [m for c in self.cases for m in c.lesions if m.organ in self.organs]

    def shown(self) -> list[OrganSummary]:
        """The summaries of the tables: every organ type, then "all" when there are several."""
        out = list(self.organs.values())
        if self.overall is not None and len(self.organs) > 1:  # one organ type: "all" repeats its row
            out.append(self.overall)
        return out

    def warnings(self) -> list[str]:
        """Sensitivities that come with many false positives (:func:`evaluation.metrics.detection_warnings`)."""
        out = []
        for s in self.shown():
            out += detection_warnings(s.organ, s, self.config.warn_fp_per_case, self.config.warn_lesion_precision)
        return out

    def as_dict(self) -> dict:
        return {
            "pred_dir": self.pred_dir,
            "gt_dir": self.gt_dir,
            "n_cases_evaluated": len(self.cases),
            "n_cases_failed": len(self.failed),
            "failed": dict(sorted(self.failed.items())),
            "policy": POLICY,
            "warnings": self.warnings(),
            "config": to_dict(self.config),
            "overall": self.overall.as_dict() if self.overall is not None else None,
            "organs": {k: v.as_dict() for k, v in self.organs.items()},
        }

    def markdown(self) -> str:
        """The summary as a Markdown table (value [95 % CI])."""
        tol = f"{self.config.nsd_tolerance_mm:g}"
        head = ["organ", "cases (+/-)", "lesions (early)", "DSC", f"NSD@{tol}mm", "HD95 (mm)", "MSD (mm)",
                "patient sens.", "patient sens. (localised)", "patient spec.", "AUC (volume)", "tumor sens.",
                f"early sens. (<={self.config.early_diameter_mm:g} mm)", "FP/case", "lesion prec."]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        shown = self.shown()
        for s in shown:
            cells = [s.organ, f"{s.n_cases} ({s.n_positive}/{s.n_negative})", f"{s.n_lesions} ({s.n_early})",
                     s.dsc.format(), s.nsd.format(), s.hd95.format(2), s.msd.format(2),
                     s.patient_sensitivity.format(), s.patient_sensitivity_localised.format(),
                     s.patient_specificity.format(), s.auc_volume.format(), s.tumor_sensitivity.format(),
                     s.early_tumor_sensitivity.format(), s.false_positive_components_per_case.format(2),
                     s.lesion_precision.format()]
            lines.append("| " + " | ".join(cells) + " |")
        empty = [f"{s.organ}: {s.n_empty_prediction}" for s in shown if s.n_empty_prediction]
        if any(not math.isnan(s.auc_probability.value) for s in shown):
            lines += ["", "| organ | AUC (probability) |", "|---|---|"]
            lines += [f"| {s.organ} | {s.auc_probability.format()} |" for s in shown]
        warn = "".join(f"**{w}**\n\n" for w in self.warnings())
        rule = {"any": "any overlap", "iou": f"IoU >= {self.config.iou_threshold:g}",
                "centroid": "predicted component's centroid inside the true lesion"}[self.config.overlap_rule]
        text = (f"# Tumor segmentation metrics\n\nPredictions `{self.pred_dir}` against `{self.gt_dir}`: "
                f"{len(self.cases)} cases evaluated, {len(self.failed)} failed.\n\n" + warn + "\n".join(lines) + "\n\n"
                + (f"HD95/MSD leave out the tumor-positive cases with an empty prediction (distance infinite; "
                   f"DSC and NSD score them 0): "
                   f"{', '.join(empty)}.\n\n" if empty else "")
                + f"Patient-level call: predicted lesion volume >= {self.config.patient_volume_threshold_mm3:g} mm^3. "
                f"Tumor detection rule ({self.config.overlap_rule}): {rule}, also for FP/case, lesion precision and "
                f"localised patient sensitivity; diameter rule: {self.config.diameter_rule}. "
                f"Intervals: {self.config.ci_level:.0%} percentile bootstrap over cases "
                f"({self.config.bootstrap_n} resamples, seed {self.config.seed}).\n\n{POLICY}\n")
        if self.failed:
            text += "\n## Failed cases\n\n" + "\n".join(f"- `{k}`: {why}" for k, v in sorted(self.failed.items())
                                                       for why in self.reasons.get(k, [v])) + "\n"
        return text


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return buf.getvalue()


def cases_csv(rows: list[CaseMetrics]) -> str:
    """One line per case and organ type; NaN cells are empty, infinite distances (an empty prediction
    of a present lesion class) are ``inf``."""
    out = []
    for r in rows:
        d = r.as_dict()
        for k in ("hd95_mm", "msd_mm"):
            if math.isinf(getattr(r, k)):
                d[k] = "inf"
        out.append(d)
    return _csv(out, [f.name for f in fields(CaseMetrics)])


def lesions_csv(lesions: list[LesionMatch]) -> str:
    """One line per ground-truth lesion; ``bbox`` is 'x0:x1 y0:y1 z0:z1' (hi exclusive)."""
    out = []
    for m in lesions:
        d = m.as_dict()
        d["centroid_vox"] = " ".join(f"{c:g}" for c in m.centroid_vox)
        d["bbox"] = " ".join(f"{lo}:{hi}" for lo, hi in zip(*m.bbox))
        out.append(d)
    return _csv(out, [f.name for f in fields(LesionMatch)])


def axial_last(arrays: list[np.ndarray], affine: np.ndarray) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    """Put the voxel axis closest to the patient's superior direction last.

    Diameters are measured on axial slices [:, :, k] (RAS+ voxel order); a
    cohort stored in another order (e.g. slices first) is transposed, not
    resampled. Flips do not change any metric and are left alone.
    Returns the (views of the) arrays and the matching spacing (mm).
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    axis = int(np.argmax(np.abs(affine[2, :3]) / spacing))
    order = [a for a in range(3) if a != axis] + [axis]
    return [np.transpose(a, order) for a in arrays], tuple(float(spacing[a]) for a in order)


def _check_grid(path: Path, meta: ImageMeta, gt: ImageMeta, what: str) -> None:
    if meta.shape != gt.shape:
        raise CohortError(path, f"{what} shape {meta.shape} does not match the ground truth shape {gt.shape}")
    if not same_grid(meta, gt, tol=GRID_TOLERANCE_MM):
        raise CohortError(path, f"{what} grid does not match the ground truth: spacing "
                                f"{tuple(round(s, 4) for s in meta.spacing)} vs {tuple(round(s, 4) for s in gt.spacing)} mm, "
                                f"orientation {meta.orientation} vs {gt.orientation}, origin "
                                f"{tuple(np.round(meta.affine[:3, 3], 3))} vs {tuple(np.round(gt.affine[:3, 3], 3))}")


def _probability_names(case_id: str, config: MetricsConfig) -> dict[str, str]:
    names = {n: config.probability_pattern.format(case_id=case_id, lesion=n) for n in L.LESION_NAMES}
    names[ANY_LESION] = config.any_lesion_probability_pattern.format(case_id=case_id)
    return names


def _evaluate_one(ref, pred_path: Path, pred_dir: Path, config: MetricsConfig) -> CaseResult:
    case = ref.load()
    gt_meta = ImageMeta.from_affine(case.affine, case.label.shape, ref.label or ref.image)
    pred, meta = read_label(pred_path)
    _check_grid(pred_path, meta, gt_meta, "prediction")
    bad = np.unique(pred[pred >= L.NUM_CLASSES])
    if bad.size:
        raise CohortError(pred_path, f"label values {bad[:10].tolist()} are not in the vocabulary (0-{L.NUM_CLASSES - 1})")
    probs: dict[str, np.ndarray] = {}
    for name, fname in _probability_names(ref.case_id, config).items():
        ppath = pred_dir / fname
        if ppath.exists():
            pm, pmeta = read_image(ppath)
            _check_grid(ppath, pmeta, gt_meta, "probability map")
            if pm.size and (pm.min() < 0.0 or pm.max() > 1.0):
                raise CohortError(ppath, f"probabilities outside [0, 1] (min {pm.min():.3g}, max {pm.max():.3g})")
            probs[name] = pm
    names = list(probs)
    arrays, spacing = axial_last([case.label, pred] + [probs[n] for n in names], case.affine)
    return evaluate_case(ref.case_id, arrays[0], arrays[1], spacing, config,
                         dict(zip(names, arrays[2:])) if names else None)


def evaluate_cohort(pred_dir: str | Path, gt_dir: str | Path, out_dir: str | Path | None,
                    config: MetricsConfig | None = None, *, layout: str | None = None,
                    progress: bool = True) -> tuple[EvaluationResult, BatchReport]:
    """Evaluate every case of the GT cohort against ``pred_dir``; write the reports to ``out_dir``.

    Returns the result and a report whose ``failed`` names every case that
    could not be evaluated and why (``report.ok`` is False when any did).
    ``out_dir=None`` computes without writing. Raises CohortError only when
    the folders themselves are unusable (missing, no known layout).
    """
    config = config or MetricsConfig()
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise CohortError(pred_dir, "prediction folder does not exist")
    cohort = open_cohort(gt_dir, layout=layout)
    report = BatchReport()
    for cid, why in cohort.problems.items():
        report.fail(cid, f"ground truth: {why}")

    gt_ids = set(cohort.ids())
    known = {f"{cid}.nii.gz" for cid in gt_ids}
    for cid in gt_ids:
        known |= set(_probability_names(cid, config).values())
    for path in sorted(pred_dir.glob("*.nii.gz")):
        if is_temp_name(path):  # left by a killed `tumorgen predict`, not a prediction
            continue
        if path.name not in known:
            stem = path.name[: -len(".nii.gz")]
            report.fail(stem, f"{path}: prediction has no ground-truth case in {gt_dir}")

    results: list[CaseResult] = []
    refs = sorted(cohort.refs, key=lambda r: r.case_id)
    for ref in track(refs, description="evaluating", disable=not progress, transient=True):
        pred_path = pred_dir / f"{ref.case_id}.nii.gz"
        if not pred_path.exists():
            report.fail(ref.case_id, f"{pred_path}: missing prediction for ground-truth case {ref.case_id}")
            continue
        try:
            results.append(_evaluate_one(ref, pred_path, pred_dir, config))
        except (CohortError, ValueError) as e:
            report.fail(ref.case_id, e)
            continue
        report.done.append(ref.case_id)

    all_rows = [r for c in results for r in c.rows]
    types = organ_types_for(all_rows, config)
    result = EvaluationResult(str(pred_dir), str(gt_dir), config, results, summarize(all_rows, config, types),
                              summarize_overall(all_rows, config, types), dict(report.failed),
                              {cid: report.problems(cid) for cid in report.failed})
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result, report


def write_outputs(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write cases.csv, lesions.csv, summary.json, summary.md and metrics.yaml atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)  # of an earlier run killed while writing here
    paths = {
        "cases": write_text(out / "cases.csv", cases_csv(result.rows)),
        "lesions": write_text(out / "lesions.csv", lesions_csv(result.lesions)),
        "summary": write_json(out / "summary.json", _strict(result.as_dict())),
        "markdown": write_text(out / "summary.md", result.markdown()),
        "config": save_config(result.config, out / "metrics.yaml"),
    }
    return paths


def _strict(obj):
    """Replace NaN/inf anywhere in a JSON tree by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return clean_float(obj)
