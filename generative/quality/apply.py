"""Score a synthetic cohort with every filter, decide, and write the filtered manifest.

``score_cohort`` runs the discriminator on each tumor (a case scores as its
worst tumor) and the per-case filters (HU check, FreeTumor gate when a
segmentor is given); ``decide_cases`` applies the configured policy and
composes the filters; ``apply_filter`` writes ``<out>/manifest.jsonl`` (one
line per case, accepted or not, with scores and reasons) and never touches a
case file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from cohort.case import Case
from cohort.config import load_config
from cohort.errors import BatchReport, CohortError
from cohort.io import read_json, write_json, write_text
from cohort.layouts import open_cohort, write_rows
from cohort.preprocess import to_ras
from cohort.progress import track
from generative.quality.config import FilterConfig, FilterName
from generative.quality.crops import find_tumors, tumor_crop
from generative.quality.data import patient_group
from generative.quality.discriminator import CALIBRATION_NAME, HU_BOUNDS_NAME, TumorDiscriminator, crop_config_of
from generative.quality.filters import (
    FilterVerdict,
    FreeTumorGate,
    GateValidation,
    HUCheck,
    Segmentor,
    TumorVerdict,
    compose,
)
from generative.quality.policies import Cutoff, apply_policy, case_score, decide

SCORES_NAME = "scores.jsonl"
FILTER_NAMES: tuple[str, ...] = get_args(FilterName)


@dataclass
class CaseScore:
    """Everything measured on one case; decisions come later (they depend on the whole cohort)."""

    case_id: str
    cohort: str
    ct: str
    label: str | None
    kind: str
    generator: str | None
    #: TumorInfo fields + "p_real" (discriminator's P(real)) per tumor; with feature trees also "p_cnn" and
    #: "p_trees", the two opinions whose geometric mean p_real is
    tumors: list[dict[str, Any]]
    #: worst tumor's P(real); None when the case has no tumor
    score: float | None
    #: per-case filters' verdicts (hu_check, freetumor), FilterVerdict.as_dict()
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    #: the patient: a synthetic case's healthy source id, else the case id (see LoadedCase.group)
    group: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> CaseScore:
        return CaseScore(**{k: d.get(k) for k in CaseScore.__dataclass_fields__ if k in d})


def _as_config(config: FilterConfig | str | Path | None, overrides: Sequence[str] = ()) -> FilterConfig:
    return config if isinstance(config, FilterConfig) else load_config(FilterConfig, config, overrides)


def read_calibration(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / CALIBRATION_NAME
    return read_json(path) if path.exists() else {}


#: gate validations already measured: (segmentor id, cohort, rule) -> GateValidation; a segmentor is
#: validated once per process, not once per Scorer (score, then audit, reuse it)
_GATE_CACHE: dict[tuple, GateValidation] = {}

#: what a Scorer's gate is validated with: a measured GateValidation, or a held-out real cohort's folder
GateValidationArg = GateValidation | str | Path | None


def validate_gate(gate: FreeTumorGate, cohort_dir: str | Path, crop) -> GateValidation:
    """Measure ``gate``'s segmentor sensitivity on the tumor cases of a held-out real cohort (cached)."""
    cfg = gate.config
    key = (id(gate.segmentor), str(Path(cohort_dir).resolve()), cfg.validation_cases, cfg.min_detected_fraction,
           cfg.prob_threshold, cfg.same_class)
    if key not in _GATE_CACHE:
        cohort = open_cohort(cohort_dir)
        pairs = []
        for ref in cohort.refs:
            case = to_ras(ref.load())
            if case.meta.get("kind") == "synthetic":
                raise CohortError(cohort_dir, f"case {ref.case_id} is synthetic: the FreeTumor gate is validated on "
                                              "held-out real tumors")
            tumors = find_tumors(case, crop)
            if tumors:
                pairs.append((case, tumors))
            if len(pairs) >= cfg.validation_cases:
                break
        _GATE_CACHE[key] = gate.measure(
            track(pairs, "validating the FreeTumor gate's segmentor", unit="case"),
            f"{len(pairs)} cases of {Path(cohort_dir).name}")
    gate.validation = _GATE_CACHE[key]
    return gate.validation


class Scorer:
    """The discriminator plus the per-case filters, loaded once, applied to any :class:`Case`.

    gate_validation: how the FreeTumor gate earns its vote: a :class:`GateValidation` (e.g. read from
    a segmentation run's evaluation) or a held-out real cohort measured here once; default
    ``config.freetumor.validation_cohort``. Without one the gate abstains.
    """

    def __init__(self, model_dir: str | Path, config: FilterConfig | None = None, segmentor: Segmentor | None = None,
                 gate_validation: GateValidationArg = None):
        self.config = config or FilterConfig()
        self.model_dir = Path(model_dir)
        use_cuda = torch.cuda.is_available() and not self.config.train.cpu
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.model = TumorDiscriminator.from_pretrained(model_dir).to(self.device)
        self.crop = crop_config_of(model_dir)  # the crops it was trained on, whatever today's YAML says
        hb = self.model_dir / HU_BOUNDS_NAME
        self.hu = HUCheck(HUCheck.bounds_from_json(read_json(hb)), self.config.hu_check) if hb.exists() else None
        self.gate = FreeTumorGate(segmentor, self.config.freetumor) if segmentor is not None else None
        if self.gate is not None:
            gv = gate_validation if gate_validation is not None else self.config.freetumor.validation_cohort
            if isinstance(gv, GateValidation):
                self.gate.validation = gv
            elif gv is not None:
                validate_gate(self.gate, gv, self.crop)

    def score_case(self, case: Case) -> tuple[list[dict[str, Any]], float | None, dict[str, dict[str, Any]]]:
        """(tumors with p_real, case score, per-case filter verdicts) for a case in RAS voxel order."""
        tumors = find_tumors(case, self.crop)
        out = []
        if tumors:
            x = np.stack([tumor_crop(case, i, m, self.crop) for i, m in tumors])
            xt = torch.from_numpy(x)
            p_cnn, p_tr = self.model.predict_parts(xt)
            p = self.model.combine(p_cnn, p_tr).numpy()
            out = [{**info.as_dict(), "p_real": round(float(s), 6)} for (info, _), s in zip(tumors, p)]
            if p_tr is not None:  # both opinions, for the audit
                for t, a, b in zip(out, p_cnn.tolist(), p_tr.tolist()):
                    t["p_cnn"], t["p_trees"] = round(a, 6), round(b, 6)
        verdicts = {}
        if self.hu is not None:
            verdicts["hu_check"] = self.hu.judge(case, tumors).as_dict()
        if self.gate is not None:
            verdicts["freetumor"] = self.gate.judge(case, tumors).as_dict()
        return out, case_score([t["p_real"] for t in out]), verdicts


def score_cohort(model_dir: str | Path, cohort_dir: str | Path, config: FilterConfig | str | Path | None = None,
                 segmentor: Segmentor | None = None, out_path: str | Path | None = None,
                 report: BatchReport | None = None, gate_validation: GateValidationArg = None) -> list[CaseScore]:
    """Score every case of a cohort; writes ``out_path`` (JSONL, one CaseScore per line) when given.

    gate_validation: see :class:`Scorer` (the FreeTumor gate votes only with a validated segmentor).
    """
    cfg = _as_config(config)
    scorer = Scorer(model_dir, cfg, segmentor, gate_validation)
    cohort = open_cohort(cohort_dir)
    report = report if report is not None else BatchReport()
    for cid, why in cohort.problems.items():
        report.fail(cid, why)
    scores = []
    for ref in track(cohort.refs, f"scoring {Path(cohort_dir).name}", unit="case"):
        t0 = time.perf_counter()
        try:
            case = to_ras(ref.load())
        except CohortError as e:
            report.fail(ref.case_id, e)
            continue
        tumors, s, verdicts = scorer.score_case(case)
        scores.append(CaseScore(ref.case_id, str(Path(cohort_dir).resolve()), str(Path(ref.image).resolve()),
                                str(Path(ref.label).resolve()) if ref.label else None,
                                str(case.meta.get("kind", "unknown")), case.meta.get("generator"), tumors, s,
                                verdicts, round(time.perf_counter() - t0, 4), patient_group(case)))
        report.done.append(ref.case_id)
    if out_path is not None:
        write_scores(scores, out_path)
    return scores


def write_scores(scores: Sequence[CaseScore], path: str | Path) -> Path:
    return write_text(path, "".join(json.dumps(s.as_dict(), sort_keys=True) + "\n" for s in scores))


def read_scores(path: str | Path) -> list[CaseScore]:
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_NAME
    if not path.exists():
        raise CohortError(path, "scores file does not exist (run `tumorgen filter score` first)")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(CaseScore.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise CohortError(path, f"line {n} is not a case score ({e})") from None
    return out


# ------------------------------------------------------------------ decisions
@dataclass
class CaseDecision:
    """The composed decision on one case and each filter's verdict."""

    case_id: str
    accepted: bool
    score: float | None
    reasons: list[str]
    filters: dict[str, FilterVerdict]


@dataclass
class Decisions:
    """A cohort's decisions, the discriminator's cutoff, and which filters voted."""

    cutoff: Cutoff
    cases: list[CaseDecision]
    active: list[str]
    skipped: dict[str, str]


def calibration_scores(calibration: dict[str, Any]) -> list[float] | None:
    """The held-out real scores that set the calibrated cutoff: the calibration half when training split
    them (the other half checks it), else every held-out real score (older model folders)."""
    return calibration.get("calibration_real_scores") or calibration.get("real_scores")


def discriminator_verdict(s: CaseScore, cutoff: Cutoff) -> FilterVerdict:
    """The policy's verdict on one case, with a per-tumor verdict at the same cutoff."""
    d = decide(s.score, cutoff)
    def parts(t: dict[str, Any]) -> str:  # the two opinions behind a score, when the model has feature trees
        return f" (CNN {t['p_cnn']:.3f}, trees {t['p_trees']:.3f})" if "p_cnn" in t and "p_trees" in t else ""

    tv = [TumorVerdict(int(t["index"]), t["p_real"] >= cutoff.value, t["p_real"],
                       f"tumor {t['index']} ({t['lesion']}, {t['diameter_mm']:.0f} mm): P(real) {t['p_real']:.3f}"
                       f"{parts(t)} {'>=' if t['p_real'] >= cutoff.value else '<'} {cutoff.value:.3f}") for t in s.tumors]
    return FilterVerdict("discriminator", d.accepted, d.score, [d.reason], tv)


def decide_cases(scores: Sequence[CaseScore], config: FilterConfig, calibration: dict[str, Any],
                 cutoff: Cutoff | None = None) -> Decisions:
    """Apply the policy and compose the filters named in ``config.filters`` that have verdicts.

    ``cutoff``: reuse a cutoff (the probes are judged at the cohort's cutoff).
    """
    if cutoff is None:
        cutoff, _ = apply_policy(config.policy, [s.score for s in scores], calibration_scores(calibration))
    unknown = [f for f in config.filters if f not in FILTER_NAMES]
    if unknown:
        raise ValueError(f"filters: unknown filter(s) {unknown}; known: {list(FILTER_NAMES)}")
    skipped: dict[str, str] = {}
    active = []
    for f in config.filters:
        abstain = [s.verdicts[f] for s in scores if f in s.verdicts and not s.verdicts[f].get("voting", True)]
        if f != "discriminator" and scores and len(abstain) == len(scores):
            # the filter abstained on every case (e.g. a FreeTumor gate whose segmentor cannot see tumors)
            skipped[f] = abstain[0]["reasons"][0] if abstain[0].get("reasons") else "not voting"
            continue
        if f == "discriminator" or all(f in s.verdicts for s in scores):
            active.append(f)
        elif f == "freetumor":
            skipped[f] = "no segmentor given (pass --segmentor RUN, a trained segmentation run folder)"
        else:
            skipped[f] = "no HU bounds in the discriminator folder (hu_bounds.json)"
    cases = []
    for s in scores:
        vs = {"discriminator": discriminator_verdict(s, cutoff)}
        for f in FILTER_NAMES[1:]:
            if f in s.verdicts:
                vs[f] = FilterVerdict.from_dict(s.verdicts[f])
        # an abstaining filter's "not voting" reason is kept beside the votes (compose ignores it)
        abstaining = [vs[f] for f in config.filters if f not in active and f in vs and not vs[f].voting]
        ok, reasons = compose([vs[f] for f in active] + abstaining)
        cases.append(CaseDecision(s.case_id, ok, s.score, reasons, vs))
    return Decisions(cutoff, cases, active, skipped)


def manifest_rows(scores: Sequence[CaseScore], decisions: Decisions) -> list[dict[str, Any]]:
    """One filtered-manifest row per case (the keys the segmentation stage reads)."""
    rows = []
    for s, d in zip(scores, decisions.cases):
        tumors = []
        for t in s.tumors:
            row = {k: t[k] for k in ("index", "lesion", "organ", "diameter_mm", "size_bin", "volume_ml", "p_real")}
            for name, v in d.filters.items():
                tv = next((x for x in v.tumors if x.index == t["index"]), None)
                if tv is not None:
                    row[f"{name}_accepted"] = tv.accepted
            tumors.append(row)
        rows.append({
            "case_id": s.case_id, "ct": s.ct, "label": s.label, "accepted": d.accepted, "score": s.score,
            "reasons": d.reasons, "tumors": tumors, "kind": s.kind, "generator": s.generator,
            "filters": {k: {"accepted": v.accepted, "score": v.score, "active": k in decisions.active,
                            "voting": v.voting}
                        for k, v in d.filters.items()},
        })
    return rows


def apply_filter(scores: Sequence[CaseScore] | str | Path, model_dir: str | Path, out_dir: str | Path,
                 config: FilterConfig | str | Path | None = None, overrides: Sequence[str] = ()) -> Path:
    """Write ``<out_dir>/manifest.jsonl`` (accepted and rejected cases) and ``filter_summary.json``.

    Reads nothing but the scores and the discriminator folder; no case file is written or deleted.
    """
    cfg = _as_config(config, overrides)
    if not isinstance(scores, (list, tuple)):
        scores = read_scores(scores)
    out_dir = Path(out_dir)
    decisions = decide_cases(scores, cfg, read_calibration(model_dir))
    rows = manifest_rows(scores, decisions)
    forbidden = {Path(s.ct).resolve().parent for s in scores} | {Path(s.cohort).resolve() for s in scores}
    if out_dir.resolve() in forbidden:
        raise CohortError(out_dir, "refusing to write the filtered manifest into the cohort or a case folder "
                                   "(it would replace the cohort's own manifest); choose another --out")
    manifest = write_rows(out_dir / "manifest.jsonl", rows)
    n_acc = sum(r["accepted"] for r in rows)
    write_json(out_dir / "filter_summary.json", {
        "n_cases": len(rows), "n_accepted": n_acc, "n_rejected": len(rows) - n_acc,
        "acceptance_rate": n_acc / len(rows) if rows else None,
        "policy": asdict(cfg.policy), "cutoff": decisions.cutoff.value, "cutoff_how": decisions.cutoff.how,
        "active_filters": decisions.active, "skipped_filters": decisions.skipped,
        "by_filter": {f: sum(d.filters[f].accepted for d in decisions.cases if f in d.filters)
                      for f in FILTER_NAMES},
    })
    return manifest
