"""Tumor inpainting into a real healthy CT with the ControlNet latent diffusion pipeline.

For one tumor: take a ROI around the tumor mask (``roi_size`` voxels at the
model's spacing), resample it to the model grid if the CT's spacing differs,
condition on the ROI's anatomy (organ one-hots + the new tumor + the CT with
the tumor neighbourhood masked out), generate, and blend the result back with a
feathered weight: by default (``blend: region``) 1 on the whole inpainted region, falling to 0
within ``feather_mm`` mm; ``blend: tumor`` 1 on the tumor and ``blend_mm`` around it, falling to
0 at twice that, so the organ around the tumor stays the real scan. With
``texture: scanner`` the generated voxels are topped up with the scan's own noise texture
from a patch of the same organ where the decoder lacks it (the autoencoder smooths the noise
away; a tumor without it is both unlike real ones and an easy cue for the quality filter).
Voxels outside the ROI, and inside it where the weight is 0, are bit-identical to the input; the label map gains the lesion class exactly on
the tumor mask, which placement keeps inside the organ.

:class:`DiffusionSynthesizer` wraps this behind the
:class:`generative.tumors.base.Synthesizer` protocol (name "diffusion"), so the
segmentation stage and the cohort tools treat it like the CA and rule baselines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cohort import labels as L
from cohort.appearance import draw_appearance, host_mask, measure_tumor, normalise, size_class
from cohort.lesions import max_axial_diameter_mm
from generative.diffusion.config import DiffusionMakerConfig, InpaintSettings
from generative.diffusion.draft import copy_from_donor, draft_tumor
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.registry import organ_type
from generative.tumors.base import (
    SynthesisError,
    SynthesisResult,
    TumorSpec,
    check_inputs,
    organ_mask,
    tumor_records,
    vessel_mask,
)
from generative.tumors.placement import sampler_for
from generative.tumors.shapes import sample_size_class


def _resize(x: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """Resample a 3D array to ``size`` voxels (identity when the size already matches)."""
    if tuple(x.shape) == tuple(size):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    kw = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t, size=tuple(size), mode=mode, **kw)[0, 0].numpy()


def roi_box(center: np.ndarray, extent: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """A box of ``extent`` voxels around ``center``, shifted (not cut) to stay inside ``shape``."""
    ext = np.minimum(extent, shape)
    start = np.clip(np.round(center - ext / 2).astype(int), 0, np.array(shape) - ext)
    return tuple(slice(int(a), int(a + e)) for a, e in zip(start, ext))  # type: ignore[return-value]


def feather_weight(region: np.ndarray, spacing, feather_mm: float) -> np.ndarray:
    """1 on ``region``, falling linearly to 0 at ``feather_mm`` mm from it (float32)."""
    if feather_mm <= 0:
        return region.astype(np.float32)
    d = ndimage.distance_transform_edt(~region, sampling=spacing)
    return np.clip(1.0 - d / feather_mm, 0.0, 1.0).astype(np.float32)


def scanner_texture(gen: np.ndarray, real: np.ndarray, where: np.ndarray, donor: np.ndarray, spacing,
                    sigma_mm: float, rng: np.random.Generator, tries: int = 64) -> tuple[np.ndarray, dict[str, Any]]:
    """``gen`` (HU) on ``where`` topped up with the scanner's noise texture of ``real`` (the same ROI of the
    real scan): the high frequencies of ``real`` (minus a Gaussian of ``sigma_mm``) taken from a shifted
    copy of ``where`` that lies in ``donor`` (the organ away from the tumor; eroded by 2 voxels so no organ
    edge is copied), scaled so that the result's high-frequency sd matches the donor's (the decoder keeps
    some; nothing is added when it keeps as much as the scan has). ``gen`` itself is not filtered, so its
    edges stay as generated.

    The shift is the best of ``tries`` random ones (the first that lies 98 % in the donor); the voxels
    that land outside it take residuals drawn at random from the donor. Returns (new gen, info); with no
    donor voxel at all the texture is left as generated (info says so). Deterministic given ``rng``.
    """
    sig = float(sigma_mm) / np.asarray(spacing, float)
    ok = ndimage.binary_erosion(donor, iterations=2)
    info: dict[str, Any] = {"texture": "scanner", "sigma_mm": float(sigma_mm)}
    if not ok.any() or not where.any():
        return gen, {**info, "texture": "generated", "why": "no organ voxels away from the tumor to take texture from"}
    resid = real.astype(np.float32) - ndimage.gaussian_filter(real.astype(np.float32), sig)
    gen_hf = gen.astype(np.float32) - ndimage.gaussian_filter(gen.astype(np.float32), sig)
    idx = np.argwhere(where)
    vals, inside, best = copy_from_donor(resid, where, ok, rng, tries)
    sd_real = float(resid[ok].std())
    sd_gen = float(gen_hf[where & ndimage.binary_erosion(where, iterations=1)].std()) if where.sum() > 27 else 0.0
    gain = float(np.sqrt(max(0.0, sd_real ** 2 - sd_gen ** 2)) / sd_real) if sd_real > 0 else 0.0
    out = gen.astype(np.float32).copy()
    out[tuple(idx.T)] += gain * vals
    return out, {**info, "donor_shift": None if best is None else [int(v) for v in best],
                 "donor_fraction": round(float(inside.mean()), 3), "noise_sd_scan": round(sd_real, 2),
                 "noise_sd_generated": round(sd_gen, 2), "gain": round(gain, 3)}


def inpaint_tumor(pipe: LatentDiffusionPipeline, ct_hu: np.ndarray, label: np.ndarray, spacing,
                  tumor: np.ndarray, lesion_label: int, seed: int, settings: InpaintSettings,
                  allowed: np.ndarray | None = None,
                  appearance: dict[str, float] | None = None,
                  draft_appearance: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Generate CT for one tumor mask (bool (X, Y, Z)) and blend it in.

    ``allowed`` (bool (X, Y, Z)): the only voxels whose HU may change (the organ plus the tumor,
    as the CA and rule makers do); the feathered blend is cut at its edge. None: the whole ROI.
    ``appearance``: attribute -> value (cohort.appearance) for an appearance-conditioned pipeline.
    ``draft_appearance``: the attributes the draft is drawn with when they differ from ``appearance``
    (a draft calibration's; :mod:`generative.diffusion.calibration`); the ControlNet keeps ``appearance``.
    Returns (ct float32 HU, label uint8, info) with new arrays; inputs are not modified.
    """
    t0 = time.time()
    spacing = np.asarray(spacing, float)
    ms = np.asarray(pipe.spec.spacing_mm or spacing, float)
    mult = pipe.autoencoder.downsample * pipe.unet.size_multiple
    idx = np.argwhere(tumor)
    centre = (idx.min(0) + idx.max(0)) / 2.0
    extent = np.round(np.asarray(settings.roi_size) * ms / spacing).astype(int)
    box = roi_box(centre, extent, ct_hu.shape)
    n = np.array([s.stop - s.start for s in box])
    # the model grid: the ROI at the model's spacing, rounded up to what the networks accept
    m = np.maximum(mult, np.ceil(n * spacing / ms / mult).astype(int) * mult)
    if np.allclose(spacing, ms) and np.all(n % mult == 0):
        m = n  # no resampling: the common case of a CT already at the model's spacing

    ct_roi, lab_roi, tum_roi = ct_hu[box], label[box].copy(), tumor[box]
    lab_roi[tum_roi] = lesion_label
    region = ndimage.distance_transform_edt(~tum_roi, sampling=spacing) <= pipe.spec.inpaint_margin_mm
    hu = pipe.spec.intensity  # the autoencoder's HU -> [0, 1] mapping
    img_m = _resize(hu.scale(ct_roi), tuple(m), "trilinear")
    lab_m = _resize(lab_roi.astype(np.float32), tuple(m), "nearest").astype(np.int64)
    reg_m = _resize(region.astype(np.float32), tuple(m), "nearest")
    app_m = None
    if pipe.spec.appearance:
        if appearance is None:
            raise ValueError(f"this pipeline is conditioned on appearance {pipe.spec.appearance}: give the tumor's attributes")
        tum_m = _resize(tum_roi.astype(np.float32), tuple(m), "nearest") > 0.5
        vals = normalise(appearance, pipe.spec.appearance)
        app_m = torch.from_numpy(vals[:, None, None, None] * tum_m[None].astype(np.float32))[None]
    organ_roi = allowed[box] if allowed is not None else lab_roi > 0
    draft_m = None
    if settings.draft_strength < 1.0:
        if appearance is None:
            raise ValueError("inpaint.draft_strength < 1 draws the tumor's draft from its appearance attributes: "
                             "use an appearance-conditioned model (controlnet.appearance) or draft_strength 1")
        draft_hu = draft_tumor(ct_roi, tum_roi, organ_roi & ~tum_roi, spacing, draft_appearance or appearance,
                               np.random.default_rng([int(seed), 37]),
                               noise=settings.draft_noise)
        draft_m = torch.from_numpy(_resize(hu.scale(draft_hu), tuple(m), "trilinear"))[None, None]
    gen = pipe.sample(torch.from_numpy(lab_m)[None, None], image=torch.from_numpy(img_m)[None, None],
                      inpaint_mask=torch.from_numpy(reg_m)[None, None], appearance=app_m, sampler=settings.sampler,
                      steps=settings.steps, seed=seed, tile=settings.tile_latent,
                      mixed_precision=settings.mixed_precision, latent_blend=settings.latent_blend,
                      appearance_guidance=settings.appearance_guidance, draft=draft_m,
                      draft_strength=settings.draft_strength, draft_detail=settings.draft_detail)[0, 0].cpu().numpy()
    gen_hu = hu.unscale(_resize(gen, tuple(n), "trilinear"))

    tex: dict[str, Any] = {"texture": "generated"}
    if settings.blend == "tumor":
        keep = ndimage.distance_transform_edt(~tum_roi, sampling=spacing) <= settings.blend_mm
        w = feather_weight(keep, spacing, settings.blend_mm)
        # the decoded ROI is not the scan's level: judge the tumor against the real organ as the model drew it
        # against its own, by the median difference on the organ voxels both cover (the region outside the band)
        both = region & (w == 0) & organ_roi
        if both.sum() >= 20:
            off = float(np.median(gen_hu[both] - ct_roi[both]))
            gen_hu = gen_hu - np.float32(off)
            tex["offset_hu"] = round(off, 2)
    else:
        w = feather_weight(region, spacing, settings.feather_mm)
    if settings.texture == "scanner":
        gen_hu, t = scanner_texture(gen_hu, ct_roi, w > 0, organ_roi & ~(w > 0) & ~region, spacing,
                                    settings.texture_sigma_mm, np.random.default_rng([int(seed), 31]))
        tex = {**tex, **t}
    if allowed is not None:
        w = w * (organ_roi | tum_roi)  # nothing outside the organ (and the tumor) changes
    out_ct, out_lab = ct_hu.copy(), label.copy()
    roi = out_ct[box]
    out_ct[box] = np.where(w > 0, w * gen_hu + (1 - w) * roi, roi).astype(np.float32)
    out_lab[tumor] = lesion_label
    if draft_m is not None:
        tex["draft_strength"] = settings.draft_strength
        tex["draft_detail"] = settings.draft_detail
        tex["draft_noise"] = settings.draft_noise
    info = {"roi": [[s.start for s in box], [s.stop for s in box]], "model_grid": m.tolist(), "seed": int(seed),
            "sampler": settings.sampler, "steps": settings.steps, "blend": settings.blend, **tex,
            "seconds": round(time.time() - t0, 3)}
    return out_ct, out_lab, info


#: Where tumor masks come from: ``(organ_mask, spacing, size, rng, avoid, margin_mm) -> bool (X, Y, Z)``.
#: The default draws elastic ellipsoids (:func:`generative.tumors.placement.place_tumor_mask`); a CA
#: growth model can be plugged in here, or pass any mask to :meth:`DiffusionSynthesizer.insert`.
MaskProvider = Callable[[np.ndarray, tuple, "float | str", np.random.Generator, np.ndarray, float], np.ndarray]


class DiffusionSynthesizer:
    """The diffusion inpainter as a :class:`generative.tumors.base.Synthesizer` ("diffusion").

    ``__call__(ct_hu, label, spacing, spec, rng)``: places ``spec.count`` (default 1)
    tumors of ``spec.size`` (a class, "mix", or None = draw from ``settings.size_mix``)
    or ``spec.diameter_mm`` inside ``spec.organ``, away from vessels and existing
    lesions, and inpaints each. The same ``rng`` state gives the same result.
    ``mask_provider`` swaps the shape prior (the extension point for CA-grown masks); by default
    tumors are placed like the rules' (:func:`generative.tumors.placement.sampler_for`: the organ
    interior, or the wall band of colon and esophagus).
    """

    name = "diffusion"

    def __init__(self, pipeline: LatentDiffusionPipeline, settings: InpaintSettings | None = None, model_hash: str = "",
                 mask_provider: MaskProvider | None = None):
        if pipeline.controlnet is None or not pipeline.spec.inpaint:
            raise ValueError("tumor inpainting needs a ControlNet pipeline trained with controlnet.inpaint: true")
        self.pipe, self.settings, self.model_hash = pipeline, settings or InpaintSettings(), model_hash
        self.mask_provider = mask_provider
        self.calibration = None
        if self.settings.draft_calibration:
            from generative.diffusion.calibration import DraftCalibration

            self.calibration = DraftCalibration.read(self.settings.draft_calibration)
            if model_hash and self.calibration.model_hash != model_hash:
                raise ValueError(f"{self.settings.draft_calibration}: this draft calibration was fitted for the model "
                                 f"{self.calibration.model_hash[:12]}, not this one ({model_hash[:12]}): calibrate "
                                 "this model's own samples (`tumorgen generator calibrate`)")

    def _appearance(self, tumor: np.ndarray, spacing, organ: str, seed: int) -> tuple[dict | None, dict | None, dict]:
        """The attributes to generate ``tumor`` with (None for a mask-only model), those to draw its draft with
        (None: the same), and their provenance. Drawn from their own stream (``seed``), so the tumor's
        placement does not depend on them."""
        if not self.pipe.spec.appearance:
            return None, None, {}
        d = max_axial_diameter_mm(tumor, spacing)
        values, source = draw_appearance(self.pipe.appearance_table, organ_type(organ), size_class(d),
                                         np.random.default_rng([int(seed), 23]), self.settings.appearance,
                                         self.pipe.spec.appearance)
        prov = {"requested": values, **source}
        if self.calibration is None:
            return values, None, prov
        drafted = self.calibration.draft_values(values, d)
        return values, drafted, {**prov, "draft": {k: round(v, 3) for k, v in drafted.items()},
                                 "draft_calibration": self.settings.draft_calibration}

    def _measured(self, ct: np.ndarray, lab: np.ndarray, tumor: np.ndarray, lesion: int, spacing, prov: dict) -> dict:
        """Provenance of the appearance: what was asked or drawn, and what the output measures."""
        if not prov:
            return {}
        got = measure_tumor(ct, tumor, host_mask(lab, lesion), spacing)
        return {"appearance": {**prov, "measured": {k: round(float(got[k]), 3) for k in self.pipe.spec.appearance}}}

    def insert(self, ct_hu: np.ndarray, label: np.ndarray, spacing, tumor: np.ndarray, organ: str,
               seed: int) -> SynthesisResult:
        """Inpaint a tumor mask made elsewhere (e.g. by CA growth); it is clipped to ``organ``."""
        spacing = check_inputs(ct_hu, label, spacing)
        tumor = tumor.astype(bool) & organ_mask(label, organ)
        if not tumor.any():
            raise SynthesisError(f"the tumor mask does not overlap the {organ}")
        lesion = L.lesion_index_for(organ)
        values, drafted, prov = self._appearance(tumor, spacing, organ, seed)
        ct, lab, info = inpaint_tumor(self.pipe, ct_hu, label, spacing, tumor, lesion, seed, self.settings,
                                      allowed=organ_mask(label, organ), appearance=values, draft_appearance=drafted)
        recs = tumor_records(tumor, lesion, spacing, organ, self.name, seed=seed, sampler=self.settings.sampler,
                             steps=self.settings.steps, model_hash=self.model_hash,
                             **self._measured(ct, lab, tumor, lesion, spacing, prov))
        return SynthesisResult(ct, lab, recs, {"tumors": [info], "model_hash": self.model_hash,
                                               "sampler": self.settings.sampler, "steps": self.settings.steps})

    def _size(self, spec: TumorSpec, rng: np.random.Generator) -> float | str:
        if spec.diameter_mm is not None:
            return float(spec.diameter_mm)
        if spec.size in (None, "mix"):
            return sample_size_class(rng, self.settings.size_mix, self.settings.early_fraction)
        return spec.size

    def __call__(self, ct_hu: np.ndarray, label: np.ndarray, spacing, spec: TumorSpec,
                 rng: np.random.Generator) -> SynthesisResult:
        spacing = check_inputs(ct_hu, label, spacing)
        lesion = L.lesion_index_for(spec.organ)
        ct, lab = ct_hu, label
        records: list[dict[str, Any]] = []
        infos = []
        for _ in range(spec.count or 1):
            organ = organ_mask(lab, spec.organ)
            avoid = vessel_mask(lab) | np.isin(lab, L.LESION_LABELS)
            size = self._size(spec, rng)
            if self.mask_provider is not None:
                tumor = self.mask_provider(organ, spacing, size, rng, avoid, self.settings.margin_mm)
            else:  # the rules' placement: organ interior, or the wall band of a tubular organ
                tumor = sampler_for(spec.organ, organ, spacing, avoid=avoid, margin_mm=self.settings.margin_mm).place(
                    rng, size).full(organ.shape)
            tumor &= organ  # the lesion label goes only where the organ is
            if not tumor.any():
                raise SynthesisError(f"no room for a {size} tumor in the {spec.organ}")
            seed = int(rng.integers(0, 2**31 - 1))
            values, drafted, prov = self._appearance(tumor, spacing, spec.organ, seed)
            ct, lab, info = inpaint_tumor(self.pipe, ct, lab, spacing, tumor, lesion, seed, self.settings,
                                          allowed=organ, appearance=values, draft_appearance=drafted)
            info["size"] = size
            infos.append(info)
            records += tumor_records(tumor, lesion, spacing, spec.organ, self.name, size=size if isinstance(size, str) else None,
                                     seed=seed, sampler=self.settings.sampler, steps=self.settings.steps,
                                     model_hash=self.model_hash, **self._measured(ct, lab, tumor, lesion, spacing, prov))
        return SynthesisResult(ct, lab, records, {"tumors": infos, "model_hash": self.model_hash,
                                                  "sampler": self.settings.sampler, "steps": self.settings.steps})


def build_diffusion_synthesizer(cfg: DiffusionMakerConfig) -> DiffusionSynthesizer:
    """The registry's factory for "diffusion": load the pipeline folder ``cfg.model`` on
    ``cfg.device`` (cuda when available if empty) and wrap it with ``cfg``'s settings."""
    import dataclasses

    from generative.diffusion.models import pipeline_hash

    if not cfg.model:
        raise ValueError("diffusion: set model to the controlnet stage's model folder")
    dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = LatentDiffusionPipeline.from_pretrained(cfg.model, dev)
    settings = InpaintSettings(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(InpaintSettings)})
    return DiffusionSynthesizer(pipe, settings, pipeline_hash(cfg.model))
