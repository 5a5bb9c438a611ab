"""The quality filter's typed config (``configs/generative/filter.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cohort.hardware import PrecisionName
from generative.quality.crops import CropConfig
from generative.quality.discriminator import ModelConfig
from generative.quality.filters import FreeTumorConfig, HUCheckConfig
from generative.quality.policies import PolicyConfig
from generative.quality.probes import ProbeKind

#: the filters that can vote in `apply`
FilterName = Literal["discriminator", "hu_check", "freetumor"]


@dataclass
class FilterTrainConfig:
    """Discriminator training. Steps are optimizer steps; evaluation every ``eval_every`` steps."""

    max_steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 50
    #: stop after this many evaluations without a better validation AUC
    patience: int = 8
    #: fraction of cases (per class, split by case) held out for validation and calibration
    val_fraction: float = 0.25
    seed: int = 0
    flip_prob: float = 0.5
    #: intensity augmentation on the [0, 1] CT channel: + U(-shift, shift), * (1 + U(-scale, scale))
    intensity_shift: float = 0.03
    intensity_scale: float = 0.05
    cpu: bool = False
    mixed_precision: PrecisionName = "auto"  # auto: bf16 where native (CUDA, AVX512-BF16/AMX CPU), else fp32
    torch_threads: int = 0  # 0: leave torch's default
    #: extra negatives: broken copies (generative.quality.probes kinds) of the real training tumors.
    #: Teaches generic failure modes beyond the training generator's; off by default because the
    #: audit's known-bad probes then test kinds the model was shown (on other cases).
    hard_negatives: list[ProbeKind] = field(default_factory=list)


@dataclass
class AuditConfig:
    """What the audit shows: montage size and the known-bad probes."""

    montage_k: int = 6
    probes: list[ProbeKind] = field(default_factory=lambda: ["noise", "wrong_hu", "blocky", "outside"])
    #: how many synthetic (or real) tumor cases the probes are built from
    probe_cases: int = 6
    seed: int = 0


@dataclass
class FilterConfig:
    """Every section of the quality filter."""

    crop: CropConfig = field(default_factory=CropConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: FilterTrainConfig = field(default_factory=FilterTrainConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    freetumor: FreeTumorConfig = field(default_factory=FreeTumorConfig)
    hu_check: HUCheckConfig = field(default_factory=HUCheckConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: filters that vote in `apply` (all must accept): discriminator, hu_check, freetumor
    filters: list[FilterName] = field(default_factory=lambda: ["discriminator", "hu_check", "freetumor"])
