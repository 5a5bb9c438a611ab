"""Train tumor segmentation on real + synthetic cohorts.

    accelerate launch -m segmentation.train --config configs/segmentation/default.yaml --run-dir runs/seg
    python -m segmentation.train --config configs/segmentation/tiny.yaml --run-dir runs/tiny --resume
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m segmentation.train --config ...   (CPU processes)

Steps: 1 config and run folder, 2 data (sources, cache, mixing sampler), 3
model, loss, optimizer, 4 resume, 5 training loop (validation Dice,
checkpoints, tracker), 6 export of the model folder and per-source counts.

On-the-fly synthesis needs a synthesizer object, which this package never
builds (it does not import the generators): call :func:`train_segmentation`
with one, or run ``tumorgen segment train`` (``accelerate launch -m
tumorgen.cli segment train ...`` for several processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from cohort.config import save_config
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
from segmentation import engine as E
from segmentation.config import SegConfig, SegConfigError, load_seg_config, validate
from segmentation.data import ClassMap, MixingSampler, PatchDataset, build_cache, collate
from segmentation.health import FIT_NAME, fit_message, lesion_fit
from segmentation.networks import build_network, network_kwargs, save_model

#: what an earlier run left in its folder and ``overwrite`` deletes ("segmentation" is the tracker's log folder)
RUN_OUTPUTS = ("checkpoints", "model", "segmentation", E.COUNTS_NAME, "summary.json", FIT_NAME)


def train_segmentation(config: SegConfig, run_dir: str | Path, resume: bool = False, synthesizer: Any = None,
                       spec_for: Callable[[str, np.random.Generator], Any] | None = None, show: bool = True,
                       overwrite: bool = False) -> Path:
    """Train a segmentation model; returns the model folder (``run_dir/model``).

    ``synthesizer``/``spec_for``: on-the-fly synthesis (see
    :class:`segmentation.data.PatchDataset`); required when
    ``config.onthefly.method`` is set. ``resume`` continues from the newest
    checkpoint in ``run_dir`` (same config), or starts fresh when there is none.
    ``overwrite`` deletes an earlier run's checkpoints, model, logs and summaries first; with
    neither, a ``run_dir`` that holds a run (checkpoints or a model) is refused (CohortError).
    """
    # 1. config, run folder, accelerator
    run = _open_run(config, Path(run_dir), resume, overwrite, synthesizer, show)
    cfg, acc, t = run.cfg, run.acc, run.cfg.train
    # 2. data: sources, validation split, cache
    split = E.split_sources(cfg)
    with acc.main_process_first():  # with a disk cache the main process fills it first
        cache = build_cache(split.train, cfg.data, desc="caching training cases", show=show and run.main)
        val_cache = build_cache([split.val], cfg.data, desc="caching validation cases", show=show and run.main)[0]
    sizes, weights = [len(c) for c in cache], E.source_weights(cfg.sources)
    # 3. model, loss, optimizer, schedule
    net, net_kwargs = _network(cfg)
    if run.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    opt = E.make_optimizer(net.parameters(), t)
    sched = E.make_schedule(opt, t)
    net, opt, sched = acc.prepare(net, opt, sched)
    # 4. resume; draw i is a pure function of (seed, i): the resumed run continues the same sequence
    step, counts = 0, E.Counts.empty(len(cfg.sources))
    ckpt = E.latest_checkpoint(run.run_dir) if resume else None
    if ckpt is not None:
        step, counts = E.load_checkpoint(acc, ckpt, len(cfg.sources))
        if run.main:
            print(f"resumed from {ckpt} at step {step}", file=sys.stderr)
    per_step = t.batch_size * t.grad_accum * acc.num_processes  # draws per optimizer step
    sampler = MixingSampler(sizes, weights, seed=cfg.data.seed, num_draws=max(t.max_steps - step, 0) * per_step,
                            start=step * per_step)
    dataset = PatchDataset(cache, sampler, cfg, synthesizer=synthesizer, spec_for=spec_for)
    loader = acc.prepare(torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, sampler=sampler,
                                                     collate_fn=collate, num_workers=cfg.data.num_workers,
                                                     drop_last=True, persistent_workers=False))
    # 5. training loop
    t_start, step0 = time.perf_counter(), step
    step, losses, last_val = _loop(run, net, opt, sched, loader, counts, step, val_cache if split.val else None)
    # 6. export: model folder, per-source counts, summary
    acc.wait_for_everyone()
    model_dir = run.run_dir / "model"
    if run.main:
        seconds = time.perf_counter() - t_start
        source_report = counts.report(cfg, sizes, weights)
        summary = {"steps": step, "num_processes": acc.num_processes, "precision": run.precision.as_dict(),
                   "channels_last_3d": run.channels_last, "steps_this_session": step - step0,
                   "seconds": round(seconds, 2), "steps_per_s": round((step - step0) / max(seconds, 1e-9), 4),
                   "final_loss": losses[-1] if losses else None, "val": last_val, "val_history": counts.val_history,
                   "val_cases": [r.case_id for r in split.val], "val_held_out_from": split.held_out_from,
                   "train_cases": {s.name: [r.case_id for r in refs] for s, refs in zip(cfg.sources, split.train)},
                   "sources": source_report}
        # does the model segment its own training tumors? (a collapsed lesion output reads as "no gain" on test)
        fit = lesion_fit(acc.unwrap_model(net), cache, cfg.classes, cfg.data, seed=cfg.data.seed)
        summary["fit"] = fit
        msg = fit_message(fit, str(run.run_dir))
        if msg:
            print(f"WARNING {msg}", file=sys.stderr)
        write_json(run.run_dir / E.COUNTS_NAME, source_report)
        write_json(run.run_dir / "summary.json", summary)
        write_json(run.run_dir / FIT_NAME, fit)
        save_model(acc.unwrap_model(net), model_dir, cfg.network.name, net_kwargs, list(cfg.classes),
                   cfg.data, cfg.infer, info={"steps": step, "val": last_val, "sources": source_report})
    acc.end_training()
    return model_dir


@dataclasses.dataclass
class _Run:
    cfg: SegConfig
    acc: Accelerator
    precision: Precision
    run_dir: Path
    channels_last: bool
    show: bool

    @property
    def main(self) -> bool:
        return self.acc.is_main_process


def _network(cfg: SegConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The config's network, newly initialised, and its constructor arguments (saved with the model)."""
    kwargs = network_kwargs(cfg.network, ClassMap(tuple(cfg.classes)).num_channels, cfg.data.patch_size)
    return build_network(cfg.network.name, kwargs), kwargs


def _open_run(config: SegConfig, run_dir: Path, resume: bool, overwrite: bool, synthesizer: Any, show: bool) -> _Run:
    """Validated config (precision resolved for this machine), run folder, accelerator, seed, tracker."""
    cfg = validate(config, run_dir)
    if not cfg.sources:
        raise SegConfigError(f"{run_dir}: sources: the config lists no training source")
    if cfg.onthefly.method is not None and synthesizer is None:
        raise SegConfigError(f"onthefly.method: {cfg.onthefly.method!r} needs a synthesizer object; run "
                             "`tumorgen segment train` (it resolves the method) or pass synthesizer=")
    held = check_run_dir(run_dir, resume, overwrite)  # every rank looks before any rank writes
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    tracker = cfg.train.tracker
    if tracker == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            tracker = None
    precision = resolve_precision(cfg.train.mixed_precision, None, "segmentation train")
    if precision.cpu_bf16:  # CPU bf16 convolutions fail on 2-voxel feature maps
        precision = guard_small_feature_maps(
            precision, smallest_conv_side([(_network(cfg)[0], torch.zeros(1, 1, *cfg.data.patch_size))]),
            "segmentation train")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision=precision.value))
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=cfg.train.grad_accum,
                      log_with=tracker, project_dir=str(run_dir))
    set_seed(cfg.train.seed)
    if acc.is_main_process:
        if held:
            print(f"overwrite: deleting the earlier run in {run_dir} ({', '.join(held)})", file=sys.stderr)
            clear_run(run_dir, RUN_OUTPUTS)
        save_config(cfg, run_dir / "config.yaml")
    if tracker:
        acc.init_trackers("segmentation", config=E.flat_hparams(cfg))
    # channels_last_3d: 0.77x the fp32 SegResNet step (demo network, 32^3) on a 2-core AVX2 CPU; "auto" = fp32 on CPU only
    cl = use_channels_last(cfg.train.memory_format, acc.device, precision.value)
    return _Run(cfg, acc, precision, run_dir, cl, show)


def _loop(run: _Run, net, opt, sched, loader, counts: E.Counts, step: int,
          val_cache) -> tuple[int, list[float], dict[str, float]]:
    """Optimiser steps until ``train.max_steps``: per-source counts, logging, validation on the main
    process, checkpoints. Returns (step, losses of this session, last validation)."""
    acc, t = run.acc, run.cfg.train
    loss_fn = E.make_loss()
    last_val: dict[str, float] = counts.val_history[-1] if counts.val_history else {}
    losses: list[float] = []
    t_start, step0 = time.perf_counter(), step
    net.train()
    with StepProgress(f"segmentation train ({run.precision.label})", t.max_steps, step, enabled=run.show and run.main) as prog:
        for batch in loader:
            if step >= t.max_steps:
                break
            with acc.accumulate(net):
                image = batch["image"].contiguous(memory_format=torch.channels_last_3d) if run.channels_last else batch["image"]
                loss = loss_fn(net(image).float(), batch["label"])
                acc.backward(loss)
                if acc.sync_gradients and t.grad_clip > 0:
                    acc.clip_grad_norm_(net.parameters(), t.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            counts.add(acc.gather(batch["source"]), acc.gather(batch["synth"]), acc.gather(batch["synth_seconds"]))
            if not acc.sync_gradients:
                continue
            step += 1
            lval = float(acc.gather(loss.detach().float().reshape(1)).mean())
            if not np.isfinite(lval):
                raise FloatingPointError(f"{run.run_dir}: loss became {lval} at step {step}; lower train.lr "
                                         "or use train.mixed_precision=no")
            losses.append(lval)
            if step % t.log_every == 0 or step == t.max_steps:
                rate = (step - step0) / max(time.perf_counter() - t_start, 1e-9)
                acc.log({"train/loss": float(np.mean(losses[-t.log_every:])),
                         "train/lr": sched.get_last_lr()[0], "train/steps_per_s": rate}, step=step)
            if val_cache is not None and (step % t.val_every == 0 or step == t.max_steps):
                if run.main:
                    last_val = E.validate(acc.unwrap_model(net), val_cache, run.cfg, run.precision.autocast_dtype)
                    counts.val_history.append({"step": step, **last_val})
                    acc.log({f"val/{k}": v for k, v in last_val.items()}, step=step)
                acc.wait_for_everyone()
            if step % t.save_every == 0 or step == t.max_steps:
                E.save_checkpoint(acc, run.run_dir, step, counts, t.keep_checkpoints)
            prog.update(step, info=f"loss {lval:.3f}" + (f" val dice {last_val['dice/mean']:.3f}" if "dice/mean" in last_val else ""))
    return step, losses, last_val


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="segmentation.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=None, help="YAML config (configs/segmentation/*.yaml)")
    p.add_argument("--run-dir", type=Path, default=None, help="run folder (default runs/segmentation/<config name>)")
    add_rerun_arguments(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.001 (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = args.run_dir or Path("runs/segmentation") / (args.config.stem if args.config else "default")
    try:
        cfg = load_seg_config(args.config, args.overrides)
        model_dir = train_segmentation(cfg, run_dir, resume=args.resume, overwrite=args.overwrite)
    except (CohortError, ValueError) as e:  # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
