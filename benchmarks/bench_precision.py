"""Seconds per generator training step on this CPU: fp32 (reference) against bf16 autocast,
channels_last_3d memory format, and the autoencoder without its perceptual term.

The three stages of ``tumorgen demo`` (networks of configs/demo/generative_demo.yaml, batch 2,
32^3 crops at 1.5 mm; random weights, random inputs: speed does not depend on them). Each
variant runs ``--steps`` timed optimiser steps after one warm-up step, in this process, one
after the other, so the ratios come from one machine state. The table records the CPU
capability (``cohort.hardware.cpu_kind``) and what ``mixed_precision: auto`` picks here.

    python benchmarks/bench_precision.py [--steps 5] [--threads 2] [--skip-bf16]

On a CPU without native bf16 each bf16 autoencoder step takes tens of seconds: ``--skip-bf16``
leaves those rows out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT_JSON = ROOT / "benchmarks" / "results" / "precision.json"
MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- bench_precision:begin -->", "<!-- bench_precision:end -->"


def _cfg():
    from cohort.config import config_dir, load_config
    from generative.diffusion.config import GenerativeConfig

    return load_config(GenerativeConfig, config_dir() / "demo" / "generative_demo.yaml")


def _to_cl(m):
    import torch

    return m.to(memory_format=torch.channels_last_3d)


def autoencoder_step(precision: str, channels_last: bool, perceptual: bool):
    import torch

    from generative.diffusion.perceptual import build_perceptual
    from generative.diffusion.training import AutoencoderLosses, build_stage_models

    cfg = _cfg()
    torch.manual_seed(0)
    m = build_stage_models(cfg)
    ae, disc = m["autoencoder"], m["discriminator"]
    if channels_last:
        ae, disc = _to_cl(ae), _to_cl(disc)
    perc = build_perceptual("random" if perceptual else "none", cfg.loss.perceptual_net, "", cfg.loss.fake_3d_ratio)
    losses = AutoencoderLosses(cfg.loss, perc)
    opt, d_opt = torch.optim.AdamW(ae.parameters(), 1e-4), torch.optim.AdamW(disc.parameters(), 1e-4)
    x = torch.rand(cfg.train.batch_size, 1, *cfg.data.crop_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            recon, mu, sigma = ae(x)
            loss, _ = losses.generator(x, recon, mu, sigma, disc, 10**6, g)  # adversarial term on
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            d = losses.discriminator(x, recon, disc)
        d.backward()
        d_opt.step()
        d_opt.zero_grad()

    return step


def latent_step(stage: str, precision: str, channels_last: bool):
    import torch

    from generative.diffusion.training import build_pipeline

    cfg = _cfg()
    torch.manual_seed(0)
    pipe = build_pipeline(cfg, scale_factor=1.0, controlnet=(stage == "controlnet"))
    trained = pipe.controlnet if stage == "controlnet" else pipe.unet
    if stage == "controlnet":
        pipe.unet.eval().requires_grad_(False)
    if channels_last:
        for net in (pipe.unet, pipe.controlnet):
            if net is not None:
                _to_cl(net)
    trained.train()
    opt = torch.optim.AdamW(trained.parameters(), 1e-4)
    b, cs = cfg.train.batch_size, cfg.data.crop_size
    down = 2 ** (len(cfg.autoencoder.channels) - 1)
    lat = torch.randn(b, cfg.autoencoder.latent_channels, *[c // down for c in cs])
    label = torch.zeros(b, 1, *cs, dtype=torch.long)
    label[:, :, 4:28, 4:28, 4:28] = 5
    label[:, :, 12:18, 12:18, 12:18] = 27
    image = torch.rand(b, 1, *cs)
    batch = {"latent": lat, "label": label, "image": image}
    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = pipe.training_step(batch, g)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def time_steps(step, n: int) -> dict:
    step()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "n": n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--bf16-steps", type=int, default=1, help="timed bf16 steps (slow where emulated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-bf16", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from cohort.hardware import cpu_kind, cpu_model, resolve_precision

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = []
    plan = [
        ("autoencoder", "fp32", False, True, lambda: autoencoder_step("no", False, True)),
        ("autoencoder", "fp32 channels_last_3d", True, True, lambda: autoencoder_step("no", True, True)),
        ("autoencoder", "fp32, no perceptual term", False, False, lambda: autoencoder_step("no", False, False)),
        ("autoencoder", "bf16", False, True, lambda: autoencoder_step("bf16", False, True)),
        ("diffusion", "fp32", False, None, lambda: latent_step("diffusion", "no", False)),
        ("diffusion", "fp32 channels_last_3d", True, None, lambda: latent_step("diffusion", "no", True)),
        ("diffusion", "bf16", False, None, lambda: latent_step("diffusion", "bf16", False)),
        ("controlnet", "fp32", False, None, lambda: latent_step("controlnet", "no", False)),
        ("controlnet", "fp32 channels_last_3d", True, None, lambda: latent_step("controlnet", "no", True)),
        ("controlnet", "bf16", False, None, lambda: latent_step("controlnet", "bf16", False)),
    ]
    for stage, variant, _cl, _perc, make in plan:
        if args.skip_bf16 and variant == "bf16":
            continue
        n = args.bf16_steps if variant == "bf16" else args.steps
        r = time_steps(make(), n)
        rows.append({"stage": stage, "variant": variant, **r})
        print(f"{stage:12s} {variant:28s} {r['median_s']:.3f} s/step", flush=True)
    for r in rows:
        ref = next(x for x in rows if x["stage"] == r["stage"] and x["variant"] == "fp32")
        r["ratio_to_fp32"] = round(r["median_s"] / ref["median_s"], 3)
    machine = {"cpu_model": cpu_model(), "cpu_kind": cpu_kind(), "capability": torch.backends.cpu.get_cpu_capability(),
               "auto_precision": resolve_precision("auto", "cpu").label, "threads": args.threads,
               "load_average_at_start": round(load, 2), "torch": torch.__version__, "python": platform.python_version(),
               "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}}
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    from cohort.io import write_json

    prev = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    runs = {k: v for k, v in prev.get("runs", {}).items() if k != machine["cpu_kind"]}
    runs[machine["cpu_kind"]] = {"machine": machine, "rows": rows}
    write_json(OUT_JSON, {"runs": runs})
    _write_md(runs)
    return 0


def _write_md(runs: dict) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import write_section

    lines = [BEGIN, "## Precision: generator training steps fp32 vs bf16 vs channels_last_3d (generative.diffusion)", "",
             "`python benchmarks/bench_precision.py`: the three stages of `tumorgen demo` (networks of "
             "`configs/demo/generative_demo.yaml`, batch 2, 32^3 crops, adversarial term on), median seconds per "
             "optimiser step and the ratio to fp32 in the same process. One row block per CPU kind; `auto` is what "
             "`mixed_precision: auto` picks on that CPU.", ""]
    for kind, run in runs.items():
        m = run["machine"]
        lines += [f"### {m['cpu_model']}: {kind} (auto -> {m['auto_precision']}), {m['threads']} threads, "
                  f"load {m['load_average_at_start']} at start, torch {m['torch']}"
                  + (f", env {m['env']}" if m.get("env") else ""), "",
                  "| stage | variant | s/step (median) | ratio to fp32 | timed steps |", "|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['variant']} | {r['median_s']:.3f} | {r['ratio_to_fp32']:.2f} | {r['n']} |"
                  for r in run["rows"]]
        lines.append("")
    lines.append(END)
    write_section(MD, BEGIN, END, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
