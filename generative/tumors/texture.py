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
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

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
