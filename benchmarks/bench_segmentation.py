"""Segmentation speed, memory and a short-budget quality check on phantom cohorts.

    python benchmarks/bench_segmentation.py --part speed     # steps/s + peak memory, 64^3/96^3, fp32/bf16, +-CA
    python benchmarks/bench_segmentation.py --part infer     # sliding-window seconds per case (+- flip TTA)
    python benchmarks/bench_segmentation.py --part quality   # phantom training, DSC on held-out phantoms
    python benchmarks/bench_segmentation.py --part mix       # real : CA-synthetic = 1 : 3 run with per-source counts
    python benchmarks/bench_segmentation.py --report         # rewrite the segmentation section of RESULTS.md

Each part stores its numbers in ``benchmarks/segmentation_results.json``;
``--report`` turns them into the "Segmentation" section of RESULTS.md (the
section between its markers is replaced, the rest of the file is kept).

Speed runs each configuration in a fresh subprocess so that its peak resident
memory (CPU) or ``max_memory_allocated`` (CUDA) belongs to it alone. The
training step is the real one (PatchDataset -> SegResNet -> DiceCE -> SGD under
accelerate's autocast); "data" is the time to build the batch, of which
"synthesis" is the on-the-fly CA share (run in the main process, no workers,
so nothing hides it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS_JSON = ROOT / "benchmarks" / "segmentation_results.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
WORK = Path(os.environ.get("TUMORGEN_BENCH_DIR", "/tmp/tumorgen_bench_seg"))
BEGIN, END = "<!-- segmentation:begin -->", "<!-- segmentation:end -->"
#: what the quality runs show, written after looking at them (kept beside the table in RESULTS.md)
QUALITY_NOTE = ("What they show: organs are learned in a few thousand CPU steps; tumors need tumor-bearing "
                "training cases more than steps. With 6000 steps on 24 phantoms of mixed tumor organs (7 liver "
                "lesions) the model segments the lesions of its own training cases (liver lesion DSC 0.59) but "
                "not those of held-out phantoms (0.00): it memorised a handful of lesions of varied appearance. "
                "With 48 phantoms that all carry liver tumors (1-3 each), classes [liver, liver_lesion] and half "
                "the foreground crops on a lesion, the same 6000 steps give held-out liver-lesion DSC 0.40 on 20 "
                "phantoms (13 of 15 tumor-bearing cases found, 3 of 5 healthy ones flagged) against 0.72 on the "
                "training cases. Real CT has more varied tumors still: plan for hundreds of tumor-bearing scans, "
                "or synthetic tumors, which is what the scaling study measures.")


def _threads() -> int:
    return int(os.environ.get("BENCH_THREADS", "2"))


def phantoms(name: str, n: int, seed: int, tumor_fraction: float, organs: tuple[str, ...] | None = None) -> Path:
    """A phantom cohort (site A), generated once and reused; ``organs``: where tumors grow (default all)."""
    from cohort.phantom.generate import DEFAULT_TUMOR_ORGANS, generate_cohort

    out = WORK / (name if organs is None else f"{name}_{'-'.join(organs)}")
    rep = generate_cohort(out, "A", n=n, tumor_fraction=tumor_fraction, seed=seed, progress=False,
                          organs=organs or DEFAULT_TUMOR_ORGANS)
    if not rep.ok:
        raise SystemExit(rep.summary())
    return out


def store(part: str, value) -> None:
    data = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    data[part] = value
    data.setdefault("machine", {})[part] = machine()
    from cohort.io import write_json

    write_json(RESULTS_JSON, data)


def machine() -> str:
    from _report import machine_line

    return machine_line()

def speed_worker(spec: dict) -> dict:
    """One configuration, measured in this process. spec: patch, precision, synth, steps, cohort."""
    import torch
    from accelerate import Accelerator

    from segmentation import engine as E
    from segmentation.config import SegConfig
    from segmentation.data import ClassMap, MixingSampler, PatchDataset, build_cache, collate, open_source
    from segmentation.networks import build_network, network_kwargs

    torch.set_num_threads(_threads())
    dev_cuda = torch.cuda.is_available()
    cfg = SegConfig()
    cfg.data.patch_size = [spec["patch"]] * 3
    cfg.sources[:] = []
    from segmentation.config import SourceConfig

    cfg.sources.append(SourceConfig(name="real", path=spec["cohort"]))
    synth = spec_for = None
    if spec["synth"]:
        from generative.tumors import TumorSpec, make_synthesizer

        cfg.onthefly.method, cfg.onthefly.prob, cfg.onthefly.organs = "ca", 1.0, ["liver"]
        synth = make_synthesizer("ca")
        spec_for = lambda organ, rng: TumorSpec(organ=organ)  # noqa: E731
    cache = build_cache([open_source(cfg.sources[0])], cfg.data, show=False)
    steps = spec["steps"] + 1  # the first step is warm-up and not timed
    sampler = MixingSampler([len(cache[0])], None, seed=0, num_draws=steps * cfg.train.batch_size)
    ds = PatchDataset(cache, sampler, cfg, synthesizer=synth, spec_for=spec_for)
    acc = Accelerator(mixed_precision="bf16" if spec["precision"] == "bf16" else "no")
    cm = ClassMap(tuple(cfg.classes))
    net = build_network("segresnet", network_kwargs(cfg.network, cm.num_channels, cfg.data.patch_size))
    opt = E.make_optimizer(net.parameters(), cfg.train)
    net, opt = acc.prepare(net, opt)
    loss_fn = E.make_loss()
    if dev_cuda:
        torch.cuda.reset_peak_memory_stats()
    t_data, t_synth, t_step, n_synth = [], [], [], 0
    it = iter(sampler)
    for s in range(steps):
        t0 = time.perf_counter()
        batch = collate([ds[next(it)] for _ in range(cfg.train.batch_size)])
        t1 = time.perf_counter()
        logits = net(batch["image"].to(acc.device))
        loss = loss_fn(logits.float(), batch["label"].to(acc.device))
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev_cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if s > 0:
            t_data.append(t1 - t0)
            t_synth.append(float(batch["synth_seconds"].sum()))
            t_step.append(t2 - t1)
            n_synth += int(batch["synth"].sum())
    total = np.add(t_data, t_step)
    peak = (torch.cuda.max_memory_allocated() / 2**20) if dev_cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**{k: spec[k] for k in ("patch", "precision", "synth")}, "steps": spec["steps"],
            "steps_per_s": float(1.0 / total.mean()), "step_s": float(total.mean()),
            "compute_s": float(np.mean(t_step)), "data_s": float(np.mean(t_data)), "synth_s": float(np.mean(t_synth)),
            "synth_share": float(np.sum(t_synth) / total.sum()), "synth_patches": n_synth,
            "peak_mb": float(peak), "peak_kind": "cuda max_memory_allocated" if dev_cuda else "process max RSS",
            "final_loss": float(loss)}


def part_speed(args) -> None:
    cohort = phantoms("speed", 2, seed=5, tumor_fraction=0.0)  # healthy: CA synthesis can run on every draw
    rows = []
    for patch in args.patches:
        for precision in ("fp32", "bf16"):
            for synth in (False, True):
                spec = {"patch": patch, "precision": precision, "synth": synth, "cohort": str(cohort),
                        "steps": args.steps if patch <= 64 else max(1, args.steps - 1)}
                out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                     text=True, cwd=ROOT)
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{patch}^3 {precision} synth={synth}: {row['steps_per_s']:.3f} steps/s "
                      f"(step {row['step_s']:.2f} s, synth share {row['synth_share']:.1%}), peak {row['peak_mb']:.0f} MB",
                      flush=True)
    store("speed", rows)


# ----------------------------------------------------------------------------- inference


def part_infer(args) -> None:
    import torch

    from cohort.layouts import open_cohort
    from segmentation.config import SegConfig
    from segmentation.data import ClassMap
    from segmentation.networks import SegModel, build_network, network_kwargs
    from segmentation.predict import predict_case

    torch.set_num_threads(_threads())
    cohort = phantoms("speed", 2, seed=5, tumor_fraction=0.0)
    case = open_cohort(cohort).refs[0].load()
    rows = []
    for patch in args.patches:
        cfg = SegConfig()
        cfg.data.patch_size = [patch] * 3
        net = build_network("segresnet", network_kwargs(cfg.network, ClassMap(tuple(cfg.classes)).num_channels,
                                                        cfg.data.patch_size)).eval()
        model = SegModel(net, list(cfg.classes), cfg.data, cfg.infer, {})
        for tta in (False, True):
            t0 = time.perf_counter()
            res = predict_case(model, case, tta=tta, save_prob=True)
            rows.append({"patch": patch, "tta": tta, "seconds": time.perf_counter() - t0,
                         "shape": list(case.shape), "spacing": [round(s, 3) for s in case.spacing],
                         "restored_shape": list(res.label.shape)})
            print(rows[-1], flush=True)
    store("infer", rows)


# ----------------------------------------------------------------------------- quality


def _evaluate(pred_dir: Path, gt_dir: Path, names: list[str]) -> dict:
    """Dice per organ type / lesion on the original grids, and case-level tumor detection."""
    from cohort import labels as L
    from cohort.io import read_label
    from cohort.layouts import open_cohort

    per: dict[str, list[float]] = {n: [] for n in names}
    det = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for ref in open_cohort(gt_dir).refs:
        gt = ref.load().label
        pred, _ = read_label(pred_dir / f"{ref.case_id}.nii.gz")
        for n in names:
            idx = L.organ_indices(n)
            g, p = np.isin(gt, idx), np.isin(pred, idx)
            if g.any():  # DSC over the test cases that have the class (tumor DSC on tumor-bearing cases)
                per[n].append(float(2.0 * (g & p).sum() / (g.sum() + p.sum())))
        g_t, p_t = np.isin(gt, L.LESION_LABELS).any(), np.isin(pred, L.LESION_LABELS).sum() >= 10
        det[("tp" if p_t else "fn") if g_t else ("fp" if p_t else "tn")] += 1
    return {"dice": {n: (float(np.mean(v)) if v else None) for n, v in per.items()},
            "dice_n": {n: len(v) for n, v in per.items()}, "detection": det}


def _train_and_score(name: str, cfg, test_dir: Path, synthesizer=None, spec_for=None) -> dict:
    from segmentation.predict import predict_cohort
    from segmentation.train import train_segmentation

    run = WORK / "runs" / name
    t0 = time.perf_counter()
    train_segmentation(cfg, run, resume=True, synthesizer=synthesizer, spec_for=spec_for)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = predict_cohort(run, test_dir, WORK / "pred" / name, show=False)
    pred_s = time.perf_counter() - t0
    if not rep.ok:
        raise SystemExit(rep.summary())
    summary = json.loads((run / "summary.json").read_text())
    ev = _evaluate(WORK / "pred" / name, test_dir, list(cfg.classes))
    return {"name": name, "steps": summary["steps"], "train_s": train_s, "steps_per_s": summary["steps_per_s"],
            "predict_s_per_case": pred_s / max(len(rep.done), 1), "val": summary["val"],
            "sources": summary["sources"], "test": ev}


def _quality_config(sources: list[dict], steps: int, overrides: list[str] | None = None):
    import dataclasses

    from cohort.config import from_dict
    from segmentation.config import SegConfig, default_config_path, load_seg_config

    base = dataclasses.asdict(load_seg_config(default_config_path("demo"), overrides or []))
    base["sources"] = sources
    base["train"].update({"max_steps": steps, "val_every": max(steps // 2, 1), "save_every": max(steps // 2, 1),
                          "threads": _threads(), "tracker": None})
    return from_dict(SegConfig, base)


def part_quality(args) -> None:
    """Train on site-A phantoms, predict held-out ones (and the training cases: memorisation vs
    generalisation), store under ``--key`` with the whole setup."""
    from segmentation.predict import predict_cohort

    organs = tuple(args.organs) if args.organs else None
    train = phantoms("train", args.n_train, seed=1, tumor_fraction=args.tumor_fraction, organs=organs)
    test = phantoms("test", args.n_test, seed=2, tumor_fraction=0.75, organs=organs)
    cfg = _quality_config([{"name": "real", "path": str(train), "kind": "real"}], args.train_steps, args.set)
    name = f"real_only_{args.key}"
    res = _train_and_score(name, cfg, test)
    print(json.dumps(res["test"], indent=1), flush=True)
    rep = predict_cohort(WORK / "runs" / name, train, WORK / "pred_train" / name, show=False)
    on_train = _evaluate(WORK / "pred_train" / name, train, list(cfg.classes)) if rep.ok else None
    store(args.key, {"n_train": args.n_train, "n_test": args.n_test, **res, "on_train": on_train,
                     "command": "python benchmarks/bench_segmentation.py " + " ".join(sys.argv[1:]),
                     "config": {"spacing": cfg.data.spacing, "patch": cfg.data.patch_size,
                                "network": f"SegResNet init {cfg.network.init_filters} blocks {cfg.network.blocks_down}",
                                "optimizer": f"{cfg.train.optimizer} lr {cfg.train.lr}",
                                "augment": cfg.data.augment, "classes": list(cfg.classes),
                                "lesion_fraction": cfg.data.lesion_fraction,
                                "tumor_organs": list(organs or ("liver", "pancreas", "kidney")),
                                "tumor_fraction": args.tumor_fraction}})


def part_postprocess(args) -> None:
    """The model of quality run ``--key`` on its held-out phantoms with small predicted lesion
    components dropped (``infer.min_lesion_mm3``): false positives vs lesions lost."""
    from segmentation.predict import predict_cohort

    q = json.loads(RESULTS_JSON.read_text())[args.key]
    organs = tuple(q["config"]["tumor_organs"])
    test = phantoms("test", q["n_test"], seed=2, tumor_fraction=0.75, organs=organs)
    rows = []
    for mm3 in args.min_lesion_mm3:
        pred = WORK / "pred_post" / f"{args.key}_{mm3:g}"
        rep = predict_cohort(WORK / "runs" / f"real_only_{args.key}", test, pred, show=False, min_lesion_mm3=mm3)
        if not rep.ok:
            raise SystemExit(rep.summary())
        rows.append({"min_lesion_mm3": mm3, **_evaluate(pred, test, q["config"]["classes"])})
        print(rows[-1], flush=True)
    store("postprocess", {"key": args.key, "rows": rows})


def part_mix(args) -> None:
    from generative.tumors import TumorSpec, make_synthesizer
    from generative.tumors.offline import synthesize_cohort

    real = phantoms("mix_real", 4, seed=3, tumor_fraction=0.5)
    healthy = phantoms("mix_healthy", 4, seed=4, tumor_fraction=0.0)
    test = phantoms("test", args.n_test, seed=2, tumor_fraction=0.75)
    syn = WORK / "mix_synthetic_ca"
    t0 = time.perf_counter()
    rep = synthesize_cohort(healthy, syn, make_synthesizer("ca"), TumorSpec(organ="liver"), seed=0, n_per_case=3,
                            progress=False)
    synth_s = time.perf_counter() - t0
    if not rep.done and not rep.skipped:
        raise SystemExit(rep.summary())
    cfg = _quality_config([{"name": "real", "path": str(real), "kind": "real", "weight": 1.0},
                           {"name": "synthetic_ca", "path": str(syn), "kind": "synthetic", "weight": 3.0}],
                          args.mix_steps)
    cfg.data.val_fraction = 0.25
    res = _train_and_score("real1_ca3", cfg, test)
    print(json.dumps(res["sources"], indent=1), flush=True)
    store("mix", {**res, "synthesis_s": synth_s, "synthetic_cases": len(rep.done) + len(rep.skipped)})


# ----------------------------------------------------------------------------- report


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def report() -> str:
    data = json.loads(RESULTS_JSON.read_text())
    m = data.get("machine", {})
    out = [BEGIN, "## Segmentation: training speed, memory, inference, short-budget quality (segmentation)", "",
           "`python benchmarks/bench_segmentation.py --part speed|infer|quality|mix` then `--report`"
           f" ({time.strftime('%Y-%m-%d')}). Raw numbers: `benchmarks/segmentation_results.json`.", ""]
    if "speed" in data:
        out += [f"### Training step (SegResNet init 16, blocks 1-2-2-4, batch 2, DiceCE, SGD) - {m.get('speed')}", "",
                "Phantom cases (site A, 1.5 mm). 'data' builds the batch (crop, augmentation, and with CA the "
                "on-the-fly synthesis of a liver tumor in every patch, in the main process); the ratio column is "
                "against fp32 without synthesis at the same patch size.", "",
                "| patch | precision | on-the-fly CA | steps/s | step (s) | compute (s) | data (s) | CA share of step | peak memory (MB) | vs fp32 |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        ref = {r["patch"]: r["step_s"] for r in data["speed"] if r["precision"] == "fp32" and not r["synth"]}
        for r in data["speed"]:
            out.append(f"| {r['patch']}^3 | {r['precision']} | {'p=1' if r['synth'] else 'off'} | {r['steps_per_s']:.3f} | "
                       f"{r['step_s']:.2f} | {r['compute_s']:.2f} | {r['data_s']:.2f} | {r['synth_share']:.1%} | "
                       f"{r['peak_mb']:.0f} | {ref[r['patch']] / r['step_s']:.2f}x |")
        out += ["", f"Peak memory is the {data['speed'][0]['peak_kind']} of a fresh process per row; steps per row: "
                f"{', '.join(sorted({str(r['steps']) for r in data['speed']}))} timed after one warm-up step. "
                "Measured on the idle machine (load average under 2, the benchmark itself); two timed steps per row, "
                "so about +-10%: 96^3 costs 3.7x (fp32) and 5.5x (bf16) a 64^3 step; bf16 autocast is 2.2x (64^3) "
                "and 1.5x (96^3) faster than fp32 and takes 14-34% less peak memory; on-the-fly CA synthesis of one "
                "liver tumor per patch, run in the main process, takes 8-16% of an fp32 step and 12-31% of a bf16 "
                "step. It is not the bottleneck, but at bf16 64^3 it is a third of the step: set data.num_workers "
                "so DataLoader workers synthesize while the network trains. (A session-1 run on the machine shared "
                "with 4-5 other jobs measured 6x slower steps and no bf16 gain; this run replaces it.)", ""]
    if "infer" in data:
        r0 = data["infer"][0]
        out += [f"### Sliding-window inference (overlap 0.5, Gaussian) - {m.get('infer')}", "",
                f"One phantom case of {r0['shape']} voxels at {r0['spacing']} mm: preprocess (RAS, 1.5 mm), "
                "sliding window, argmax, restore onto the original grid, tumor probability map.", "",
                "| roi | flip TTA | seconds per case |", "|---|---|---|"]
        out += [f"| {r['patch']}^3 | {'8 flips' if r['tta'] else 'no'} | {r['seconds']:.1f} |" for r in data["infer"]]
        out.append("")
    runs = sorted((k for k in data if k.startswith("quality")), key=lambda k: data[k].get("steps", 0))
    if runs:
        out += ["### Short CPU training on phantoms, DSC on held-out phantoms", "",
                "Each row: SegResNet trained on site-A phantoms (validation held out of them), then "
                "held-out site-A phantoms (other seed; how many: the detection column) predicted, written back on their "
                "original 0.8 x 0.8 x 2.5 mm grids and scored there (DSC averaged over the test cases that have "
                "the class; lesion DSC over tumor-bearing cases). 'on training cases': the same model on the "
                "cases it was trained on (memorisation vs generalisation). Runs without that column were made "
                "before it was recorded.", "",
                "| run | training phantoms | classes | setup | steps (min) | held-out DSC | held-out tumor cases: detected | on training cases |",
                "|---|---|---|---|---|---|---|---|"]
        for k in runs:
            q = data[k]
            c, te = q.get("config", {}), q["test"]
            d = te["detection"]
            orgs = "/".join(c.get("tumor_organs", ["liver", "pancreas", "kidney"]))
            setup = (f"{c.get('spacing', [3.0])[0]} mm, patch {c.get('patch', ['?'])[0]}^3, {c.get('optimizer', '?')}, "
                     + (c['crops'] if 'crops' in c else f"lesion crops {c.get('lesion_fraction', 0.0)}")
                     + f", aug {'on' if c.get('augment') else 'off'}")
            held = ", ".join(f"{n} {_fmt(v, '.2f')}" for n, v in te["dice"].items())
            tr = q.get("on_train")
            trs = ", ".join(f"{n} {_fmt(v, '.2f')}" for n, v in tr["dice"].items()) if tr else "-"
            out.append(f"| {k} | {q['n_train']} ({c.get('tumor_fraction', 0.75):.0%} with tumors in {orgs}) | "
                       f"{', '.join(c.get('classes', te['dice'].keys()))} | {setup} | {q['steps']} "
                       f"({q['train_s'] / 60:.0f}) | {held} | {d['tp']}/{d['tp'] + d['fn']} (FP {d['fp']}/{d['fp'] + d['tn']}) | {trs} |")
        out.append("")
        out += [f"{k}: `{data[k]['command']}`" for k in runs if data[k].get("command")] + [""]
        out += [f"{k}: {data[k]['note']}." for k in runs if data[k].get("note")] + ["", QUALITY_NOTE, ""]
    if "postprocess" in data:
        pp = data["postprocess"]
        out += [f"Dropping small predicted lesion components (`infer.min_lesion_mm3`, `tumorgen predict "
                f"--min-lesion-mm3`), model of {pp['key']} on its held-out phantoms "
                f"(`--part postprocess --key {pp['key']}`):", "",
                "| min lesion mm^3 | lesion DSC | tumor cases found | healthy cases flagged |", "|---|---|---|---|"]
        for r in pp["rows"]:
            d = r["detection"]
            les = next(v for n, v in r["dice"].items() if n.endswith("lesion"))
            out.append(f"| {r['min_lesion_mm3']:g} | {_fmt(les, '.3f')} | {d['tp']}/{d['tp'] + d['fn']} | "
                       f"{d['fp']}/{d['fp'] + d['tn']} |")
        out.append("")
    if "mix" in data:
        q = data["mix"]
        te = q["test"]
        src = q["sources"]["sources"]
        out += [f"### Real : CA-synthetic = 1 : 3 - {m.get('mix')}", "",
                f"4 real site-A phantoms (one held out for validation) and {q['synthetic_cases']} CA-synthetic "
                f"cases (liver tumors grown on 4 healthy phantoms, {q['synthesis_s']:.0f} s), weights 1 : 3, "
                f"{q['steps']} steps in {q['train_s'] / 60:.1f} min. Patches actually drawn: "
                + ", ".join(f"{k} {v['patches']} ({v['fraction']:.0%}, expected {v['expected_fraction']:.0%})"
                            for k, v in src.items()) + " (from `source_counts.json`).", "",
                "| class | DSC (mean over test cases with it) | cases |", "|---|---|---|"]
        out += [f"| {n} | {_fmt(d)} | {te['dice_n'][n]} |" for n, d in te["dice"].items()]
        d = te["detection"]
        out += ["", f"Case-level tumor detection (>= 10 predicted lesion voxels): TP {d['tp']}, FN {d['fn']}, "
                f"FP {d['fp']}, TN {d['tn']}.", ""]
    out.append(END)
    return "\n".join(out) + "\n"


def write_report() -> None:
    from _report import write_section

    write_section(RESULTS_MD, BEGIN, END, report())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["speed", "infer", "quality", "mix", "postprocess"], action="append", default=[])
    p.add_argument("--report", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--patches", type=int, nargs="+", default=[64, 96])
    p.add_argument("--steps", type=int, default=3, help="timed steps per speed configuration")
    p.add_argument("--n-train", type=int, default=16)
    p.add_argument("--n-test", type=int, default=6)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--mix-steps", type=int, default=150)
    p.add_argument("--key", default="quality", help="results key of this quality run (quality*)")
    p.add_argument("--min-lesion-mm3", type=float, nargs="+", default=[0.0, 100.0, 250.0, 500.0],
                   help="postprocess: lesion component volumes to try")
    p.add_argument("--organs", nargs="+", default=None, help="phantom tumor organs (default liver pancreas kidney)")
    p.add_argument("--tumor-fraction", type=float, default=0.75, help="share of training phantoms with tumors")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="segmentation config override")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(speed_worker(json.loads(args.worker))))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    for part in args.part:
        {"speed": part_speed, "infer": part_infer, "quality": part_quality, "mix": part_mix, "postprocess": part_postprocess}[part](args)
    if args.report:
        write_report()


if __name__ == "__main__":
    main()
