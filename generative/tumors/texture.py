"""Tumor texture: smoothed Bernoulli noise, the recipe shared by SyntheticTumors and Pixel2Cancer.

Hu et al., "Label-Free Liver Tumor Segmentation" (CVPR 2023), and Lai et al.,
"From Pixel to Cancer" (2024), darken the organ by ``texture * difference``
where the texture is built as: uniform noise, Gaussian-smoothed with
``sigma_a``, rescaled to a probability in [base, base + scale] (base ~ 0.05,
scale ~ 0.2); a Bernoulli draw from that probability; a second Gaussian
(``sigma_b``); then scaled so that the mean over voxels above 0.12 is
u0 ~ U(0.5, 0.55) and clipped to [0, 1].

The references precompute ten 500^3 (or 420x300x320) float64 banks per process
(~10 GB) and crop them; here the texture is drawn for the region that needs it
only, in float32, which keeps memory to a few times the tumor's bounding box.

HU relative to the organ (both makers' ``hu_mode="relative"``, the default)
---------------------------------------------------------------------------

The references' HU numbers are absolute and assume a contrast-enhanced organ:
Pixel2Cancer quantizes the organ in ``Organ_HU`` (liver/pancreas 100-160,
kidney 140-200 HU) and both references darken by ``U(65, 145)`` HU (necrosis a
further ``U(90, 110)``). In a non-contrast scan (liver ~45-60 HU) the same
numbers put the tumor at fat density. Relative mode measures the organ in the
scan (:func:`measure_organ_hu`: median and quartiles of the organ's own voxels,
vessels and lesions excluded) and scales the darkening by the organ's contrast
above a soft-tissue floor (:func:`contrast_scale`)::

    scale = max(median - floor, MIN_CONTRAST_HU) / (reference - floor)
    darkening = U(65, 145) * scale

with ``reference`` the organ HU the references' numbers assume
(:data:`REFERENCE_ORGAN_HU`, the centre of Pixel2Cancer's range: liver and
pancreas 130, kidney 170) and ``floor`` 0 HU (water). An organ at the
reference HU gets the reference's numbers exactly; a 45 HU liver gets 22-50 HU
of darkening (a tumor of ~10-35 HU), a 100 HU liver 50-112 HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from cohort import labels as L

#: the organ HU the references' absolute numbers assume (centre of Pixel2Cancer ``Organ_HU``:
#: liver/pancreas 100-160, kidney 140-200); relative mode scales the darkening by median / this
REFERENCE_ORGAN_HU: dict[str, float] = {"liver": 130.0, "pancreas": 130.0, "kidney": 170.0}
#: the floor the organ's contrast is measured above (water); tumors are darkened toward it
SOFT_TISSUE_FLOOR_HU = 0.0
#: the least contrast above the floor assumed for an organ (a fatty liver at or below the floor
#: still gets a slightly darker tumor)
MIN_CONTRAST_HU = 10.0
#: at most this many organ voxels (an even stride) are used for the quantiles
_MAX_STAT_VOXELS = 2_000_000


@dataclass
class OrganHU:
    """HU of an organ's own voxels in one scan (vessels and lesions excluded): median and
    quartiles (HU), voxel count."""

    median: float
    q25: float
    q75: float
    voxels: int

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25

    def as_dict(self) -> dict:
        return {"organ_median_hu": round(self.median, 2), "organ_q25_hu": round(self.q25, 2),
                "organ_q75_hu": round(self.q75, 2), "organ_voxels_measured": int(self.voxels)}


def measure_organ_hu(ct_hu: np.ndarray, mask: np.ndarray) -> OrganHU:
    """Median and quartiles (HU) of ``ct_hu`` (X, Y, Z) over the bool ``mask`` (the organ
    minus vessels and lesions). An empty mask is a ValueError."""
    vals = np.asarray(ct_hu)[mask]
    if vals.size == 0:
        raise ValueError("no organ voxels to measure the organ's HU on")
    if vals.size > _MAX_STAT_VOXELS:
        vals = vals[:: int(np.ceil(vals.size / _MAX_STAT_VOXELS))]
    q25, med, q75 = np.percentile(vals.astype(np.float64), [25, 50, 75])
    return OrganHU(float(med), float(q25), float(q75), int(mask.sum()))


def reference_hu(organ: str, table: dict[str, float] | None = None) -> float:
    """The reference organ HU of an organ type or name ("kidney_left" -> "kidney") from
    ``table`` (default :data:`REFERENCE_ORGAN_HU`; liver's for organs it does not cover)."""
    table = REFERENCE_ORGAN_HU if table is None else table
    if organ not in table:
        lesion = L.ORGAN_TO_LESION.get(organ)
        organ = L.LESION_TO_ORGAN_TYPE.get(lesion, organ) if lesion else organ
    return float(table.get(organ, table.get("liver", REFERENCE_ORGAN_HU["liver"])))


def contrast_scale(organ_median_hu: float, reference: float, floor_hu: float = SOFT_TISSUE_FLOOR_HU,
                   min_contrast_hu: float = MIN_CONTRAST_HU) -> float:
    """The factor on the references' absolute darkening for an organ measured at
    ``organ_median_hu``: its contrast above ``floor_hu`` over the reference organ's (1.0 at
    the reference HU)."""
    return max(organ_median_hu - floor_hu, min_contrast_hu) / max(reference - floor_hu, min_contrast_hu)

#: the references' predefined banks use these (voxels)
SIGMA_A_CHOICES = (3.0, 6.0, 9.0, 12.0, 15.0)
SIGMA_B_CHOICES = (4.0, 7.0)
#: Gaussian support in standard deviations; 3 instead of scipy's 4 keeps large sigmas cheap
_TRUNCATE = 3.0


def tumor_texture(shape: tuple[int, int, int], rng: np.random.Generator,
                  sigma_a: float | None = None, sigma_b: float | None = None) -> np.ndarray:
    """Texture in [0, 1], float32, shape (X, Y, Z); sigmas in voxels.

    ``sigma_a`` None: one of 3, 6, 9, 12, 15 (the references' bank); ``sigma_b`` None:
    U(3, 5) with probability 0.7 else U(5, 8) (SyntheticTumors ``get_texture``).
    """
    shape = tuple(int(s) for s in shape)
    if sigma_a is None:
        sigma_a = float(rng.choice(SIGMA_A_CHOICES))
    if sigma_b is None:
        sigma_b = float(rng.uniform(3, 5) if rng.uniform() < 0.7 else rng.uniform(5, 8))
    a = gaussian_filter(rng.random(shape, dtype=np.float32), sigma_a, truncate=_TRUNCATE, mode="reflect")
    lo, hi = float(a.min()), float(a.max())
    scale, base = rng.uniform(0.19, 0.21), rng.uniform(0.04, 0.06)
    a = scale * (a - lo) / max(hi - lo, 1e-12) + base
    b = (a > rng.random(shape, dtype=np.float32)).astype(np.float32)
    b = gaussian_filter(b, sigma_b, truncate=_TRUNCATE, mode="reflect")
    sel = b > 0.12
    mean = float(b[sel].mean()) if sel.any() else float(b.mean()) or 1.0
    u0 = rng.uniform(0.5, 0.55)
    return np.clip(b * (u0 / max(mean, 1e-6)), 0.0, 1.0).astype(np.float32)
