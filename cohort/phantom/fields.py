"""Smooth random fields and the voxel grid of a phantom.

Every random field that shapes anatomy is defined on a grid of control nodes
laid out in millimetres over the field of view, then evaluated at the voxel
centres through a separable Gaussian basis. The nodes do not depend on the
voxel spacing, so one seed gives the same patient at 0.8 mm or at 5 mm
slices: sites differ in how they image the patient, not in the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A voxel grid centred on the world origin, RAS+ axes.

    shape: voxels (X, Y, Z); spacing: mm per voxel; ``x_mm`` etc. are the
    voxel-centre coordinates (mm). ``unit_mm`` is the anatomy's length unit:
    organs are laid out in multiples of it (half the smaller in-plane field of
    view), so the whole abdomen always fits the field of view.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    @property
    def unit_mm(self) -> float:
        return min(self.fov_mm[0], self.fov_mm[1]) / 2.0

    def axis_mm(self, axis: int) -> np.ndarray:
        n, s = self.shape[axis], self.spacing[axis]
        return ((np.arange(n, dtype=np.float64) + 0.5) * s - n * s / 2.0).astype(np.float32)

    def axis_unit(self, axis: int) -> np.ndarray:
        """Voxel-centre coordinates along ``axis`` in anatomy units."""
        return self.axis_mm(axis) / np.float32(self.unit_mm)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel -> world (mm), RAS+: +x patient's right, +y anterior, +z superior."""
        a = np.diag([*self.spacing, 1.0]).astype(np.float64)
        a[:3, 3] = [float(self.axis_mm(i)[0]) for i in range(3)]
        return a

    @staticmethod
    def from_options(fov_mm: tuple[float, float, float], spacing: tuple[float, float, float],
                     shape: tuple[int, int, int] | None = None) -> Grid:
        """Grid from a field of view and spacing (voxels = round(fov / spacing)), or from an explicit shape."""
        if shape is None:
            shape = tuple(max(4, int(round(f / s))) for f, s in zip(fov_mm, spacing))  # type: ignore[assignment]
        return Grid(tuple(int(n) for n in shape), tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def _basis(coords: np.ndarray, nodes: np.ndarray, width: float) -> np.ndarray:
    """(len(coords), len(nodes)) Gaussian interpolation weights, rows normalised to unit variance.

    Rows are normalised so the field's variance is 1 everywhere: with
    coefficients c ~ N(0, 1), var(sum_i w_i c_i) = sum_i w_i^2.
    """
    w = np.exp(-0.5 * ((coords[:, None].astype(np.float64) - nodes[None, :]) / width) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True)) + 1e-12
    return w.astype(np.float32)


def smooth_field(rng: np.random.Generator, axes: tuple[np.ndarray, np.ndarray, np.ndarray],
                 bounds: tuple[tuple[float, float], ...], corr: float) -> np.ndarray:
    """A smooth Gaussian random field with unit variance, shape (len(ax0), len(ax1), len(ax2)), float32.

    axes: voxel-centre coordinates per axis (any length unit); bounds: (lo, hi)
    per axis in the same unit, the region the control nodes cover (fixed by
    the field of view, not by the voxel grid, so that the field is the same at
    any spacing); corr: correlation length (same unit), the node pitch.
    """
    bases = []
    for ax, (lo, hi) in zip(axes, bounds):
        n = int(np.ceil((hi - lo) / corr)) + 3
        nodes = lo - corr + np.arange(n) * corr
        bases.append(_basis(np.asarray(ax), nodes, 0.75 * corr))
    coef = rng.standard_normal(tuple(b.shape[1] for b in bases)).astype(np.float32)
    # separable evaluation: three small matrix products instead of a per-voxel sum
    out = np.tensordot(coef, bases[2], axes=([2], [1]))  # (n0, n1, Z)
    out = np.tensordot(bases[1], out, axes=([1], [1]))  # (Y, n0, Z)
    out = np.tensordot(bases[0], out, axes=([1], [1]))  # (X, Y, Z)
    return np.ascontiguousarray(out, dtype=np.float32)


def smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, a cubic ramp between (float32)."""
    t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)
