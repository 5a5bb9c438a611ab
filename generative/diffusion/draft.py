"""A rule-drawn draft of a tumor with given appearance attributes: where partial denoising starts.

With ``inpaint.draft_strength`` s < 1 the sampler does not start the inpainted region from pure
noise: the ROI with the tumor drawn in by :func:`draft_tumor` is encoded, carried to noise level s
and denoised from there (SDEdit, Meng et al. 2022: guided image synthesis by starting the reverse
process from a noised guide). The draft fixes what the short-trained ControlNet follows poorly (the
tumor's mean HU against its organ, its rim, its internal spread, a sharp boundary), the model
redraws the texture, the boundary and the surroundings. s = 1 is the plain sampler (the draft is
not used); s near 0 returns the draft as the autoencoder reconstructs it.

The draft inverts the definitions of :func:`cohort.appearance.measure_tumor` (same shell, ring and
core), so measuring a draft gives back the attributes it was drawn with (tests/generative/
test_diffusion_draft.py): the organ level is the mean of the organ shell 1.5-6 mm around the tumor,
a ring just inside the boundary is offset from the core by ``rim_hu``, the whole tumor sits
``contrast_hu`` from the organ, and smooth Gaussian texture tops the spread up to
``heterogeneity_hu`` (the ring is then shifted so that the texture leaves the ring-core difference
exactly ``rim_hu``: on small real tumor shapes the texture alone moved it by 5-6 HU sd); the organ voxels touching the tumor are pulled towards it until the step across
the boundary is ``edge_hu_per_mm``; ``necrotic_fraction`` follows from mean and spread and is not imposed.

``inpaint.draft_detail`` adds back what the autoencoder loses of the draft (its reconstruction residual):
the boundary and texture a briefly trained decoder smooths away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cohort.appearance import AppearanceConfig

#: sd (mm) of the Gaussian that smooths the draft's white-noise texture (real tumor texture is not white)
TEXTURE_SIGMA_MM = 1.5
#: the scan's noise is what lies above a Gaussian of this sd (mm), as in inpaint.texture "scanner"
NOISE_SIGMA_MM = 1.0


def copy_from_donor(field: np.ndarray, where: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
                    tries: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Values of ``field`` for the voxels of ``where`` (1-D, in their voxel order) copied from a shifted copy
    of ``where`` that lies in ``donor`` (the best of ``tries`` random shifts, the first that lies 98 % in it);
    voxels that land outside the donor take values drawn at random from it. Returns (values, which came from
    the shifted copy, the shift or None). ``donor`` must hold a voxel."""
    idx = np.argwhere(where)
    lo, hi, shape = idx.min(0), idx.max(0), np.array(where.shape)
    best, best_frac = None, -1.0
    for _ in range(tries):
        shift = rng.integers(-lo, shape - hi)
        if not shift.any():
            continue
        frac = float(donor[tuple((idx + shift).T)].mean())
        if frac > best_frac:
            best, best_frac = shift, frac
        if frac >= 0.98:
            break
    pool = field[donor]
    if best is None:
        return rng.choice(pool, len(idx)), np.zeros(len(idx), bool), None
    src = tuple((idx + best).T)
    vals, inside = field[src].copy(), donor[src]
    vals[~inside] = rng.choice(pool, int((~inside).sum()))
    return vals, inside, best


def scan_noise(ct_hu: np.ndarray, tumor: np.ndarray, host: np.ndarray, spacing: Sequence[float],
               rng: np.random.Generator, sigma_mm: float = NOISE_SIGMA_MM) -> np.ndarray:
    """The scan's own noise for the voxels of ``tumor`` (1-D, in ``tumor``'s voxel order): the high
    frequencies of ``ct_hu`` (minus a Gaussian of ``sigma_mm``) copied from the host organ eroded by 2 voxels
    (no organ edge is copied; :func:`copy_from_donor`). Zeros when the host has no such voxel."""
    sp = np.asarray(spacing, float)
    ok = ndimage.binary_erosion(host.astype(bool), iterations=2)
    if not ok.any():
        return np.zeros(int(tumor.sum()), np.float32)
    ct = ct_hu.astype(np.float32)
    resid = ct - ndimage.gaussian_filter(ct, sigma_mm / sp)
    return copy_from_donor(resid, tumor, ok, rng)[0].astype(np.float32)


def draft_tumor(ct_hu: np.ndarray, tumor: np.ndarray, host: np.ndarray, spacing: Sequence[float],
                attributes: dict[str, float], rng: np.random.Generator,
                config: AppearanceConfig = AppearanceConfig(), noise: bool = False) -> np.ndarray:
    """``ct_hu`` (float HU) with the voxels of ``tumor`` (bool, same grid) replaced by a tumor whose
    contrast to the surrounding ``host`` organ, rim-core difference and HU sd are those of
    ``attributes`` (missing or NaN ones count as 0). ``noise``: part of the spread is the scan's own noise
    (:func:`scan_noise`, from the host organ), the smooth texture only tops it up; otherwise all of it is
    smooth texture. A new float32 array; the inputs are not modified.
    Raises ValueError when the tumor is empty or no organ voxel surrounds it."""
    if ct_hu.shape != tumor.shape or tumor.shape != host.shape:
        raise ValueError(f"draft_tumor: ct {ct_hu.shape}, tumor {tumor.shape} and host {host.shape} must share a grid")
    tumor, host = tumor.astype(bool), host.astype(bool)
    if not tumor.any():
        raise ValueError("draft_tumor: the tumor mask is empty")
    sp = np.asarray(spacing, float)

    def val(name: str) -> float:
        v = float(attributes.get(name, 0.0) or 0.0)
        return 0.0 if v != v else v

    outside = ndimage.distance_transform_edt(~tumor, sampling=sp)
    shell = host & ~tumor & (outside > config.shell_near_mm) & (outside <= config.shell_far_mm)
    if not shell.any():
        shell = host & ~tumor
    if not shell.any():
        raise ValueError("draft_tumor: no organ voxel around the tumor to measure its contrast against")
    organ_hu = float(ct_hu[shell].mean())

    depth_map = ndimage.distance_transform_edt(tumor, sampling=sp)  # mm to the outside, 0 outside
    depth = depth_map[tumor]
    dmax = float(depth.max())
    profile = np.zeros(depth.shape)
    ring_core = None
    if dmax >= 2 * sp.min():  # as measured: ring at depth <= rim_fraction x dmax, core beyond half of it
        ring_edge = max(sp.min(), config.rim_fraction * dmax)
        profile = np.clip((0.5 * dmax - depth) / max(0.5 * dmax - ring_edge, 1e-6), 0.0, 1.0)
        ring, core = depth <= ring_edge, depth > 0.5 * dmax
        if ring.any() and core.any():  # scale so that mean(ring) - mean(core) is exactly 1
            span = profile[ring].mean() - profile[core].mean()
            profile = profile / span if span > 0 else profile
            ring_core = (ring, core)
        profile = val("rim_hu") * profile
    texture = rng.standard_normal(ct_hu.shape)
    texture = ndimage.gaussian_filter(texture, TEXTURE_SIGMA_MM / sp)[tumor]
    texture = (texture - texture.mean()) / max(float(texture.std()), 1e-6)
    grain = scan_noise(ct_hu, tumor, host, sp, rng).astype(np.float64) if noise else np.zeros(profile.shape)
    if noise:  # the scan's noise first, as much of the asked spread as it can be; the smooth texture tops it up
        budget = max(val("heterogeneity_hu") ** 2 - float(profile.var()), 0.0)
        if grain.var() > budget:  # budget >= 0, so the grain has a spread to scale
            grain = grain * np.sqrt(budget / grain.var())
    extra = val("heterogeneity_hu") ** 2 - float(profile.var()) - float(grain.var())
    values = profile + grain + np.sqrt(max(extra, 0.0)) * texture
    if ring_core is not None:  # the texture moved the ring's and the core's means: set their difference back to rim_hu
        ring, core = ring_core
        values[ring] += val("rim_hu") - (float(values[ring].mean()) - float(values[core].mean()))
    values = values - values.mean() + organ_hu + val("contrast_hu")
    out = ct_hu.astype(np.float32, copy=True)
    out[tumor] = values.astype(np.float32)
    # the edge: organ voxels touching the tumor (closer than the contrast shell) are pulled towards the tumor's
    # boundary voxels until the HU step across the boundary is edge_hu_per_mm x spacing (a hard step is the most
    # a draft can give: asks beyond it keep the step). Only voxels outside the tumor change, so its contrast,
    # rim and spread stay as drawn
    edge = val("edge_hu_per_mm")
    inner = tumor & (depth_map <= sp.min() * 1.01)
    outer = host & ~tumor & (outside <= sp.min() * 1.01)
    if edge > 0 and outer.any():
        step = float(out[inner].mean()) - float(out[outer].mean())
        if abs(step) > edge * sp.mean():
            beta = 1.0 - edge * sp.mean() / abs(step)
            out[outer] = out[outer] + np.float32(beta * step)
    return out
