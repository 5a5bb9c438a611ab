"""Tumor shapes: size classes and elastically deformed ellipsoids (SyntheticTumors geometry).

Shared by the rule-based baseline and the diffusion generator (which draws its
tumor masks with these before rendering them). Signatures here are stable:

- :data:`SIZE_CLASSES_MM` radius per size class (mm),
- :func:`sample_size_class`, :func:`sample_radii_mm`, :func:`count_for_class`,
- :func:`ellipsoid_mask`.

Numbers are from Hu et al., "Label-Free Liver Tumor Segmentation" (CVPR 2023),
``TumorGenerated/utils.py``: radii tiny 4, small 8, medium 16, large 32 (voxels
at their 1 mm grid, hence mm here) jittered by U(0.75, 1.25) per axis; counts
tiny/small 3-10, medium 2-5, large 1-3; elastic deformation on a 3-point
control grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: radius (mm) of each size class (SyntheticTumors: tiny 4, small 8, medium 16, large 32)
SIZE_CLASSES_MM: dict[str, float] = {"tiny": 4.0, "small": 8.0, "medium": 16.0, "large": 32.0}
#: per-axis radius jitter (SyntheticTumors: randint(0.75 r, 1.25 r))
RADIUS_JITTER: tuple[float, float] = (0.75, 1.25)
#: how many tumors of one class a case gets (inclusive ranges)
COUNT_RANGES: dict[str, tuple[int, int]] = {"tiny": (3, 10), "small": (3, 10), "medium": (2, 5), "large": (1, 3)}
#: "mix" draws every class at once; SyntheticTumors' mix uses 5-10 small tumors
MIX_COUNT_RANGES: dict[str, tuple[int, int]] = {"tiny": (3, 10), "small": (5, 10), "medium": (2, 5), "large": (1, 3)}
#: elastic displacement std (voxels) per class in SyntheticTumors (tiny U(0.5, 1), small 1-2, medium 3-6, large 5-10)
ELASTIC_SIGMA_VOX: dict[str, tuple[float, float]] = {"tiny": (0.5, 1.0), "small": (1.0, 2.0), "medium": (3.0, 6.0),
                                                     "large": (5.0, 10.0)}
#: classes whose largest diameter (2 x 1.25 x radius) is at most 20 mm: "early" tumors
EARLY_CLASSES: tuple[str, ...] = tuple(k for k, r in SIZE_CLASSES_MM.items() if 2 * RADIUS_JITTER[1] * r <= 20.0)


def _check_class(size_class: str) -> None:
    if size_class not in SIZE_CLASSES_MM:
        raise ValueError(f"unknown size class {size_class!r}; expected one of {sorted(SIZE_CLASSES_MM)}")


def sample_size_class(rng: np.random.Generator, mix: Mapping[str, float] | None = None,
                      early_fraction: float | None = None) -> str:
    """Draw a size class.

    mix: weights per class (missing classes weigh 0); None = uniform over the four.
    early_fraction: probability of an early class (tiny, small: diameter <= 20 mm); the
        weights in ``mix`` then split the draw within the early and within the late
        classes. None = use ``mix`` as is.
    """
    weights = {k: 1.0 for k in SIZE_CLASSES_MM} if mix is None else {k: float(v) for k, v in mix.items()}
    for k in weights:
        _check_class(k)
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"size-class weights must be >= 0 with a positive sum, got {dict(weights)}")
    if early_fraction is not None:
        if not 0.0 <= early_fraction <= 1.0:
            raise ValueError(f"early_fraction must be in [0, 1], got {early_fraction}")
        early = {k: w for k, w in weights.items() if k in EARLY_CLASSES and w > 0}
        late = {k: w for k, w in weights.items() if k not in EARLY_CLASSES and w > 0}
        if not early:
            early = {k: 1.0 for k in EARLY_CLASSES}
        if not late:
            late = {k: 1.0 for k in SIZE_CLASSES_MM if k not in EARLY_CLASSES}
        weights = early if rng.random() < early_fraction else late
    names = sorted(weights)
    p = np.array([weights[k] for k in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_radii_mm(rng: np.random.Generator, size_class: str | None = None,
                    diameter_mm: float | None = None) -> np.ndarray:
    """Per-axis radii (mm), shape (3,): the class (or diameter/2) radius x U(0.75, 1.25) per axis."""
    if diameter_mm is not None:
        r = float(diameter_mm) / 2.0
    else:
        _check_class(size_class or "")
        r = SIZE_CLASSES_MM[size_class]  # type: ignore[index]
    return r * rng.uniform(*RADIUS_JITTER, size=3)


def count_for_class(rng: np.random.Generator, size_class: str, mix: bool = False) -> int:
    """Number of tumors of one class in a case (SyntheticTumors ranges, inclusive)."""
    _check_class(size_class)
    lo, hi = (MIX_COUNT_RANGES if mix else COUNT_RANGES)[size_class]
    return int(rng.integers(lo, hi + 1))


def elastic_sigma_vox(rng: np.random.Generator, radii_vox: Sequence[float]) -> float:
    """Elastic displacement std (voxels) for a tumor of these radii: the class ranges of
    SyntheticTumors, picked by the nearest class radius."""
    r = float(np.mean(radii_vox))
    cls = min(SIZE_CLASSES_MM, key=lambda k: abs(np.log(SIZE_CLASSES_MM[k] / max(r, 1e-3))))
    lo, hi = ELASTIC_SIGMA_VOX[cls]
    return float(rng.uniform(lo, hi))


def _quadratic_weights(n: int) -> np.ndarray:
    """(n, 3) weights of the quadratic through control points at the start, middle and
    end of ``n`` samples (a smooth field that passes through the control values)."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.stack([2 * (t - 0.5) * (t - 1), -4 * t * (t - 1), 2 * t * (t - 0.5)], axis=1)


def ellipsoid_mask(shape: Sequence[int], center_vox: Sequence[float], radii_vox: Sequence[float],
                   rng: np.random.Generator, elastic: bool = True, elastic_sigma: float | None = None) -> np.ndarray:
    """A (deformed) solid ellipsoid as a bool array of ``shape`` (X, Y, Z).

    center_vox: centre (voxel coordinates, may be fractional); radii_vox: semi-axes in voxels
    along X, Y, Z. With ``elastic``, a random displacement field (std ``elastic_sigma`` voxels,
    default :func:`elastic_sigma_vox`) on a 3x3x3 control grid spanning the 4r box, smoothly
    interpolated, warps the ellipsoid (SyntheticTumors applies elasticdeform's 3-point grid
    in three planes; one 3D field does the same job). Parts outside the array are dropped.
    """
    shape = tuple(int(s) for s in shape)
    c = np.asarray(center_vox, dtype=np.float64)
    r = np.maximum(np.asarray(radii_vox, dtype=np.float64), 0.5)
    half = np.ceil(2 * r).astype(int) + 1  # the reference's 4r box
    lo = np.floor(c).astype(int) - half
    hi = np.floor(c).astype(int) + half + 1
    box = tuple(int(b - a) for a, b in zip(lo, hi))
    # evaluate only where the box meets the array (a large tumor near an edge stays cheap)
    clo = np.maximum(lo, 0)
    chi = np.minimum(hi, shape)
    out = np.zeros(shape, dtype=bool)
    if np.any(chi <= clo):
        return out
    grids = list(np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(clo, chi)], indexing="ij"))
    if elastic:
        sigma = elastic_sigma_vox(rng, r) if elastic_sigma is None else float(elastic_sigma)
        coarse = rng.normal(0.0, sigma, size=(3, 3, 3, 3)).astype(np.float32)
        w = [_quadratic_weights(n)[a - s: e - s] for n, a, e, s in zip(box, clo, chi, lo)]
        for ax in range(3):
            # separable smooth interpolation of the 3x3x3 control displacements onto the box
            grids[ax] = grids[ax] + np.einsum("ia,jb,kc,abc->ijk", w[0], w[1], w[2], coarse[ax], optimize=True)
    dist = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r))
    out[tuple(slice(a, b) for a, b in zip(clo, chi))] = dist <= 1.0
    return out


__all__ = ["SIZE_CLASSES_MM", "RADIUS_JITTER", "COUNT_RANGES", "MIX_COUNT_RANGES", "EARLY_CLASSES",
           "sample_size_class", "sample_radii_mm", "count_for_class", "elastic_sigma_vox", "ellipsoid_mask"]
