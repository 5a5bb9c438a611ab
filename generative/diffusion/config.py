"""Typed configs of the generative stages (one dataclass a section; YAML holds values only).

One :class:`GenerativeConfig` serves the three training stages: a YAML names
the ``stage`` and fills the sections that stage reads (the others keep their
defaults). :class:`SampleSpec` describes a synthetic cohort.
Loaded with :func:`cohort.config.load_config` (unknown keys and wrong types are
errors; ``--set a.b=v`` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cohort.appearance import CONDITION_ATTRIBUTES
from cohort.config import bounded, check_choices
from cohort.hardware import MemoryFormat, PrecisionName

Stage = Literal["autoencoder", "diffusion", "controlnet"]

#: Organs given to the ControlNet as one-hot channels (the phantom world's abdomen and the organs
#: tumors grow in, the tubular ones included: their label is wall plus lumen, and the masked CT
#: channel shows which is which). Lesions of every class share one extra "tumor" channel.
DEFAULT_CONDITION_ORGANS = ["liver", "pancreas", "kidney_left", "kidney_right", "spleen", "aorta", "postcava", "stomach",
                            "colon", "esophagus", "uterus"]


@dataclass
class GeneratorDataConfig:
    """Training crops. ``cohort`` is any layout :func:`cohort.layouts.open_cohort` reads."""

    cohort: str = "data/phantoms/siteA"
    spacing_mm: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])  # [] keeps native spacing
    crop_size: list[int] = field(default_factory=lambda: [64, 64, 64])  # voxels; divisible by the model's multiple
    tumor_crop_fraction: float = bounded(0.5, ge=0, le=1)  # share of crops centred on a lesion (tumors are rare voxels)
    crops_per_case: int = bounded(8, ge=1)  # crops encoded once into the latent cache (diffusion, controlnet)
    max_cases: int = bounded(0, ge=0)  # 0 = all


@dataclass
class AutoencoderConfig:
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # 3 levels = 4x compression per axis
    latent_channels: int = 4
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    attention: bool = False
    #: path to MAISI's pretrained CT autoencoder checkpoint (.pt, downloaded by hand): the autoencoder
    #: stage then exports it instead of training one (the fields above are unused; its images are
    #: CT over [-1000, 1000] HU, generative.diffusion.maisi); "" trains this project's autoencoder
    pretrained: str = ""
    #: AutoencoderKlMaisi arguments replacing the MAISI bundle's (generative.diffusion.maisi.MAISI_NETWORK_SETTINGS),
    #: e.g. {num_splits: 8} to save more GPU memory; {} = the bundle's
    pretrained_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def downsample(self) -> int:
        """Per-axis compression: one halving per level but the first (MAISI's bundle: 3 levels, 4x)."""
        if self.pretrained:
            from generative.diffusion.maisi import network_settings_with

            return 2 ** (len(network_settings_with(self.pretrained_settings)["num_channels"]) - 1)
        return 2 ** (len(self.channels) - 1)


@dataclass
class UNetConfig:
    channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32


@dataclass
class ControlNetConfig:
    #: one stride-2 convolution between consecutive entries: 3 entries = 4x, the autoencoder's factor
    conditioning_embedding_num_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    organs: list[str] = field(default_factory=lambda: list(DEFAULT_CONDITION_ORGANS))
    inpaint: bool = True  # add masked CT + inpainting-mask channels
    tumor_loss_weight: float = 100.0  # MAISI weights tumor voxels x100 in the latent loss
    inpaint_margin_mm: float = 6.0  # the inpainted region is the tumor dilated by this much
    #: appearance attributes the ControlNet is conditioned on (cohort.appearance.CONDITION_ATTRIBUTES);
    #: [] trains a mask-only ControlNet
    appearance: list[str] = field(default_factory=lambda: list(CONDITION_ATTRIBUTES))
    #: share of training samples trained without their attributes (> 0 adds an "appearance known" channel
    #: and allows classifier-free guidance on appearance at sampling: ``inpaint.appearance_guidance``)
    appearance_dropout: float = bounded(0.0, ge=0, lt=1)

    def pipeline_fields(self) -> dict:
        """What the exported :class:`PipelineSpec` takes from this section (``organs`` is its
        ``condition_organs``); the one place the two are tied."""
        return {"condition_organs": list(self.organs), "inpaint": self.inpaint,
                "inpaint_margin_mm": self.inpaint_margin_mm, "tumor_loss_weight": self.tumor_loss_weight,
                "appearance": list(self.appearance), "appearance_dropout": self.appearance_dropout}


@dataclass
class SchedulerConfig:
    """Training noise process: ``ddpm`` (epsilon or v_prediction) or ``rflow`` (velocity)."""

    kind: Literal["ddpm", "rflow"] = "rflow"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"  # ddpm only; rflow always predicts velocity
    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"  # ddpm only
    sample_method: Literal["uniform", "logit-normal"] = "uniform"  # rflow only

    def process(self):
        """The noise process stored with the model (``ProcessSpec``): these fields, with rectified
        flow always predicting velocity."""
        from dataclasses import asdict

        from generative.diffusion.schedulers import ProcessSpec

        d = asdict(self)
        if self.kind != "ddpm":
            d["prediction_type"] = "velocity"
        return ProcessSpec(**d)


@dataclass
class LossConfig:
    """Autoencoder losses (MAISI train_autoencoder weights as defaults)."""

    perceptual: Literal["lpips", "random", "none"] = "lpips"  # random: random-feature backbone, logged as such
    perceptual_net: Literal["alex", "vgg", "squeeze"] = "alex"  # the lpips backbone
    perceptual_weights: str = ""  # torchvision backbone .pth; "" = $TORCH_HOME/hub/checkpoints/<file>
    perceptual_weight: float = bounded(0.3, ge=0)
    fake_3d_ratio: float = bounded(0.25, gt=0, le=1)  # share of slices per axis for the 2.5D perceptual loss
    kl_weight: float = bounded(1e-7, ge=0)
    adv_weight: float = bounded(0.1, ge=0)
    adv_warmup_steps: int = bounded(50, ge=0)  # adversarial loss starts after this many steps
    #: gradient-difference loss (L1 between the finite differences of reconstruction and input per axis,
    #: Mathieu et al. 2016): an L1/perceptual decoder blurs boundaries, and tumor edges are what it loses
    gradient_weight: float = bounded(0.0, ge=0)
    #: extra weight of voxels within ``lesion_margin_vox`` of a lesion in the L1 and gradient terms
    #: (1 + lesion_weight there): tumors fill little of a crop, the metric that matters is inside them
    lesion_weight: float = bounded(0.0, ge=0)
    lesion_margin_vox: int = bounded(2, ge=0)
    disc_channels: int = 16
    disc_layers: int = 2


@dataclass
class GeneratorTrainConfig:
    steps: int = bounded(1000, ge=1)
    batch_size: int = bounded(1, ge=1)
    lr: float = bounded(1e-4, gt=0)
    disc_lr: float = bounded(1e-4, gt=0)
    grad_accum: int = bounded(1, ge=1)
    mixed_precision: PrecisionName = "auto"  # auto: bf16 where native (CUDA, AVX512-BF16/AMX CPU), else fp32
    memory_format: MemoryFormat = "auto"  # auto: channels_last_3d for fp32 on CPU (measured faster), else contiguous
    ema_decay: float = bounded(0.999, ge=0, lt=1)  # 0 disables EMA
    save_every: int = bounded(100, ge=1)  # save_state every N optimizer steps
    keep_checkpoints: int = bounded(2, ge=0)
    log_every: int = bounded(10, ge=1)
    seed: int = 0
    num_threads: int = bounded(0, ge=0)  # torch CPU threads; 0 = torch default
    cpu: bool = False  # force CPU even when a GPU is visible


@dataclass
class GenerativeConfig:
    stage: Stage = "autoencoder"
    output_dir: str = "runs/generative"
    #: pipeline folder of the previous stage (diffusion: the autoencoder's; controlnet: the diffusion's)
    init_from: str = ""
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    controlnet: ControlNetConfig = field(default_factory=ControlNetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: GeneratorTrainConfig = field(default_factory=GeneratorTrainConfig)

    def check(self) -> GenerativeConfig:
        """Cross-field rules the type checker cannot see; raises ValueError naming the key. The
        Literal choices are checked again because train_stage sets ``stage`` in code."""
        check_choices(self)
        if len(self.data.crop_size) != 3 or len(self.data.spacing_mm) not in (0, 3):
            raise ValueError("data.crop_size needs 3 values and data.spacing_mm 3 values (or [] for native)")
        if self.stage != "autoencoder" and not self.init_from:
            raise ValueError(f"init_from: the {self.stage} stage needs the previous stage's model folder")
        down = self.autoencoder.downsample
        mult = down * 2 ** (len(self.unet.channels) - 1)
        if any(c % mult for c in self.data.crop_size):
            raise ValueError(f"data.crop_size {self.data.crop_size} must be divisible by {mult} "
                             f"(autoencoder x{down} and the UNet's {len(self.unet.channels) - 1} halvings)")
        if bad := [a for a in self.controlnet.appearance if a not in CONDITION_ATTRIBUTES]:
            raise ValueError(f"controlnet.appearance: unknown attribute(s) {bad}; choose from {list(CONDITION_ATTRIBUTES)}")
        if 2 ** (len(self.controlnet.conditioning_embedding_num_channels) - 1) != down:
            raise ValueError("controlnet.conditioning_embedding_num_channels must downsample by the autoencoder's "
                             f"factor {down}: give {down.bit_length()} entries")
        return self


@dataclass
class InpaintSettings:
    """How tumors are generated: sampler, steps, ROI and blending (units in the names)."""

    #: rflow | flow-euler for rflow models, ddpm | ddim | dpm++ | unipc for ddpm models
    sampler: Literal["rflow", "flow-euler", "ddpm", "ddim", "dpm++", "unipc"] = "rflow"
    steps: int = bounded(30, ge=1)
    roi_size: list[int] = field(default_factory=lambda: [64, 64, 64])  # voxels at the model's spacing
    feather_mm: float = bounded(3.0, ge=0)  # width of the blend from generated to original CT (blend: region)
    #: what of the generated ROI replaces the CT: "region" the whole inpainted region (the tumor dilated by the
    #: model's inpaint_margin_mm) feathered over ``feather_mm``; "tumor" keeps the real scan beyond ``blend_mm``
    #: from the tumor (feathered to 0 at twice that), so the organ around it keeps its own texture. "tumor"
    #: and texture "scanner" are not the default: on the phantom benchmark they made the appearance KS and the
    #: contrast control worse (the decoded ROI is ~15 HU brighter than the scan it replaces; benchmarks/RESULTS.md)
    blend: Literal["tumor", "region"] = "region"
    blend_mm: float = bounded(1.5, ge=0)
    #: "scanner": the generated voxels are topped up with the high frequencies (above a Gaussian of
    #: ``texture_sigma_mm``: the scanner's noise texture) of the same scan, from a patch of the same organ, to
    #: the scan's noise level (:func:`generative.diffusion.inpaint.scanner_texture`); "generated": as decoded
    texture: Literal["scanner", "generated"] = "generated"
    texture_sigma_mm: float = bounded(1.0, gt=0)
    margin_mm: float = bounded(3.0, ge=0)  # tumor keeps this far from the organ surface and vessels
    size_mix: dict[str, float] | None = None  # used when a TumorSpec gives no size
    early_fraction: float | None = None
    mixed_precision: PrecisionName = "auto"
    tile_latent: int = bounded(0, ge=0)  # >0: sliding-window decoding with latent tiles of this size
    #: hold the latents outside the inpainted region to the encoded CT while denoising
    #: (:meth:`LatentDiffusionPipeline.denoise`); the pixel-space feathered blend follows either way
    latent_blend: bool = True
    #: attributes asked of every tumor (e.g. {contrast_hu: -40, rim_hu: 25}); the others are drawn
    #: from the model's training tumors of the same organ and size class (appearance-conditioned models)
    appearance: dict[str, float] | None = None
    #: classifier-free guidance on the appearance attributes (1 = none; > 1 follows them harder, twice the
    #: model evaluations per step); needs a ControlNet trained with controlnet.appearance_dropout > 0
    appearance_guidance: float = bounded(1.0, ge=0)
    #: < 1: start each tumor from a rule-drawn draft with its attributes (mean HU against the organ, rim,
    #: spread; :mod:`generative.diffusion.draft`) noised to this level, and run only this share of the steps
    #: (SDEdit); 1: from pure noise. Needs an appearance-conditioned model (the draft is drawn from the attributes)
    draft_strength: float = bounded(1.0, gt=0, le=1)
    #: with a draft: add back what the autoencoder loses of it (its reconstruction residual: the sharp boundary
    #: and texture a short-trained decoder smooths away), so the output keeps the draft's detail
    draft_detail: bool = False
    #: with a draft: part of the tumor's spread is the scan's own noise (copied from the organ around it), the
    #: smooth texture tops it up; off: all of the spread is smooth texture
    draft_noise: bool = False
    #: with a draft: a draft calibration of this model (``tumorgen generator calibrate``;
    #: :mod:`generative.diffusion.calibration`): each draft is drawn with the attributes whose output, by the
    #: model's measured behaviour, comes out as asked (the rim a boundary blur would lift, the contrast it
    #: would shrink); "" draws the draft with the asked attributes
    draft_calibration: str = ""

    def __post_init__(self) -> None:
        if self.appearance and (bad := [a for a in self.appearance if a not in CONDITION_ATTRIBUTES]):
            raise ValueError(f"appearance: unknown attribute(s) {bad}; choose from {list(CONDITION_ATTRIBUTES)}")
        if self.draft_calibration and self.draft_strength >= 1.0:
            raise ValueError("inpaint.draft_calibration corrects the draft's attributes: it needs draft_strength < 1")


@dataclass
class DiffusionMakerConfig(InpaintSettings):
    """The "diffusion" synthesizer of the registry: a trained pipeline folder plus how to sample."""

    model: str = ""  # the controlnet stage's model folder
    device: str = ""  # "" = cuda when available, else cpu


@dataclass
class SampleSpec:
    """A synthetic cohort: which tumors go into each healthy case (the plan), and how they
    are sampled (``inpaint``)."""

    seed: int = 0
    cases_per_source: int = bounded(1, ge=1)  # synthetic cases made from each healthy case
    organs: list[str] = field(default_factory=lambda: ["liver"])  # organ types, picked uniformly per tumor
    tumors_min: int = bounded(1, ge=1)
    tumors_max: int = bounded(1, ge=1)
    size_mix: dict[str, float] = field(default_factory=lambda: {"tiny": 0.25, "small": 0.25, "medium": 0.3, "large": 0.2})
    early_fraction: float = bounded(0.0, ge=0, le=1)  # > 0: probability a tumor is early (tiny/small, <= 20 mm); 0 = size_mix as is
    max_sources: int = bounded(0, ge=0)  # 0 = all healthy cases
    inpaint: InpaintSettings = field(default_factory=InpaintSettings)

    def __post_init__(self) -> None:
        if self.cases_per_source < 1:
            raise ValueError(f"cases_per_source must be >= 1, got {self.cases_per_source}")
        if not 0 < self.tumors_min <= self.tumors_max:
            raise ValueError(f"need 0 < tumors_min <= tumors_max, got {self.tumors_min}, {self.tumors_max}")
