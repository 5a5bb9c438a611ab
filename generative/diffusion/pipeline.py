"""The ControlNet latent diffusion pipeline: one object owns training and sampling.

``LatentDiffusionPipeline`` holds the frozen autoencoder, the UNet, the
(optional) ControlNet and a :class:`PipelineSpec` (scale factor, noise process,
conditioning layout). ``training_step(batch)`` returns the loss of the stage it
is in (``diffusion``: UNet on latents; ``controlnet``: ControlNet with the UNet
frozen); ``sample(...)`` writes the denoising loop out (MONAI's
``ControlNetLatentDiffusionInferer`` resizes the mask to latent size instead of
letting the ControlNet's conditioning embedding downsample it, so it is not
used) and decodes, with a Gaussian-blended sliding window for large volumes
(as MAISI does).

Shapes: image (B, 1, D, H, W) in [0, 1] (HU over the spec's ``intensity`` window, the one the
autoencoder reads: [-175, 250] for this project's autoencoders, [-1000, 1000] for MAISI's); label (B, 1, D, H, W) integer
vocabulary; latent (B, 4, D/4, H/4, W/4), already multiplied by the scale factor.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cohort import labels as L
from cohort.appearance import CONDITION_ATTRIBUTES
from cohort.errors import CohortError
from cohort.hardware import resolve_precision
from cohort.io import write_json
from generative.diffusion.intensity import Intensity
from generative.diffusion.models import LatentControlNet, LatentUNet, load_autoencoder, pipeline_hash
from generative.diffusion.schedulers import NoiseProcess, ProcessSpec, make_sampler

SPEC_NAME = "pipeline.json"
#: the training tumors' measured appearance, the distribution sampling draws attributes from
APPEARANCE_NAME = "appearance.json"
#: share of ControlNet training crops whose inpainting mask covers everything, so an inpainting
#: model also generates a whole crop from the label map alone (image channel all zeros)
FULL_GENERATION_FRACTION = 0.1


@dataclass
class PipelineSpec:
    """Everything besides weights that sampling needs; saved as ``pipeline.json``."""

    scale_factor: float = 1.0  # latents are z * scale_factor, scale_factor = 1 / std(z) on the training cache
    process: ProcessSpec = field(default_factory=ProcessSpec)
    spacing_mm: list[float] = field(default_factory=lambda: [1.5, 1.5, 1.5])  # the grid the model was trained on
    condition_organs: list[str] = field(default_factory=list)
    inpaint: bool = True
    inpaint_margin_mm: float = 6.0
    tumor_loss_weight: float = 100.0
    #: appearance attributes the ControlNet is conditioned on (cohort.appearance), one channel each,
    #: holding the tumor's normalised value inside its mask; [] for a mask-only ControlNet
    appearance: list[str] = field(default_factory=list)
    #: share of training samples whose appearance channels were dropped (zeroed, with the "known" channel 0);
    #: > 0 adds that channel and makes classifier-free guidance on appearance possible at sampling
    #: (``appearance_guidance``; Ho & Salimans 2022). 0: a model without the channel (as before)
    appearance_dropout: float = 0.0
    #: how HU map to the [0, 1] images of this pipeline: the autoencoder's window (a pipeline.json
    #: without it was written when every model used the default [-175, 250] window)
    intensity: Intensity = field(default_factory=Intensity)

    @property
    def condition_channels(self) -> int:
        """One-hot organs + tumor (+ appearance attributes (+ "appearance known")) (+ masked image + inpainting mask)."""
        return (len(self.condition_organs) + 1 + len(self.appearance) + int(self.guidable)
                + (2 if self.inpaint else 0))

    @property
    def guidable(self) -> bool:
        """Trained with appearance dropout: classifier-free guidance on appearance is possible."""
        return bool(self.appearance) and self.appearance_dropout > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PipelineSpec:
        d = dict(d)
        d["process"] = ProcessSpec(**d.get("process", {}))
        d["intensity"] = Intensity.from_dict(d.get("intensity"))
        return PipelineSpec(**d)


def dilate(mask: torch.Tensor, radius_vox: int) -> torch.Tensor:
    """Binary dilation of (B, 1, D, H, W) by a cube of half-width ``radius_vox``."""
    if radius_vox <= 0:
        return mask
    return F.max_pool3d(mask.float(), 2 * radius_vox + 1, stride=1, padding=radius_vox)


class LatentDiffusionPipeline:
    """Autoencoder + UNet (+ ControlNet) + spec. ``stage`` is "diffusion" or "controlnet"."""

    def __init__(self, autoencoder: torch.nn.Module, unet: LatentUNet, controlnet: LatentControlNet | None,
                 spec: PipelineSpec, appearance_table: list[dict] | None = None):
        """``autoencoder``: :class:`generative.diffusion.models.Autoencoder` or
        :class:`generative.diffusion.maisi.MaisiAutoencoder`; its ``intensity`` must be the spec's."""
        if (ae_int := getattr(autoencoder, "intensity", Intensity())) != spec.intensity:
            raise ValueError(f"the autoencoder reads {ae_int.describe()} but the pipeline spec says "
                             f"{spec.intensity.describe()}: build the spec with the autoencoder's intensity")
        self.autoencoder, self.unet, self.controlnet, self.spec = autoencoder, unet, controlnet, spec
        #: one row per training tumor (cohort.appearance.TumorAppearance fields + case_id)
        self.appearance_table: list[dict] = list(appearance_table or [])
        self.process = NoiseProcess(spec.process)
        self.autoencoder.eval().requires_grad_(False)
        if controlnet is not None:
            self.unet.eval().requires_grad_(False)  # ControlNet training keeps the UNet frozen

    # ---- save / load ------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.autoencoder.save_pretrained(directory / "autoencoder")
        self.unet.save_pretrained(directory / "unet")
        if self.controlnet is not None:
            self.controlnet.save_pretrained(directory / "controlnet")
        write_json(directory / SPEC_NAME, self.spec.as_dict())
        if self.spec.appearance:
            write_json(directory / APPEARANCE_NAME, {"attributes": self.spec.appearance, "tumors": self.appearance_table})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> LatentDiffusionPipeline:
        directory = Path(directory)
        if not (directory / SPEC_NAME).exists():
            raise CohortError(directory / SPEC_NAME, "missing: not a diffusion pipeline folder "
                              "(expected autoencoder/, unet/, [controlnet/], pipeline.json)")
        try:
            spec = PipelineSpec.from_dict(json.loads((directory / SPEC_NAME).read_text()))
        except (TypeError, ValueError) as e:
            raise CohortError(directory / SPEC_NAME, f"not a valid pipeline spec ({e})") from None
        ae = load_autoencoder(directory / "autoencoder", device)
        if ae.intensity != spec.intensity:
            raise CohortError(directory / SPEC_NAME, f"intensity {spec.intensity.describe()} does not match the "
                              f"autoencoder's ({ae.intensity.describe()}, {directory / 'autoencoder'}): the folder "
                              "mixes models trained on differently scaled CT")
        unet = LatentUNet.from_pretrained(directory / "unet", device)
        cn = LatentControlNet.from_pretrained(directory / "controlnet", device) if (directory / "controlnet").exists() else None
        table = None
        if spec.appearance:
            p = directory / APPEARANCE_NAME
            if not p.exists():
                raise CohortError(p, "missing: this pipeline is conditioned on appearance and needs the training "
                                  "tumors' attributes to draw from")
            table = json.loads(p.read_text())["tumors"]
        return cls(ae, unet, cn, spec, table).to(device)

    def to(self, device: str | torch.device) -> LatentDiffusionPipeline:
        for m in (self.autoencoder, self.unet, self.controlnet):
            if m is not None:
                m.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def model_hash(self, directory: str | Path) -> str:
        return pipeline_hash(directory)

    # ---- conditioning -----------------------------------------------------------------
    def make_condition(self, label: torch.Tensor, image: torch.Tensor | None = None,
                       inpaint_mask: torch.Tensor | None = None, appearance: torch.Tensor | None = None,
                       appearance_known: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Cc, D, H, W) float: one-hot organs, tumor (any lesion class), the appearance
        channels (B, K, D, H, W) of an appearance-conditioned pipeline (normalised attribute
        values inside each tumor, :func:`cohort.appearance.normalise`), and for inpainting the
        image with the masked region zeroed and the mask itself."""
        chans = [torch.isin(label, torch.tensor(L.organ_indices(o), device=label.device)) for o in self.spec.condition_organs]
        tumor = torch.isin(label, torch.tensor(L.LESION_LABELS, device=label.device))
        chans.append(tumor)
        cond = torch.cat([c.float() for c in chans], dim=1)
        if self.spec.appearance:
            K = len(self.spec.appearance)
            if appearance is None or appearance.shape[1] != K or appearance.shape[2:] != label.shape[2:]:
                got = None if appearance is None else tuple(appearance.shape)
                raise ValueError(f"this pipeline is conditioned on appearance {self.spec.appearance}: pass "
                                 f"appearance of shape (B, {K}, *label spatial), got {got}")
            app = appearance.float().to(cond.device) * tumor.float()
            if self.spec.guidable:  # per sample: 1 = the attributes are given, 0 = dropped (the null condition)
                known = (torch.ones(label.shape[0], device=cond.device) if appearance_known is None
                         else appearance_known.float().to(cond.device).reshape(-1))
                known = known.view(-1, 1, *([1] * (label.dim() - 2)))
                app = torch.cat([app * known, tumor.float() * known], dim=1)
            cond = torch.cat([cond, app], dim=1)
        if self.spec.inpaint:
            if image is None or inpaint_mask is None:
                raise ValueError("this pipeline inpaints: pass the image and the inpainting mask")
            m = inpaint_mask.float()
            cond = torch.cat([cond, image.float() * (1 - m), m], dim=1)
        return cond

    def measured_appearance(self, label: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B, K, D, H, W) channels holding each lesion's own attributes, measured on ``image``
        ([0, 1], HU window) with :func:`cohort.appearance.measure_appearance`: what training
        conditions on when a batch does not bring its attributes (the latent cache does)."""
        from cohort.appearance import attribute_table, lesion_instances, measure_appearance, paint

        lab, img = label.detach().cpu().numpy(), image.detach().float().cpu().numpy()
        sp = self.spec.spacing_mm or (1.0, 1.0, 1.0)
        out = []
        for b in range(lab.shape[0]):
            inst, classes = lesion_instances(lab[b, 0])
            app = measure_appearance(self.spec.intensity.unscale(img[b, 0]), lab[b, 0], sp, instances=(inst, classes))
            out.append(paint(inst, attribute_table([a.attributes() for a in app], self.spec.appearance)))
        return torch.from_numpy(np.stack(out)).to(label.device)

    def drawn_appearance(self, label: torch.Tensor, seed: int) -> torch.Tensor:
        """(B, K, D, H, W) attribute channels for every lesion of ``label``, each drawn from the
        training tumors of its organ and size class (:func:`cohort.appearance.paint_drawn`);
        deterministic in ``seed``."""
        from cohort.appearance import paint_drawn

        rng = np.random.default_rng([int(seed), 29])
        lab = label.detach().cpu().numpy()
        chans = [paint_drawn(lab[b, 0], self.spec.spacing_mm or (1.0, 1.0, 1.0), self.appearance_table, rng,
                             self.spec.appearance) for b in range(lab.shape[0])]
        return torch.from_numpy(np.stack(chans))

    def training_inpaint_mask(self, label: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Where a training crop has a tumor, the tumor dilated by ``inpaint_margin_mm``;
        elsewhere a random cube, so the model also learns to fill in healthy tissue."""
        tumor = torch.isin(label, torch.tensor(L.LESION_LABELS, device=label.device)).float()
        r = max(1, round(self.spec.inpaint_margin_mm / min(self.spec.spacing_mm)))
        mask = dilate(tumor, r)
        B, _, D, H, W = label.shape
        for b in range(B):
            if float(torch.rand(1, generator=generator)) < FULL_GENERATION_FRACTION:
                mask[b] = 1
            elif mask[b].sum() == 0:
                half = [max(2, s // 6) for s in (D, H, W)]
                c = [int(torch.randint(h, s - h, (1,), generator=generator)) for h, s in zip(half, (D, H, W))]
                mask[b, 0, c[0] - half[0]:c[0] + half[0], c[1] - half[1]:c[1] + half[1], c[2] - half[2]:c[2] + half[2]] = 1
        return mask

    # ---- training ---------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Loss of one batch. ``batch``: latent (B, 4, d, h, w) scaled; for the ControlNet
        also label (B, 1, D, H, W) and image (B, 1, D, H, W). All randomness (timesteps,
        noise, inpainting masks) comes from ``generator``, so a step is reproducible.

        L1 between prediction and target like MAISI; in the ControlNet stage voxels whose
        latent cell holds tumor weigh ``tumor_loss_weight`` times more.
        """
        x0 = batch["latent"]
        t = self.process.sample_timesteps(x0, generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        xt = self.process.add_noise(x0, noise, t)
        target = self.process.target(x0, noise, t)
        weight = torch.ones_like(x0[:, :1])
        if self.controlnet is not None:
            label = batch["label"]
            mask = self.training_inpaint_mask(label, generator) if self.spec.inpaint else None
            app = batch.get("appearance")  # the cache holds every attribute; this model uses spec.appearance
            if app is None and self.spec.appearance:
                app = self.measured_appearance(label, batch["image"])
            elif app is not None and self.spec.appearance:
                app = app[:, [CONDITION_ATTRIBUTES.index(a) for a in self.spec.appearance]]
            known = None
            if self.spec.guidable:  # drop the attributes of a share of the samples: the null condition for guidance
                known = (torch.rand(label.shape[0], generator=generator) >= self.spec.appearance_dropout).float()
            cond = self.make_condition(label, batch.get("image"), mask, app, appearance_known=known)
            down, mid = self.controlnet(x=xt, timesteps=t, controlnet_cond=cond)
            pred = self.unet(xt, t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
            tumor = torch.isin(label, torch.tensor(L.LESION_LABELS, device=label.device)).float()
            tumor_lat = F.adaptive_max_pool3d(tumor, x0.shape[2:])
            weight = 1 + (self.spec.tumor_loss_weight - 1) * tumor_lat
        else:
            pred = self.unet(xt, t)
        l1 = (pred.float() - target.float()).abs() * weight
        loss = l1.mean()
        return {"loss": loss, "timesteps": t}

    # ---- sampling ---------------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, latent_shape: tuple[int, ...], cond: torch.Tensor | None, sampler: str, steps: int,
                generator: torch.Generator, conditioning_scale: float = 1.0,
                known: tuple[torch.Tensor, torch.Tensor] | None = None, cache_condition: bool = True,
                cond_null: torch.Tensor | None = None, guidance: float = 1.0,
                start: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        """Run the sampler from pure noise; returns scaled latents (B, 4, d, h, w).
        The noise is drawn on CPU from ``generator`` so a seed gives the same sample on any device.

        ``known`` = (scaled latent of the known image, latent mask (B, 1, d, h, w), 1 = generate):
        after every step the latent cells outside the mask are replaced by the known latent
        carried to that step's noise level with one fixed noise draw (RePaint-style replacement,
        Lugmayr et al. 2022, without resampling), so the generated region is denoised against its
        real surroundings instead of against what the model imagines there.

        ``cache_condition``: embed the full-resolution condition once, not at every step
        (:meth:`LatentControlNet.condition_cache`); the result is the same either way.

        ``cond_null`` with ``guidance`` != 1: classifier-free guidance (Ho & Salimans 2022): the model
        runs on ``cond`` and ``cond_null`` in one batch and the prediction is null + guidance x (cond -
        null), which pushes the sample further along what the condition changes.

        ``start`` = (scaled latent of a guide image, strength in (0, 1]): SDEdit (Meng et al. 2022):
        only the last ``round(strength x steps)`` steps run (at least one), from the guide carried to
        the first of them with the same noise draw; strength 1 is the plain sampler."""
        s = make_sampler(sampler, self.spec.process, steps)
        x = torch.randn(latent_shape, generator=generator).to(self.device)
        ts = list(s.timesteps)
        if start is not None and start[1] < 1.0:
            if start[1] <= 0.0:
                raise ValueError(f"start strength {start[1]} must lie in (0, 1]")
            ts = ts[len(ts) - max(1, round(start[1] * len(ts))):]
            x = s.noised(start[0].to(self.device).float(), x, ts[0])
        z_known = m_lat = eps_known = None
        if known is not None:
            z_known, m_lat = known[0].to(self.device).float(), known[1].to(self.device).float()
            eps_known = torch.randn(latent_shape, generator=generator).to(self.device)
            x = m_lat * x + (1 - m_lat) * s.noised(z_known, eps_known, ts[0])
        guided = cond is not None and cond_null is not None and guidance != 1.0
        cond_in = torch.cat([cond, cond_null.to(cond)], 0) if guided else cond
        with contextlib.ExitStack() as stack:
            if self.controlnet is not None and cond_in is not None and cache_condition:
                stack.enter_context(self.controlnet.condition_cache(cond_in))
            for i, t in enumerate(ts):
                t_next = ts[i + 1] if i + 1 < len(ts) else None
                xin = torch.cat([x, x], 0) if guided else x
                tt = torch.full((xin.shape[0],), float(t), device=self.device)
                if self.controlnet is not None and cond is not None:
                    down, mid = self.controlnet(x=xin, timesteps=tt, controlnet_cond=cond_in,
                                                conditioning_scale=conditioning_scale)
                    out = self.unet(xin, tt, down_block_additional_residuals=down, mid_block_additional_residual=mid)
                    if guided:
                        c, u = out.float().chunk(2)
                        out = u + guidance * (c - u)
                else:
                    out = self.unet(x, tt)
                x = s.step(out.float(), t, t_next, x.float(), generator)
                if known is not None:
                    x = m_lat * x + (1 - m_lat) * s.noised(z_known, eps_known, t_next)
        return x

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, H, W) [0, 1] -> scaled latent mean (B, 4, D/4, H/4, W/4)."""
        z_mu, _ = self.autoencoder.encode(image)
        return z_mu * self.spec.scale_factor

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tile: int = 0, overlap: float = 0.25) -> torch.Tensor:
        """Scaled latent -> image (B, 1, D, H, W) clamped to [0, 1]. ``tile`` > 0 decodes
        with a Gaussian-blended sliding window of ``tile``^3 latent voxels (bounded memory)."""
        z = latent / self.spec.scale_factor
        if tile and any(s > tile for s in z.shape[2:]):
            from monai.inferers import SlidingWindowInferer

            inferer = SlidingWindowInferer(roi_size=(tile,) * 3, sw_batch_size=1, overlap=overlap, mode="gaussian",
                                           progress=False)
            img = inferer(z, self.autoencoder.decode)
        else:
            img = self.autoencoder.decode(z)
        return img.float().clamp(0, 1)

    @torch.no_grad()
    def sample(self, label: torch.Tensor | None = None, *, image: torch.Tensor | None = None,
               inpaint_mask: torch.Tensor | None = None, appearance: torch.Tensor | None = None,
               shape: tuple[int, int, int] | None = None,
               sampler: str = "rflow", steps: int = 30, seed: int = 0, tile: int = 0,
               mixed_precision: str = "auto", latent_blend: bool = False,
               appearance_guidance: float = 1.0, draft: torch.Tensor | None = None,
               draft_strength: float = 1.0, draft_detail: bool = False) -> torch.Tensor:
        """Generate an image (B, 1, D, H, W) in [0, 1] (``spec.intensity.unscale`` gives HU).

        label: the label map to condition on (ControlNet pipelines); image + inpaint_mask
        for inpainting (without them an inpainting pipeline generates the whole crop or
        volume from the label map); shape (D, H, W) for unconditional (UNet-only) sampling.
        ``tile`` > 0 decodes with a sliding window (volumes larger than memory allows).
        ``mixed_precision``: auto | no | bf16 | fp16 (:func:`cohort.hardware.resolve_precision`).
        ``appearance`` (B, K, D, H, W): the attribute channels of an appearance-conditioned pipeline;
        None draws each tumor's attributes from the training tumors (:meth:`drawn_appearance`).
        ``latent_blend`` (inpainting): hold the latent cells outside the inpainting mask to the
        encoded image during denoising (see :meth:`denoise`).
        ``appearance_guidance`` != 1: classifier-free guidance on the appearance attributes (a model trained
        with ``appearance_dropout``; the null condition keeps masks and image, drops the attributes);
        each step costs two model evaluations.
        ``draft`` (B, 1, D, H, W) [0, 1] with ``draft_strength`` < 1: start from the encoded draft carried
        to that noise level and run only that share of the steps (SDEdit; :mod:`generative.diffusion.draft`).
        ``draft_detail``: add back what the autoencoder loses of the draft (draft - decode(encode(draft))),
        the detail (boundary, texture) a short-trained decoder smooths away, which is known for the draft.
        Same seed, same inputs -> the same output.
        """
        g = torch.Generator().manual_seed(int(seed))
        down = self.autoencoder.downsample
        if label is not None and self.spec.inpaint and image is None and inpaint_mask is None:
            image = torch.zeros(label.shape)  # generation from the label map alone: inpaint everything
            inpaint_mask = torch.ones(label.shape)
        if label is not None and self.spec.appearance and appearance is None:
            appearance = self.drawn_appearance(label, seed)
        if label is not None:
            B, spatial = label.shape[0], label.shape[2:]
            cond = self.make_condition(label.to(self.device), None if image is None else image.to(self.device),
                                       None if inpaint_mask is None else inpaint_mask.to(self.device),
                                       None if appearance is None else appearance.to(self.device))
        else:
            if shape is None:
                raise ValueError("give a label map or a shape")
            B, spatial, cond = 1, shape, None
        cond_null = None
        if appearance_guidance != 1.0:
            if not self.spec.guidable:
                raise ValueError(f"appearance_guidance {appearance_guidance:g} needs a ControlNet trained with "
                                 "controlnet.appearance_dropout > 0 (this one was not: use 1)")
            if cond is not None:
                cond_null = self.make_condition(label.to(self.device), None if image is None else image.to(self.device),
                                                None if inpaint_mask is None else inpaint_mask.to(self.device),
                                                appearance.to(self.device), appearance_known=torch.zeros(B))
        if any(s % down for s in spatial):
            raise ValueError(f"spatial size {tuple(spatial)} must be divisible by the autoencoder's {down}x")
        lat_shape = (B, self.autoencoder.config["latent_channels"], *[s // down for s in spatial])
        dtype = resolve_precision(mixed_precision, self.device, "sampling").autocast_dtype
        known = None
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            if latent_blend and label is not None and self.spec.inpaint and image is not None and inpaint_mask is not None:
                m_lat = F.max_pool3d(inpaint_mask.float().to(self.device), down, stride=down)  # any generated voxel
                if bool((m_lat < 1).any()):
                    known = (self.encode(image.float().to(self.device)).float(), m_lat)
            start = None
            if draft is not None and draft_strength < 1.0:
                if tuple(draft.shape[2:]) != tuple(spatial):
                    raise ValueError(f"draft of shape {tuple(draft.shape)} does not match the label's {tuple(spatial)}")
                start = (self.encode(draft.float().to(self.device)).float(), float(draft_strength))
            lat = self.denoise(lat_shape, cond, sampler, steps, g, known=known, cond_null=cond_null,
                               guidance=appearance_guidance, start=start)
            out = self.decode(lat, tile)
            if start is not None and draft_detail:
                residual = draft.float().to(self.device) - self.decode(start[0], tile)
                out = (out + residual).clamp(0, 1)
            return out
