"""Helpers of the training script: data splits, optimizer and schedule, validation, checkpoints, bookkeeping.

Kept out of :mod:`segmentation.train` so the script reads top to bottom in a
few numbered steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cohort import runs
from cohort.case import CaseRef
from segmentation.config import SegConfig, SegTrainConfig, SourceConfig
from segmentation.data import CachedCase, ClassMap, open_source, scale_hu

COUNTS_NAME = "source_counts.json"


# ----------------------------------------------------------------------------- data split


@dataclass
class Split:
    """Case references per training source, and the validation cases."""

    train: list[list[CaseRef]]
    val: list[CaseRef]
    held_out_from: str | None = None


def split_sources(cfg: SegConfig) -> Split:
    """Open every source. Without ``val_sources``, hold ``data.val_fraction`` of the first
    source's cases out for validation (a seeded choice, at most ``data.val_max_cases``,
    never all of them)."""
    train = [open_source(s, cfg.data.seed) for s in cfg.sources]
    val: list[CaseRef] = []
    held = None
    if cfg.val_sources:
        for s in cfg.val_sources:
            val += open_source(s, cfg.data.seed)
    elif cfg.data.val_fraction > 0 and len(train[0]) >= 2:
        n = len(train[0])
        k = min(max(1, round(cfg.data.val_fraction * n)), cfg.data.val_max_cases, n - 1)
        order = np.random.default_rng([cfg.data.seed, 7]).permutation(n)
        val_idx = set(order[:k].tolist())
        val = [r for i, r in enumerate(train[0]) if i in val_idx]
        train[0] = [r for i, r in enumerate(train[0]) if i not in val_idx]
        held = cfg.sources[0].name
    val = val[: cfg.data.val_max_cases]
    return Split(train, val, held)


def source_weights(sources: list[SourceConfig]) -> list[float] | None:
    """The sampler weights: None (uniform over cases) when no source sets one."""
    if all(s.weight is None for s in sources):
        return None
    return [float(s.weight) for s in sources]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- optimisation


def make_optimizer(params, t: SegTrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        # nnU-Net: SGD, Nesterov momentum 0.99, weight decay 3e-5
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.momentum > 0,
                               weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, t: SegTrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then poly (nnU-Net: (1 - step/max)^0.9), cosine or constant."""
    def factor(step: int) -> float:
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        frac = min(max(step - t.warmup_steps, 0) / max(t.max_steps - t.warmup_steps, 1), 1.0)
        if t.schedule == "poly":
            return (1.0 - frac) ** 0.9
        if t.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_loss():
    """DiceCE (MONAI): softmax Dice over the foreground channels, computed over the batch
    (nnU-Net's batch Dice), plus cross-entropy over all channels. Input logits
    (B, C, X, Y, Z), target (B, 1, X, Y, Z) channel indices."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(net: torch.nn.Module, cases: list[CachedCase], cfg: SegConfig,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Sliding-window Dice per class on validation cases in training space.

    Returns ``{"dice/<class>": mean over cases where the class is present in
    prediction or truth, "dice/mean": mean of those}``.
    """
    from segmentation.predict import dice_per_class, sliding_window_probs

    cm = ClassMap(tuple(cfg.classes))
    per: dict[int, list[float]] = {c: [] for c in range(1, cm.num_channels)}
    was_training = net.training
    net.eval()
    for c in cases:
        image = torch.from_numpy(scale_hu(c.ct_hu, cfg.data))[None, None]
        probs = sliding_window_probs(net, image, tuple(cfg.data.patch_size), overlap=cfg.infer.overlap,
                                     mode=cfg.infer.mode, sw_batch_size=cfg.infer.sw_batch_size,
                                     autocast_dtype=autocast_dtype)
        d = dice_per_class(probs.argmax(0).numpy(), cm.to_channels(c.label), cm.num_channels)
        for k, v in d.items():
            if not math.isnan(v):
                per[k].append(v)
    net.train(was_training)
    out = {f"dice/{cm.names[k]}": float(np.mean(v)) for k, v in per.items() if v}
    if out:
        out["dice/mean"] = float(np.mean(list(out.values())))
    return out


# ----------------------------------------------------------------------------- bookkeeping


@dataclass
class Counts:
    """Patches each source actually contributed (all processes), and on-the-fly tumors."""

    patches: list[int]
    synth: list[int]
    synth_seconds: float = 0.0
    val_history: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def empty(n: int) -> Counts:
        return Counts([0] * n, [0] * n)

    def add(self, source: torch.Tensor, synth: torch.Tensor, synth_seconds: torch.Tensor) -> None:
        n = len(self.patches)
        self.patches = [a + int(b) for a, b in zip(self.patches, torch.bincount(source.cpu(), minlength=n))]
        self.synth = [a + int(b) for a, b in zip(self.synth, torch.bincount(source[synth].cpu(), minlength=n))]
        self.synth_seconds += float(synth_seconds.sum())

    def report(self, cfg: SegConfig, cases: list[int], weights: list[float] | None) -> dict[str, Any]:
        total = max(sum(self.patches), 1)
        w = np.asarray(cases if weights is None else weights, np.float64)
        expected = (w / w.sum()).tolist()
        return {
            "total_patches": sum(self.patches),
            "onthefly_seconds": round(self.synth_seconds, 3),
            "sources": {
                s.name: {"kind": s.kind, "path": s.path, "cases": cases[i], "weight": s.weight,
                         "expected_fraction": round(expected[i], 4), "patches": self.patches[i],
                         "fraction": round(self.patches[i] / total, 4), "onthefly_tumors": self.synth[i]}
                for i, s in enumerate(cfg.sources)
            },
        }


def save_checkpoint(accelerator, run_dir: Path, step: int, counts: Counts, keep: int) -> Path:
    """accelerate ``save_state`` (model, optimizer, schedule, RNG) plus our step and counts, in the
    one checkpoint scheme of every training loop (:func:`cohort.runs.save_checkpoint`)."""
    return runs.save_checkpoint(accelerator, run_dir, step, keep, state={
        "step": step, "patches": counts.patches, "synth": counts.synth, "synth_seconds": counts.synth_seconds,
        "val_history": counts.val_history})


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (renamed into place, with its state file), or None."""
    return runs.latest_checkpoint(run_dir, need_state=True)


def load_checkpoint(accelerator, ckpt: Path, n_sources: int) -> tuple[int, Counts]:
    accelerator.load_state(str(ckpt))
    st = runs.read_checkpoint_state(ckpt)
    counts = Counts(list(st["patches"]), list(st["synth"]), float(st.get("synth_seconds", 0.0)),
                    list(st.get("val_history", [])))
    if len(counts.patches) != n_sources:
        raise ValueError(f"{ckpt}: checkpoint has {len(counts.patches)} sources, the config {n_sources}; "
                         "resume with the config the run started with")
    return int(st["step"]), counts


def flat_hparams(cfg: SegConfig) -> dict[str, Any]:
    """Scalar hyper-parameters for the tracker (TensorBoard accepts numbers, strings, bools)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, (int, float, str, bool)):
            out[prefix] = v
        elif v is not None:
            out[prefix] = str(v)
    walk("", cfg.to_dict())
    return out
