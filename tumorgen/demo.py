"""`tumorgen demo`: the whole chain on the phantom world, small sizes, one HTML report.

Stages (each resumable; a finished stage is recorded in ``<out>/stages.json``):

1. phantoms     real tumor CTs (site A), healthy CTs (sites A, B), ID test (A), OOD test (C)
2. generator    autoencoder -> latent diffusion UNet -> ControlNet, short CPU training
3. diffusion    a synthetic cohort: tumors inpainted into the healthy CTs
4. baselines    CA (Pixel2Cancer) and rule-based (SyntheticTumors) cohorts from the same healthy CTs
5. segmentor    the real-only segmentation cell at the largest real size (also the FreeTumor gate)
6. filter       discriminator training, scoring, filtered manifest, audit report
7. scaling      the rest of the grid: #real x {none, rules, ca, diffusion, diffusion_filtered}
8. report       scaling tables and curves, generator numbers, montages, one HTML page

Every number shown is measured on the demo's own held-out phantoms. At demo
sizes the differences between sources are mostly noise; the report says so.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from cohort.config import config_dir, load_config, save_config
from cohort.io import read_json, write_json, write_text
from evaluation.scaling import CohortSource, Grid, PhantomCohort, ScalingConfig, SyntheticSource

console = Console(stderr=True)


@dataclass
class DemoPhantoms:
    real_train: PhantomCohort = field(default_factory=lambda: PhantomCohort("A", 8, 1.0, 100))
    healthy: list[PhantomCohort] = field(default_factory=lambda: [PhantomCohort("A", 4, 0.0, 200),
                                                                  PhantomCohort("B", 4, 0.0, 300)])
    test_id: PhantomCohort = field(default_factory=lambda: PhantomCohort("A", 6, 0.5, 900))
    test_ood: PhantomCohort = field(default_factory=lambda: PhantomCohort("C", 6, 0.5, 950))


@dataclass
class DemoConfig:
    spacing_mm: float = 1.5
    phantoms: DemoPhantoms = field(default_factory=DemoPhantoms)
    generator: str = "demo/generative_demo.yaml"
    autoencoder_set: list[str] = field(default_factory=list)
    diffusion_set: list[str] = field(default_factory=list)
    controlnet_set: list[str] = field(default_factory=list)
    sample: str = "demo/sample_demo.yaml"
    sample_set: list[str] = field(default_factory=list)
    baseline_organs: list[str] = field(default_factory=lambda: ["liver"])
    filter: str = "demo/filter_demo.yaml"
    filter_set: list[str] = field(default_factory=list)
    segmentation: str = "segmentation/demo.yaml"
    segmentation_set: list[str] = field(default_factory=list)
    grid: Grid = field(default_factory=lambda: Grid([2, 8], ["none", "rules", "ca", "diffusion", "diffusion_filtered"],
                                                    [3.0], [0]))


def _cfg_path(p: str) -> Path:
    path = Path(p)
    return path if path.exists() else config_dir() / p


class Stages:
    """Runs named stages once; ``stages.json`` records each finished stage and its seconds."""

    def __init__(self, out: Path):
        self.out = out
        self.file = out / "stages.json"
        self.state: dict[str, Any] = read_json(self.file) if self.file.exists() else {}

    def run(self, name: str, title: str, fn: Callable[[], Any], always: bool = False) -> None:
        if self.state.get(name, {}).get("done") and not always:
            console.print(f"[dim]stage {name}: already done ({self.state[name]['seconds']:.0f} s), skipped[/dim]")
            return
        console.rule(f"[bold]{title}")
        _fresh_accelerate()
        t0 = time.perf_counter()
        info = fn()
        sec = time.perf_counter() - t0
        # a stage with failed parts (scaling cells) stays open so a rerun retries them
        done = not (info or {}).get("failed_cells")
        self.state[name] = {"done": done, "seconds": round(sec, 1), **({"info": info} if info else {})}
        write_json(self.file, self.state)
        console.print(f"stage {name}: {sec:.0f} s")


def _fresh_accelerate() -> None:
    """Stages run in one process with different precisions (bf16 generator, fp32 segmentation);
    accelerate keeps one global state per process, so clear it before each stage."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _phantoms(cfg: DemoConfig, d: Path) -> dict[str, Any]:
    from cohort.phantom import generate_cohort

    jobs = [("real_train", cfg.phantoms.real_train), ("test_id", cfg.phantoms.test_id),
            ("test_ood", cfg.phantoms.test_ood)] + [(f"healthy_{i}", h) for i, h in enumerate(cfg.phantoms.healthy)]
    info = {}
    for name, p in jobs:
        rep = generate_cohort(d / name, site=p.site, n=p.n, tumor_fraction=p.tumor_fraction, seed=p.seed,
                              spacing=cfg.spacing_mm, organs=tuple(p.organs))
        if not rep.ok:
            raise RuntimeError(f"phantoms {name}: {rep.summary()}")
        info[name] = {"site": p.site, "n": p.n, "tumor_fraction": p.tumor_fraction, "tumor_organs": p.organs}
    return info


def _generator(cfg: DemoConfig, out: Path, data: Path) -> dict[str, Any]:
    from generative.train import train_stage

    g = out / "generator"
    base = [f"data.cohort={data / 'real_train'}", f"output_dir={g}"]
    times = {}
    t0 = time.perf_counter()
    ae = train_stage("autoencoder", _cfg_path(cfg.generator), g / "autoencoder", resume=True,
                     overrides=base + cfg.autoencoder_set)
    times["autoencoder_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    dm = train_stage("diffusion", _cfg_path(cfg.generator), g / "diffusion", resume=True,
                     overrides=base + [f"init_from={ae}"] + cfg.diffusion_set)
    times["diffusion_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    train_stage("controlnet", _cfg_path(cfg.generator), g / "controlnet", resume=True,
                overrides=base + [f"init_from={dm}"] + cfg.controlnet_set)
    times["controlnet_s"] = round(time.perf_counter() - t0, 1)
    return times


def _model_dir(out: Path) -> Path:
    return out / "generator" / "controlnet" / "model"


def _diffusion(cfg: DemoConfig, out: Path, data: Path) -> dict[str, Any]:
    from cohort.errors import BatchReport
    from generative.diffusion.evaluate import evaluate_generator
    from generative.diffusion.sample import sample_cohort

    target = out / "synthetic" / "diffusion"
    report = BatchReport()
    # Two cohorts from the same healthy CTs with different seeds: "diffusion" is the scaling source
    # and what the filter judges; "diffusion_disc" only trains the discriminator, so no scored
    # tumor was ever seen by it in training.
    for name, seed_set in (("diffusion", []), ("diffusion_disc", ["seed=1", "cases_per_source=1"])):
        for h in sorted(data.glob("healthy_*")):
            report.merge(sample_cohort(h, _model_dir(out), _cfg_path(cfg.sample), out / "synthetic" / name,
                                       overrides=[*cfg.sample_set, *seed_set], rank=0, world_size=1))
    if not report.done and not report.skipped:
        raise RuntimeError(f"diffusion sampling produced no case:\n{report.summary()}")
    rep = evaluate_generator(_model_dir(out), data / "real_train", target, out / "generator" / "eval",
                             heldout=data / "test_id")  # test tumors: only the yardstick, never trained on
    return {"cases": len(report.done) + len(report.skipped), "failed": report.failed,
            "generator_eval": rep.as_dict()}


def _baselines(cfg: DemoConfig, out: Path, data: Path) -> dict[str, Any]:
    from evaluation.scaling import make_synthetic_cohort

    healthy = sorted(data.glob("healthy_*"))
    info = {}
    for method in ("rules", "ca"):
        t0 = time.perf_counter()
        make_synthetic_cohort(SyntheticSource(name=method, method=method, organs=list(cfg.baseline_organs)),
                             healthy, out / "synthetic" / method)
        info[f"{method}_s"] = round(time.perf_counter() - t0, 1)
    return info


def scaling_config(cfg: DemoConfig, out: Path, data: Path) -> ScalingConfig:
    return ScalingConfig(
        name="demo",
        real_train=CohortSource(path=str(data / "real_train")),
        healthy=[CohortSource(path=str(h)) for h in sorted(data.glob("healthy_*"))],
        test_id=CohortSource(path=str(data / "test_id")),
        test_ood=CohortSource(path=str(data / "test_ood")),
        synthetic=[
            SyntheticSource(name="rules", path=str(out / "synthetic" / "rules")),
            SyntheticSource(name="ca", path=str(out / "synthetic" / "ca")),
            SyntheticSource(name="diffusion", path=str(out / "synthetic" / "diffusion")),
            SyntheticSource(name="diffusion_filtered", path=str(out / "filter" / "filtered" / "manifest.jsonl"),
                            accepted_only=True),
        ],
        grid=cfg.grid,
        segmentation=str(_cfg_path(cfg.segmentation)),
        segmentation_set=list(cfg.segmentation_set),
    )


def _segmentor_cell(cfg: DemoConfig, out: Path, data: Path) -> dict[str, Any]:
    """The grid's real-only cell at the largest real size, run before the rest of the grid because
    the filter's FreeTumor gate needs a segmentor and the filtered source needs the filter. It is not
    extra work: ``run_study`` later finds its ``cell.json`` and skips it."""
    from evaluation.scaling import Cell, prepare_data, run_cell

    sc = scaling_config(cfg, out, data)
    sc.synthetic = [s for s in sc.synthetic if s.name != "diffusion_filtered"]
    cell = Cell(max(cfg.grid.real_sizes), "none", 0.0, cfg.grid.seeds[0])
    res = run_cell(sc, cell, prepare_data(sc, out / "scaling"), out / "scaling")
    return {"cell": cell.id, "id": res.get("id"), "ood": res.get("ood")}


def _filter(cfg: DemoConfig, out: Path, data: Path) -> dict[str, Any]:
    from evaluation.scaling import Cell
    from generative.quality import apply_filter, audit, score_cohort, train_discriminator
    from segmentation.predict import build_segmentor

    f = out / "filter"
    fcfg = _cfg_path(cfg.filter)
    from generative.quality.config import FilterConfig

    fc = load_config(FilterConfig, fcfg, cfg.filter_set)
    model = f / "discriminator"
    if not (model / "config.json").exists():
        train_discriminator([data / "real_train"], [out / "synthetic" / "diffusion_disc"], fc, model)
    cell = Cell(max(cfg.grid.real_sizes), "none", 0.0, cfg.grid.seeds[0])
    segmentor = build_segmentor(out / "scaling" / "cells" / cell.id / "seg")
    t0 = time.perf_counter()
    scores = score_cohort(model, out / "synthetic" / "diffusion", fc, segmentor=segmentor,
                          out_path=f / "scores.jsonl")
    per_case = (time.perf_counter() - t0) / max(len(scores), 1)
    apply_filter(scores, model, f / "filtered", fc)
    # probes are broken copies of held-out real tumors (the ID test set): the honest known-bad check
    page = audit(scores, model, f / "audit", fc, segmentor=segmentor, probe_cohort=data / "test_id")
    summary = read_json(f / "filtered" / "filter_summary.json")
    return {"audit": str(page.relative_to(out)), "seconds_per_case": round(per_case, 2),
            "accepted": summary.get("n_accepted"), "cases": summary.get("n_cases")}


def _scaling(cfg: DemoConfig, out: Path, data: Path) -> dict[str, Any]:
    from evaluation.scaling import run_study
    from evaluation.scaling_report import write_report

    sc = scaling_config(cfg, out, data)
    rep = run_study(sc, out / "scaling")
    if not rep.ok:
        console.print(f"[yellow]scaling: some cells failed[/yellow]\n{rep.summary()}")
    write_report(out / "scaling", note="tumorgen demo: phantom world, small sizes.")
    return {"failed_cells": rep.failed} if rep.failed else None


def montage(out: Path, cohorts: dict[str, Path], path: Path, per: int = 3) -> Path:
    """Axial slices through synthetic tumors, one row per source, with the tumor contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cohort.layouts import open_cohort
    from cohort.preprocess import to_ras

    rows = [(name, c) for name, c in cohorts.items() if c.exists()]
    fig, axes = plt.subplots(len(rows), per, figsize=(3 * per, 3 * len(rows)), squeeze=False)
    for r, (name, cdir) in enumerate(rows):
        refs = [ref for ref in open_cohort(cdir).refs][:per]
        for c in range(per):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(refs):
                continue
            case = to_ras(refs[c].load())
            lesion = case.label >= 27
            if not lesion.any():
                continue
            ijk = np.argwhere(lesion)
            z = int(np.median(ijk[:, 2]))
            ci, cj = ijk[:, 0].mean(), ijk[:, 1].mean()
            h = 40
            i0, j0 = int(max(ci - h, 0)), int(max(cj - h, 0))
            sl = np.clip(case.ct[i0:i0 + 2 * h, j0:j0 + 2 * h, z], -175, 250)
            ax.imshow(sl.T[::-1, ::-1], cmap="gray", vmin=-175, vmax=250)
            ax.contour(lesion[i0:i0 + 2 * h, j0:j0 + 2 * h, z].T[::-1, ::-1], levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(f"{name}: {case.case_id}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _report(cfg: DemoConfig, out: Path, data: Path, stages: Stages) -> dict[str, Any]:
    from cohort.summary import summarize

    rdir = out / "report_files"
    rdir.mkdir(parents=True, exist_ok=True)
    mont = montage(out, {"real (phantom)": data / "real_train", "diffusion": out / "synthetic" / "diffusion",
                         "CA": out / "synthetic" / "ca", "rules": out / "synthetic" / "rules"}, rdir / "montage.png")
    cohorts = {name: summarize(p, progress=False).as_dict() for name, p in
               [("real_train", data / "real_train"), ("test_id", data / "test_id"), ("test_ood", data / "test_ood"),
                ("diffusion", out / "synthetic" / "diffusion"), ("ca", out / "synthetic" / "ca"),
                ("rules", out / "synthetic" / "rules")]}
    write_json(rdir / "cohorts.json", cohorts)
    gen = stages.state.get("diffusion", {}).get("info", {}).get("generator_eval", {})
    filt = stages.state.get("filter", {}).get("info", {})
    table_md = (out / "scaling" / "report" / "table.md").read_text() if (out / "scaling" / "report" / "table.md").exists() else ""
    page = _demo_html(cfg, out, stages.state, cohorts, gen, filt, table_md, mont)
    return {"report": str(page.relative_to(out))}


def _machine_html(out: Path) -> str:
    """One line naming the machine and the precision the stages ran in (environment.json)."""
    p = out / "environment.json"
    if not p.exists():
        return ""
    env = read_json(p)
    c = env["cpu"]
    gpu = ", ".join(d["name"] for d in env["cuda"]["devices"]) or "none"
    return (f"<p>Machine: {html.escape(c['model'])}, {c['cores']} cores, CPU capability {html.escape(c['kind'])}; "
            f"<code>mixed_precision: auto</code> ran {html.escape(c['auto_precision'])} on the CPU; GPUs: "
            f"{html.escape(gpu)}; torch {html.escape(str(env['versions'].get('torch')))}.</p>")


def _demo_html(cfg, out: Path, state, cohorts, gen, filt, table_md, mont: Path) -> Path:
    from cohort.report import html_page, markdown_table_html

    e = html.escape
    parts = ["<h1>tumorgen demo report</h1>",
             "<p class='warn'>Demo sizes: a handful of phantom cases per cohort and minutes of CPU training. "
             "The numbers are real measurements on held-out phantoms, but at this size they show that the chain works, "
             "not which synthetic source is better. Run <code>tumorgen scaling run --config "
             "evaluation/scaling_phantom.yaml</code> for a study that means something.</p>",
             _machine_html(out),
             "<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th></tr>"]
    parts += [f"<tr><td>{e(k)}</td><td>{v.get('seconds')}</td></tr>" for k, v in state.items()]
    parts.append("</table>")
    parts.append("<h2>Cohorts</h2><table><tr><th>cohort</th><th>cases</th><th>tumor classes: cases / lesions / early</th></tr>")
    for name, c in cohorts.items():
        t = "; ".join(f"{k}: {v['cases']}/{v['lesions']}/{v['early_lesions']}" for k, v in c["tumors"].items()) or "none"
        parts.append(f"<tr><td>{e(name)}</td><td>{c['cases']}</td><td>{e(t)}</td></tr>")
    parts.append("</table>")
    parts.append(f"<h2>Synthetic tumors</h2><img src='{mont.relative_to(out)}' width='900'>")
    ev = out / "generator" / "eval"
    if (ev / "generator_eval.md").exists():
        lines = (ev / "generator_eval.md").read_text().splitlines()
        table = "\n".join(ln for ln in lines if ln.startswith("|"))
        items = "".join(f"<li>{e(ln.strip().lstrip('- '))}</li>" for ln in lines if ln.strip().startswith("- "))
        parts.append(f"<h2>Generator</h2><ul>{items}</ul>" + (markdown_table_html(table) if table else ""))
        if (ev / "tumor_montage.png").exists():
            parts.append(f"<img src='{(ev / 'tumor_montage.png').relative_to(out)}' width='900'>")
    elif gen:
        parts.append("<h2>Generator</h2><pre>" + e(json.dumps(gen, indent=1)) + "</pre>")
    if filt:
        parts.append(f"<h2>Quality filter</h2><p>{filt.get('accepted')} of {filt.get('cases')} diffusion cases accepted; "
                     f"{filt.get('seconds_per_case')} s to score one case. "
                     f"<a href='{e(filt.get('audit', ''))}'>Open the audit report</a>.</p>")
    parts.append("<h2>Scaling study</h2><p><a href='scaling/report/report.html'>Full scaling report</a></p>")
    if table_md:
        parts.append(markdown_table_html(table_md))
    for png in sorted((out / "scaling" / "report").glob("scaling_*.png")):
        parts.append(f"<img src='{png.relative_to(out)}' width='1000'>")
    return write_text(out / "report.html", html_page("tumorgen demo", parts))


def run_demo(out: str | Path, config: str | Path | None = None, overrides: list[str] | None = None) -> Path:
    """Run (or resume) the demo in ``out``; returns the report page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(DemoConfig, _cfg_path(str(config)) if config else _cfg_path("demo/demo.yaml"), overrides or [])
    save_config(cfg, out / "demo.yaml")
    from tumorgen.env import environment

    env = environment()
    write_json(out / "environment.json", env)  # the machine every number of this run was measured on
    console.print(f"machine: {env['cpu']['model']}, CPU {env['cpu']['kind']}; precision auto -> "
                  f"{env['cpu']['auto_precision']} on CPU" + (f", GPUs: {len(env['cuda']['devices'])}"
                                                              if env["cuda"]["available"] else ""))
    data = out / "data"
    st = Stages(out)
    t0 = time.perf_counter()
    st.run("phantoms", "1/8 phantom cohorts", lambda: _phantoms(cfg, data))
    st.run("generator", "2/8 generator training (autoencoder, diffusion, ControlNet)", lambda: _generator(cfg, out, data))
    st.run("diffusion", "3/8 diffusion synthetic cohort", lambda: _diffusion(cfg, out, data))
    st.run("baselines", "4/8 CA and rule-based cohorts", lambda: _baselines(cfg, out, data))
    st.run("segmentor", "5/8 real-only segmentation (largest real size)", lambda: _segmentor_cell(cfg, out, data))
    st.run("filter", "6/8 quality filter: train, score, apply, audit", lambda: _filter(cfg, out, data))
    st.run("scaling", "7/8 scaling grid", lambda: _scaling(cfg, out, data))
    st.run("report", "8/8 report", lambda: _report(cfg, out, data, st), always=True)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s this run; report: {out / 'report.html'}")
    failed = st.state.get("scaling", {}).get("info", {}).get("failed_cells")
    if failed:
        console.print(f"[red]{len(failed)} scaling cell(s) failed[/red]: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return out / "report.html"
