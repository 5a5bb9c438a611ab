"""From a phantom patient to a scan: tissue HU for the site's contrast phase, texture,
tumors, partial-volume blur, slice averaging and scanner noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.phantom.anatomy import TEXTURE_HU, TISSUE, TISSUES, Anatomy
from cohort.phantom.hollow import LUMEN_TISSUES
from cohort.phantom.sites import SiteProfile
from cohort.phantom.tumors import FOOTPRINT, PlacedTumor, TumorRequest, insert_tumors, measure
from cohort.tubes import is_tubular

#: CT numbers are stored as int16 in files; clip to the scanner range.
HU_RANGE = (-1024.0, 3071.0)
#: Thick slices are drawn as sub-slices no thicker than this (mm) and averaged, which is what a
#: detector row does: a small lesion in a 5 mm slice is diluted, not sharp.
MAX_SUBSLICE_MM = 2.5


def subslices(spacing_z: float) -> int:
    """How many sub-slices make one slice of this thickness (1 for <= 2.5 mm)."""
    return max(1, int(np.ceil(spacing_z / MAX_SUBSLICE_MM - 1e-6)))


def tissue_hu_volume(anat: Anatomy, site: SiteProfile) -> np.ndarray:
    """Noise-free, unblurred HU (X, Y, Z) float32: tissue mean for the phase plus smooth texture."""
    thu = site.tissue_hu()
    base = np.array([thu[t] for t in TISSUES], np.float32)
    amp_f = np.array([TEXTURE_HU[t][0] for t in TISSUES], np.float32)
    amp_c = np.array([TEXTURE_HU[t][1] for t in TISSUES], np.float32)
    if site.phase == "arterial":
        # arciform enhancement: the spleen is heterogeneous before contrast mixes in its red pulp
        amp_f[TISSUE["spleen"]] = 28.0
        amp_c[TISSUE["spleen"]] = 12.0
    t = anat.tissue
    return base[t] + amp_f[t] * anat.tex_fine + amp_c[t] * anat.tex_coarse


def _gaussian_norm(sigma_vox: float, truncate: float = 4.0) -> float:
    """Std of white unit noise after a 1D Gaussian filter of this sigma (voxels), as scipy applies it."""
    if sigma_vox <= 0:
        return 1.0
    rad = int(truncate * sigma_vox + 0.5)
    x = np.arange(-rad, rad + 1)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    k /= k.sum()
    return float(np.sqrt((k**2).sum()))


def optics(hu: np.ndarray, body: np.ndarray, site: SiteProfile, spacing) -> np.ndarray:
    """Calibration offset and point-spread blur (in-plane ``blur_mm``, plus the slice profile along z)."""
    sp = np.asarray(spacing, np.float64)
    if site.hu_offset:
        hu[body] += np.float32(site.hu_offset)
    sig_mm = np.array([site.blur_mm, site.blur_mm, np.hypot(site.blur_mm, site.slice_blur * sp[2])])
    sig = sig_mm / sp
    if np.any(sig > 0.05):
        hu = ndimage.gaussian_filter(hu, sigma=np.where(sig > 0.05, sig, 0.0), truncate=3.0)
    return hu


def add_noise(hu: np.ndarray, site: SiteProfile, spacing, rng: np.random.Generator) -> np.ndarray:
    """Add in-plane-correlated Gaussian noise of std ``site.noise_sigma_hu`` and clip to the scanner range."""
    sp = np.asarray(spacing, np.float64)
    if site.noise_sigma_hu > 0:
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        # CT noise is correlated in-plane by the reconstruction kernel; rescale to the nominal sigma
        s_in = site.noise_corr_mm / sp[:2]
        if np.any(s_in > 0.05):
            noise = ndimage.gaussian_filter(noise, sigma=(s_in[0], s_in[1], 0.0))
            noise /= np.float32(_gaussian_norm(s_in[0]) * _gaussian_norm(s_in[1]))
        hu += np.float32(site.noise_sigma_hu) * noise
    np.clip(hu, *HU_RANGE, out=hu)
    return hu.astype(np.float32, copy=False)


def _thick_labels(healthy: np.ndarray, label: np.ndarray, instance: np.ndarray, k: int,
                  placed: list[PlacedTumor]) -> np.ndarray:
    """Label of k-sub-slice voxels: the centre sub-slice, with lesions where they fill >= half the voxel.

    A lesion voxel is kept only where the (centre) healthy label is its organ, so
    lesions stay inside their organ on the thick grid too.
    """
    nx, ny, nzk = label.shape
    out = label[:, :, k // 2::k].copy()
    base = healthy[:, :, k // 2::k]
    lesion_here = np.isin(out, L.LESION_LABELS)
    out[lesion_here] = base[lesion_here]
    inst = instance.reshape(nx, ny, nzk // k, k)
    for i, t in enumerate(placed, start=1):
        frac = (inst == i).mean(-1)
        allowed = np.isin(base, [L.NAME_TO_INDEX[n] for n in FOOTPRINT[t.organ_name]])
        m = (frac >= 0.5) & allowed
        if not m.any() and (frac * allowed).max() > 0:  # a lesion thinner than half a slice: its best voxel
            m = (frac * allowed) == (frac * allowed).max()
        out[m] = t.label
    return out


def render(anat: Anatomy, site: SiteProfile, requests: list[TumorRequest], rng_tumor: np.random.Generator,
           rng_noise: np.random.Generator, k: int = 1) -> tuple[np.ndarray, np.ndarray, list[PlacedTumor]]:
    """(ct float32 HU, label uint8, placed tumors) for one patient at one site.

    ``anat`` is drawn on a grid with ``k`` sub-slices per output slice; the
    output grid has the same in-plane grid and ``anat.grid.shape[2] // k``
    slices of ``k`` times the thickness. Lesion records are measured on the
    output grid.
    """
    hu = tissue_hu_volume(anat, site)
    label = anat.label.copy()
    instance = np.zeros(label.shape, np.uint8) if k > 1 else None
    lumen = None
    if any(is_tubular(r.organ) for r in requests):
        lumen = np.isin(anat.tissue, [TISSUE[t] for t in LUMEN_TISSUES])
    placed = (insert_tumors(hu, label, anat.grid, site.tissue_hu(), requests, rng_tumor, instance, lumen)
              if requests else [])
    hu = optics(hu, anat.body, site, anat.grid.spacing)
    out_spacing = (*anat.grid.spacing[:2], anat.grid.spacing[2] * k)
    if k > 1:
        nx, ny, nzk = hu.shape
        hu = hu.reshape(nx, ny, nzk // k, k).mean(-1)
        label = _thick_labels(anat.label, label, instance, k, placed)
        inst = instance.reshape(nx, ny, nzk // k, k)
        for i, t in enumerate(placed, start=1):  # lesions keep a 2 mm gap, so "touched by i" is lesion i
            measure(t, (label == t.label) & (inst == i).any(-1), out_spacing)
    ct = add_noise(hu, site, out_spacing, rng_noise)
    return ct, label, placed
