"""A toy healthy case in memory for tests and examples: an ellipsoid "liver" in soft tissue.

Not the phantom world (:mod:`cohort.phantom`); just enough anatomy to grow and
draw tumors in within a second: liver HU uniform in 100-160 plus noise, an
optional straight "vessel" (label hepatic_vessel, 200 HU) through it.
"""

from __future__ import annotations

import numpy as np

from cohort import labels as L


def toy_liver(n: int | tuple[int, int, int] = 32, radii_frac: tuple[float, float, float] = (0.42, 0.38, 0.38),
              seed: int = 0, hu: tuple[float, float] = (100.0, 160.0), vessel: bool = False,
              noise_hu: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """(ct float32 HU (X, Y, Z), label uint8): an ellipsoid liver (label 5) centred in the grid,
    radii = radii_frac x size; background -100 HU fat. ``hu``: the liver's uniform HU range."""
    shape = (n, n, n) if isinstance(n, int) else tuple(int(s) for s in n)
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    d = sum(((g - (s - 1) / 2) / (f * s)) ** 2 for g, s, f in zip(grids, shape, radii_frac))
    liver = d <= 1.0
    ct = (-100.0 + rng.normal(0, noise_hu, shape)).astype(np.float32)
    ct[liver] = rng.uniform(hu[0], hu[1], int(liver.sum())).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[liver] = L.NAME_TO_INDEX["liver"]
    if vessel:
        v = np.zeros(shape, bool)
        cx, cy = shape[0] // 2, shape[1] // 2
        v[cx - 1: cx + 1, cy - 1: cy + 1, :] = True
        v &= liver
        ct[v] = 200.0
        label[v] = L.NAME_TO_INDEX["hepatic_vessel"]
    return ct, label
