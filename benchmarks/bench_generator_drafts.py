"""Generator: SDEdit from rule-drawn drafts against sampling from pure noise (issue 13).

Each run is one `bench_generator.py --part sample --part eval` on the same trained models with
`--sample-set inpaint.draft_strength=S [--sample-set inpaint.draft_detail=true]` (its own
TUMORGEN_BENCH_DIR and a copy of benchmarks/ so the records do not overwrite each other):

    python benchmarks/bench_generator_drafts.py \\
        --run "pure noise (strength 1)=<copy>/benchmarks/results/generator_phantom.json" \\
        --run "0.3 + detail=<copy2>/benchmarks/results/generator_phantom.json" ... \\
        --drawn <work2>/synthetic/drawn --heldout <work>/data/real_heldout

``--drawn``: a synthetic cohort whose tumors recorded the attributes they were asked for; their KS
against the held-out real tumors is what a generator that reproduced every drawn attribute exactly
would score (the floor the sampled attributes set, against this held-out set). Writes
benchmarks/results/generator_draft_phantom.json and the "drafts" section of RESULTS.md.

``--section calibration`` collects the draft-calibration runs of session 9 instead (the models retrained
with the 3000-step autoencoder; runs with and without ``inpaint.draft_calibration``, before and after the
draft's exact rim, and a second sampling seed) into benchmarks/results/generator_calibration_phantom.json
and the "calibration" section.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
#: section -> (results JSON, title, what the runs are: the section's first paragraph)
SECTIONS = {
    "drafts": (ROOT / "benchmarks" / "results" / "generator_draft_phantom.json",
               "Generator: drafts (SDEdit from a rule-drawn tumor; generative.diffusion.draft)",
               "The session-4 models of the generator benchmark (no retraining), sampled by "
               "`bench_generator.py --part sample --part eval --sample-set inpaint.draft_strength=S "
               "[--sample-set inpaint.draft_detail=true]`; `python benchmarks/bench_generator_drafts.py` (its docstring "
               "has the command) collects the runs. 48 drawn synthetic tumors against 33 held-out real ones, 8 per "
               "asked appearance; the two-sample KS critical value at these sizes is 0.31 (alpha 0.05)."),
    "calibration": (ROOT / "benchmarks" / "results" / "generator_calibration_phantom.json",
                    "Generator: draft calibration (generative.diffusion.calibration)",
                    "The session-9 models of the generator benchmark (autoencoder 3000 steps, UNet 1000, ControlNet "
                    "2000), sampled as configs/generative/sample_phantom.yaml says (draft 0.3 + detail + scan noise) "
                    "with and without `--sample-set inpaint.draft_calibration=<calibration>`: the calibration is "
                    "`bench_generator.py --part calibrate` (96 tumors sampled with spec seed 1, synthetic only); the "
                    "judged cohorts use seed 0 (and 2 for the replicate). `python benchmarks/bench_generator_drafts.py "
                    "--section calibration --run ...` collects the runs. 48 drawn synthetic tumors against 109 "
                    "held-out real ones, 8 per asked appearance; the two-sample KS critical value at these sizes is "
                    "0.24 (alpha 0.05)."),
}
ATTRS = ("contrast_hu", "heterogeneity_hu", "rim_hu", "necrotic_fraction", "edge_hu_per_mm")


def drawn_floor(drawn: Path, heldout: Path) -> dict:
    """KS of the asked (drawn) attributes themselves against the held-out real tumors, and the
    measured-over-asked ratio per attribute (median over tumors)."""
    import numpy as np
    from scipy.stats import ks_2samp

    from cohort.errors import BatchReport
    from cohort.layouts import open_cohort
    from generative.diffusion.evaluate import case_appearance

    held = [r for c in open_cohort(heldout).iter_cases(BatchReport()) for r in case_appearance(c)]
    asked, got = [], []
    for f in sorted(Path(drawn).glob("*/case.json")):
        for t in json.loads(f.read_text()).get("tumors", []):
            if t.get("appearance"):
                asked.append(t["appearance"]["requested"])
                got.append(t["appearance"]["measured"])
    out: dict = {"n_asked": len(asked), "n_heldout": len(held), "ks_asked_vs_heldout": {}, "measured_over_asked": {}}
    for k in ATTRS:
        a = [r[k] for r in asked if r.get(k) == r.get(k)]
        h = [r[k] for r in held if r.get(k) == r.get(k)]
        out["ks_asked_vs_heldout"][k] = round(float(ks_2samp(a, h).statistic), 4)
        pairs = [(g[k], r[k]) for g, r in zip(got, asked) if abs(r.get(k) or 0) > 1e-6 and g.get(k) == g.get(k)]
        out["measured_over_asked"][k] = round(float(np.median([g / r for g, r in pairs])), 3) if pairs else None
    return out


def _raw_results(phantom_json: Path) -> dict | None:
    """The bench_generator.py raw results beside a generator_phantom.json: ``<benchmarks>/generator_results.json``
    for ``<benchmarks>/results/generator_phantom.json``, or ``X_generator_results.json`` beside ``X_generator_phantom.json``."""
    for cand in (phantom_json.parent.parent / "generator_results.json",
                 phantom_json.with_name(phantom_json.name.replace("generator_phantom", "generator_results"))):
        if cand.exists() and cand != phantom_json:
            return json.loads(cand.read_text())
    return None


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def section(res: dict, name: str = "drafts") -> str:
    _, title, intro = SECTIONS[name]
    begin, end = markers(name)
    lines = [begin, f"## {title}", "", f"{intro} {res['machine']}.",
             "", "| sampling | KS contrast | KS heterogeneity | KS rim | KS necrotic | KS edge | spread | early contrast "
             "ratio (95 % CI) | FD | control error (HU): -80 / -40 / 0 / +40, mean | asked hyper / rim typed so | s per case |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["runs"].items():
        ks = r["ks"]
        ctl = r.get("control_by_ask") or {}
        per = " / ".join(f"{ctl[k]['mean_abs_error']['contrast_hu']:.1f}" for k in
                         ("contrast_-80", "contrast_-40", "contrast_+0", "contrast_+40") if k in ctl)
        ci = r.get("early_contrast_ratio_ci")
        early = f"{r['early_contrast_ratio']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
        types = " / ".join(f"{v['rate']:.2f}" for v in r["asked_types"].values())
        spc = r.get("seconds_per_case")
        lines.append(f"| {name} | {ks['contrast_hu']:.2f} | {ks['heterogeneity_hu']:.2f} | {ks['rim_hu']:.2f} | "
                     f"{ks['necrotic_fraction']:.2f} | {ks['edge_hu_per_mm']:.2f} | {r['spread_ratio']:.2f} | {early} | "
                     f"{r['fd_synthetic']:.0f} | {per + ', ' if per else ''}{r['contrast_control_error_hu']:.1f} | {types} | "
                     f"{'n/a' if spc is None else f'{spc:.1f}'} |")
    fl = res.get("floor")
    if fl:
        lines += ["", f"The floor set by the drawn attributes themselves ({fl['n_asked']} asked tumors of the "
                  f"`{fl['run']}` run against {fl['n_heldout']} held-out): KS "
                  + ", ".join(f"{k} {v:.2f}" for k, v in fl["ks_asked_vs_heldout"].items())
                  + "; measured over asked (median): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in fl["measured_over_asked"].items() if v is not None) + "."]
    if res.get("note"):
        lines += ["", res["note"]]
    lines.append(end)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], metavar="LABEL=GENERATOR_PHANTOM_JSON")
    p.add_argument("--drawn", type=Path, help="synthetic cohort for the floor (its tumors' asked attributes)")
    p.add_argument("--floor-run", default="", help="the label of the run --drawn belongs to")
    p.add_argument("--heldout", type=Path)
    p.add_argument("--note", default="")
    p.add_argument("--section", choices=sorted(SECTIONS), default="drafts")
    args = p.parse_args()
    from benchmarks._report import machine_line, write_section
    from cohort.io import write_json

    runs = {}
    for spec in args.run:
        label, path = spec.split("=", 1)
        r = json.loads(Path(path).read_text())
        raw = _raw_results(Path(path))
        if raw:  # the per-ask control errors and the sampling time are in the run's generator_results.json
            r["control_by_ask"] = {k: {"asked": v["asked"], "mean_abs_error": v["mean_abs_error"],
                                       "measured_contrast_hu": v["measured_contrast_hu"]}
                                   for k, v in raw["eval"]["control"].items()}
            r["seconds_per_case"] = raw.get("sample", {}).get("drawn", {}).get("seconds_per_case_median")
        runs[label] = r
    res = {"runs": runs, "machine": machine_line(), "note": args.note}
    if args.drawn and args.heldout:
        res["floor"] = {"run": args.floor_run, **drawn_floor(args.drawn, args.heldout)}
    write_json(SECTIONS[args.section][0], res)
    write_section(RESULTS_MD, *markers(args.section), section(res, args.section))


if __name__ == "__main__":
    main()
