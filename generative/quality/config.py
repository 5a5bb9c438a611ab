"""The quality filter's typed config (``configs/generative/filter.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cohort.config import bounded
from cohort.hardware import PrecisionName
from generative.quality.crops import CropConfig
from generative.quality.discriminator import ModelConfig
from generative.quality.filters import FreeTumorConfig, HUCheckConfig
from generative.quality.policies import PolicyConfig
from generative.quality.probes import ProbeKind
from generative.quality.trees import TreeConfig

#: the filters that can vote in `apply`
FilterName = Literal["discriminator", "hu_check", "freetumor"]


@dataclass
class SyntheticCohort:
    """One named synthetic cohort the discriminator trains against. ``name``: the generator as reported
    (per-generator AUC), e.g. "diffusion_ckpt2000", "ca", "rules"; ``path``: the cohort (any layout)."""

    name: str
    path: str


@dataclass
class FilterTrainConfig:
    """Discriminator training. Steps are optimizer steps; evaluation every ``eval_every`` steps."""

    max_steps: int = bounded(2000, ge=1)
    batch_size: int = bounded(16, ge=1)
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(1e-4, ge=0)
    eval_every: int = bounded(50, ge=1)
    #: stop after this many evaluations without a better validation AUC
    patience: int = bounded(8, ge=1)
    #: fraction of cases (per class, split by case) held out for validation and calibration
    val_fraction: float = bounded(0.25, gt=0, lt=1)
    seed: int = 0
    flip_prob: float = bounded(0.5, ge=0, le=1)
    #: intensity augmentation on the [0, 1] CT channel: + U(-shift, shift), * (1 + U(-scale, scale))
    intensity_shift: float = bounded(0.03, ge=0)
    intensity_scale: float = bounded(0.05, ge=0)
    cpu: bool = False
    mixed_precision: PrecisionName = "auto"  # auto: bf16 where native (CUDA, AVX512-BF16/AMX CPU), else fp32
    torch_threads: int = bounded(0, ge=0)  # 0: leave torch's default
    #: extra negatives: broken copies (generative.quality.probes kinds) of the real training tumors.
    #: Teaches generic failure modes beyond the training generator's; off by default because the
    #: audit's known-bad probes then test kinds the model was shown (on other cases).
    hard_negatives: list[ProbeKind] = field(default_factory=list)
    #: broken copies per (training real tumor case, hard-negative kind), each drawn afresh
    hard_negative_copies: int = bounded(1, ge=1)
    #: share of all training draws that are hard negatives (real tumors are half; synthetic the rest)
    hard_negative_share: float = bounded(0.25, gt=0, lt=0.5)
    #: synthetic cohorts with their generator names, besides any given on the command line
    #: (``--synthetic NAME=PATH``); cases of an unnamed cohort report their sidecar's generator
    synthetic: list[SyntheticCohort] = field(default_factory=list)
    #: fraction of the held-out real patients early stopping sees (with every held-out synthetic patient); the
    #: others calibrate and check, unbiased by the choice of checkpoint (needs >= 3 held-out real patients;
    #: 0: early stopping sees them all)
    selection_fraction: float = bounded(0.34, ge=0, lt=1)
    #: fraction of the remaining held-out real patients whose scores set the calibrated cutoff; the others check it
    calibration_fraction: float = bounded(0.5, gt=0, lt=1)
    #: the calibrated policy's promise is checked at these alphas (false-reject rate of real tumors)
    alpha_checks: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    #: bootstrap replicates for the held-out AUC's 95 % CI
    n_bootstrap: int = bounded(1000, ge=10)


@dataclass
class AuditConfig:
    """What the audit shows: montage size and the known-bad probes."""

    montage_k: int = 6
    probes: list[ProbeKind] = field(default_factory=lambda: ["noise", "wrong_hu", "blocky", "outside", "seam", "blur"])
    #: how many synthetic (or real) tumor cases the probes are built from
    probe_cases: int = 6
    seed: int = 0


@dataclass
class FilterConfig:
    """Every section of the quality filter."""

    crop: CropConfig = field(default_factory=CropConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: boosted trees on the radiomic crop features, fitted after the CNN; the score is then the
    #: geometric mean of the two P(real) (benchmarks/RESULTS.md, "Quality filter ... trees")
    feature_trees: TreeConfig = field(default_factory=TreeConfig)
    train: FilterTrainConfig = field(default_factory=FilterTrainConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    freetumor: FreeTumorConfig = field(default_factory=FreeTumorConfig)
    hu_check: HUCheckConfig = field(default_factory=HUCheckConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: filters that vote in `apply` (all must accept): discriminator, hu_check, freetumor
    filters: list[FilterName] = field(default_factory=lambda: ["discriminator", "hu_check", "freetumor"])
