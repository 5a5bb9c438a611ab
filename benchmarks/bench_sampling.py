"""Seconds and peak memory per synthetic 64^3 ROI on this CPU.

Ours (the pipeline's written-out loop): rectified flow 10 and 30 steps, DDIM 50,
in fp32 and bf16; reference: MONAI's ``ControlNetLatentDiffusionInferer.sample``
with DDPM 1000 steps on the same autoencoder and UNet. That inferer resizes the
ControlNet conditioning to latent size before the ControlNet sees it, so the
reference ControlNet is the same trunk with a conditioning embedding that does
not downsample (``conditioning_embedding_num_channels`` of length 1); the trunk,
UNet and decoder, which hold nearly all the compute, are identical.

DDPM-1000 is the reference's step count; ``--ref-steps N`` times the inferer for N
steps and scales the seconds by 1000 / N (a DDPM step costs the same at every t:
one ControlNet + UNet pass and a scheduler update), for machines where 1000 steps
do not fit the time available; the table says when that was done.

Every configuration runs in its own subprocess (peak memory = that process's
max RSS; one warm-up sample first), all in one invocation, so the ratios come
from one run on one machine state. Networks: configs/demo/generative_demo.yaml
(random weights: speed does not depend on them).

    python benchmarks/bench_sampling.py [--threads 2] [--quick] [--out benchmarks/results_sampling.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the toy case comes from tests/toys.py

ROI = 64
CONFIGS = [  # (name, sampler, steps, precision, implementation)
    ("ours rflow-10 fp32", "rflow", 10, "no", "ours"),
    ("ours rflow-10 bf16", "rflow", 10, "bf16", "ours"),
    ("ours rflow-10 fp32, condition re-embedded every step", "rflow", 10, "no", "ours-nocache"),
    ("ours rflow-30 fp32", "rflow", 30, "no", "ours"),
    ("ours rflow-30 bf16", "rflow", 30, "bf16", "ours"),
    ("ours ddim-50 fp32", "ddim", 50, "no", "ours"),
    ("ours ddim-50 bf16", "ddim", 50, "bf16", "ours"),
    ("monai inferer ddpm-1000 fp32", "ddpm", 1000, "no", "monai"),
]


def _networks(kind: str):
    import torch

    from cohort.config import config_dir, load_config
    from generative.diffusion.config import GenerativeConfig
    from generative.diffusion.training import build_pipeline

    torch.manual_seed(0)
    cfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_demo.yaml", [f"scheduler.kind={kind}"])
    return build_pipeline(cfg, scale_factor=1.0)


def _inputs(pipe):
    import numpy as np
    import torch

    from tests.toys import toy_abdomen_case

    case = toy_abdomen_case("bench", shape=(ROI,) * 3, seed=0)
    lab = torch.from_numpy(case.label.astype(np.int64))[None, None]
    img = torch.rand(1, 1, ROI, ROI, ROI, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(img)
    mask[..., 20:44, 20:44, 20:44] = 1
    return lab, img, mask


def run_one(name: str, threads: int, steps_override: int | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    _, sampler, steps, prec, impl = next(c for c in CONFIGS if c[0] == name)
    steps = steps_override or steps
    pipe = _networks("rflow" if sampler == "rflow" else "ddpm")
    lab, img, mask = _inputs(pipe)
    if impl == "ours-nocache":  # the ControlNet embeds the full-resolution condition at every step
        import functools

        pipe.denoise = functools.partial(type(pipe).denoise, pipe, cache_condition=False)
    if impl.startswith("ours"):
        def go():
            return pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=steps, seed=0,
                               mixed_precision=prec)
        go_warm = lambda: pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=2, seed=0,  # noqa: E731
                                      mixed_precision=prec)
    else:
        from monai.inferers import ControlNetLatentDiffusionInferer
        from monai.networks.schedulers import DDPMScheduler

        from generative.diffusion.models import LatentControlNet

        c = pipe.controlnet.config
        ref_cn = LatentControlNet(**{**c, "conditioning_embedding_num_channels": [c["conditioning_embedding_num_channels"][-1]]})
        ref_cn.load_state_dict({k: v for k, v in pipe.controlnet.state_dict().items()
                                if not k.startswith("controlnet_cond_embedding")}, strict=False)
        ref_cn.eval()
        cond = pipe.make_condition(lab, img, mask, pipe.drawn_appearance(lab, 0) if pipe.spec.appearance else None)
        lat = (1, 4, ROI // 4, ROI // 4, ROI // 4)

        def sample_n(n):
            sched = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", clip_sample=False)
            sched.set_timesteps(n)
            inf = ControlNetLatentDiffusionInferer(sched, scale_factor=1.0)
            noise = torch.randn(lat, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                return inf.sample(input_noise=noise, autoencoder_model=pipe.autoencoder, diffusion_model=pipe.unet,
                                  controlnet=ref_cn, cn_cond=cond, scheduler=sched, verbose=False)
        go, go_warm = (lambda: sample_n(steps)), (lambda: sample_n(2))
    go_warm()
    t0 = time.perf_counter()
    out = go()
    secs = time.perf_counter() - t0
    assert torch.isfinite(out).all()
    return {"name": name, "seconds": secs, "steps": steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": threads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1/10 of the steps everywhere (smoke test, not for RESULTS)")
    ap.add_argument("--ref-steps", type=int, default=1000, help="steps actually run for MONAI DDPM-1000 (scaled to 1000)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results_sampling.json"))
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.threads, args.steps)))
        return 0
    rows = []
    for name, _, steps, _, _ in CONFIGS:
        cmd = [sys.executable, __file__, "--one", name, "--threads", str(args.threads)]
        if args.quick:
            cmd += ["--steps", str(max(2, steps // 10))]
        elif name.startswith("monai") and args.ref_steps != steps:
            cmd += ["--steps", str(args.ref_steps)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        if rows[-1]["steps"] != steps and not args.quick:  # reference timed on fewer steps: scale to its 1000
            rows[-1]["measured_steps"], rows[-1]["measured_seconds"] = rows[-1]["steps"], rows[-1]["seconds"]
            rows[-1]["seconds"] *= steps / rows[-1]["steps"]
            rows[-1]["steps"] = steps
        print(f"{name:32s} {rows[-1]['seconds']:8.2f} s  peak RSS {rows[-1]['peak_rss_mb']:7.0f} MB", flush=True)
    ref = next(r for r in rows if r["name"].startswith("monai"))
    for r in rows:
        r["speedup_vs_monai_ddpm1000"] = ref["seconds"] / r["seconds"]
        r["memory_vs_monai_ddpm1000"] = r["peak_rss_mb"] / ref["peak_rss_mb"]
    if "measured_steps" in ref:
        print(f"(MONAI DDPM-1000: {ref['measured_seconds']:.1f} s measured over {ref['measured_steps']} steps, scaled x"
              f"{1000 / ref['measured_steps']:.0f})")
    from _report import machine_line

    print(f"\nMachine: {machine_line()}")
    print("\n| configuration | steps | s / 64^3 ROI | speed-up vs MONAI DDPM-1000 | peak RSS MB | memory ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['steps']} | {r['seconds']:.2f} | {r['speedup_vs_monai_ddpm1000']:.1f}x | "
              f"{r['peak_rss_mb']:.0f} | {r['memory_vs_monai_ddpm1000']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
