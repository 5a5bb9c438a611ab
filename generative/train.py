"""Train one stage of the latent diffusion model.

    accelerate launch -m generative.train --stage autoencoder --config configs/generative/autoencoder.yaml
    accelerate launch -m generative.train --stage diffusion   --config configs/generative/diffusion.yaml
    accelerate launch -m generative.train --stage controlnet  --config configs/generative/controlnet.yaml
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m generative.train --stage ...   (CPU processes)

(or ``tumorgen train ...`` on one CPU). Two loops, each reading top to bottom (models,
optimisers/EMA/accelerate, resume, loop, export): :func:`train_autoencoder` (adversarial) and
:func:`train_latent` (diffusion UNet or ControlNet on cached latents); the pieces they share
(:func:`open_run`, :func:`_loop`, ...) follow them. All step
randomness comes from (seed, step, rank), so ``--resume`` after a kill continues
the step count and reproduces the losses an uninterrupted run would have had.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.training_utils import EMAModel

from cohort.config import load_config, save_config, to_dict
from cohort.errors import CohortError
from cohort.hardware import (
    Precision,
    guard_small_feature_maps,
    resolve_precision,
    smallest_conv_side,
    use_channels_last,
)
from cohort.io import write_json
from cohort.progress import StepProgress
from cohort.runs import add_rerun_arguments, check_run_dir, clear_run
from generative.diffusion import data as D
from generative.diffusion.config import GenerativeConfig
from generative.diffusion.models import model_hash
from generative.diffusion.perceptual import build_perceptual
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.diffusion.training import (
    AutoencoderLosses,
    TrainState,
    build_stage_models,
    export_pipeline,
    latest_checkpoint,
    load_init_spec,
    save_checkpoint,
    stage_intensity,
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


@dataclass
class Run:
    """What both loops share: the resolved config, the accelerator and the run folder."""

    stage: str
    cfg: GenerativeConfig
    acc: Accelerator
    precision: Precision
    run_dir: Path
    channels_last: bool
    progress: bool


def train_stage(stage: str, config: GenerativeConfig | str | Path, run_dir: str | Path | None = None,
                resume: bool = False, overrides: list[str] | tuple[str, ...] = (), progress: bool = True,
                overwrite: bool = False) -> Path:
    """Train ``stage`` and return its exported model folder ``<run_dir>/model``.

    config: a :class:`GenerativeConfig` or a YAML path (+ ``overrides`` "a.b=v").
    run_dir: defaults to ``<output_dir>/<stage>``; holds config.yaml, logs/, checkpoints/, model/.
    resume: continue from the newest checkpoint (or start fresh when there is none).
    overwrite: delete an earlier run's checkpoints, model and logs first. With neither, a folder
        that holds a run (checkpoints or a model) is refused with a CohortError.
    The autoencoder has its own (adversarial) loop; diffusion and ControlNet share the latent loop.
    With ``autoencoder.pretrained`` (a MAISI checkpoint) the autoencoder stage exports it untrained
    and the later stages prepare CT with its [-1000, 1000] HU window (:func:`stage_intensity`).
    """
    run = open_run(stage, config, run_dir, resume, overrides, overwrite, progress)
    if stage == "autoencoder" and run.cfg.autoencoder.pretrained:
        return export_pretrained_autoencoder(run)
    intensity = stage_intensity(run.cfg)
    with run.acc.main_process_first():
        volumes = D.load_volumes(run.cfg.data.cohort, run.cfg.data.spacing_mm, run.cfg.data.max_cases,
                                 intensity=intensity)
    train = train_autoencoder if stage == "autoencoder" else train_latent
    return train(run, volumes, resume)


def smallest_feature_map(cfg: GenerativeConfig) -> int | None:
    """The smallest side (voxels) of a 3D feature map the stage's trained networks convolve, found by running
    them once on a zero crop (autoencoder stage: the autoencoder and the discriminator) or from the latent
    size (the UNet and ControlNet stages: crop / the autoencoder's downsampling / 2 per UNet level below the
    first; the ControlNet's condition encoder stays at or above the latent size). None when the networks cannot
    take the crop at all."""
    crop = [int(c) for c in cfg.data.crop_size]
    if cfg.stage == "autoencoder" and cfg.autoencoder.pretrained:
        return min(crop)  # nothing is trained
    if cfg.stage == "autoencoder":
        x = torch.zeros(1, 1, *crop)
        return smallest_conv_side([(net, x) for net in build_stage_models(cfg).values() if net is not None])
    from generative.diffusion.models import load_autoencoder

    down = load_autoencoder(Path(cfg.init_from) / "autoencoder").downsample
    return min(c // down for c in crop) // 2 ** (len(cfg.unet.channels) - 1)


def open_run(stage: str, config: GenerativeConfig | str | Path, run_dir: str | Path | None, resume: bool,
             overrides, overwrite: bool, progress: bool) -> Run:
    """Config (precision resolved for this machine), accelerator, seed and run folder."""
    cfg = config if isinstance(config, GenerativeConfig) else load_config(GenerativeConfig, config, list(overrides))
    cfg = replace(cfg, stage=stage).check()
    run_dir = Path(run_dir or Path(cfg.output_dir) / stage)
    replaced = check_run_dir(run_dir, resume, overwrite)  # every rank, before any writes
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    # "auto" becomes bf16 or fp32 for this machine; the resolved value is what config.yaml records
    precision = resolve_precision(cfg.train.mixed_precision, "cpu" if cfg.train.cpu else None, f"train {stage}")
    if precision.cpu_bf16:
        precision = guard_small_feature_maps(precision, smallest_feature_map(cfg), f"train {stage}")
    cfg = replace(cfg, train=replace(cfg.train, mixed_precision=precision.value))
    t = cfg.train
    acc = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum, cpu=t.cpu,
                      log_with="tensorboard", project_config=ProjectConfiguration(str(run_dir), str(run_dir / "logs")))
    set_seed(t.seed)  # model initialisation is the same in every run of this config
    if acc.is_main_process:
        if replaced:
            log.info("overwrite: deleting the earlier run in %s (%s)", run_dir, ", ".join(replaced))
            clear_run(run_dir, RUN_OUTPUTS)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    # channels_last_3d: 0.80x (autoencoder) and 0.81x (ControlNet) the fp32 step time on an AVX2 CPU
    # (benchmarks/bench_precision.py); "auto" uses it for fp32 on CPUs only, where it was measured
    cl = use_channels_last(t.memory_format, acc.device, precision.value)
    return Run(stage, cfg, acc, precision, run_dir, cl, progress)


def train_autoencoder(run: Run, volumes: list, resume: bool) -> Path:
    """AutoencoderKL against a patch discriminator: L1 + perceptual + KL, adversarial after a warm-up."""
    cfg, acc, t = run.cfg, run.acc, run.cfg.train
    models = build_stage_models(cfg)
    ae, disc = models["autoencoder"], models["discriminator"]
    losses = AutoencoderLosses(cfg.loss, build_perceptual(cfg.loss.perceptual, cfg.loss.perceptual_net,
                                                          cfg.loss.perceptual_weights, cfg.loss.fake_3d_ratio))
    if losses.perceptual is not None:
        losses.perceptual.to(acc.device)
    _memory_format(run, [ae, disc])
    ae, opt, ema, state = _prepare(run, ae, resume)
    d_opt = torch.optim.AdamW(disc.parameters(), lr=t.disc_lr)
    disc, d_opt = acc.prepare(disc, d_opt)
    _resume(run, state, resume)

    def micro_step(rng, gen) -> tuple[torch.Tensor, dict[str, float]]:
        batch = D.crop_batch(volumes, cfg.data.crop_size, t.batch_size, rng, cfg.data.tumor_crop_fraction)
        x = batch["image"].to(acc.device)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        disc.requires_grad_(False)  # the generator's adversarial term must not train the critic
        with acc.autocast():
            recon, z_mu, z_sigma = ae(x)
            loss, logs = losses.generator(x, recon, z_mu, z_sigma, disc, state.step, gen,
                                          label=batch["label"].to(acc.device))
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
        return loss, logs

    summary = _loop(run, ae, ema, state, micro_step)
    models["autoencoder"] = _final_weights(run, ae, ema)
    return _export(run, models, stage_spec(cfg, 1.0), summary)


def export_pretrained_autoencoder(run: Run) -> Path:
    """The autoencoder stage with ``autoencoder.pretrained``: MAISI's checkpoint exported as the
    stage's model folder, no training (fine-tuning it is not implemented)."""
    models = build_stage_models(run.cfg)
    summary = {"stage": run.stage, "steps": 0, "pretrained": str(run.cfg.autoencoder.pretrained),
               "model_type": models["autoencoder"].model_type, "intensity": models["autoencoder"].intensity.as_dict(),
               "note": "MAISI's pretrained autoencoder exported as is (not trained or fine-tuned here)"}
    log.info("autoencoder: exporting the MAISI checkpoint %s (no training)", run.cfg.autoencoder.pretrained)
    return _export(run, models, stage_spec(run.cfg, 1.0, models["autoencoder"].intensity), summary)


def train_latent(run: Run, volumes: list, resume: bool) -> Path:
    """The diffusion UNet (stage "diffusion") or the ControlNet on a frozen UNet (stage "controlnet"),
    on latents of crops encoded once by the frozen autoencoder."""
    cfg, acc, t = run.cfg, run.acc, run.cfg.train
    models = build_stage_models(cfg)
    ae = models["autoencoder"].to(acc.device)
    key = D.cache_key(volumes, cfg.data.crop_size, cfg.data.crops_per_case, t.seed,
                      model_hash(Path(cfg.init_from) / "autoencoder"))
    with acc.main_process_first():
        cache = D.build_latent_cache(ae, volumes, cfg.data.crop_size, cfg.data.crops_per_case, t.seed,
                                     cfg.data.tumor_crop_fraction, run.run_dir / "cache" / f"latents-{key}.safetensors")
    # the diffusion stage measures the latents' scale; the ControlNet inherits its UNet's
    scale = D.scale_factor_of(cache["latent"]) if run.stage == "diffusion" else load_init_spec(cfg.init_from).scale_factor
    spec = stage_spec(cfg, scale, ae.intensity)
    name = "unet" if run.stage == "diffusion" else "controlnet"
    pipe = LatentDiffusionPipeline(models["autoencoder"], models["unet"], models["controlnet"], spec).to(acc.device)
    _memory_format(run, [pipe.unet, pipe.controlnet])
    trained, opt, ema, state = _prepare(run, models[name], resume)
    setattr(pipe, name, trained)
    _resume(run, state, resume)

    def micro_step(rng, gen) -> tuple[torch.Tensor, dict[str, float]]:
        batch = {k: v.to(acc.device) for k, v in D.cache_batch(cache, t.batch_size, rng, spec.scale_factor).items()}
        with acc.autocast():
            loss = pipe.training_step(batch, gen)["loss"]
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        return loss, {}

    summary = _loop(run, trained, ema, state, micro_step)
    models[name] = _final_weights(run, trained, ema)
    table = [row for v in volumes for row in v.appearance] if spec.appearance else None
    return _export(run, models, spec, summary, table)


# ---- pieces both loops share -------------------------------------------------------------------

def _memory_format(run: Run, nets: list) -> None:
    if run.channels_last:
        for net in nets:
            if net is not None:
                net.to(memory_format=torch.channels_last_3d)


def _prepare(run: Run, net: torch.nn.Module, resume: bool):
    """Optimiser, accelerate, EMA and the step counter, registered for checkpointing."""
    opt = torch.optim.AdamW(net.parameters(), lr=run.cfg.train.lr)
    state = TrainState()
    net, opt = run.acc.prepare(net, opt)
    ema = EMAModel(run.acc.unwrap_model(net).parameters(), decay=run.cfg.train.ema_decay) if run.cfg.train.ema_decay > 0 else None
    run.acc.register_for_checkpointing(state)
    if ema is not None:
        run.acc.register_for_checkpointing(ema)
    return net, opt, ema, state


def _resume(run: Run, state: TrainState, resume: bool) -> None:
    """Continue from the newest complete checkpoint; start the tracker."""
    if resume and (ckpt := latest_checkpoint(run.run_dir)) is not None:
        run.acc.load_state(str(ckpt))
        log.info("resumed from %s at step %d", ckpt, state.step)
    run.acc.init_trackers(f"{run.stage}", config=_flat(to_dict(run.cfg)))


def _loop(run: Run, trained, ema, state: TrainState, micro_step) -> dict:
    """One iteration = one optimiser step of ``grad_accum`` micro-batches; every micro-batch's
    randomness comes from (seed, index, rank). EMA, logging, checkpoints. Returns the summary."""
    acc, t = run.acc, run.cfg.train
    last: dict[str, float] = {}
    history: list[float] = []  # loss per optimiser step of this invocation (train_summary.json)
    start_step, t0 = state.step, time.time()
    with StepProgress(f"{run.stage} ({run.precision.label})", t.steps, state.step,
                      enabled=run.progress and acc.is_main_process) as bar:
        while state.step < t.steps:
            trained.train()
            logs: dict[str, float] = {}
            for micro in range(t.grad_accum):
                index = state.step * t.grad_accum + micro
                rng, gen = D.step_rng(t.seed, index, acc.process_index), D.step_generator(t.seed, index, acc.process_index)
                with acc.accumulate(trained):
                    loss, logs = micro_step(rng, gen)
                logs["loss"] = float(loss.detach())
                if not math.isfinite(logs["loss"]):
                    hint = ("lower train.lr, or train.mixed_precision=no: CPU bf16 kernels are younger than fp32's"
                            if run.precision.cpu_bf16 else "lower train.lr?")
                    raise FloatingPointError(f"{run.stage}: loss is {logs['loss']} at step {state.step} ({hint})")
            if acc.sync_gradients:
                if ema is not None:
                    ema.step(acc.unwrap_model(trained).parameters())
                state.step += 1
                last = logs
                history.append(logs["loss"])
                acc.log(logs, step=state.step)
                bar.update(state.step, info=f"loss {logs['loss']:.4f}")
                if state.step % t.save_every == 0 or state.step == t.steps:
                    save_checkpoint(acc, run.run_dir, state.step, t.keep_checkpoints)
    return {"stage": run.stage, "steps": state.step, "last": last, "history": history, "start_step": start_step,
            "seconds": round(time.time() - t0, 2), "mixed_precision": t.mixed_precision,
            "precision": run.precision.as_dict(), "channels_last_3d": run.channels_last,
            "num_processes": acc.num_processes}


def _final_weights(run: Run, trained, ema):
    """The trained network with its EMA weights (what is exported)."""
    run.acc.wait_for_everyone()
    net = run.acc.unwrap_model(trained)
    if ema is not None and run.acc.is_main_process:
        ema.copy_to(net.parameters())
    return net


def _export(run: Run, models: dict, spec, summary: dict, appearance_table: list[dict] | None = None) -> Path:
    """The model folder ``<run_dir>/model`` and ``train_summary.json`` (main process)."""
    out = run.run_dir / "model"
    if run.acc.is_main_process:
        export_pipeline(run.cfg, models, spec, out, appearance_table)
        write_json(run.run_dir / "train_summary.json", summary)
    run.acc.end_training()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generative.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, choices=["autoencoder", "diffusion", "controlnet"])
    p.add_argument("--config", required=True, help="YAML of generative.diffusion.config.GenerativeConfig")
    p.add_argument("--run-dir", default=None, help="default: <output_dir>/<stage>")
    add_rerun_arguments(p)
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
