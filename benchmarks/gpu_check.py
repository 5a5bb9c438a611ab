"""One prepared check of every CUDA path, with a table (and JSON) of seconds and peak memory.

    python benchmarks/gpu_check.py                      # on a GPU machine: real-scale sizes, at most ~8 minutes
    python benchmarks/gpu_check.py --dry-run            # list what would run, run nothing
    python benchmarks/gpu_check.py --device cpu --tiny  # the same code paths at toy sizes (slow test tier)

Checks (each runs on its own; a failure is a row with the error, and the rest still run):

1. ``ca``: CA growth (Pixel2Cancer) of one liver tumor on the device and on CPU from the same seed:
   voxels and mean HU of both (the device must give the same tumor statistics).
2. ``autoencoder`` / ``diffusion`` / ``controlnet``: each generator stage for ``--steps`` (20) optimiser
   steps through ``generative.train.train_stage`` on phantom crops (real scale: 128^3 at 1.5 mm,
   MAISI-sized channels), with seconds per step and peak memory.
3. ``sample_roi``: one 64^3 inpainting ROI (rectified flow 10 steps) against MONAI's
   ``ControlNetLatentDiffusionInferer`` with DDPM-1000 on the same networks (``--ref-steps`` of them
   actually run, scaled to 1000): the speed ratio.
4. ``sample_volume``: one whole 256x256x128 volume generated from a label map with tiled (sliding-window)
   decoding.
5. ``segmentation_train``: SegResNet for ``--steps`` steps on 96^3 patches (batch 2, SGD 0.01).
6. ``segmentation_predict``: sliding-window prediction of a 512x512x300 volume.
7. ``filter_score``: a discriminator (tiny, trained for a few steps) scoring a phantom cohort.

Writes ``benchmarks/results/gpu_check.json`` (or ``--out``) and prints a markdown table naming the device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Sizes:
    crop: int
    ae_channels: list[int]
    unet_channels: list[int]
    attention: list[bool]
    cn_embed: list[int]
    roi: int
    volume: tuple[int, int, int]
    tile_latent: int
    seg_patch: int
    seg_volume: tuple[int, int, int]
    ref_steps: int


REAL = Sizes(crop=128, ae_channels=[64, 128, 256], unet_channels=[64, 128, 256, 512], attention=[False, False, True, True],
             cn_embed=[32, 64, 128], roi=64, volume=(256, 256, 128), tile_latent=32, seg_patch=96,
             seg_volume=(512, 512, 300), ref_steps=100)
TINY = Sizes(crop=32, ae_channels=[8, 16, 16], unet_channels=[16, 32], attention=[False, True], cn_embed=[8, 8, 16],
             roi=32, volume=(64, 64, 32), tile_latent=8, seg_patch=32, seg_volume=(64, 64, 48), ref_steps=4)

CHECKS = ("ca", "autoencoder", "diffusion", "controlnet", "sample_roi", "sample_volume", "segmentation_train",
          "segmentation_predict", "filter_score")

DESCRIPTIONS = {
    "ca": "CA growth of one liver tumor on the device vs CPU, same seed (voxels, mean HU)",
    "autoencoder": "generator autoencoder stage, {steps} steps at {crop}^3, channels {ae}",
    "diffusion": "generator diffusion UNet stage, {steps} steps on {crop}^3 crops' latents, channels {unet}",
    "controlnet": "generator ControlNet stage, {steps} steps on {crop}^3 crops",
    "sample_roi": "sampling one {roi}^3 inpainting ROI (rflow-10) vs MONAI DDPM-1000 inferer ({ref} steps run, scaled)",
    "sample_volume": "sampling one whole {vol} volume from a label map, tiled decoding (latent tiles {tile})",
    "segmentation_train": "SegResNet training, {steps} steps on {patch}^3 patches, batch 2",
    "segmentation_predict": "sliding-window prediction of a {segvol} volume",
    "filter_score": "quality filter: train a tiny discriminator, score a phantom cohort",
}


class Meter:
    """Seconds and peak memory of a block on ``device`` (CUDA: max allocated; CPU: max RSS growth)."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_mb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss0) / 1024
        self.seconds = time.perf_counter() - self.t0


class Context:
    def __init__(self, device: str, sizes: Sizes, steps: int, work: Path):
        self.device, self.sizes, self.steps, self.work = device, sizes, steps, work
        self._phantoms: Path | None = None
        self.models: dict[str, Path] = {}

    def phantoms(self) -> Path:
        if self._phantoms is None:
            from cohort.phantom import generate_cohort

            self._phantoms = self.work / "phantoms"
            rep = generate_cohort(self._phantoms, site="A", n=2, tumor_fraction=1.0, seed=0, spacing=1.5,
                                  organs=("liver",), progress=False)
            if not rep.ok:
                raise RuntimeError(rep.summary())
        return self._phantoms

    def gen_overrides(self) -> list[str]:
        s = self.sizes
        return [f"data.cohort={self.phantoms()}", f"data.crop_size=[{s.crop},{s.crop},{s.crop}]", "data.crops_per_case=2",
                f"autoencoder.channels={s.ae_channels}", f"autoencoder.norm_num_groups={min(8, s.ae_channels[0])}",
                f"unet.channels={s.unet_channels}", "unet.attention_levels=[" + ",".join("true" if a else "false" for a in s.attention) + "]",
                f"unet.norm_num_groups={min(8, s.unet_channels[0])}", "unet.num_head_channels=16",
                f"controlnet.conditioning_embedding_num_channels={s.cn_embed}", "loss.perceptual=none",
                f"train.steps={self.steps}", "train.batch_size=1", f"train.save_every={self.steps}", "train.log_every=5",
                f"train.cpu={'true' if self.device == 'cpu' else 'false'}", "train.ema_decay=0",
                "loss.adv_warmup_steps=0", "controlnet.organs=[liver]"]


def _cfg_path(name: str) -> Path:
    return ROOT / "configs" / name


def check_ca(ctx: Context) -> dict[str, Any]:
    import numpy as np

    from cohort.layouts import open_cohort
    from generative.tumors import CASynthesizer, TumorSpec
    from generative.tumors.ca import CAConfig

    case = open_cohort(ctx.phantoms()).refs[0].load()
    lab = case.label.copy()
    lab[lab >= 27] = 5  # a healthy liver to grow in
    spec = TumorSpec("liver", steps=40 if ctx.sizes is TINY else 120)
    out = {}
    for dev in dict.fromkeys([ctx.device, "cpu"]):
        with Meter(dev) as m:
            res = CASynthesizer(CAConfig(device=dev))(case.ct, lab, case.spacing, spec, np.random.default_rng(7))
        t = res.label >= 27
        out[dev] = {"seconds": round(m.seconds, 3), "voxels": int(t.sum()), "mean_hu": round(float(res.ct[t].mean()), 2)}
    ref, got = out["cpu"], out[ctx.device]
    same = got["voxels"] == ref["voxels"] and abs(got["mean_hu"] - ref["mean_hu"]) < 1.0
    return {"seconds": got["seconds"], "cpu_seconds": ref["seconds"], "detail": out,
            "ok": bool(same), "note": "same tumor as on CPU" if same else f"differs from CPU: {out}"}


def _train(ctx: Context, stage: str) -> dict[str, Any]:
    from generative.train import train_stage

    ov = ctx.gen_overrides()
    before = {"diffusion": "autoencoder", "controlnet": "diffusion"}.get(stage)
    if before is not None:
        if before not in ctx.models:
            raise RuntimeError(f"needs the {before} check's model (run it first)")
        ov.append(f"init_from={ctx.models[before]}")
    with Meter(ctx.device) as m:
        model = train_stage(stage, _cfg_path("demo/generative_demo.yaml"), ctx.work / stage, overrides=ov, progress=False)
    ctx.models[stage] = model
    summ = json.loads((ctx.work / stage / "train_summary.json").read_text())
    return {"seconds": round(m.seconds, 2), "seconds_per_step": round(summ["seconds"] / max(ctx.steps, 1), 4),
            "peak_mb": round(m.peak_mb), "precision": summ["precision"]["value"], "ok": True}


def _pipe(ctx: Context):
    from generative.diffusion.pipeline import LatentDiffusionPipeline

    if "controlnet" not in ctx.models:
        raise RuntimeError("needs the controlnet check's model (run it first)")
    return LatentDiffusionPipeline.from_pretrained(ctx.models["controlnet"], ctx.device)


def check_sample_roi(ctx: Context) -> dict[str, Any]:
    import torch
    from monai.inferers import ControlNetLatentDiffusionInferer
    from monai.networks.schedulers import DDPMScheduler

    from generative.diffusion.models import LatentControlNet

    pipe, r = _pipe(ctx), ctx.sizes.roi
    lab = torch.zeros(1, 1, r, r, r, dtype=torch.long)
    lab[..., 4:r - 4, 4:r - 4, 4:r - 4] = 5
    lab[..., r // 2 - 4:r // 2 + 4, r // 2 - 4:r // 2 + 4, r // 2 - 4:r // 2 + 4] = 27
    img = torch.rand(1, 1, r, r, r, generator=torch.Generator().manual_seed(0))
    mask = (lab == 27).float()
    pipe.sample(lab, image=img, inpaint_mask=mask, steps=2, seed=0)  # warm-up
    with Meter(ctx.device) as m:
        out = pipe.sample(lab, image=img, inpaint_mask=mask, sampler="rflow", steps=10, seed=0)
    assert torch.isfinite(out).all()
    # reference: MONAI's inferer, DDPM, its conditioning resized to latent size (one-level embedding)
    c = pipe.controlnet.config
    ref_cn = LatentControlNet(**{**c, "conditioning_embedding_num_channels": [c["conditioning_embedding_num_channels"][-1]]})
    ref_cn.load_state_dict({k: v for k, v in pipe.controlnet.state_dict().items()
                            if not k.startswith("controlnet_cond_embedding")}, strict=False)
    ref_cn = ref_cn.to(pipe.device).eval()
    app = pipe.drawn_appearance(lab, 0).to(pipe.device) if pipe.spec.appearance else None
    cond = pipe.make_condition(lab.to(pipe.device), img.to(pipe.device), mask.to(pipe.device), app)
    down = pipe.autoencoder.downsample
    cond = torch.nn.functional.interpolate(cond, scale_factor=1 / down, mode="nearest")
    n = ctx.sizes.ref_steps
    sched = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", clip_sample=False)
    sched.set_timesteps(n)
    noise = torch.randn(1, pipe.autoencoder.config["latent_channels"], *(s // down for s in (r, r, r)),
                        generator=torch.Generator().manual_seed(0)).to(pipe.device)
    with Meter(ctx.device) as mr, torch.no_grad():
        ControlNetLatentDiffusionInferer(sched, scale_factor=1.0).sample(
            input_noise=noise, autoencoder_model=pipe.autoencoder, diffusion_model=pipe.unet, controlnet=ref_cn,
            cn_cond=cond, scheduler=sched, verbose=False)
    ref_1000 = mr.seconds * 1000 / n
    return {"seconds": round(m.seconds, 3), "peak_mb": round(m.peak_mb), "reference_seconds_ddpm1000": round(ref_1000, 2),
            "ratio_vs_monai_ddpm1000": round(ref_1000 / max(m.seconds, 1e-9), 1), "ok": True}


def check_sample_volume(ctx: Context) -> dict[str, Any]:
    import torch

    pipe, (x, y, z) = _pipe(ctx), ctx.sizes.volume
    lab = torch.zeros(1, 1, x, y, z, dtype=torch.long)
    lab[..., x // 4:3 * x // 4, y // 4:3 * y // 4, z // 4:3 * z // 4] = 5
    with Meter(ctx.device) as m:
        out = pipe.sample(lab, sampler="rflow", steps=10, seed=0, tile=ctx.sizes.tile_latent)
    assert out.shape == (1, 1, x, y, z) and torch.isfinite(out).all()
    return {"seconds": round(m.seconds, 2), "peak_mb": round(m.peak_mb), "ok": True}


def _seg_overrides(ctx: Context) -> list[str]:
    p = ctx.sizes.seg_patch
    return [f"sources=[{{name: real, path: {ctx.phantoms()}}}]", "classes=[liver,liver_lesion]",
            f"data.patch_size=[{p},{p},{p}]", f"train.max_steps={ctx.steps}", f"train.val_every={ctx.steps}",
            f"train.save_every={ctx.steps}", "train.tracker=null", "data.val_fraction=0.0", "train.batch_size=2",
            "train.lr=0.01", "train.optimizer=sgd"]


def check_segmentation_train(ctx: Context) -> dict[str, Any]:
    from segmentation.config import load_seg_config
    from segmentation.train import train_segmentation

    cfg = load_seg_config(_cfg_path("segmentation/demo.yaml"), _seg_overrides(ctx))
    with Meter(ctx.device) as m:
        model = train_segmentation(cfg, ctx.work / "seg", show=False)
    ctx.models["segmentation"] = model
    summ = json.loads((ctx.work / "seg" / "summary.json").read_text())
    return {"seconds": round(m.seconds, 2), "seconds_per_step": round(1 / max(summ["steps_per_s"], 1e-9), 4),
            "peak_mb": round(m.peak_mb), "precision": summ.get("precision", {}).get("value"), "ok": True}


def check_segmentation_predict(ctx: Context) -> dict[str, Any]:
    import torch

    from segmentation.networks import load_model
    from segmentation.predict import sliding_window_probs

    if "segmentation" not in ctx.models:
        raise RuntimeError("needs the segmentation_train check's model (run it first)")
    model = load_model(ctx.models["segmentation"], device=ctx.device)
    image = torch.rand(1, 1, *ctx.sizes.seg_volume, generator=torch.Generator().manual_seed(0))
    p = ctx.sizes.seg_patch
    with Meter(ctx.device) as m, torch.no_grad():
        probs = sliding_window_probs(model.net, image, (p, p, p), sw_batch_size=2)
    assert probs.shape[1:] == tuple(ctx.sizes.seg_volume)
    return {"seconds": round(m.seconds, 2), "peak_mb": round(m.peak_mb), "ok": True}


def check_filter_score(ctx: Context) -> dict[str, Any]:
    from cohort.config import load_config
    from generative.quality import FilterConfig, score_cohort, train_discriminator
    from generative.tumors import CASynthesizer, TumorSpec, synthesize_cohort

    syn = ctx.work / "ca_cohort"
    healthy = ctx.work / "healthy"
    from cohort.phantom import generate_cohort

    generate_cohort(healthy, site="B", n=2, tumor_fraction=0.0, seed=1, spacing=1.5, progress=False)
    synthesize_cohort(healthy, syn, CASynthesizer(), TumorSpec("liver", steps=30), progress=False)
    cfg = load_config(FilterConfig, _cfg_path("generative/filter_tiny.yaml"),
                      [f"train.cpu={'true' if ctx.device == 'cpu' else 'false'}", "train.max_steps=20",
                       "train.eval_every=10"])
    model = train_discriminator([ctx.phantoms()], [syn], cfg, ctx.work / "disc")
    with Meter(ctx.device) as m:
        scores = score_cohort(model, syn, cfg)
    return {"seconds": round(m.seconds, 2), "seconds_per_case": round(m.seconds / max(len(scores), 1), 3),
            "peak_mb": round(m.peak_mb), "ok": True}


RUNNERS = {"ca": check_ca, "autoencoder": lambda c: _train(c, "autoencoder"), "diffusion": lambda c: _train(c, "diffusion"),
           "controlnet": lambda c: _train(c, "controlnet"), "sample_roi": check_sample_roi,
           "sample_volume": check_sample_volume, "segmentation_train": check_segmentation_train,
           "segmentation_predict": check_segmentation_predict, "filter_score": check_filter_score}


def describe(name: str, sizes: Sizes, steps: int) -> str:
    return DESCRIPTIONS[name].format(steps=steps, crop=sizes.crop, ae=sizes.ae_channels, unet=sizes.unet_channels,
                                     roi=sizes.roi, ref=sizes.ref_steps, vol="x".join(map(str, sizes.volume)),
                                     tile=sizes.tile_latent, patch=sizes.seg_patch,
                                     segvol="x".join(map(str, sizes.seg_volume)))


def table(rows: list[dict[str, Any]], device_name: str) -> str:
    lines = [f"Device: {device_name}", "", "| check | what | status | seconds | peak MB | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        notes = {k: v for k, v in r.items() if k not in ("check", "what", "ok", "seconds", "peak_mb", "error", "detail")}
        status = "ok" if r.get("ok") else ("FAILED: " + r.get("error", r.get("note", "")).splitlines()[0][:120])
        lines.append(f"| {r['check']} | {r['what']} | {status} | {r.get('seconds', '')} | {r.get('peak_mb', '')} | "
                     + ", ".join(f"{k} {v}" for k, v in notes.items()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default when visible) or cpu")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (the slow test tier runs --device cpu --tiny)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per training check (default 20; tiny 3)")
    ap.add_argument("--only", default=None, help="comma-separated checks (default: all, in order)")
    ap.add_argument("--dry-run", action="store_true", help="list the checks and their sizes; run nothing")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/gpu_check[_tiny].json)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = TINY if args.tiny else REAL
    steps = args.steps or (3 if args.tiny else 20)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CHECKS)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        ap.error(f"unknown check(s) {unknown}; known: {list(CHECKS)}")
    if args.dry_run:
        print(f"gpu_check on {device} ({'tiny' if args.tiny else 'real-scale'} sizes, {steps} steps per training check):")
        for i, n in enumerate(names, 1):
            print(f"  {i}. {n}: {describe(n, sizes, steps)}")
        return 0
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible (tumorgen env shows what torch sees)", file=sys.stderr)
        return 2
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # segmentation training: accelerate's device follows it
    from _report import machine_line

    device_name = (torch.cuda.get_device_name(0) if device == "cuda" else "CPU") + " - " + machine_line()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(device, sizes, steps, Path(args.work or tmp))
        ctx.work.mkdir(parents=True, exist_ok=True)
        for n in names:
            t0 = time.perf_counter()
            print(f"[gpu_check] {n}: {describe(n, sizes, steps)} ...", flush=True)
            try:
                r = RUNNERS[n](ctx)
            except Exception as e:  # noqa: BLE001 - one broken path must not hide the others
                r = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
            r = {"check": n, "what": describe(n, sizes, steps), **r, "wall_seconds": round(time.perf_counter() - t0, 1)}
            print(f"[gpu_check] {n}: {'ok' if r.get('ok') else 'FAILED ' + r.get('error', '')} "
                  f"({r['wall_seconds']} s)", flush=True)
            rows.append({k: v for k, v in r.items() if k != "traceback"} if r.get("ok") else r)
    md = table(rows, device_name)
    print("\n" + md)
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check{'_tiny' if args.tiny else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from cohort.io import write_json

    write_json(out, {"device": device, "device_name": device_name, "sizes": "tiny" if args.tiny else "real",
                     "steps": steps, "rows": rows, "table_md": md})
    print(f"wrote {out}")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
