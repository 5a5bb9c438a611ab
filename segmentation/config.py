"""Typed configuration of segmentation training, inference and export.

One dataclass per YAML section; YAML holds values only and is read by
:func:`cohort.config.load_config` (unknown keys and wrong types are errors,
``--set a.b=v`` overrides). Defaults follow the seed paper's recipe (Bassi et
al., "Scaling Tumor Segmentation: Best Lessons from Real and Synthetic Data"):
RAS, 1.5 mm isotropic, HU [-175, 250] -> [0, 1], 96^3 patches centred on
foreground or background by a set ratio, SGD lr 0.01, batch 2, sliding-window
inference with overlap 0.5 and test-time flips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cohort import labels as L
from cohort.config import ConfigError, bounded, check_choices
from cohort.hardware import MemoryFormat, PrecisionName

#: networks :func:`segmentation.networks.build_network` knows
NetworkName = Literal["segresnet", "dynunet", "swinunetr"]


class SegConfigError(ConfigError):
    """A segmentation config whose values do not fit together (names the key)."""


@dataclass
class NetworkConfig:
    """Which MONAI network, and its size. ``extra`` goes to the constructor unchanged."""

    name: NetworkName = "segresnet"
    init_filters: int = 16  # SegResNet init_filters / DynUNet first filters / SwinUNETR feature_size
    blocks_down: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    blocks_up: list[int] = field(default_factory=lambda: [1, 1, 1])
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceConfig:
    """One training source: a cohort folder or a (filtered) manifest.

    ``weight``: relative sampling weight. Weights 1 and 3 on a real and a
    synthetic source draw them 1 : 3 (the paper's "3x synthetic"). Leave every
    weight null to draw uniformly over all cases (sources in proportion to
    their size). ``max_cases`` keeps a seeded subset (the scaling study's
    number of real scans). ``accepted_only`` keeps the manifest lines the
    quality filter accepted.
    """

    name: str = "real"
    path: str = ""
    kind: Literal["real", "synthetic"] = "real"  # recorded, and which sources on-the-fly synthesis may touch
    weight: float | None = None
    max_cases: int | None = None
    accepted_only: bool = False
    layout: str | None = None


@dataclass
class OnTheFlyConfig:
    """On-the-fly synthesis on healthy cases, through a synthesizer object the caller resolves.

    ``method`` names the synthesizer ("ca", "rules", ...); the ``tumorgen``
    command turns it into an object. With probability ``prob`` a draw from a
    ``kind: real`` source whose case has none of ``organs``' lesions gets a
    synthetic tumor in one of ``organs`` before cropping.
    """

    method: str | None = None
    prob: float = bounded(0.5, ge=0, le=1)
    organs: list[str] = field(default_factory=lambda: ["liver"])
    params: dict[str, Any] = field(default_factory=dict)
    #: names of the sources whose draws may get a tumor; empty = every ``kind: real`` source
    sources: list[str] = field(default_factory=list)


@dataclass
class SegDataConfig:
    """Preprocessing (paper defaults) and patch sampling."""

    spacing: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])  # mm
    hu_min: float = -175.0
    hu_max: float = 250.0
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])  # voxels
    #: probability that a crop is centred on a foreground voxel (else background),
    #: MONAI's RandCropByPosNegLabel pos / (pos + neg)
    pos_fraction: float = bounded(0.67, ge=0, le=1)
    #: share of foreground-centred crops forced onto a lesion class when the case has one; the rest
    #: pick one of the classes present uniformly (0: plain class balance)
    lesion_fraction: float = bounded(0.0, ge=0, le=1)
    crop_roi_organs: list[str] = field(default_factory=list)  # crop cases to these organs (+ margin) first
    crop_margin_mm: float = bounded(30.0, ge=0)
    val_fraction: float = bounded(0.2, ge=0, lt=1)  # held out of the first source when ``val_sources`` is empty
    val_max_cases: int = bounded(8, ge=0)
    cache_dir: str | None = None  # persist preprocessed cases here (npz) across runs
    num_workers: int = bounded(0, ge=0)
    augment: bool = True
    seed: int = 0


@dataclass
class SegTrainConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: nnU-Net, momentum 0.99, nesterov
    lr: float = bounded(0.01, gt=0)
    weight_decay: float = bounded(3e-5, ge=0)
    momentum: float = 0.99
    schedule: Literal["poly", "cosine", "constant"] = "poly"  # poly: nnU-Net, exponent 0.9
    warmup_steps: int = bounded(0, ge=0)
    batch_size: int = bounded(2, ge=1)
    max_steps: int = bounded(1000, ge=1)
    grad_accum: int = bounded(1, ge=1)
    grad_clip: float = bounded(12.0, ge=0)  # nnU-Net clips the gradient norm at 12
    mixed_precision: PrecisionName = "auto"  # auto: bf16 where native (CUDA, AVX512-BF16/AMX CPU), else fp32
    memory_format: MemoryFormat = "auto"  # auto: channels_last_3d for fp32 on CPU (measured faster), else contiguous
    val_every: int = bounded(250, ge=1)
    save_every: int = bounded(250, ge=1)
    keep_checkpoints: int = bounded(2, ge=0)
    log_every: int = bounded(10, ge=1)
    seed: int = 0
    threads: int = bounded(0, ge=0)  # torch CPU threads (0: leave torch's default)
    tracker: str | None = "tensorboard"  # accelerate tracker; null for none


@dataclass
class InferConfig:
    overlap: float = 0.5
    mode: Literal["gaussian", "constant"] = "gaussian"  # sliding-window blending (MONAI BlendMode)
    sw_batch_size: int = bounded(2, ge=1)
    tta: bool = False  # flip test-time augmentation (all 8 mirror combinations)
    #: predicted lesion components (26-connected, per lesion class, on the case's own grid) smaller than
    #: this many mm^3 are given back to the tissue around them; 0 keeps every component
    min_lesion_mm3: float = 0.0


@dataclass
class SegConfig:
    """Everything a segmentation run needs. ``classes`` are output channels 1..C
    (channel 0 is background): vocabulary names or organ types ("kidney" = both)."""

    classes: list[str] = field(default_factory=lambda: ["liver", "liver_lesion", "pancreas", "pancreatic_lesion",
                                                         "kidney", "kidney_lesion"])
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    sources: list[SourceConfig] = field(default_factory=list)
    val_sources: list[SourceConfig] = field(default_factory=list)
    onthefly: OnTheFlyConfig = field(default_factory=OnTheFlyConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(cfg: SegConfig, where: str | Path = "config") -> SegConfig:
    """Check the values fit together; raise :class:`SegConfigError` naming the key."""
    def bad(key: str, why: str) -> SegConfigError:
        return SegConfigError(f"{where}: {key}: {why}")

    try:  # the loader checks them in a file; a config built in code (a scaling cell) gets them here
        check_choices(cfg)
    except ConfigError as e:
        raise SegConfigError(f"{where}: {e}") from None
    if not cfg.classes:
        raise bad("classes", "needs at least one class")
    for name in cfg.classes:
        try:
            L.organ_indices(name)
        except L.UnknownLabelError as e:
            raise bad("classes", str(e)) from None
    if len(set(cfg.classes)) != len(cfg.classes):
        raise bad("classes", "lists a class twice")
    covered = [i for c in cfg.classes for i in L.organ_indices(c)]
    if len(set(covered)) != len(covered):
        raise bad("classes", "two classes cover the same vocabulary label (e.g. 'kidney' and 'kidney_left')")
    if len(cfg.data.patch_size) != 3 or any(p < 8 for p in cfg.data.patch_size):
        raise bad("data.patch_size", f"needs three sizes of at least 8 voxels, got {cfg.data.patch_size}")
    if cfg.network.name == "segresnet":
        f = 2 ** (len(cfg.network.blocks_down) - 1)
        if any(p % f for p in cfg.data.patch_size) or len(cfg.network.blocks_up) != len(cfg.network.blocks_down) - 1:
            raise bad("data.patch_size", f"SegResNet with {len(cfg.network.blocks_down)} levels needs patch sizes "
                                         f"divisible by {f} and len(blocks_up) = len(blocks_down) - 1")
    if cfg.network.name == "swinunetr" and any(p % 32 or p < 64 for p in cfg.data.patch_size):
        raise bad("data.patch_size", "SwinUNETR needs patch sizes divisible by 32 and at least 64")
    if len(cfg.data.spacing) != 3 or any(s <= 0 for s in cfg.data.spacing):
        raise bad("data.spacing", f"needs three positive spacings in mm, got {cfg.data.spacing}")
    if not cfg.data.hu_min < cfg.data.hu_max:
        raise bad("data.hu_min", "must be below data.hu_max")
    if not 0.0 <= cfg.data.pos_fraction <= 1.0:
        raise bad("data.pos_fraction", "must be in [0, 1]")
    for key, srcs in (("sources", cfg.sources), ("val_sources", cfg.val_sources)):
        names = [s.name for s in srcs]
        if len(set(names)) != len(names):
            raise bad(key, f"source names must be unique, got {names}")
        for i, s in enumerate(srcs):
            if not s.path:
                raise bad(f"{key}[{i}].path", "is empty")
            if s.weight is not None and s.weight < 0:
                raise bad(f"{key}[{i}].weight", "must be >= 0")
    weights = [s.weight for s in cfg.sources]
    if any(w is None for w in weights) and any(w is not None for w in weights):
        raise bad("sources", "give every source a weight, or none (then cases are drawn uniformly)")
    if weights and all(w is not None for w in weights) and sum(weights) <= 0:  # type: ignore[arg-type]
        raise bad("sources", "weights sum to zero")
    if cfg.onthefly.method is not None:
        if not 0.0 <= cfg.onthefly.prob <= 1.0:
            raise bad("onthefly.prob", "must be in [0, 1]")
        for o in cfg.onthefly.organs:
            try:
                L.lesion_index_for(o)
            except L.UnknownLabelError as e:
                raise bad("onthefly.organs", str(e)) from None
        unknown = sorted(set(cfg.onthefly.sources) - {s.name for s in cfg.sources})
        if unknown:
            raise bad("onthefly.sources", f"{unknown} are not among sources[].name {[s.name for s in cfg.sources]}")
    if not 0.0 <= cfg.infer.overlap < 1.0:
        raise bad("infer.overlap", "must be in [0, 1)")
    if cfg.infer.min_lesion_mm3 < 0:
        raise bad("infer.min_lesion_mm3", "must be >= 0")
    return cfg


def load_seg_config(path: str | Path | None, overrides: list[str] | None = None) -> SegConfig:
    """Read a YAML segmentation config (or the defaults when ``path`` is None) and validate it."""
    from cohort.config import load_config

    cfg = load_config(SegConfig, path, overrides or [])
    return validate(cfg, path or "defaults")


def default_config_path(name: str = "default") -> Path:
    """Path of a config shipped in ``configs/segmentation/<name>.yaml``."""
    import configs

    return Path(configs.__file__).parent / "segmentation" / f"{name}.yaml"
