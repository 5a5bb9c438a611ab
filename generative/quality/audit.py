"""The filter's audit: an HTML page a person can read, PNG figures beside it, and a JSON of every number.

Sections: the discriminator on held-out data (ROC, AUC with 95 % bootstrap
CIs overall, per size class, organ and generator, score histograms of real vs
synthetic accepted / rejected), the calibration check (the calibrated
cutoff's false-reject rate on other held-out real tumors than those that set
it, per alpha, with Wilson CIs), whether the FreeTumor gate votes and why, the three filters side by side
(acceptance of the cohort, rejection of known-bad probes), acceptance by
organ and by tumor size (early <= 20 mm, medium, large), montages of the
most and least real-looking synthetic tumors (axial and coronal slices with
the tumor contour), and the rejected cases with their reasons (a montage of
rejected tumors captioned with the first reason, and the full table).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cohort.case import Case  # noqa: E402
from cohort.config import to_dict  # noqa: E402
from cohort.io import read_json, write_json, write_text  # noqa: E402
from cohort.layouts import open_cohort  # noqa: E402
from cohort.preprocess import to_ras  # noqa: E402
from cohort.progress import track
from cohort.report import format_cell, html_page, html_table  # noqa: E402
from generative.quality.apply import (  # noqa: E402
    FILTER_NAMES,
    CaseScore,
    Decisions,
    GateValidationArg,
    Scorer,
    _as_config,
    decide_cases,
    read_calibration,
    read_scores,
)
from generative.quality.config import FilterConfig  # noqa: E402
from generative.quality.crops import SIZE_BIN_NAMES, CropConfig, find_tumors, tumor_crop  # noqa: E402
from generative.quality.filters import Segmentor  # noqa: E402
from generative.quality.metrics import auc, roc_curve  # noqa: E402
from generative.quality.policies import Cutoff  # noqa: E402
from generative.quality.probes import make_probes  # noqa: E402

COLUMNS = (*FILTER_NAMES, "all")


# ------------------------------------------------------------------ numbers
def tumor_acceptance(scores: Sequence[CaseScore], decisions: Decisions) -> list[dict[str, Any]]:
    """One row per synthetic tumor: organ, size bin, P(real) and whether each filter accepts it.

    A filter accepts a tumor when its verdict on that tumor does; a filter with no
    per-tumor verdict (e.g. the tumor is too small to have a median) follows its case
    verdict. ``all`` is every active filter together.
    """
    rows = []
    for s, d in zip(scores, decisions.cases):
        for t in s.tumors:
            row = {"case_id": s.case_id, "index": t["index"], "organ": t["organ"], "size_bin": t["size_bin"],
                   "diameter_mm": t["diameter_mm"], "p_real": t["p_real"]}
            for name, v in d.filters.items():
                tv = next((x for x in v.tumors if x.index == t["index"]), None)
                row[name] = bool(tv.accepted if tv is not None else v.accepted)
            row["all"] = all(row[f] for f in decisions.active)
            rows.append(row)
    return rows


def rate_table(rows: Sequence[dict[str, Any]], key: str, order: Sequence[str] | None = None) -> dict[str, dict]:
    """{group: {"n": count, filter: acceptance rate or None}} grouped by ``key``."""
    groups = list(order) if order else sorted({r[key] for r in rows})
    out = {}
    for g in groups:
        sub = [r for r in rows if r[key] == g]
        entry: dict[str, Any] = {"n": len(sub)}
        for f in COLUMNS:
            vals = [r[f] for r in sub if f in r]
            entry[f] = (sum(vals) / len(vals)) if vals else None
        out[g] = entry
    return out


def probe_table(probe_scores: Sequence[CaseScore], probe_dec: Decisions, kinds: Sequence[str]) -> dict[str, dict]:
    """{kind: {"n": count, filter: rejection rate or None}} for the known-bad probes (plus "overall")."""
    kind_of = {s.case_id: s.case_id.rsplit("__probe_", 1)[-1] for s in probe_scores}
    out = {}
    for k in [*kinds, "overall"]:
        cases = [d for d in probe_dec.cases if k == "overall" or kind_of[d.case_id] == k]
        entry: dict[str, Any] = {"n": len(cases)}
        for f in FILTER_NAMES:
            vals = [not d.filters[f].accepted for d in cases if f in d.filters]
            entry[f] = (sum(vals) / len(vals)) if vals else None
        entry["all"] = (sum(not d.accepted for d in cases) / len(cases)) if cases else None
        out[k] = entry
    return out


# ------------------------------------------------------------------ figures
def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


def fig_roc(real: Sequence[float], syn: Sequence[float], path: Path) -> str:
    fpr, tpr, _ = roc_curve(real, syn)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=2, label=f"AUC {auc(real, syn):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate (synthetic called real)", ylabel="true positive rate (real called real)",
           title="Discriminator ROC, held-out cases")
    ax.legend(loc="lower right")
    return _save(fig, path)


def fig_hist(real: Sequence[float], acc: Sequence[float], rej: Sequence[float], cutoff: float, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 26)
    for vals, lab, col in ((real, "real (held out)", "tab:green"), (acc, "synthetic accepted", "tab:blue"),
                           (rej, "synthetic rejected", "tab:red")):
        if len(vals):
            ax.hist(vals, bins=bins, alpha=0.55, label=f"{lab} (n={len(vals)})", color=col)
    ax.axvline(cutoff, color="k", ls="--", lw=1, label=f"cutoff {cutoff:.3f}")
    ax.set(xlabel="P(real) from the discriminator", ylabel="tumors", title="Discriminator scores")
    ax.legend(fontsize=8)
    return _save(fig, path)


def fig_rates(table: dict[str, dict], title: str, path: Path, ylabel: str = "acceptance rate") -> str:
    groups = list(table)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(groups) + 2), 3.5))
    w = 0.8 / len(COLUMNS)
    for i, f in enumerate(COLUMNS):
        vals = [table[g].get(f) for g in groups]
        xs = [j + i * w for j, v in enumerate(vals) if v is not None]
        ax.bar(xs, [v for v in vals if v is not None], width=w, label=f)
    ax.set_xticks([j + w * (len(COLUMNS) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{g}\n(n={table[g]['n']})" for g in groups])
    ax.set(ylim=(0, 1.05), ylabel=ylabel, title=title)
    ax.legend(fontsize=7, ncol=len(COLUMNS))
    return _save(fig, path)


def _views(image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(CT, mask) axial and coronal slices through the centre of a (2, S, S, S) crop, in display order.

    RAS voxel axes: radiological display puts the patient's right (high x) on the
    viewer's left, anterior (high y) and superior (high z) at the top.
    """
    c = image.shape[1] // 2
    ax_ct, ax_m = image[0][::-1, ::-1, c].T, image[1][::-1, ::-1, c].T
    co_ct, co_m = image[0][::-1, c, ::-1].T, image[1][::-1, c, ::-1].T
    return [(ax_ct, ax_m), (co_ct, co_m)]


def _wrap(text: str, width: int, lines: int = 3) -> str:
    import textwrap

    out = textwrap.wrap(text, width)
    return "\n".join(out[:lines]) + (" ..." if len(out) > lines else "")


def fig_montage(items: list[dict[str, Any]], title: str, path: Path) -> str:
    """2 rows (axial, coronal) x k tumors, tumor contour in red."""
    k = max(len(items), 1)
    fig, axes = plt.subplots(2, k, figsize=(2.1 * k, 4.6), squeeze=False)
    for j in range(k):
        for i in range(2):
            axes[i, j].axis("off")
        if j >= len(items):
            continue
        it = items[j]
        for i, (ct, m) in enumerate(_views(it["image"])):
            axes[i, j].imshow(ct, cmap="gray", vmin=0, vmax=1)
            if m.any():
                axes[i, j].contour(m, levels=[0.5], colors="red", linewidths=0.8)
        title = f"{it['case_id']}#{it['index']}\nP={it['p_real']:.3f}, {it['diameter_mm']:.0f} mm"
        if it.get("caption"):
            title += "\n" + _wrap(str(it["caption"]), 30)
        axes[0, j].set_title(title, fontsize=6 if it.get("caption") else 7)
    axes[0, 0].text(-0.15, 0.5, "axial", transform=axes[0, 0].transAxes, rotation=90, va="center", fontsize=8)
    axes[1, 0].text(-0.15, 0.5, "coronal", transform=axes[1, 0].transAxes, rotation=90, va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def montage_items(scores: Sequence[CaseScore], picks: Sequence[dict[str, Any]], crop: CropConfig) -> list[dict]:
    """Reload the picked tumors' cases and cut a display crop (a wider view than the discriminator's)."""
    view = CropConfig(**{**asdict(crop), "size": max(crop.size, 40)})
    by_id = {s.case_id: s for s in scores}
    cache: dict[str, Any] = {}
    out = []
    for p in picks:
        s = by_id[p["case_id"]]
        if s.case_id not in cache:
            cache[s.case_id] = to_ras(open_cohort(s.cohort).get(s.case_id).load())
        case = cache[s.case_id]
        tumors = find_tumors(case, crop)
        match = [(i, m) for i, m in tumors if i.index == p["index"]]
        if not match:
            continue
        info, mask = match[0]
        out.append({**p, "image": tumor_crop(case, info, mask, view)})
    return out


def probe_sources(scores: Sequence[CaseScore], cfg: FilterConfig, val_groups: set[str],
                  probe_cohort: str | Path | None) -> list:
    """The tumor cases probes are made from (RAS voxel order), at most ``cfg.audit.probe_cases``."""
    k = cfg.audit.probe_cases
    if probe_cohort is None:
        best = [s for s in sorted(scores, key=lambda s: -(s.score if s.score is not None else -1)) if s.tumors][:k]
        return [to_ras(open_cohort(s.cohort).get(s.case_id).load()) for s in best]
    refs = open_cohort(probe_cohort).refs
    # cases the discriminator held out first: their scores are honest
    refs = sorted(refs, key=lambda r: (f"real:{r.case_id}" not in val_groups, r.case_id))
    out = []
    for r in refs:
        case = to_ras(r.load())
        if find_tumors(case, cfg.crop):
            out.append(case)
        if len(out) >= k:
            break
    return out


# ------------------------------------------------------------------ html
def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.0f} %"


# ------------------------------------------------------------------ sections
def held_out_section(summary: dict[str, Any], img: dict[str, str], cal: dict[str, Any], figs: Path) -> None:
    """summary["held_out"]: the discriminator on its validation cases (AUC, ROC, scores); the ROC figure."""
    real_val, syn_val = cal.get("real_scores", []), cal.get("synthetic_scores", [])
    held = {"auc": auc(real_val, syn_val) if real_val and syn_val else None,
            "n_real": len(real_val), "n_synthetic": len(syn_val)}
    if real_val and syn_val:
        fpr, tpr, thr = roc_curve(real_val, syn_val)
        held["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": [float(t) for t in thr[1:]]}
        img["roc"] = fig_roc(real_val, syn_val, figs / "roc.png")
    held["real_scores"], held["synthetic_scores"] = real_val, syn_val
    # AUC with 95 % bootstrap CIs overall, per size class, organ and generator (written by training)
    held["evaluation"] = cal.get("evaluation")
    summary["held_out"] = held


def case_acceptance(dec: Decisions) -> dict[str, float | None]:
    """{filter: fraction of cases it accepts, or None where it judged not every case; "all": the composed decision}."""
    n = len(dec.cases)
    rates = {f: (sum(d.filters[f].accepted for d in dec.cases if f in d.filters) / n if n and
                 all(f in d.filters for d in dec.cases) else None) for f in FILTER_NAMES}
    rates["all"] = (sum(d.accepted for d in dec.cases) / n) if n else None
    return rates


def seen_in_training(scores: Sequence[CaseScore], model_dir: str | Path, val_groups: set[str]) -> list[str]:
    """Ids of the scored cases that were negatives in the discriminator's training set (their scores are optimistic)."""
    tl_path = Path(model_dir) / "train_log.json"
    tl = read_json(tl_path) if tl_path.exists() else {}
    syn_dirs = set(tl.get("synthetic_dirs", []))
    return [s.case_id for s in scores if s.cohort in syn_dirs and f"synthetic:{s.group}" not in val_groups]


def cohort_section(summary: dict[str, Any], img: dict[str, str], scores: Sequence[CaseScore],
                   rows: Sequence[dict[str, Any]], dec: Decisions, cal: dict[str, Any], model_dir: str | Path,
                   figs: Path) -> None:
    """summary["cohort"]: acceptance per case, per organ and per tumor size, every score; histogram and rate figures."""
    acc = [r["p_real"] for r in rows if r["discriminator"]]
    rej = [r["p_real"] for r in rows if not r["discriminator"]]
    img["hist"] = fig_hist(cal.get("real_scores", []), acc, rej, dec.cutoff.value, figs / "score_hist.png")
    case_rates = case_acceptance(dec)
    by_organ = rate_table(rows, "organ")
    by_size = rate_table(rows, "size_bin", [b for b in SIZE_BIN_NAMES if any(r["size_bin"] == b for r in rows)])
    if rows:
        img["by_organ"] = fig_rates(by_organ, "Synthetic tumors accepted, by organ", figs / "acceptance_by_organ.png")
        img["by_size"] = fig_rates(by_size, "Synthetic tumors accepted, by size (early <= 20 mm)",
                                   figs / "acceptance_by_size.png")
    # cases the discriminator trained on score too well: say how many there are
    seen = seen_in_training(scores, model_dir, set(cal.get("val_groups", [])))
    summary["cohort"] = {
        "n_cases": len(dec.cases), "n_tumors": len(rows), "n_cases_seen_in_training": len(seen),
        "n_accepted": sum(d.accepted for d in dec.cases),
        "case_acceptance": case_rates, "tumor_acceptance_by_organ": by_organ, "tumor_acceptance_by_size": by_size,
        "seconds_per_case_mean": float(np.mean([s.seconds for s in scores])) if scores else None,
        "tumor_scores": [{k: r[k] for k in ("case_id", "index", "organ", "size_bin", "diameter_mm", "p_real")}
                         for r in rows],
        "case_scores": [{"case_id": d.case_id, "score": d.score, "accepted": d.accepted, "reasons": d.reasons}
                        for d in dec.cases],
    }


def montage_section(summary: dict[str, Any], img: dict[str, str], scores: Sequence[CaseScore],
                    rows: Sequence[dict[str, Any]], k: int, crop: CropConfig, figs: Path) -> None:
    """summary["montages"]: the ``k`` most and least real-looking synthetic tumors; one montage figure each."""
    ranked = sorted(rows, key=lambda r: -r["p_real"])
    picks = {"most_real": ranked[:k], "least_real": ranked[::-1][:k]}
    summary["montages"] = {}
    for name, pk in picks.items():
        items = montage_items(scores, pk, crop)
        summary["montages"][name] = [{x: it[x] for x in ("case_id", "index", "p_real", "diameter_mm")} for it in items]
        if items:
            img[f"montage_{name}"] = fig_montage(items, f"{name.replace('_', ' ')} synthetic tumors",
                                                 figs / f"montage_{name}.png")


def rejected_section(summary: dict[str, Any], img: dict[str, str], scores: Sequence[CaseScore],
                     dec: Decisions, k: int, crop: CropConfig, figs: Path) -> None:
    """summary["rejected"]: every rejected case with its reasons; a montage of up to ``k`` of them
    (each case's worst tumor, captioned with the first reason of the filter that rejected it)."""
    by_id = {s.case_id: s for s in scores}
    rejected = [d for d in dec.cases if not d.accepted]
    summary["rejected"] = [{"case_id": d.case_id, "score": d.score, "reasons": d.reasons,
                            "by": [f for f in dec.active if not d.filters[f].accepted]} for d in rejected]
    picks = []
    for d in sorted(rejected, key=lambda d: d.score if d.score is not None else 2.0)[:k]:
        tumors = by_id[d.case_id].tumors
        if not tumors:
            continue
        worst = min(tumors, key=lambda t: t["p_real"])
        by = [f for f in dec.active if not d.filters[f].accepted]
        first = next((r for r in d.reasons if r.split(":", 1)[0] in by), d.reasons[0] if d.reasons else "")
        picks.append({"case_id": d.case_id, "index": worst["index"], "p_real": worst["p_real"],
                      "diameter_mm": worst["diameter_mm"], "caption": first})
    items = montage_items(scores, picks, crop) if picks else []
    if items:
        img["montage_rejected"] = fig_montage(items, "rejected synthetic tumors (first reason)",
                                              figs / "montage_rejected.png")


def calibration_section(summary: dict[str, Any], cal: dict[str, Any]) -> None:
    """summary["calibration_check"]: the alpha checks stored by training (cutoff from the calibration
    half of the held-out real patients, false-reject rate measured on the other half)."""
    summary["calibration_check"] = {"alpha_checks": cal.get("alpha_checks", []),
                                    "n_calibration": len(cal.get("calibration_real_scores") or []),
                                    "n_check": len(cal.get("check_real_scores") or [])}


def judge_cases(cases: Sequence[Case], kind: str, scorer: Scorer, cfg: FilterConfig, cal: dict[str, Any],
                cutoff: Cutoff) -> tuple[list[CaseScore], Decisions | None]:
    """Score in-memory cases and decide them at the cohort's ``cutoff``; (scores, decisions or None when no case)."""
    out = []
    for c in track(cases, f"audit: scoring {kind} cases", unit="case"):
        tumors, sc, verdicts = scorer.score_case(c)
        out.append(CaseScore(c.case_id, "", "", None, kind, None, tumors, sc, verdicts))
    return out, (decide_cases(out, cfg, cal, cutoff=cutoff) if out else None)


def source_acceptance(cdec: Decisions | None) -> dict[str, Any]:
    """{filter: acceptance of the unbroken probe sources, "all", "n"}; empty when there were none."""
    if cdec is None:
        return {}
    control = {f: sum(d.filters[f].accepted for d in cdec.cases) / len(cdec.cases)
               for f in FILTER_NAMES if all(f in d.filters for d in cdec.cases)}
    control["all"] = sum(d.accepted for d in cdec.cases) / len(cdec.cases)
    control["n"] = len(cdec.cases)
    return control


def probe_section(summary: dict[str, Any], img: dict[str, str], scores: Sequence[CaseScore], cfg: FilterConfig,
                  cal: dict[str, Any], dec: Decisions, scorer: Scorer, probe_cohort: str | Path | None,
                  figs: Path) -> None:
    """summary["probes"]: rejection of known-bad probes at the cohort's cutoff, and the unbroken sources as control."""
    cases = probe_sources(scores, cfg, set(cal.get("val_groups", [])), probe_cohort)
    probes, notes = make_probes(cases, cfg.audit.probes, cfg.audit.seed)
    probe_scores, pdec = judge_cases([p.case for p in probes], "probe", scorer, cfg, cal, dec.cutoff)
    ptable = probe_table(probe_scores, pdec, cfg.audit.probes) if pdec else {}
    # control: the same cases unbroken. A filter that rejects these too is not catching the damage.
    _, cdec = judge_cases(cases, "probe_source", scorer, cfg, cal, dec.cutoff)
    control = source_acceptance(cdec)
    if ptable:
        img["probes"] = fig_rates({k: v for k, v in ptable.items()}, "Known-bad probes rejected",
                                  figs / "probe_rejection.png", ylabel="rejection rate")
    summary["probes"] = {"rejection": ptable, "notes": notes, "sources": [c.case_id for c in cases],
                         "source_cohort": str(probe_cohort) if probe_cohort else "scored cohort (best-scoring cases)",
                         "source_acceptance": control,
                         "scores": [{"case_id": s.case_id, "score": s.score} for s in probe_scores]}


def side_by_side(summary: dict[str, Any], dec: Decisions) -> dict[str, dict[str, Any]]:
    """{filter: voting or not, cohort case acceptance, probe rejection}, from the cohort and probe sections."""
    case_rates, ptable = summary["cohort"]["case_acceptance"], summary["probes"]["rejection"]
    return {f: {"active": f in dec.active or f == "all", "case_acceptance": case_rates.get(f),
                "probe_rejection": ptable.get("overall", {}).get(f) if ptable else None}
            for f in COLUMNS}


# ------------------------------------------------------------------ audit
def audit(scores: Sequence[CaseScore] | str | Path, model_dir: str | Path, out_dir: str | Path,
          config: FilterConfig | str | Path | None = None, segmentor: Segmentor | None = None,
          overrides: Sequence[str] = (), probe_cohort: str | Path | None = None,
          gate_validation: GateValidationArg = None) -> Path:
    """Write ``<out_dir>/report.html``, ``figures/*.png`` and ``summary.json``; returns the HTML path.

    probe_cohort: build the known-bad probes from this cohort's tumor cases (best: real
    cases, preferring those the discriminator held out) instead of the best-scoring
    synthetic cases; the unbroken sources are scored too, as a control.
    gate_validation: how the FreeTumor gate earns its vote (see :class:`~generative.quality.apply.Scorer`).
    """
    t0 = time.perf_counter()
    cfg = _as_config(config, overrides)
    scores = list(scores) if isinstance(scores, (list, tuple)) else read_scores(scores)
    out_dir = Path(out_dir)
    figs = out_dir / "figures"
    cal = read_calibration(model_dir)
    dec = decide_cases(scores, cfg, cal)
    scorer = Scorer(model_dir, cfg, segmentor, gate_validation)
    summary: dict[str, Any] = {"model_dir": str(model_dir), "policy": asdict(cfg.policy),
                               "cutoff": dec.cutoff.value, "cutoff_how": dec.cutoff.how,
                               "active_filters": dec.active, "skipped_filters": dec.skipped,
                               "freetumor_gate": None if scorer.gate is None else {
                                   "voting": scorer.gate.voting, "status": scorer.gate.status,
                                   "validation": scorer.gate.validation.as_dict() if scorer.gate.validation else None,
                                   "min_sensitivity": cfg.freetumor.min_sensitivity}}
    img: dict[str, str] = {}  # figure key -> path relative to out_dir

    # 1. discriminator on held-out data
    held_out_section(summary, img, cal, figs)
    # 2. the cohort: per tumor and per case
    rows = tumor_acceptance(scores, dec)
    cohort_section(summary, img, scores, rows, dec, cal, model_dir, figs)
    # 3. montages of the most and least real-looking synthetic tumors
    montage_section(summary, img, scores, rows, cfg.audit.montage_k, scorer.crop, figs)
    # 4. known-bad probes, judged at the cohort's cutoff; the rejected cases; the calibration check
    probe_section(summary, img, scores, cfg, cal, dec, scorer, probe_cohort, figs)
    rejected_section(summary, img, scores, dec, cfg.audit.montage_k, scorer.crop, figs)
    calibration_section(summary, cal)
    # 5. the filters side by side, the resolved config; the JSON
    summary["filters_side_by_side"] = side_by_side(summary, dec)
    summary["config"] = to_dict(cfg)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "summary.json", summary)

    # 6. the page
    page = _html(summary, img, dec)
    return write_text(out_dir / "report.html", page)


def _html(s: dict[str, Any], img: dict[str, str], dec: Decisions) -> str:
    def fig(key: str, alt: str) -> str:
        return f'<img src="{img[key]}" alt="{html.escape(alt)}">' if key in img else f'<p class="note">({alt}: no data)</p>'

    h, c, pr = s["held_out"], s["cohort"], s["probes"]["rejection"]
    skipped = "".join(f"<li><b>{html.escape(k)}</b> not applied: {html.escape(v)}</li>" for k, v in s["skipped_filters"].items())
    side = html_table(["filter", "voting", "cohort cases accepted", "known-bad probes rejected"],
                      [[f, "yes" if (f in s["active_filters"] or f == "all") else
                        f"no ({s['skipped_filters'].get(f, 'not in filters')})",
                        _pct(v["case_acceptance"]), _pct(v["probe_rejection"])]
                       for f, v in s["filters_side_by_side"].items()])
    rate_rows = lambda t: [[g, e["n"], *[_pct(e.get(f)) for f in COLUMNS]] for g, e in t.items()]  # noqa: E731
    probe_rows = [[k, e["n"], *[_pct(e.get(f)) for f in COLUMNS]] for k, e in pr.items()]
    ctrl = s["probes"]["source_acceptance"]
    if ctrl:
        probe_rows.append(["unbroken sources: ACCEPTED", ctrl["n"], *[_pct(ctrl.get(f)) for f in COLUMNS]])
    rejected = [[r["case_id"], r["score"], ", ".join(r["by"]), "; ".join(r["reasons"])] for r in s["rejected"]]
    ev = h.get("evaluation") or {}

    def ci(e: dict) -> str:
        lo, hi = e.get("ci") or [None, None]
        return "n/a" if lo is None else f"{lo:.3f}-{hi:.3f}"

    auc_rows = [[grp, name, format_cell(e.get("auc")), ci(e), e.get("n_real"), e.get("n_synthetic")]
                for grp, key in (("overall", None), ("size", "by_size"), ("organ", "by_organ"),
                                 ("generator", "by_generator"))
                for name, e in ((("all", ev["overall"]),) if key is None and "overall" in ev else
                                (ev.get(key, {}).items() if key else ()))]
    cc = s["calibration_check"]
    cal_rows = [[f"{r['alpha']:.2f}", format_cell(r.get("cutoff")), _pct(r.get("false_reject")),
                 "n/a" if r.get("ci", [None])[0] is None else f"{100 * r['ci'][0]:.0f}-{100 * r['ci'][1]:.0f} %",
                 {True: "yes", False: "NO", None: "n/a"}[r.get("holds")], _pct(r.get("rejected_synthetic")),
                 _pct(r.get("rejected_probes"))] for r in cc["alpha_checks"]]
    gate = s.get("freetumor_gate")
    accepted_n = c["n_accepted"]
    parts = [
        "<h1>Synthetic tumor quality filter: audit</h1>",
        f"<p class='key'>Discriminator held-out AUC: <b>{format_cell(h['auc'])}</b> "
        f"({h['n_real']} real vs {h['n_synthetic']} synthetic tumors from validation cases). "
        f"Policy <b>{html.escape(s['policy']['kind'])}</b>: cutoff {s['cutoff']:.3f} ({html.escape(s['cutoff_how'])}).</p>",
        f"<p class='key'>Cohort: {c['n_cases']} cases, {c['n_tumors']} tumors; <b>{accepted_n}</b> cases accepted by all "
        f"voting filters ({html.escape(', '.join(s['active_filters']))}). Known-bad probes rejected: "
        f"<b>{_pct(pr.get('overall', {}).get('all'))}</b>. Mean time to score a case: "
        f"{format_cell(c['seconds_per_case_mean'])} s.</p>",
        (f"<p class='note'>{c['n_cases_seen_in_training']} of these cases were negatives in the discriminator's "
         "training set (their scores are optimistic about rejection); the held-out AUC above is the honest "
         "number.</p>" if c["n_cases_seen_in_training"] else ""),
        f"<ul>{skipped}</ul>" if skipped else "",
        "<h2>The filters side by side</h2>", side,
        "<p class='note'>A case is kept only when every voting filter accepts it (column <i>all</i>). "
        "The discriminator judges a case by its worst tumor.</p>",
        "<h2>FreeTumor gate</h2>",
        (f"<p>{html.escape(gate['status'])}</p>" if gate else "<p class='note'>no segmentor given: not applied</p>"),
        "<h2>Discriminator on held-out data</h2>",
        "<p class='note'>AUC of real against synthetic tumors of the held-out patients, with a 95 % bootstrap CI; "
        "size: early (&le; 20 mm) against larger; each generator (and each known-bad probe kind built from "
        "held-out real patients) against every held-out real tumor.</p>",
        html_table(["by", "group", "AUC", "95 % CI", "real", "synthetic"], auc_rows) if auc_rows
        else "<p class='note'>(no breakdown: model folder from before issue 14)</p>",
        fig("roc", "ROC"), fig("hist", "score histogram"),
        "<h2>Calibration check</h2>",
        f"<p class='note'>The calibrated cutoff is the alpha-quantile of {cc['n_calibration']} held-out real tumors' "
        f"scores; its false-reject rate is measured on {cc['n_check']} other held-out real tumors (other patients), "
        "with a Wilson 95 % CI. <i>holds</i>: alpha lies inside the CI.</p>",
        html_table(["alpha", "cutoff", "real false-reject", "95 % CI", "holds", "held-out synthetic rejected",
                    "held-out probes rejected"], cal_rows) if cal_rows else "<p>(no calibration check stored)</p>",
        "<h2>Acceptance of synthetic tumors by organ</h2>",
        html_table(["organ", "tumors", *COLUMNS], rate_rows(c["tumor_acceptance_by_organ"])), fig("by_organ", "by organ"),
        "<h2>Acceptance by tumor size</h2><p class='note'>early: max axial diameter &le; 20 mm; medium &le; 50 mm; "
        "large above.</p>",
        html_table(["size", "tumors", *COLUMNS], rate_rows(c["tumor_acceptance_by_size"])), fig("by_size", "by size"),
        "<h2>Most real-looking synthetic tumors</h2>", fig("montage_most_real", "most real montage"),
        "<h2>Least real-looking synthetic tumors</h2>", fig("montage_least_real", "least real montage"),
        "<h2>Known-bad probes</h2><p class='note'>Copies of tumor cases (source: "
        f"{html.escape(s['probes']['source_cohort'])}) with their first tumor "
        "broken on purpose: noise-filled, wrong HU (450), blocky (its bounding box), moved outside its organ, "
        "pasted with a +60 HU box seam, blurred. "
        "Rejection rates, judged at the cohort's cutoff; the last row is the acceptance of the same cases "
        "unbroken (the control).</p>",
        html_table(["probe", "cases", *COLUMNS], probe_rows), fig("probes", "probe rejection"),
        "".join(f"<p class='note'>{html.escape(n)}</p>" for n in s["probes"]["notes"]),
        f"<h2>Rejected cases ({len(rejected)})</h2>", fig("montage_rejected", "rejected montage"),
        html_table(["case", "score", "rejected by", "reasons"], rejected) if rejected else "<p>none</p>",
        "<p class='note'>Every number on this page is in summary.json beside it.</p>",
    ]
    return html_page("Quality filter audit", parts)
