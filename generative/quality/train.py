"""Train the tumor discriminator: real tumors (label 1) against synthetic ones (label 0).

Runs on one CPU or under ``accelerate launch -m generative.quality.train``::

    python -m generative.quality.train --config configs/generative/filter.yaml \
        --real data/siteA --synthetic data/siteA_ca --out runs/filter

Steps: (1) config, (2) data: crops of every tumor, split into train and
validation by patient, (3) model and optimizer, (4) loop with class-balanced
sampling, flips and small intensity shifts (so the network cannot win on a
trivial cue such as orientation or a global offset), early stopping on
validation AUC, (5) export: the best model folder plus ``calibration.json``
(held-out scores, used by the calibrated policy and the audit),
``hu_bounds.json`` (the HU check learned from the real cases),
``train_log.json`` and the resolved ``filter.yaml``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from cohort.config import load_config, save_config
from cohort.errors import BatchReport, CohortError
from cohort.hardware import resolve_precision
from cohort.io import write_json
from cohort.progress import StepProgress
from generative.quality.config import FilterConfig
from generative.quality.crops import find_tumors, sample_crop
from generative.quality.data import iter_cohorts
from generative.quality.discriminator import CALIBRATION_NAME, HU_BOUNDS_NAME, TumorDiscriminator
from generative.quality.filters import HUCheck, collect_real_medians, fit_hu_bounds
from generative.quality.metrics import auc
from generative.quality.probes import make_probe


def split_groups(groups: Sequence[str], labels: Sequence[int], val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask over samples, split by group (patient), per class.

    Each class gives ``ceil(val_fraction * its groups)`` groups (at least one, and
    never all) to validation; a group held out for one class is held out for both.
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    val_groups: set[str] = set()
    for c in (0, 1):
        g = sorted(set(groups[labels == c].tolist()))
        if len(g) < 2:
            raise CohortError(None, f"need tumors from at least 2 {'real' if c else 'synthetic'} cases to hold one out "
                                    f"for validation, found {len(g)}")
        n_val = min(len(g) - 1, max(1, int(np.ceil(val_fraction * len(g)))))
        val_groups.update(rng.permutation(g)[:n_val].tolist())
    val = np.isin(groups, list(val_groups))
    for c in (0, 1):
        if not (val & (labels == c)).any() or not (~val & (labels == c)).any():
            raise CohortError(None, "validation split left a class empty on one side; add cases or change val_fraction")
    return val


def augment(x: torch.Tensor, cfg, gen: torch.Generator) -> torch.Tensor:
    """Random flips of the three spatial axes and a small affine intensity change of the CT channel.

    x: (B, 2, D, H, W), CT channel in [0, 1]. The mask channel is flipped with it, never rescaled.
    """
    b = x.shape[0]
    out = x.clone()
    for axis in (2, 3, 4):
        flip = torch.rand(b, generator=gen) < cfg.flip_prob
        if flip.any():
            idx = flip.nonzero().squeeze(1).to(x.device)
            out[idx] = out[idx].flip(axis)
    shift = (torch.rand(b, generator=gen) * 2 - 1) * cfg.intensity_shift
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.intensity_scale
    out[:, 0] = out[:, 0] * scale.to(x).view(b, 1, 1, 1) + shift.to(x).view(b, 1, 1, 1)
    return out


@torch.no_grad()
def recalibrate_batchnorm(net: torch.nn.Module, x: torch.Tensor, batch_size: int, max_samples: int = 256) -> None:
    """Re-estimate BatchNorm running statistics on training crops with the current weights ("precise BN").

    Running averages from a few dozen steps lag behind the weights, which makes
    eval-mode scores (and so early stopping and calibration) jumpy. x: (N, C, D, H, W).
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or len(x) == 0:
        return
    was = net.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    net.train()
    dev = next(net.parameters()).device
    sub = x[:max_samples]
    for i in range(0, len(sub), batch_size):
        net(sub[i:i + batch_size].to(dev).float())
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    net.train(was)


def hard_negative_crops(case, kinds: Sequence[str], crop, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(kind, crop) of the broken tumor of each probe kind made from ``case`` (see probes.py)."""
    out = []
    for kind in kinds:
        p = make_probe(case, kind, rng, crop)
        if p is None:
            continue
        changed = (p.case.ct != case.ct) | (p.case.label != case.label)
        tumors = find_tumors(p.case, crop)
        if not tumors:
            continue
        info, mask = max(tumors, key=lambda t: int((t[1] & changed).sum()))
        out.append((kind, sample_crop(p.case.ct, mask, info.centroid_vox, p.case.spacing, crop)))
    return out


def train_discriminator(real_dirs: Sequence[str | Path], synthetic_dirs: Sequence[str | Path],
                        config: FilterConfig | str | Path | None, out_dir: str | Path,
                        overrides: Sequence[str] = ()) -> Path:
    """Train, early-stop on validation AUC and save the discriminator folder; returns ``out_dir``."""
    # 1. config
    cfg = config if isinstance(config, FilterConfig) else load_config(FilterConfig, config, overrides)
    tc = cfg.train
    out_dir = Path(out_dir)
    precision = resolve_precision(tc.mixed_precision, "cpu" if tc.cpu else None, "filter train")
    accelerator = Accelerator(cpu=tc.cpu, mixed_precision=precision.value)
    if tc.torch_threads > 0:
        torch.set_num_threads(tc.torch_threads)
    set_seed(tc.seed)

    # 2. data: every tumor crop, labelled by the cohort it came from
    report = BatchReport()
    crops, labels, groups, infos = [], [], [], []
    hn_rng = np.random.default_rng(tc.seed + 7)
    real_medians: dict[str, list[float]] = {}  # HU check: accumulate medians, never hold whole scans
    with accelerator.main_process_first():
        for y, dirs in ((1, real_dirs), (0, synthetic_dirs)):
            for lc in iter_cohorts(dirs, cfg.crop, report):
                if y == 1:
                    for k, v in collect_real_medians([(lc.case, lc.tumors)], cfg.hu_check).items():
                        real_medians.setdefault(k, []).extend(v)
                for c in lc.crops:
                    crops.append(c.image)
                    labels.append(y)
                    # patients are namespaced by class: two cohorts may reuse case ids for different people
                    groups.append(f"{'real' if y else 'synthetic'}:{lc.group}")
                    infos.append({**c.info.as_dict(), "kind": "real" if y else "synthetic"})
                if y == 1 and tc.hard_negatives and lc.crops:
                    # broken copies stay with their patient's group so they never cross the split
                    for kind, img in hard_negative_crops(lc.case, tc.hard_negatives, cfg.crop, hn_rng):
                        crops.append(img)
                        labels.append(0)
                        groups.append(f"real:{lc.group}")
                        infos.append({"case_id": lc.case.case_id, "kind": f"hard_negative:{kind}"})
    if report.failed:
        accelerator.print(report.summary())
    if not crops:
        raise CohortError(None, "no tumors found in the given cohorts: nothing to train on")
    hu_bounds = fit_hu_bounds(real_medians, cfg.hu_check)
    x = torch.from_numpy(np.stack(crops))
    y = torch.tensor(labels, dtype=torch.float32)
    hard = np.array([str(i.get("kind", "")).startswith("hard_negative") for i in infos])
    val = split_groups(np.asarray(groups)[~hard], np.asarray(labels)[~hard], tc.val_fraction, tc.seed)
    in_val = np.isin(groups, list(set(np.asarray(groups)[~hard][val].tolist())))
    # hard negatives only train (validation, calibration and AUC stay real vs generator); a held-out
    # patient's broken copies are dropped, not trained on
    val = in_val & ~hard
    train = ~in_val
    x_tr, y_tr, x_va, y_va = x[train], y[train], x[val], y[val]
    # class balance: each class is drawn equally often whatever its count
    n_pos, n_neg = float(y_tr.sum()), float((1 - y_tr).sum())
    h_tr = torch.from_numpy(hard[train])
    n_hard = float(h_tr.sum())
    n_syn = n_neg - n_hard
    # half the draws real; the other half synthetic, shared equally with hard negatives when there are any
    w_syn, w_hard = (0.25 / max(n_syn, 1), 0.25 / n_hard) if n_hard and n_syn else (0.5 / n_neg, 0.5 / n_neg)
    weights = torch.where(y_tr > 0, torch.tensor(0.5 / n_pos), torch.where(h_tr, torch.tensor(w_hard),
                                                                            torch.tensor(w_syn))).double()
    gen = torch.Generator().manual_seed(tc.seed)
    sampler = WeightedRandomSampler(weights, num_samples=max(len(y_tr), tc.batch_size), replacement=True, generator=gen)
    loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=tc.batch_size, sampler=sampler, drop_last=False)
    accelerator.print(f"discriminator data: {int(n_pos)} real / {int(n_syn)} synthetic (+{int(n_hard)} hard negative) "
                      "tumors for training, "
                      f"{int(y_va.sum())} real / {int((1 - y_va).sum())} synthetic held out")

    # 3. model and optimizer
    model = TumorDiscriminator(**asdict(cfg.model))
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    # 4. loop; every process evaluates the (small) validation set itself, so all agree on stopping
    aug_gen = torch.Generator().manual_seed(tc.seed + 1 + accelerator.process_index)
    best_auc, best_loss, best_state, best_step, bad, step = -1.0, float("inf"), None, 0, 0, 0
    log: list[dict] = []
    t0 = time.time()
    running = []
    with StepProgress(f"training discriminator ({precision.label})", tc.max_steps,
                      enabled=accelerator.is_main_process) as progress:
        while step < tc.max_steps:
            for xb, yb in loader:
                model.train()
                xb = augment(xb, tc, aug_gen)
                with accelerator.autocast():
                    loss = loss_fn(model(xb).float(), yb)
                accelerator.backward(loss)
                opt.step()
                opt.zero_grad()
                step += 1
                running.append(float(loss.detach()))
                progress.advance(info=f"loss {running[-1]:.3f}")
                if step % tc.eval_every == 0 or step == tc.max_steps:
                    net = accelerator.unwrap_model(model)
                    recalibrate_batchnorm(net, x_tr[torch.randperm(len(x_tr), generator=gen)], tc.batch_size)
                    p = net.predict_proba(x_va).numpy()
                    a = auc(p[y_va.numpy() > 0], p[y_va.numpy() == 0])
                    vl = float(torch.nn.functional.binary_cross_entropy(
                        torch.from_numpy(p).clamp(1e-6, 1 - 1e-6), y_va))
                    log.append({"step": step, "train_loss": float(np.mean(running)), "val_auc": a, "val_loss": vl,
                                "seconds": round(time.time() - t0, 2)})
                    running = []
                    # AUC saturates at 1.0 on easy data: break ties with the validation loss
                    if a > best_auc + 1e-9 or (abs(a - best_auc) <= 1e-9 and vl < best_loss):
                        best_auc, best_loss, best_step, bad = a, vl, step, 0
                        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
                    else:
                        bad += 1
                    progress.update(info=f"val AUC {a:.3f}, best {best_auc:.3f}")
                    if bad >= tc.patience:
                        step = tc.max_steps  # early stop
                if step >= tc.max_steps:
                    break

    # 5. export (main process): best weights, held-out scores, HU bounds, log, resolved config
    if accelerator.is_main_process:
        net = accelerator.unwrap_model(model)
        net.load_state_dict(best_state)
        net.save_pretrained(out_dir, crop=cfg.crop, extra={"val_auc": best_auc, "best_step": best_step})
        p = net.predict_proba(x_va).numpy()
        val_infos = [infos[i] for i in np.flatnonzero(val)]
        write_json(out_dir / CALIBRATION_NAME, {
            "val_auc": auc(p[y_va.numpy() > 0], p[y_va.numpy() == 0]),
            "real_scores": [float(s) for s, t in zip(p, y_va.numpy()) if t > 0],
            "synthetic_scores": [float(s) for s, t in zip(p, y_va.numpy()) if t == 0],
            "tumors": [{**inf, "score": float(s)} for inf, s in zip(val_infos, p)],
            "val_groups": sorted(set(np.asarray(groups)[val].tolist())),
        })
        write_json(out_dir / HU_BOUNDS_NAME, HUCheck.bounds_to_json(hu_bounds))
        write_json(out_dir / "train_log.json", {"log": log, "precision": precision.as_dict(), "best_step": best_step, "best_val_auc": best_auc,
                                                 "real_dirs": [str(Path(d).resolve()) for d in real_dirs],
                                                 "synthetic_dirs": [str(Path(d).resolve()) for d in synthetic_dirs],
                                                 "n_train": int(len(y_tr)), "n_val": int(len(y_va)),
                                                 "n_hard_negatives": int(n_hard),
                                                 "failed_cases": report.failed})
        save_config(cfg, out_dir / "filter.yaml")
    accelerator.wait_for_everyone()
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the tumor discriminator (real vs synthetic tumor crops).")
    ap.add_argument("--config", default=None, help="filter YAML (default: built-in defaults)")
    ap.add_argument("--real", nargs="+", required=True, help="cohort(s) of real tumor cases")
    ap.add_argument("--synthetic", nargs="+", required=True, help="cohort(s) of synthetic tumor cases")
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    train_discriminator(a.real, a.synthetic, a.config, a.out, a.overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
