"""Helpers of the three training stages (models per stage, the autoencoder's losses,
checkpoints); the loop itself reads top to bottom in :mod:`generative.train`."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from monai.losses import PatchAdversarialLoss

from cohort import runs
from cohort.errors import CohortError
from generative.diffusion.config import GenerativeConfig, LossConfig
from generative.diffusion.models import (
    Autoencoder,
    LatentUNet,
    build_autoencoder,
    build_discriminator,
    build_unet,
    controlnet_from_unet,
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
    return PipelineSpec.from_dict(json.loads(p.read_text()))


def build_stage_models(cfg: GenerativeConfig) -> dict[str, torch.nn.Module | None]:
    """The networks a stage trains or uses. autoencoder: autoencoder + discriminator;
    diffusion: frozen autoencoder (from ``init_from``) + new UNet; controlnet: frozen
    autoencoder and UNet (from ``init_from``) + ControlNet initialised from the UNet."""
    a, u, c = cfg.autoencoder, cfg.unet, cfg.controlnet
    if cfg.stage == "autoencoder":
        ae = build_autoencoder(tuple(a.channels), a.latent_channels, a.num_res_blocks, a.norm_num_groups, a.attention)
        return {"autoencoder": ae, "discriminator": build_discriminator(cfg.loss.disc_channels, cfg.loss.disc_layers)}
    init = Path(cfg.init_from)
    ae = Autoencoder.from_pretrained(init / "autoencoder")
    if cfg.stage == "diffusion":
        unet = build_unet(ae.config["latent_channels"], tuple(u.channels), tuple(u.attention_levels),
                          u.num_res_blocks, u.norm_num_groups, u.num_head_channels)
        return {"autoencoder": ae, "unet": unet, "controlnet": None}
    unet = LatentUNet.from_pretrained(init / "unet")
    spec = PipelineSpec(**c.pipeline_fields())
    cn = controlnet_from_unet(unet, spec.condition_channels, tuple(c.conditioning_embedding_num_channels))
    return {"autoencoder": ae, "unet": unet, "controlnet": cn}


def stage_spec(cfg: GenerativeConfig, scale_factor: float) -> PipelineSpec:
    """The pipeline spec a stage exports. The ControlNet inherits the diffusion model's
    noise process and scale factor (its UNet was trained with them)."""
    c, s = cfg.controlnet, cfg.scheduler
    if cfg.stage == "controlnet":
        base = load_init_spec(cfg.init_from)
        return PipelineSpec(scale_factor=base.scale_factor, process=base.process, spacing_mm=base.spacing_mm,
                            **c.pipeline_fields())
    return PipelineSpec(scale_factor=scale_factor, process=s.process(), spacing_mm=list(cfg.data.spacing_mm),
                        condition_organs=[], inpaint=False)


# ---- autoencoder losses ----------------------------------------------------------------------

def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent voxels, mean over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-8) - 1)
    return kl.flatten(1).sum(1).mean()


class AutoencoderLosses:
    """L1 + perceptual (2.5D LPIPS) + KL + least-squares patch adversarial after a warm-up."""

    def __init__(self, cfg: LossConfig, perceptual: torch.nn.Module | None):
        self.cfg, self.perceptual = cfg, perceptual
        self.adv = PatchAdversarialLoss(criterion="least_squares")

    def generator(self, x: torch.Tensor, recon: torch.Tensor, z_mu, z_sigma, disc, step: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        l1 = (recon.float() - x.float()).abs().mean()
        kl = kl_loss(z_mu.float(), z_sigma.float())
        loss = l1 + c.kl_weight * kl
        logs = {"l1": float(l1.detach()), "kl": float(kl.detach())}
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
    need the architecture, not the weights."""
    a, u, c = cfg.autoencoder, cfg.unet, cfg.controlnet
    ae = build_autoencoder(tuple(a.channels), a.latent_channels, a.num_res_blocks, a.norm_num_groups, a.attention)
    unet = build_unet(a.latent_channels, tuple(u.channels), tuple(u.attention_levels), u.num_res_blocks,
                      u.norm_num_groups, u.num_head_channels)
    fields = c.pipeline_fields()
    if not controlnet:
        fields.update(condition_organs=[], inpaint=False, appearance=[])
    spec = replace(stage_spec(replace(cfg, stage="diffusion"), scale_factor), **fields)
    cn = controlnet_from_unet(unet, spec.condition_channels, tuple(c.conditioning_embedding_num_channels)) if controlnet else None
    return LatentDiffusionPipeline(ae, unet, cn, spec)
