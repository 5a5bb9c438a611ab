"""Train the tumor discriminator: real tumors (label 1) against synthetic ones (label 0).

Runs on one CPU or under ``accelerate launch -m generative.quality.train``::

    python -m generative.quality.train --config configs/generative/filter.yaml \
        --real data/siteA --synthetic ca=data/siteA_ca rules=data/siteA_rules --out runs/filter

Negatives come from several named synthetic cohorts (``NAME=PATH`` or
``train.synthetic`` in the YAML; an unnamed cohort's tumors are named by their
sidecar's generator) and, with ``train.hard_negatives``, from the known-bad
probes of :mod:`generative.quality.probes` built from the real training cases.

Steps: (1) config, (2) data: crops of every tumor, split into train and
validation by patient, (3) model and optimizer, (4) loop with class-balanced
sampling, flips and small intensity shifts (so the network cannot win on a
trivial cue such as orientation or a global offset), early stopping on
validation AUC (held-out synthetic patients and a third of the held-out real
ones: the other real patients stay out of the choice of checkpoint, so the
cutoff they calibrate is honest), (5) export: the best model folder plus ``calibration.json``
(held-out scores, used by the calibrated policy and the audit; the held-out
AUC with 95 % bootstrap CIs overall, per size class, organ and generator; the
calibrated cutoff's false-reject rate checked on other held-out real patients
than those that set it),
``hu_bounds.json`` (the HU check learned from the real cases),
``train_log.json`` and the resolved ``filter.yaml``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from cohort.config import load_config, save_config
from cohort.errors import BatchReport, CohortError
from cohort.hardware import Precision, guard_small_feature_maps, resolve_precision, smallest_conv_side
from cohort.io import write_json
from cohort.progress import StepProgress
from generative.quality.config import FilterConfig, SyntheticCohort
from generative.quality.crops import find_tumors, tumor_crop
from generative.quality.data import iter_cohorts
from generative.quality.discriminator import CALIBRATION_NAME, HU_BOUNDS_NAME, TumorDiscriminator
from generative.quality.features import FEATURE_NAMES
from generative.quality.filters import HUCheck, collect_real_medians, fit_hu_bounds
from generative.quality.metrics import alpha_check, auc, auc_breakdown
from generative.quality.probes import make_probe
from generative.quality.trees import BoostedTrees


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


def hard_negative_crops(case, kinds: Sequence[str], crop, rng: np.random.Generator,
                        copies: int = 1) -> list[tuple[str, np.ndarray]]:
    """(kind, crop) of the broken tumor of each probe kind made from ``case`` (see probes.py), ``copies`` each."""
    out = []
    for kind in [k for k in kinds for _ in range(copies)]:
        p = make_probe(case, kind, rng, crop)
        if p is None:
            continue
        changed = (p.case.ct != case.ct) | (p.case.label != case.label)
        tumors = find_tumors(p.case, crop)
        if not tumors:
            continue
        info, mask = max(tumors, key=lambda t: int((t[1] & changed).sum()))
        out.append((kind, tumor_crop(p.case, info, mask, crop)))
    return out


@dataclass
class TumorCrops:
    """Every tumor crop of the training cohorts, in the order collected (real cohorts first)."""

    #: (2, S, S, S) float32 each: CT channel in [0, 1], tumor mask channel
    images: list[np.ndarray] = field(default_factory=list)
    #: 1 real, 0 synthetic or hard negative
    labels: list[int] = field(default_factory=list)
    #: the patient, namespaced by class ("real:<id>", "synthetic:<id>")
    groups: list[str] = field(default_factory=list)
    #: TumorInfo fields + "kind" (real, synthetic, hard_negative:<probe kind>) + "source" (the generator:
    #: a synthetic cohort's name, "probe:<kind>" for a hard negative, "real")
    infos: list[dict] = field(default_factory=list)
    #: HU check: medians (HU) per structure over the real cases; medians only, never whole scans
    real_medians: dict[str, list[float]] = field(default_factory=dict)

    def add(self, image: np.ndarray, label: int, group: str, info: dict) -> None:
        self.images.append(image)
        self.labels.append(label)
        self.groups.append(group)
        self.infos.append({**info, "group": group})


@dataclass
class DiscriminatorData:
    """Crops split by patient: N_tr training and N_va validation crops of shape (2, S, S, S)."""

    x_tr: torch.Tensor  # (N_tr, 2, S, S, S) float32
    y_tr: torch.Tensor  # (N_tr,) float32, 1 real / 0 synthetic or hard negative
    hard_tr: torch.Tensor  # (N_tr,) bool, hard negatives
    x_va: torch.Tensor  # (N_va, 2, S, S, S) float32
    y_va: torch.Tensor  # (N_va,) float32, 1 real / 0 synthetic
    val_infos: list[dict]  # one per validation crop, in the order of x_va
    val_groups: list[str]  # the held-out patients, sorted
    hu_bounds: dict  # structure -> HUBound, fitted on the real cases
    failed_cases: dict  # BatchReport.failed: case id -> why it could not be read
    #: known-bad probes built from the held-out real patients: evaluation only (never trained on)
    x_pr: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    pr_infos: list[dict] = field(default_factory=list)
    #: (N_va,) bool: the validation crops early stopping sees (held-out synthetic + the selection real patients)
    select: torch.Tensor | None = None
    #: held-out real patients early stopping saw (not used to calibrate or check)
    selection_groups: list[str] = field(default_factory=list)
    #: the real patients trained on (``tumorgen filter calibrate`` refuses them)
    train_groups: list[str] = field(default_factory=list)

    def selected(self) -> torch.Tensor:
        """(N_va,) bool: the validation crops early stopping (and the trees' tree count) may see."""
        return self.select if self.select is not None else torch.ones(len(self.y_va), dtype=torch.bool)

    def describe(self) -> str:
        n_neg, n_hard = float((1 - self.y_tr).sum()), float(self.hard_tr.sum())
        return (f"{int(float(self.y_tr.sum()))} real / {int(n_neg - n_hard)} synthetic (+{int(n_hard)} hard negative) "
                "tumors for training, "
                f"{int(self.y_va.sum())} real / {int((1 - self.y_va).sum())} synthetic held out")


@dataclass
class EarlyStopping:
    """The best validation AUC so far (ties broken by the lower validation loss) and the weights that reached it."""

    patience: int
    best_auc: float = -1.0
    best_loss: float = float("inf")
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad: int = 0  # evaluations since the last improvement

    def update(self, step: int, val_auc: float, val_loss: float, net: torch.nn.Module) -> bool:
        """Record one evaluation at ``step``; True when ``patience`` evaluations in a row did not improve."""
        # AUC saturates at 1.0 on easy data: break ties with the validation loss. An undefined AUC
        # (the validation split holds one class only) ranks above "nothing yet" and below any AUC,
        # so the weights are then chosen by the validation loss alone
        if val_auc != val_auc:
            val_auc = -0.5
        if val_auc > self.best_auc + 1e-9 or (abs(val_auc - self.best_auc) <= 1e-9 and val_loss < self.best_loss):
            self.best_auc, self.best_loss, self.best_step, self.bad = val_auc, val_loss, step, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        else:
            self.bad += 1
        return self.bad >= self.patience


def prepare_run(tc, probe=None) -> tuple[Precision, Accelerator]:
    """Resolve the precision, start the accelerator, set the thread count and seed every global RNG (tc.seed).
    ``probe``: () -> [(network, input), ...], run once when the precision is CPU bf16 to find the smallest
    feature map (:func:`cohort.hardware.guard_small_feature_maps`)."""
    precision = resolve_precision(tc.mixed_precision, "cpu" if tc.cpu else None, "filter train")
    if probe is not None and precision.cpu_bf16:
        precision = guard_small_feature_maps(precision, smallest_conv_side(probe()), "filter train")
    accelerator = Accelerator(cpu=tc.cpu, mixed_precision=precision.value)
    if tc.torch_threads > 0:
        torch.set_num_threads(tc.torch_threads)
    set_seed(tc.seed)
    return precision, accelerator


def synthetic_sources(synthetic: Sequence[str | Path | SyntheticCohort], cfg: FilterConfig
                      ) -> list[tuple[str | None, Path]]:
    """(name or None, path) of every synthetic cohort: ``train.synthetic`` then the given ones.

    A given item is a path, ``NAME=PATH`` or a :class:`SyntheticCohort`; one name may span several
    folders (e.g. one generator's cohorts from two sites).
    """
    out: list[tuple[str | None, Path]] = [(c.name, Path(c.path)) for c in cfg.train.synthetic]
    for item in synthetic:
        if isinstance(item, SyntheticCohort):
            out.append((item.name, Path(item.path)))
            continue
        text = str(item)
        name, sep, path = text.partition("=")
        if sep and name and "/" not in name and not Path(text).exists():
            out.append((name, Path(path)))
        else:
            out.append((None, Path(text)))
    return out


def collect_crops(real_dirs: Sequence[str | Path], synthetic: Sequence[tuple[str | None, Path]], cfg: FilterConfig,
                  accelerator: Accelerator, report: BatchReport) -> TumorCrops:
    """Every tumor crop, labelled by the cohort it came from, plus the hard negatives made from real cases.

    A synthetic tumor's ``source`` is its cohort's name, else its sidecar's generator, else the
    cohort folder's name. Unreadable cases go to ``report``. Hard negatives draw from their own RNG
    (seed + 7), case by case, and stay with their patient's group (held-out ones become evaluation probes).
    """
    tc = cfg.train
    out = TumorCrops()
    hn_rng = np.random.default_rng(tc.seed + 7)
    jobs = [(1, None, Path(d)) for d in real_dirs] + [(0, n, Path(d)) for n, d in synthetic]
    with accelerator.main_process_first():
        for y, name, d in jobs:
            for lc in iter_cohorts([d], cfg.crop, report):
                if y == 1:
                    for k, v in collect_real_medians([(lc.case, lc.tumors)], cfg.hu_check).items():
                        out.real_medians.setdefault(k, []).extend(v)
                source = "real" if y else (name or lc.case.meta.get("generator") or d.name)
                for c in lc.crops:
                    # patients are namespaced by class: two cohorts may reuse case ids for different people
                    out.add(c.image, y, f"{'real' if y else 'synthetic'}:{lc.group}",
                            {**c.info.as_dict(), "kind": "real" if y else "synthetic", "source": str(source)})
                if y == 1 and tc.hard_negatives and lc.crops:
                    for kind, img in hard_negative_crops(lc.case, tc.hard_negatives, cfg.crop, hn_rng,
                                                         tc.hard_negative_copies):
                        info = lc.crops[0].info.as_dict()
                        out.add(img, 0, f"real:{lc.group}", {**info, "kind": f"hard_negative:{kind}",
                                                             "source": f"probe:{kind}"})
    return out


def selection_groups(val_infos: Sequence[dict], fraction: float, seed: int) -> set[str]:
    """The held-out real patients early stopping sees: ``fraction`` of them (at least one), leaving at
    least two to calibrate and check. Empty (early stopping sees all) with fewer than 3 or fraction 0."""
    groups = sorted({str(i["group"]) for i in val_infos if i["kind"] == "real"})
    if fraction <= 0 or len(groups) < 3:
        return set()
    n = min(len(groups) - 2, max(1, int(round(fraction * len(groups)))))
    return set(np.random.default_rng(seed + 5).permutation(groups)[:n].tolist())


def split_by_patient(crops: TumorCrops, tc, hu_bounds: dict, failed_cases: dict) -> DiscriminatorData:
    """Stack the crops and split them into training and validation by patient (see :func:`split_groups`)."""
    x = torch.from_numpy(np.stack(crops.images))
    y = torch.tensor(crops.labels, dtype=torch.float32)
    groups = np.asarray(crops.groups)
    hard = np.array([str(i.get("kind", "")).startswith("hard_negative") for i in crops.infos])
    val = split_groups(groups[~hard], np.asarray(crops.labels)[~hard], tc.val_fraction, tc.seed)
    in_val = np.isin(groups, list(set(groups[~hard][val].tolist())))
    # hard negatives only train (validation, early stopping and calibration stay real vs generator); a
    # held-out patient's broken copies are never trained on: they are the evaluation's known-bad probes
    val = in_val & ~hard
    probe = in_val & hard
    train = ~in_val
    pr_infos = [{**crops.infos[i], "kind": "probe"} for i in np.flatnonzero(probe)]
    val_infos = [crops.infos[i] for i in np.flatnonzero(val)]
    sel_groups = selection_groups(val_infos, tc.selection_fraction, tc.seed)
    select = torch.tensor([i["kind"] != "real" or i["group"] in sel_groups for i in val_infos], dtype=torch.bool)
    return DiscriminatorData(x_tr=x[train], y_tr=y[train], hard_tr=torch.from_numpy(hard[train]),
                             x_va=x[val], y_va=y[val], val_infos=val_infos,
                             val_groups=sorted(set(groups[val].tolist())), hu_bounds=hu_bounds,
                             failed_cases=failed_cases, x_pr=x[probe], pr_infos=pr_infos, select=select,
                             selection_groups=sorted(sel_groups),
                             train_groups=sorted(g for g in set(groups[train].tolist()) if g.startswith("real:")))


def load_data(real_dirs: Sequence[str | Path], synthetic: Sequence[tuple[str | None, Path]], cfg: FilterConfig,
              accelerator: Accelerator) -> DiscriminatorData:
    """Collect every tumor crop, fit the HU bounds on the real cases and split by patient."""
    report = BatchReport()
    crops = collect_crops(real_dirs, synthetic, cfg, accelerator, report)
    if report.failed:
        accelerator.print(report.summary())
    if not crops.images:
        raise CohortError(None, "no tumors found in the given cohorts: nothing to train on")
    hu_bounds = fit_hu_bounds(crops.real_medians, cfg.hu_check)
    return split_by_patient(crops, cfg.train, hu_bounds, report.failed)


def sample_weights(y: torch.Tensor, hard: torch.Tensor, hard_share: float = 0.25) -> torch.Tensor:
    """(N,) float64 draw weights so that each class is drawn equally often whatever its count.

    y: (N,) 1 real / 0 negative; hard: (N,) bool. Half the draws are real; of the other half
    ``hard_share`` (of all draws) are hard negatives when there are any, the rest synthetic.
    """
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    n_hard = float(hard.sum())
    n_syn = n_neg - n_hard
    w_syn, w_hard = ((0.5 - hard_share) / max(n_syn, 1), hard_share / n_hard) if n_hard and n_syn else (
        0.5 / n_neg, 0.5 / n_neg)
    return torch.where(y > 0, torch.tensor(0.5 / n_pos), torch.where(hard, torch.tensor(w_hard),
                                                                      torch.tensor(w_syn))).double()


def balanced_loader(data: DiscriminatorData, tc, gen: torch.Generator) -> DataLoader:
    """Class-balanced loader over the training crops; at least one batch per epoch."""
    sampler = WeightedRandomSampler(sample_weights(data.y_tr, data.hard_tr, tc.hard_negative_share),
                                    num_samples=max(len(data.y_tr), tc.batch_size), replacement=True, generator=gen)
    return DataLoader(TensorDataset(data.x_tr, data.y_tr), batch_size=tc.batch_size, sampler=sampler, drop_last=False)


def validate(net: torch.nn.Module, data: DiscriminatorData, batch_size: int, gen: torch.Generator) -> tuple[float, float]:
    """(AUC, binary cross-entropy) on the validation crops early stopping may see (``data.select``),
    after re-estimating BatchNorm on shuffled training crops."""
    recalibrate_batchnorm(net, data.x_tr[torch.randperm(len(data.x_tr), generator=gen)], batch_size)
    sel = data.selected()
    x, y = data.x_va[sel], data.y_va[sel]
    p = net.predict_proba(x).numpy()
    a = auc(p[y.numpy() > 0], p[y.numpy() == 0])
    vl = float(torch.nn.functional.binary_cross_entropy(torch.from_numpy(p).clamp(1e-6, 1 - 1e-6), y))
    return a, vl


def train_loop(accelerator: Accelerator, model: torch.nn.Module, opt: torch.optim.Optimizer, loader: DataLoader,
               data: DiscriminatorData, tc, gen: torch.Generator, precision_label: str) -> tuple[EarlyStopping, list[dict]]:
    """Train until ``tc.max_steps`` or early stopping on validation AUC; returns (the best, one log entry per evaluation).

    ``gen`` is the sampler's generator: the BatchNorm shuffles draw from it between epochs' draws.
    """
    loss_fn = torch.nn.BCEWithLogitsLoss()
    aug_gen = torch.Generator().manual_seed(tc.seed + 1 + accelerator.process_index)
    best = EarlyStopping(tc.patience)
    log: list[dict] = []
    step, running, t0 = 0, [], time.time()
    with StepProgress(f"training discriminator ({precision_label})", tc.max_steps,
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
                    a, vl = validate(net, data, tc.batch_size, gen)
                    log.append({"step": step, "train_loss": float(np.mean(running)), "val_auc": a, "val_loss": vl,
                                "seconds": round(time.time() - t0, 2)})
                    running = []
                    stop = best.update(step, a, vl, net)
                    progress.update(info=f"val AUC {a:.3f}, best {best.best_auc:.3f}")
                    if stop:
                        step = tc.max_steps  # early stop
                if step >= tc.max_steps:
                    break
    return best, log


def calibration_split(val_infos: Sequence[dict], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Held-out real patients split in two: (those whose scores set the cutoff, those that check it).

    With a single held-out real patient there is nothing to check on: it calibrates alone.
    """
    groups = sorted({str(i["group"]) for i in val_infos if i["kind"] == "real"})
    if len(groups) < 2:
        return set(groups), set()
    perm = np.random.default_rng(seed + 3).permutation(groups).tolist()
    n_cal = min(len(groups) - 1, max(1, int(round(fraction * len(groups)))))
    return set(perm[:n_cal]), set(perm[n_cal:])


def evaluate_held_out(p_va: np.ndarray, p_pr: np.ndarray, data: DiscriminatorData, cfg: FilterConfig) -> dict:
    """AUC with 95 % bootstrap CIs (overall, by size class, organ, generator incl. probes) and the alpha checks."""
    tc = cfg.train
    sel = set(data.selection_groups)
    # real patients early stopping saw are left out: their scores were part of choosing the checkpoint
    tumors = [{**inf, "score": float(s)} for inf, s in zip(data.val_infos, p_va)
              if not (inf["kind"] == "real" and inf["group"] in sel)]
    probes = [{**inf, "score": float(s)} for inf, s in zip(data.pr_infos, p_pr)]
    cal_g, chk_g = calibration_split(tumors, tc.calibration_fraction, tc.seed)
    cal = [t["score"] for t in tumors if t["kind"] == "real" and t["group"] in cal_g]
    chk = [t["score"] for t in tumors if t["kind"] == "real" and t["group"] in chk_g]
    negs: dict[str, list[float]] = {"synthetic": [t["score"] for t in tumors if t["kind"] == "synthetic"]}
    for t in probes:
        negs.setdefault("probes", []).append(t["score"])
    for t in tumors + probes:
        if t["kind"] != "real":
            negs.setdefault(str(t["source"]), []).append(t["score"])
    return {
        "auc": auc_breakdown(tumors + probes, tc.n_bootstrap, tc.seed),
        "calibration_groups": sorted(cal_g), "check_groups": sorted(chk_g), "selection_groups": sorted(sel),
        "calibration_real_scores": cal, "check_real_scores": chk,
        "alpha_checks": alpha_check(cal, chk, tc.alpha_checks, negs),
        "probe_tumors": probes,
    }


def fit_feature_trees(net: TumorDiscriminator, data: DiscriminatorData, cfg: FilterConfig) -> BoostedTrees | None:
    """Boosted trees on the radiomic features of the training crops (drawn weights as the CNN's sampler:
    classes balanced, hard negatives their share), the number of trees chosen on the validation crops
    early stopping sees; None when ``feature_trees.enabled`` is off."""
    if not cfg.feature_trees.enabled:
        return None
    names = list(FEATURE_NAMES)
    w_tr = sample_weights(data.y_tr, data.hard_tr, cfg.train.hard_negative_share).numpy()
    sel = data.selected()
    y_va = data.y_va[sel].numpy()
    n_pos, n_neg = max(float(y_va.sum()), 1.0), max(float((1 - y_va).sum()), 1.0)
    w_va = np.where(y_va > 0, 0.5 / n_pos, 0.5 / n_neg)  # the two classes weigh the same
    net.trees = BoostedTrees(cfg.feature_trees, names).fit(
        net.tree_features(data.x_tr, names), data.y_tr.numpy(), w_tr, net.tree_features(data.x_va[sel], names),
        y_va, w_va)
    return net.trees


def export(net: TumorDiscriminator, best: EarlyStopping, log: list[dict], data: DiscriminatorData, cfg: FilterConfig,
           precision: Precision, real_dirs: Sequence[str | Path], synthetic: Sequence[tuple[str | None, Path]],
           out_dir: Path) -> None:
    """Write the best model folder, ``calibration.json`` (held-out scores and evaluation), ``hu_bounds.json``,
    ``train_log.json``, ``filter.yaml``."""
    net.load_state_dict(best.best_state)
    trees = fit_feature_trees(net, data, cfg)
    net.save_pretrained(out_dir, crop=cfg.crop, extra={"val_auc": best.best_auc, "best_step": best.best_step})
    p = net.predict_proba(data.x_va).numpy()
    p_pr = net.predict_proba(data.x_pr).numpy() if len(data.pr_infos) else np.zeros(0)
    y_va = data.y_va.numpy()
    ev = evaluate_held_out(p, p_pr, data, cfg)
    write_json(out_dir / CALIBRATION_NAME, {
        "val_auc": auc(p[y_va > 0], p[y_va == 0]),
        "real_scores": [float(s) for s, t in zip(p, y_va) if t > 0],
        "synthetic_scores": [float(s) for s, t in zip(p, y_va) if t == 0],
        # the calibrated policy's cutoff comes from these; the alpha checks measure it on check_real_scores
        "calibration_real_scores": ev["calibration_real_scores"],
        "check_real_scores": ev["check_real_scores"],
        "tumors": [{**inf, "score": float(s)} for inf, s in zip(data.val_infos, p)],
        "probe_tumors": ev["probe_tumors"],
        "val_groups": data.val_groups,
        "calibration_groups": ev["calibration_groups"], "check_groups": ev["check_groups"],
        "selection_groups": ev["selection_groups"],
        "evaluation": ev["auc"],
        "alpha_checks": ev["alpha_checks"],
    })
    write_json(out_dir / HU_BOUNDS_NAME, HUCheck.bounds_to_json(data.hu_bounds))
    write_json(out_dir / "train_log.json", {"log": log, "precision": precision.as_dict(), "best_step": best.best_step,
                                             "best_val_auc": best.best_auc,
                                             "real_dirs": [str(Path(d).resolve()) for d in real_dirs],
                                             "synthetic_dirs": [str(Path(d).resolve()) for _, d in synthetic],
                                             "synthetic_cohorts": [{"name": n, "path": str(Path(d).resolve())}
                                                                   for n, d in synthetic],
                                             "n_train": int(len(data.y_tr)), "n_val": int(len(data.y_va)),
                                             "n_hard_negatives": int(float(data.hard_tr.sum())),
                                             "n_probe_eval": len(data.pr_infos),
                                             "feature_trees": (None if trees is None else
                                                               {**trees.log, "splits_per_feature": trees.importance()}),
                                             "train_groups": data.train_groups,
                                             "failed_cases": data.failed_cases})
    save_config(cfg, out_dir / "filter.yaml")


def train_discriminator(real_dirs: Sequence[str | Path], synthetic_dirs: Sequence[str | Path | SyntheticCohort],
                        config: FilterConfig | str | Path | None, out_dir: str | Path,
                        overrides: Sequence[str] = ()) -> Path:
    """Train, early-stop on validation AUC and save the discriminator folder; returns ``out_dir``.

    synthetic_dirs: paths, ``NAME=PATH`` strings or :class:`SyntheticCohort` (added to ``train.synthetic``).
    """
    # 1. config, accelerator, seeds
    cfg = config if isinstance(config, FilterConfig) else load_config(FilterConfig, config, overrides)
    tc = cfg.train
    out_dir = Path(out_dir)
    synthetic = synthetic_sources(synthetic_dirs, cfg)
    if not synthetic:
        raise CohortError(None, "no synthetic cohort given (--synthetic NAME=PATH or train.synthetic in the config)")
    s = cfg.crop.size
    precision, accelerator = prepare_run(tc, lambda: [(TumorDiscriminator(**asdict(cfg.model)), torch.zeros(1, 2, s, s, s))])

    # 2. data: every tumor crop, labelled by the cohort it came from, split by patient, drawn class-balanced.
    # One generator serves the sampler and the BatchNorm shuffles of step 4, so their draws interleave.
    data = load_data(real_dirs, synthetic, cfg, accelerator)
    gen = torch.Generator().manual_seed(tc.seed)
    loader = balanced_loader(data, tc, gen)
    accelerator.print(f"discriminator data: {data.describe()}")

    # 3. model and optimizer
    model = TumorDiscriminator(**asdict(cfg.model), hu_window=(cfg.crop.hu_min, cfg.crop.hu_max))
    model.set_feature_stats(data.x_tr)  # the radiomic features' scale (a no-op without them)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    model, opt, loader = accelerator.prepare(model, opt, loader)

    # 4. loop; every process evaluates the (small) validation set itself, so all agree on stopping
    best, log = train_loop(accelerator, model, opt, loader, data, tc, gen, precision.label)

    # 5. export (main process): best weights, held-out scores, HU bounds, log, resolved config
    if accelerator.is_main_process:
        net = accelerator.unwrap_model(model)
        export(net, best, log, data, cfg, precision, real_dirs, synthetic, out_dir)
        if net.trees is not None:
            top = ", ".join(list(net.trees.importance())[:4])
            accelerator.print(f"feature trees: {len(net.trees.trees)} trees (validation loss "
                              f"{net.trees.log.get('best_val_loss', 'n/a')}), most used features: {top}")
    accelerator.wait_for_everyone()
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the tumor discriminator (real vs synthetic tumor crops).")
    ap.add_argument("--config", default=None, help="filter YAML (default: built-in defaults)")
    ap.add_argument("--real", nargs="+", required=True, help="cohort(s) of real tumor cases")
    ap.add_argument("--synthetic", nargs="*", default=[],
                    help="cohort(s) of synthetic tumor cases, PATH or NAME=PATH (also: train.synthetic)")
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    train_discriminator(a.real, a.synthetic, a.config, a.out, a.overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
