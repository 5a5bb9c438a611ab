"""Train one stage of the latent diffusion model.

    accelerate launch -m generative.train --stage autoencoder --config configs/generative/autoencoder.yaml
    accelerate launch -m generative.train --stage diffusion   --config configs/generative/diffusion.yaml
    accelerate launch -m generative.train --stage controlnet  --config configs/generative/controlnet.yaml
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m generative.train --stage ...   (CPU processes)

(or ``tumorgen train ...`` on one CPU). Reads top to bottom: 1 config, 2 data,
3 models, 4 optimisers/EMA/accelerate, 5 resume, 6 loop, 7 export. All step
randomness comes from (seed, step, rank), so ``--resume`` after a kill continues
the step count and reproduces the losses an uninterrupted run would have had.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.training_utils import EMAModel

from cohort.config import load_config, save_config, to_dict
from cohort.errors import CohortError
from cohort.hardware import resolve_precision, use_channels_last
from cohort.progress import StepProgress
from generative.diffusion import data as D
from generative.diffusion.config import GenerativeConfig
from generative.diffusion.models import model_hash
from generative.diffusion.perceptual import build_perceptual
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.diffusion.training import (
    CKPT_RE,
    AutoencoderLosses,
    TrainState,
    build_stage_models,
    checkpoint_dir,
    export_pipeline,
    latest_checkpoint,
    load_init_spec,
    save_checkpoint,
    stage_spec,
)

log = logging.getLogger("generative.train")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


#: what an earlier run left in its folder and ``overwrite`` deletes (the latent cache/ stays: it is keyed by its inputs)
RUN_OUTPUTS = ("checkpoints", "model", "logs", "train_summary.json")


def previous_run(run_dir: str | Path) -> list[str]:
    """What in ``run_dir`` is an earlier run's work: its complete checkpoints and its exported model."""
    run_dir = Path(run_dir)
    ckpts = [p for p in checkpoint_dir(run_dir).glob("step_*") if CKPT_RE.match(p.name) and p.is_dir()]
    found = [f"{len(ckpts)} checkpoint(s) in checkpoints/"] if ckpts else []
    model = run_dir / "model"
    if model.is_dir() and any(model.iterdir()):
        found.append("an exported model/")
    return found


def check_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse to train from scratch over an earlier run unless asked (CohortError naming the folder);
    returns what ``overwrite`` will delete."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run or replace it")
    held = previous_run(run_dir)
    if held and not resume and not overwrite:
        raise CohortError(run_dir, f"already holds a run ({', '.join(held)}); rerun with --resume to continue it or "
                                   "--overwrite to delete it and start over (resume=True / overwrite=True in Python)")
    return held if overwrite else []


def train_stage(stage: str, config: GenerativeConfig | str | Path, run_dir: str | Path | None = None,
                resume: bool = False, overrides: list[str] | tuple[str, ...] = (), progress: bool = True,
                overwrite: bool = False) -> Path:
    """Train ``stage`` and return its exported model folder ``<run_dir>/model``.

    config: a :class:`GenerativeConfig` or a YAML path (+ ``overrides`` "a.b=v").
    run_dir: defaults to ``<output_dir>/<stage>``; holds config.yaml, logs/, checkpoints/, model/.
    resume: continue from the newest checkpoint (or start fresh when there is none).
    overwrite: delete an earlier run's checkpoints, model and logs first. With neither, a folder
        that holds a run (checkpoints or a model) is refused with a CohortError.
    """
    # 1. config -------------------------------------------------------------------------------
    cfg = config if isinstance(config, GenerativeConfig) else load_config(GenerativeConfig, config, list(overrides))
    cfg = replace(cfg, stage=stage).check()
    t = cfg.train
    run_dir = Path(run_dir or Path(cfg.output_dir) / stage)
    replaced = check_run_dir(run_dir, resume, overwrite)  # every rank, before any writes
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    # "auto" becomes bf16 or fp32 for this machine; the resolved value is what config.yaml records
    precision = resolve_precision(t.mixed_precision, "cpu" if t.cpu else None, f"train {stage}")
    cfg = replace(cfg, train=replace(t, mixed_precision=precision.value))
    t = cfg.train
    acc = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum, cpu=t.cpu,
                      log_with="tensorboard", project_config=ProjectConfiguration(str(run_dir), str(run_dir / "logs")))
    set_seed(t.seed)  # model initialisation is the same in every run of this config
    if acc.is_main_process:
        if replaced:
            log.info("overwrite: deleting the earlier run in %s (%s)", run_dir, ", ".join(replaced))
            for name in RUN_OUTPUTS:
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    rank = acc.process_index

    # 2. data: preprocessed volumes; the later stages encode a latent cache once ---------------
    with acc.main_process_first():
        volumes = D.load_volumes(cfg.data.cohort, cfg.data.spacing_mm, cfg.data.max_cases)
    models = build_stage_models(cfg)
    cache, scale = None, 1.0
    if stage != "autoencoder":
        ae = models["autoencoder"].to(acc.device)
        key = D.cache_key(volumes, cfg.data.crop_size, cfg.data.crops_per_case, t.seed,
                          model_hash(Path(cfg.init_from) / "autoencoder"))
        with acc.main_process_first():
            cache = D.build_latent_cache(ae, volumes, cfg.data.crop_size, cfg.data.crops_per_case, t.seed,
                                         cfg.data.tumor_crop_fraction, run_dir / "cache" / f"latents-{key}.safetensors")
        scale = D.scale_factor_of(cache["latent"]) if stage == "diffusion" else load_init_spec(cfg.init_from).scale_factor
    spec = stage_spec(cfg, scale)

    # 3. models: the one being trained, and what stays frozen ----------------------------------
    if stage == "autoencoder":
        trained = models["autoencoder"]
        disc = models["discriminator"]
        losses = AutoencoderLosses(cfg.loss, build_perceptual(cfg.loss.perceptual, cfg.loss.perceptual_net,
                                                              cfg.loss.perceptual_weights, cfg.loss.fake_3d_ratio))
        if losses.perceptual is not None:
            losses.perceptual.to(acc.device)
    else:
        trained = models["unet"] if stage == "diffusion" else models["controlnet"]
        pipe = LatentDiffusionPipeline(models["autoencoder"], models["unet"], models["controlnet"], spec).to(acc.device)
    # channels_last_3d: 0.80x (autoencoder) and 0.81x (ControlNet) the fp32 step time on an AVX2 CPU
    # (benchmarks/bench_precision.py); "auto" uses it for fp32 on CPUs only, where it was measured
    cl = use_channels_last(t.memory_format, acc.device, precision.value)
    if cl:
        for net in ([trained, disc] if stage == "autoencoder" else [pipe.unet, pipe.controlnet]):
            if net is not None:
                net.to(memory_format=torch.channels_last_3d)

    # 4. optimisers, EMA, accelerate -----------------------------------------------------------
    opt = torch.optim.AdamW(trained.parameters(), lr=t.lr)
    state = TrainState()
    trained, opt = acc.prepare(trained, opt)
    if stage == "autoencoder":
        d_opt = torch.optim.AdamW(disc.parameters(), lr=t.disc_lr)
        disc, d_opt = acc.prepare(disc, d_opt)
    elif stage == "diffusion":
        pipe.unet = trained
    else:
        pipe.controlnet = trained
    ema = EMAModel(acc.unwrap_model(trained).parameters(), decay=t.ema_decay) if t.ema_decay > 0 else None
    acc.register_for_checkpointing(state)
    if ema is not None:
        acc.register_for_checkpointing(ema)

    # 5. resume from the newest complete checkpoint --------------------------------------------
    if resume and (ckpt := latest_checkpoint(run_dir)) is not None:
        acc.load_state(str(ckpt))
        log.info("resumed from %s at step %d", ckpt, state.step)
    acc.init_trackers(f"{stage}", config=_flat(to_dict(cfg)))

    # 6. loop: one iteration = one optimiser step of grad_accum micro-batches ------------------
    bar = StepProgress(f"{stage} ({precision.label})", t.steps, state.step, enabled=progress and acc.is_main_process)
    last: dict[str, float] = {}
    history: list[float] = []  # loss per optimiser step of this invocation (train_summary.json)
    start_step = state.step
    t0 = time.time()
    with bar:
        while state.step < t.steps:
            trained.train()
            logs: dict[str, float] = {}
            for micro in range(t.grad_accum):
                index = state.step * t.grad_accum + micro
                rng, gen = D.step_rng(t.seed, index, rank), D.step_generator(t.seed, index, rank)
                with acc.accumulate(trained):
                    if stage == "autoencoder":
                        batch = D.crop_batch(volumes, cfg.data.crop_size, t.batch_size, rng, cfg.data.tumor_crop_fraction)
                        x = batch["image"].to(acc.device)
                        if cl:
                            x = x.contiguous(memory_format=torch.channels_last_3d)
                        disc.requires_grad_(False)  # the generator's adversarial term must not train the critic
                        with acc.autocast():
                            recon, z_mu, z_sigma = trained(x)
                            loss, logs = losses.generator(x, recon, z_mu, z_sigma, disc, state.step, gen)
                        acc.backward(loss)
                        disc.requires_grad_(True)
                        opt.step()
                        opt.zero_grad()
                        if state.step >= cfg.loss.adv_warmup_steps and cfg.loss.adv_weight > 0:
                            with acc.autocast():
                                d_loss = losses.discriminator(x, recon, disc)
                            acc.backward(d_loss)
                            d_opt.step()
                            d_opt.zero_grad()
                            logs["adv_d"] = float(d_loss.detach())
                    else:
                        batch = {k: v.to(acc.device) for k, v in D.cache_batch(cache, t.batch_size, rng, spec.scale_factor).items()}
                        with acc.autocast():
                            loss = pipe.training_step(batch, gen)["loss"]
                        acc.backward(loss)
                        opt.step()
                        opt.zero_grad()
                logs["loss"] = float(loss.detach())
                if not math.isfinite(logs["loss"]):
                    raise FloatingPointError(f"{stage}: loss is {logs['loss']} at step {state.step} (lower train.lr?)")
            if acc.sync_gradients:
                if ema is not None:
                    ema.step(acc.unwrap_model(trained).parameters())
                state.step += 1
                last = logs
                history.append(logs["loss"])
                acc.log(logs, step=state.step)
                bar.update(state.step, info=f"loss {logs['loss']:.4f}")
                if state.step % t.save_every == 0 or state.step == t.steps:
                    save_checkpoint(acc, run_dir, state.step, t.keep_checkpoints)

    # 7. export: EMA weights into the model folder (main process) ------------------------------
    acc.wait_for_everyone()
    out = run_dir / "model"
    if acc.is_main_process:
        net = acc.unwrap_model(trained)
        if ema is not None:
            ema.copy_to(net.parameters())
        key = {"autoencoder": "autoencoder", "diffusion": "unet", "controlnet": "controlnet"}[stage]
        models[key] = net
        export_pipeline(cfg, models, spec, out)
        from cohort.io import write_json

        write_json(run_dir / "train_summary.json", {"stage": stage, "steps": state.step, "last": last, "history": history, "start_step": start_step,
                                                    "seconds": round(time.time() - t0, 2),
                                                    "mixed_precision": t.mixed_precision,
                                                    "precision": precision.as_dict(),
                                                    "channels_last_3d": cl,
                                                    "num_processes": acc.num_processes})
    acc.end_training()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generative.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, choices=["autoencoder", "diffusion", "controlnet"])
    p.add_argument("--config", required=True, help="YAML of generative.diffusion.config.GenerativeConfig")
    p.add_argument("--run-dir", default=None, help="default: <output_dir>/<stage>")
    rerun = p.add_mutually_exclusive_group()  # a run folder that already holds a run: continue it or replace it
    rerun.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    rerun.add_argument("--overwrite", action="store_true",
                       help="delete the run folder's earlier checkpoints, model and logs, then train from scratch")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = train_stage(args.stage, args.config, args.run_dir, args.resume, args.overrides, not args.no_progress,
                          overwrite=args.overwrite)
    except (CohortError, ValueError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
