"""Generator quality on phantoms after a short CPU training of all three stages.

    python benchmarks/bench_generator.py --part data      # phantoms: 32 real (tumors), 72 held-out real (24 before session 8), 24 healthy
    python benchmarks/bench_generator.py --part train     # autoencoder -> diffusion -> ControlNet (configs/generative/phantom.yaml)
    python benchmarks/bench_generator.py --part sample    # 20-case synthetic cohort (configs/generative/sample_phantom.yaml)
    python benchmarks/bench_generator.py --part calibrate # draft calibration from a cohort of another seed (its own samples)
    python benchmarks/bench_generator.py --part sample --sample-set inpaint.draft_calibration=$TUMORGEN_BENCH_DIR/draft_calibration.json
    python benchmarks/bench_generator.py --part eval      # tumorgen generator eval with the held-out real tumors
    python benchmarks/bench_generator.py --report         # rewrite the generator-quality section of RESULTS.md

Every part resumes (training from its newest checkpoint, sampling skips finished
cases), so the whole study survives a kill. Numbers go to
``benchmarks/generator_results.json``; the montage of real and synthetic tumors
to ``benchmarks/generator_appearance.png``. All cohorts are site A at 1.5 mm, so the
HU statistics of real and synthetic tumors compare like with like (no contrast
phase between them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS_JSON = ROOT / "benchmarks" / "generator_results.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
MONTAGE = ROOT / "benchmarks" / "generator_appearance.png"
WORK = Path(os.environ.get("TUMORGEN_BENCH_DIR", "/tmp/tumorgen_bench_gen"))
BEGIN, END = "<!-- generator:begin -->", "<!-- generator:end -->"
CONFIG = ROOT / "configs" / "generative" / "phantom.yaml"
SAMPLE = ROOT / "configs" / "generative" / "sample_phantom.yaml"
#: what the numbers show, written after looking at them and the montage
GENERATOR_NOTE = (
    "What it shows (session 9: the three stages retrained with the 3000-step autoencoder, 23.7 training minutes on "
    "a 2-core AVX512-BF16 CPU, where `auto` precision is bf16; sampled as configs/generative/sample_phantom.yaml "
    "says, from rule-drawn drafts with the ring set exactly, and with the model's draft calibration "
    "(`--part calibrate`: 96 tumors of another sampling seed, synthetic only; the \"Generator: draft calibration\" "
    "section compares it with the uncalibrated sampler and a second seed): against 72 held-out phantoms (109 "
    "tumors, 45 early) every target holds. The autoencoder keeps 28.2 dB inside the 109 tumor ROIs (27.3 after "
    "1500 steps); the synthetic tumors spread like the held-out real ones (1.00); contrast, heterogeneity, rim, "
    "necrotic fraction and edge have KS 0.17, 0.19, 0.28, 0.12, 0.14 (the training real tumors score 0.13, 0.07, "
    "0.19, 0.13, 0.11 against the same set; the KS critical value at these sizes is 0.24, so the rim is still "
    "told apart from the real one at alpha 0.05 and the others are not); early tumors are as contrasted as real "
    "ones (ratio 1.00, 95 % CI 0.71-1.37); asked contrasts from -80 to +40 HU are followed to 5.5 HU (the darkest, "
    "-80, to 8.4); asked hyperdense tumors come out hyperdense 8 of 8 and asked rim-enhancing ones rim-enhancing 7 "
    "of 8; the Frechet distance to the held-out real tumors (39) stays below the training real tumors' own (49). "
    "The rim was the last target: uncalibrated, the same models score rim KS 0.37 (0.33 with the exact ring), "
    "calibrated 0.28; with sampling seed 2 the calibrated sampler scores 0.16. Every number rests on 8-109 "
    "tumors: see the sample sizes in the tables.")
COHORTS = {  # name: (site, n, tumor_fraction, seed)
    "real_train": ("A", 32, 1.0, 100),
    "real_heldout": ("A", 72, 1.0, 900),
    "healthy": ("A", 24, 0.0, 200),
}


def store(part: str, value) -> None:
    data = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    data[part] = value
    RESULTS_JSON.write_text(json.dumps(data, indent=1) + "\n")


def machine() -> str:
    from _report import machine_line

    return machine_line()


def part_data(args) -> None:
    from cohort.phantom import generate_cohort

    for name, (site, n, frac, seed) in COHORTS.items():
        rep = generate_cohort(WORK / "data" / name, site=site, n=n, tumor_fraction=frac, seed=seed, spacing=1.5,
                              organs=("liver",), progress=False)
        if not rep.ok:
            raise SystemExit(rep.summary())
    print("phantoms in", WORK / "data")


def part_train(args) -> None:
    from accelerate.state import AcceleratorState

    from generative.train import train_stage

    runs = WORK / "generator"
    base = [f"data.cohort={WORK / 'data' / 'real_train'}", f"output_dir={runs}"]
    steps = {"autoencoder": args.ae_steps, "diffusion": args.diffusion_steps, "controlnet": args.controlnet_steps}
    init = ""
    info = {}
    for stage in ("autoencoder", "diffusion", "controlnet"):
        AcceleratorState._reset_state(reset_partial_state=True)
        t0 = time.perf_counter()
        model = train_stage(stage, CONFIG, runs / stage, resume=True, progress=not args.quiet,
                            overrides=base + [f"train.steps={steps[stage]}"] + ([f"init_from={init}"] if init else []))
        summary = json.loads((runs / stage / "train_summary.json").read_text())
        info[stage] = {"steps": summary["steps"], "seconds_this_call": round(time.perf_counter() - t0, 1),
                       "train_seconds": summary["seconds"], "start_step": summary["start_step"],
                       "final_loss": summary["last"].get("loss")}
        print(stage, info[stage], flush=True)
        init = str(model)
    store("train", {**info, "machine": machine(), "config": str(CONFIG.relative_to(ROOT))})


#: asked appearance runs: name -> (attributes asked of every tumor, the type it should come out as or None)
CONTROL = {f"contrast_{c:+d}": ({"contrast_hu": float(c)}, None) for c in (-80, -40, 0, 40)}
CONTROL.update({"ask_hyper": ({"contrast_hu": 45.0, "rim_hu": 0.0}, "hyper"),
                "ask_rim": ({"contrast_hu": 5.0, "rim_hu": 50.0}, "rim")})
CONTROL_CASES = 8
PHANTOM_JSON = ROOT / "benchmarks" / "results" / "generator_phantom.json"


def _sample(out: Path, sets: list[str], args) -> dict:
    from generative.diffusion.sample import sample_cohort

    model = WORK / "generator" / "controlnet" / "model"
    t0 = time.perf_counter()
    sets = [*sets, *args.sample_set]
    rep = sample_cohort(WORK / "data" / "healthy", model, SAMPLE, out, overrides=sets, rank=0, world_size=1,
                        progress=not args.quiet)
    secs = [json.loads(p.read_text()).get("seconds") for p in sorted(out.glob("*/case.json"))]
    secs = sorted(s for s in secs if s is not None)
    return {"cases": len(rep.done) + len(rep.skipped), "failed": dict(rep.failed),
            "wall_s_this_call": round(time.perf_counter() - t0, 1),
            "seconds_per_case_median": float(secs[len(secs) // 2]) if secs else None}


def part_sample(args) -> None:
    """The drawn cohort (attributes from the training tumors, 2 cases per healthy phantom), then
    one small cohort per asked appearance (CONTROL)."""
    results = {"drawn": _sample(WORK / "synthetic" / "drawn", ["cases_per_source=2"], args)}
    print("drawn", results["drawn"], flush=True)
    for name, (asked, _) in CONTROL.items():
        flow = "{" + ", ".join(f"{k}: {v}" for k, v in asked.items()) + "}"
        results[name] = _sample(WORK / "synthetic" / name, [f"max_sources={CONTROL_CASES}", f"inpaint.appearance={flow}"], args)
        print(name, results[name], flush=True)
    store("sample", {**results, "machine": machine(), "spec": str(SAMPLE.relative_to(ROOT)),
                     "sample_set": list(args.sample_set)})


#: the calibration cohort: 4 cases per healthy phantom with drawn attributes, another seed than the judged cohort
CALIBRATION_SEED = 1
CALIBRATION_CASES = 4


def part_calibrate(args) -> None:
    """Sample the calibration cohort (spec seed CALIBRATION_SEED; synthetic samples only, no real tumor) and fit
    the draft calibration (generative.diffusion.calibration) to WORK / draft_calibration.json."""
    from generative.diffusion.calibration import calibrate_cohort
    from generative.diffusion.models import pipeline_hash

    model = WORK / "generator" / "controlnet" / "model"
    run = _sample(WORK / "synthetic" / "calibration", [f"cases_per_source={CALIBRATION_CASES}",
                                                       f"seed={CALIBRATION_SEED}"], args)
    cal = calibrate_cohort(WORK / "synthetic" / "calibration", pipeline_hash(model))
    cal.write(WORK / "draft_calibration.json")
    print("calibration", run, json.dumps(cal.summary), flush=True)
    store("calibrate", {"sample": run, "seed": CALIBRATION_SEED, "cases_per_source": CALIBRATION_CASES, "k": cal.k,
                        "summary": cal.summary, "machine": machine()})


def _rows(cohort: Path) -> list[dict]:
    from cohort.errors import BatchReport
    from cohort.layouts import open_cohort
    from generative.diffusion.evaluate import case_appearance

    return [r for case in open_cohort(cohort).iter_cases(BatchReport()) for r in case_appearance(case)]


def part_eval(args) -> None:
    from generative.diffusion.evaluate import evaluate_generator

    model = WORK / "generator" / "controlnet" / "model"
    rep = evaluate_generator(model, WORK / "data" / "real_train", WORK / "synthetic" / "drawn", WORK / "eval" / "drawn",
                             recon_crops=16, heldout=WORK / "data" / "real_heldout")
    print(rep.markdown(), flush=True)
    control = {}
    for name, (asked, want) in CONTROL.items():
        rows = _rows(WORK / "synthetic" / name)
        err = {a: float(np.mean([abs(r[a] - v) for r in rows])) for a, v in asked.items()} if rows else {}
        control[name] = {"asked": asked, "n": len(rows), "mean_abs_error": err,
                         "measured_contrast_hu": [round(r["contrast_hu"], 1) for r in rows],
                         "types": {t: sum(r["type"] == t for r in rows) for t in sorted({r["type"] for r in rows})},
                         "wanted_type": want, "wanted_type_rate": (float(np.mean([r["type"] == want for r in rows]))
                                                                   if want and rows else None)}
        print(name, control[name], flush=True)
    shutil.copyfile(WORK / "eval" / "drawn" / "appearance_montage.png", MONTAGE)
    store("eval", {"drawn": rep.as_dict(), "control": control})
    write_phantom_json()


def write_phantom_json() -> None:
    """benchmarks/results/generator_phantom.json: the issue's keys (targets in TARGETS)."""
    import torch

    d = json.loads(RESULTS_JSON.read_text())
    ev, tr, ctl = d["eval"]["drawn"], d.get("train", {}), d["eval"]["control"]
    app = ev["appearance"]
    contrast_runs = [v for k, v in ctl.items() if k.startswith("contrast_")]
    errs = [e for v in contrast_runs for e in [abs(c - v["asked"]["contrast_hu"]) for c in v["measured_contrast_hu"]]]
    # "idle_minutes": the stages' steps times their seconds per step on the idle machine, written by hand
    # when a stage ran in parts or beside other jobs (the note says how it was measured)
    train_s = 60 * tr["idle_minutes"] if "idle_minutes" in tr else sum(
        tr[s]["train_seconds"] for s in ("autoencoder", "diffusion", "controlnet") if s in tr)
    out = {
        "spread_ratio": app["spread_ratio"],
        "ks": {a: e.get("ks_synthetic_vs_heldout") for a, e in app["attributes"].items()},
        "ks_training_real_vs_heldout": {a: e.get("ks_real_vs_heldout") for a, e in app["attributes"].items()},
        "contrast_control_error_hu": float(np.mean(errs)) if errs else None,
        "contrast_control_n": len(errs),
        "asked_types": {k: {"wanted": v["wanted_type"], "rate": v["wanted_type_rate"], "n": v["n"]}
                        for k, v in ctl.items() if v["wanted_type"]},
        "ae_psnr_tumor_db": ev["recon_psnr_tumor"], "ae_tumor_rois": ev["recon_tumor_rois"],
        "ae_psnr_crops_db": ev["recon_psnr"],
        "early_contrast_ratio": app["early_contrast_ratio"],
        "early_contrast_ratio_ci": app.get("early_contrast_ratio_ci"),
        "early_contrast_ratio_training_real": app.get("early_contrast_ratio_real"),
        "sample_set": d.get("sample", {}).get("sample_set", []),
        "fd_synthetic": ev["frechet_distance_synthetic_vs_heldout"], "fd_real_vs_real": ev["frechet_distance_heldout"],
        "n_tumors": {k: app["attributes"]["contrast_hu"][k]["n"] for k in ("real", "heldout", "synthetic")},
        "types": app["types"], "type_rule_agreement": app["type_rule_agreement"],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "train_minutes": round(train_s / 60, 1),
        "machine": tr.get("machine"), "config": tr.get("config"),
    }
    out["targets"] = {
        "spread_ratio >= 0.8": out["spread_ratio"] is not None and out["spread_ratio"] >= 0.8,
        "every KS <= 0.3": all(v is not None and v <= 0.3 for k, v in out["ks"].items() if k != "diameter_mm"),
        "contrast control error <= 10 HU": out["contrast_control_error_hu"] is not None and out["contrast_control_error_hu"] <= 10,
        "hyper and rim produced when asked": all((v["rate"] or 0) >= 0.5 for v in out["asked_types"].values()),
        "AE tumor PSNR >= 28 dB": (out["ae_psnr_tumor_db"] or 0) >= 28,
        "early contrast within 25 %": out["early_contrast_ratio"] is not None and 0.75 <= out["early_contrast_ratio"] <= 1.25,
        "FD synthetic <= FD real vs real": (out["fd_synthetic"] is not None and out["fd_real_vs_real"] is not None
                                            and out["fd_synthetic"] <= out["fd_real_vs_real"]),
        "train minutes <= 40": out["train_minutes"] <= 40,
    }
    PHANTOM_JSON.parent.mkdir(parents=True, exist_ok=True)
    PHANTOM_JSON.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["targets"], indent=1))


def _f(v, spec=".2f"):
    return "n/a" if v is None or v != v else format(v, spec)


def report() -> str:
    d = json.loads(RESULTS_JSON.read_text())
    tr, sa = d.get("train", {}), d.get("sample", {})
    ph = json.loads(PHANTOM_JSON.read_text()) if PHANTOM_JSON.exists() else {}
    ev = d.get("eval", {}).get("drawn", {})
    out = [BEGIN, "## Generator quality on phantoms: appearance-conditioned ControlNet (generative.diffusion)", "",
           "`python benchmarks/bench_generator.py --part data --part train --part calibrate`, then `--part sample "
           "--part eval --report --sample-set inpaint.draft_calibration=$TUMORGEN_BENCH_DIR/draft_calibration.json`. "
           "Raw numbers: `benchmarks/generator_results.json`; the issue's keys and targets: "
           "`benchmarks/results/generator_phantom.json`; montage: `benchmarks/generator_appearance.png`.", ""]
    if tr:
        out += [f"Training (`{tr['config']}`, {COHORTS['real_train'][1]} site-A phantoms with liver tumors at 1.5 mm; "
                f"{tr['machine']}):", "", "| stage | steps | seconds | s/step | final loss |", "|---|---|---|---|---|"]
        for st in ("autoencoder", "diffusion", "controlnet"):
            if st in tr:
                r = tr[st]
                n = max(r["steps"] - r["start_step"], 1)
                out.append(f"| {st} | {r['steps']} | {r['train_seconds']:.0f} | {r['train_seconds'] / n:.3f} | {_f(r['final_loss'], '.4f')} |")
        out += ["", f"Timing: {tr['note']}." if tr.get("note") else "", ""]
    if sa.get("drawn"):
        r = sa["drawn"]
        out += [f"Sampling `{sa['spec']}`: {r['cases']} cases with attributes drawn from the training tumors, "
                f"{_f(r['seconds_per_case_median'])} s per case (median); {CONTROL_CASES} cases per asked appearance.", ""]
    if ph:
        out += ["| target | value | met |", "|---|---|---|"]
        rows = [("spread of tumor means / held-out real (>= 0.8)", _f(ph["spread_ratio"]), "spread_ratio >= 0.8"),
                ("KS vs held-out real, worst attribute (<= 0.3)",
                 _f(max(v for k, v in ph["ks"].items() if v is not None and k != "diameter_mm")), "every KS <= 0.3"),
                (f"contrast control error, asked -80..+40 HU, n {ph['contrast_control_n']} (<= 10 HU)",
                 _f(ph["contrast_control_error_hu"]), "contrast control error <= 10 HU"),
                ("asked hyperdense / rim-enhancing: share typed as asked",
                 " / ".join(_f(v["rate"]) for v in ph["asked_types"].values()), "hyper and rim produced when asked"),
                (f"autoencoder PSNR in {ph['ae_tumor_rois']} held-out tumor ROIs (>= 28 dB)", _f(ph["ae_psnr_tumor_db"]),
                 "AE tumor PSNR >= 28 dB"),
                ("early tumors' |contrast| / held-out real (0.75-1.25)", _f(ph["early_contrast_ratio"]),
                 "early contrast within 25 %"),
                ("FD to held-out real: synthetic vs training real", f"{_f(ph['fd_synthetic'])} vs {_f(ph['fd_real_vs_real'])}",
                 "FD synthetic <= FD real vs real"),
                ("training minutes (<= 40)", _f(ph["train_minutes"], ".1f"), "train minutes <= 40")]
        for label, v, key in rows:
            out.append(f"| {label} | {v} | {'yes' if ph['targets'][key] else 'no'} |")
        out += ["", f"Tumors: {ph['n_tumors']}; CPU capability {ph['cpu_capability']}.", ""]
    if ev.get("appearance"):
        out += appearance_lines(ev)
    out += ["![held-out real and synthetic tumors by appearance type](generator_appearance.png)", "",
            GENERATOR_NOTE, "", END]
    return "\n".join(out) + "\n"


def appearance_lines(ev: dict) -> list[str]:
    from generative.diffusion.evaluate import GeneratorReport

    rep = GeneratorReport()
    rep.appearance = ev["appearance"]
    return rep._appearance_lines()


def write_report() -> None:
    from _report import write_section

    write_section(RESULTS_MD, BEGIN, END, report())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["data", "train", "calibrate", "sample", "eval", "json"], action="append", default=[])
    p.add_argument("--report", action="store_true")
    p.add_argument("--ae-steps", type=int, default=3000)
    p.add_argument("--diffusion-steps", type=int, default=1000)
    p.add_argument("--controlnet-steps", type=int, default=2000)
    p.add_argument("--ablation", action="store_true", help="also sample with latent blending off")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--sample-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the sample spec for every sampled cohort, e.g. inpaint.blend=tumor")
    args = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    for part in args.part:
        {"data": part_data, "train": part_train, "calibrate": part_calibrate, "sample": part_sample, "eval": part_eval,
         "json": lambda a: write_phantom_json()}[part](args)
    if args.report:
        write_report()


if __name__ == "__main__":
    main()
