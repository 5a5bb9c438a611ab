"""Helpers of the three training stages (models per stage, the autoencoder's losses,
checkpoints); the loop itself reads top to bottom in :mod:`generative.train`."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from monai.losses import PatchAdversarialLoss

from cohort import runs, saved
from cohort.errors import CohortError
from generative.diffusion.config import AutoencoderConfig, GenerativeConfig, LossConfig
from generative.diffusion.intensity import WINDOW_MAISI, Intensity
from generative.diffusion.models import (
    AUTOENCODER_TYPES,
    LatentUNet,
    autoencoder_intensity,
    build_autoencoder,
    build_discriminator,
    build_unet,
    controlnet_from_unet,
    load_autoencoder,
)
from generative.diffusion.pipeline import SPEC_NAME, LatentDiffusionPipeline, PipelineSpec

CKPT_RE = runs.CKPT_RE


@dataclass
class TrainState:
    """Counters saved with ``accelerator.save_state`` (registered for checkpointing)."""

    step: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, d: dict) -> None:
        self.step = int(d["step"])


# ---- models per stage ------------------------------------------------------------------------

def load_init_spec(init_from: str | Path) -> PipelineSpec:
    p = Path(init_from) / SPEC_NAME
    if not p.exists():
        raise CohortError(p, "missing: init_from must be the diffusion stage's model folder")
    try:
        return PipelineSpec.from_dict(json.loads(p.read_text()))
    except (TypeError, ValueError) as e:
        raise CohortError(p, f"not a valid pipeline spec ({e})") from None


def pretrained_autoencoder(a: AutoencoderConfig) -> torch.nn.Module:
    """The MAISI autoencoder ``autoencoder.pretrained`` names (the autoencoder stage exports it as is:
    fine-tuning it is not implemented)."""
    from generative.diffusion.maisi import load_maisi_autoencoder

    return load_maisi_autoencoder(a.pretrained, a.pretrained_settings or None)


def stage_intensity(cfg: GenerativeConfig) -> Intensity:
    """The HU -> [0, 1] mapping a stage's data is prepared with: its autoencoder's. The autoencoder
    stage: MAISI's window with ``autoencoder.pretrained``, else the default; the later stages: what
    the ``init_from`` folder's autoencoder records. A ControlNet's ``init_from`` whose
    ``pipeline.json`` says otherwise, or a config naming a MAISI checkpoint whose ``init_from``
    holds another autoencoder, is a CohortError naming the file."""
    if cfg.stage == "autoencoder":
        return WINDOW_MAISI if cfg.autoencoder.pretrained else Intensity()
    ae_dir = Path(cfg.init_from) / "autoencoder"
    kind = saved.read_config(ae_dir, AUTOENCODER_TYPES)["model_type"]
    if cfg.autoencoder.pretrained and kind != "maisi_autoencoder":
        raise CohortError(ae_dir / saved.CONFIG_NAME, f"holds a {kind!r}, but autoencoder.pretrained names a MAISI "
                          "checkpoint: init_from must be the folder the autoencoder stage exported from it")
    intensity = autoencoder_intensity(ae_dir)
    if cfg.stage == "controlnet" and (base := load_init_spec(cfg.init_from).intensity) != intensity:
        raise CohortError(Path(cfg.init_from) / SPEC_NAME, f"intensity {base.describe()} does not match the "
                          f"autoencoder's ({intensity.describe()}, {ae_dir})")
    return intensity


def build_stage_models(cfg: GenerativeConfig) -> dict[str, torch.nn.Module | None]:
    """The networks a stage trains or uses. autoencoder: autoencoder + discriminator (with
    ``autoencoder.pretrained``: MAISI's autoencoder, nothing to train, no discriminator);
    diffusion: frozen autoencoder (from ``init_from``) + new UNet; controlnet: frozen
    autoencoder and UNet (from ``init_from``) + ControlNet initialised from the UNet."""
    a, u, c = cfg.autoencoder, cfg.unet, cfg.controlnet
    if cfg.stage == "autoencoder":
        if a.pretrained:
            return {"autoencoder": pretrained_autoencoder(a), "discriminator": None}
        ae = build_autoencoder(tuple(a.channels), a.latent_channels, a.num_res_blocks, a.norm_num_groups, a.attention)
        return {"autoencoder": ae, "discriminator": build_discriminator(cfg.loss.disc_channels, cfg.loss.disc_layers)}
    init = Path(cfg.init_from)
    ae = load_autoencoder(init / "autoencoder")
    if cfg.stage == "diffusion":
        unet = build_unet(ae.config["latent_channels"], tuple(u.channels), tuple(u.attention_levels),
                          u.num_res_blocks, u.norm_num_groups, u.num_head_channels)
        return {"autoencoder": ae, "unet": unet, "controlnet": None}
    unet = LatentUNet.from_pretrained(init / "unet")
    spec = PipelineSpec(**c.pipeline_fields())
    cn = controlnet_from_unet(unet, spec.condition_channels, tuple(c.conditioning_embedding_num_channels))
    return {"autoencoder": ae, "unet": unet, "controlnet": cn}


def stage_spec(cfg: GenerativeConfig, scale_factor: float, intensity: Intensity | None = None) -> PipelineSpec:
    """The pipeline spec a stage exports. The ControlNet inherits the diffusion model's
    noise process, scale factor and intensity mapping (its UNet was trained with them).
    ``intensity``: the autoencoder's (None = the default window)."""
    c, s = cfg.controlnet, cfg.scheduler
    if cfg.stage == "controlnet":
        base = load_init_spec(cfg.init_from)
        if intensity is not None and intensity != base.intensity:
            raise CohortError(Path(cfg.init_from) / SPEC_NAME, f"intensity {base.intensity.describe()} does not "
                              f"match the autoencoder's ({intensity.describe()})")
        return PipelineSpec(scale_factor=base.scale_factor, process=base.process, spacing_mm=base.spacing_mm,
                            intensity=base.intensity, **c.pipeline_fields())
    return PipelineSpec(scale_factor=scale_factor, process=s.process(), spacing_mm=list(cfg.data.spacing_mm),
                        condition_organs=[], inpaint=False, intensity=intensity or Intensity())


# ---- autoencoder losses ----------------------------------------------------------------------

def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent voxels, mean over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-8) - 1)
    return kl.flatten(1).sum(1).mean()


def lesion_weights(label: torch.Tensor, weight: float, margin_vox: int) -> torch.Tensor:
    """(B, 1, D, H, W) float: 1 + ``weight`` on lesion voxels (any lesion class) and within
    ``margin_vox`` voxels of one (a cube dilation), 1 elsewhere."""
    from cohort import labels as L

    les = torch.isin(label, torch.as_tensor(sorted(L.LESION_LABELS), device=label.device)).float()
    if margin_vox > 0:
        les = torch.nn.functional.max_pool3d(les, 2 * margin_vox + 1, stride=1, padding=margin_vox)
    return 1.0 + weight * les


def weighted_l1(recon: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    d = (recon - x).abs()
    return (d * w).mean() if w is not None else d.mean()


def gradient_l1(recon: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the three spatial axes of |diff(recon) - diff(x)| (forward differences), each
    difference weighted by ``w`` at its first voxel: 0 for a reconstruction with the input's edges,
    whatever its offset."""
    total = recon.new_zeros(())
    for dim in (2, 3, 4):
        d = (torch.diff(recon, dim=dim) - torch.diff(x, dim=dim)).abs()
        if w is not None:
            d = d * w.narrow(dim, 0, w.shape[dim] - 1)
        total = total + d.mean()
    return total / 3


class AutoencoderLosses:
    """L1 + perceptual (2.5D LPIPS) + KL + least-squares patch adversarial after a warm-up, with an
    optional gradient-difference term and extra weight on and around lesions (``label``)."""

    def __init__(self, cfg: LossConfig, perceptual: torch.nn.Module | None):
        self.cfg, self.perceptual = cfg, perceptual
        self.adv = PatchAdversarialLoss(criterion="least_squares")

    def generator(self, x: torch.Tensor, recon: torch.Tensor, z_mu, z_sigma, disc, step: int,
                  generator: torch.Generator, label: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        r, xf = recon.float(), x.float()
        w = lesion_weights(label, c.lesion_weight, c.lesion_margin_vox) if (label is not None and c.lesion_weight > 0) else None
        l1 = weighted_l1(r, xf, w)
        kl = kl_loss(z_mu.float(), z_sigma.float())
        loss = l1 + c.kl_weight * kl
        logs = {"l1": float(l1.detach()), "kl": float(kl.detach())}
        if c.gradient_weight > 0:
            g = gradient_l1(r, xf, w)
            loss = loss + c.gradient_weight * g
            logs["gradient"] = float(g.detach())
        if self.perceptual is not None and c.perceptual_weight > 0:
            p = self.perceptual(recon.float(), x.float(), generator)
            loss = loss + c.perceptual_weight * p
            logs["perceptual"] = float(p.detach())
        if step >= c.adv_warmup_steps and c.adv_weight > 0:
            g = self.adv(disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False)
            loss = loss + c.adv_weight * g
            logs["adv_g"] = float(g.detach())
        return loss, logs

    def discriminator(self, x: torch.Tensor, recon: torch.Tensor, disc) -> torch.Tensor:
        fake = self.adv(disc(recon.detach().contiguous().float())[-1], target_is_real=False, for_discriminator=True)
        real = self.adv(disc(x.contiguous().float())[-1], target_is_real=True, for_discriminator=True)
        return self.cfg.adv_weight * 0.5 * (fake + real)


# ---- checkpoints -----------------------------------------------------------------------------

# checkpoints: the one scheme of every training loop (temp folder renamed into place), cohort.runs
checkpoint_dir, latest_checkpoint, save_checkpoint = runs.checkpoint_dir, runs.latest_checkpoint, runs.save_checkpoint


def export_pipeline(cfg: GenerativeConfig, models: dict, spec: PipelineSpec, out: str | Path,
                    appearance_table: list[dict] | None = None) -> Path:
    """Write the stage's model folder: ``autoencoder/`` (+ ``unet/``, ``controlnet/``, ``pipeline.json``,
    and for an appearance-conditioned ControlNet ``appearance.json``: the training tumors' attributes)."""
    out = Path(out)
    if cfg.stage == "autoencoder":
        models["autoencoder"].save_pretrained(out / "autoencoder")
        return out
    return LatentDiffusionPipeline(models["autoencoder"], models["unet"], models["controlnet"], spec,
                                   appearance_table).save_pretrained(out)


def build_pipeline(cfg: GenerativeConfig, scale_factor: float = 1.0, controlnet: bool = True) -> LatentDiffusionPipeline:
    """Fresh (untrained) networks of a config as a pipeline: for tests and benchmarks that
    need the architecture, not the weights (with ``autoencoder.pretrained``: MAISI's loaded
    autoencoder and fresh UNet / ControlNet)."""
    a, u, c = cfg.autoencoder, cfg.unet, cfg.controlnet
    if a.pretrained:
        ae = pretrained_autoencoder(a)
    else:
        ae = build_autoencoder(tuple(a.channels), a.latent_channels, a.num_res_blocks, a.norm_num_groups, a.attention)
    unet = build_unet(ae.config["latent_channels"], tuple(u.channels), tuple(u.attention_levels), u.num_res_blocks,
                      u.norm_num_groups, u.num_head_channels)
    fields = c.pipeline_fields()
    if not controlnet:
        fields.update(condition_organs=[], inpaint=False, appearance=[])
    spec = replace(stage_spec(replace(cfg, stage="diffusion"), scale_factor, ae.intensity), **fields)
    cn = controlnet_from_unet(unet, spec.condition_channels, tuple(c.conditioning_embedding_num_channels)) if controlnet else None
    return LatentDiffusionPipeline(ae, unet, cn, spec)
