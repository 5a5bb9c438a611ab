"""Tubular (hollow) organs: the wall-distance map, a local tube frame and wall-based masses.

Tumors of the colon and the esophagus grow in and from the wall: a focal wall
thickening on one side, an annular mass that narrows the lumen over a length of
the tube, or a polypoid mass that hangs into the lumen from a base on the wall.
The solid-organ rule "centre the tumor deep inside the organ" puts it in the
lumen (the point of a tube farthest from its surface), so every tumor maker
places these from the wall instead. This module is the one geometry they share
(the phantom's tumors, :mod:`generative.tumors.placement`, the CA maker):

- :class:`WallMap`: over an organ mask (the whole tube, wall and lumen, as
  AbdomenAtlas and TotalSegmentator label it), ``depth_mm``, the distance of
  every organ voxel from the organ's outer surface (the wall-distance map), and
  the wall band (organ voxels within ``wall_mm`` of the surface, or not lumen when
  the lumen is known);
- :meth:`WallMap.frame`: the tube's local axis, centre and inward direction at
  a wall voxel (principal axis of the organ voxels around it);
- :func:`wall_mass`: the implicit shape ``f`` (the mass is ``f <= 1``) of a focal,
  annular or polypoid mass in that frame.

Arrays are (X, Y, Z) voxel grids, lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: organ types whose tumors grow from the wall (vocabulary names equal the types)
TUBULAR_ORGANS: tuple[str, ...] = ("colon", "esophagus")
#: width (mm) of the wall band when the lumen is not known: a little more than the wall
#: (colon 1-3 mm, esophagus 3-5 mm on CT) so that a 1-1.5 mm grid still resolves it
WALL_MM: dict[str, float] = {"colon": 3.0, "esophagus": 4.0}
#: the three kinds of wall-based mass
WALL_KINDS: tuple[str, ...] = ("focal", "annular", "polypoid")


def is_tubular(organ: str) -> bool:
    """Whether tumors of ``organ`` (a type or vocabulary name) grow from a wall."""
    return organ in TUBULAR_ORGANS


@dataclass
class TubeFrame:
    """The tube around a wall voxel, in mm relative to the crop's voxel (0, 0, 0).

    axis: unit vector along the tube; centre: a point on its centre line in the anchor's
    cross-section; inward: unit vector from the anchor toward the centre (perpendicular to
    the axis); r_out: outer radius on the anchor's side (mm); anchor: the wall point (mm).
    """

    axis: np.ndarray
    centre: np.ndarray
    inward: np.ndarray
    r_out: float
    anchor: np.ndarray


class WallMap:
    """The wall-distance map of one tubular organ over its bounding box.

    organ: bool (X, Y, Z) the whole tube (wall and lumen); spacing: mm; wall_mm: band width
    used when ``lumen`` is None; lumen: bool (X, Y, Z) known lumen voxels (gas, fluid,
    stool), e.g. from the phantom's tissues or from HU. ``box``: the crop (slices of the
    full grid); ``depth_mm``: float32 over the crop, distance to the nearest voxel outside
    the organ (0 outside); ``wall``: bool over the crop.
    """

    def __init__(self, organ: np.ndarray, spacing, wall_mm: float = 3.0, lumen: np.ndarray | None = None,
                 box: tuple[slice, ...] | None = None):
        if not organ.any():
            raise ValueError("tubular organ mask is empty: no wall to place a tumor on")
        self.spacing = np.asarray(spacing, np.float64)
        if box is None:
            objs = ndimage.find_objects(organ.astype(np.uint8))[0]
            box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(objs, organ.shape))
        self.box = box
        self.organ = organ[box]
        padded = np.pad(self.organ, 1, constant_values=False)
        self.depth_mm = ndimage.distance_transform_edt(padded, sampling=self.spacing)[1:-1, 1:-1, 1:-1].astype(np.float32)
        self.wall_mm = float(wall_mm)
        self.lumen = None if lumen is None else (lumen[box] & self.organ)
        if lumen is not None:
            self.wall = self.organ & ~self.lumen
        else:
            self.wall = self.organ & (self.depth_mm <= self.wall_mm)
        if not self.wall.any():
            self.wall = self.organ & (self.depth_mm <= self.depth_mm.max())

    def thickness_mm(self) -> float:
        """The wall's thickness (mm): the median depth of the lumen voxels next to the wall when
        the lumen is known, else the band width ``wall_mm``."""
        if self.lumen is None or not self.lumen.any():
            return self.wall_mm
        edge = self.lumen & ndimage.binary_dilation(self.wall)
        if not edge.any():
            return self.wall_mm
        return float(np.median(self.depth_mm[edge]))

    def candidates(self, free: np.ndarray | None = None) -> np.ndarray:
        """(k, 3) crop voxel indices of wall voxels (inside the organ, within the band), optionally
        also ``free`` (bool over the crop)."""
        m = self.wall if free is None else self.wall & free
        return np.argwhere(m)

    def coords_mm(self, sub: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse mm coordinates (crop frame) of the voxels of ``sub`` (slices of the crop)."""
        axes = [(np.arange(s.start, s.stop, dtype=np.float32) * np.float32(sp)) for s, sp in zip(sub, self.spacing)]
        return tuple(np.meshgrid(*axes, indexing="ij", sparse=True))  # type: ignore[return-value]

    def frame(self, anchor: np.ndarray) -> TubeFrame:
        """The local tube frame at the crop voxel ``anchor`` (a wall voxel)."""
        sp = self.spacing
        a_mm = np.asarray(anchor, np.float64) * sp
        # the tube's radius near the anchor: the deepest organ voxel within a window around it
        win = max(12.0, 4.0 * self.wall_mm)
        sub = self._window(anchor, win)
        r_loc = max(float(self.depth_mm[sub].max()), float(sp.min()))
        sub = self._window(anchor, 2.5 * r_loc + 2.0 * float(sp.max()))
        pts = (np.argwhere(self.organ[sub]) + [s.start for s in sub]) * sp
        near = pts[((pts - a_mm) ** 2).sum(1) <= (2.5 * r_loc + 2.0 * float(sp.max())) ** 2]
        if len(near) < 4:
            near = pts if len(pts) >= 4 else np.vstack([pts, a_mm[None]] * 4)
        cov = np.cov((near - near.mean(0)).T)
        axis = np.linalg.eigh(cov)[1][:, -1]
        # the anchor's cross-section: organ voxels in a slab through the anchor, perpendicular to the axis
        slab = near[np.abs((near - a_mm) @ axis) <= 0.75 * float(sp.max())]
        centre = slab.mean(0) if len(slab) else near.mean(0)
        inward = centre - a_mm
        inward -= (inward @ axis) * axis
        norm = float(np.linalg.norm(inward))
        if norm < 1e-6:  # anchor on the centre line (a collapsed tube): any perpendicular
            inward = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
            norm = float(np.linalg.norm(inward))
        inward /= norm
        depth = float(self.depth_mm[tuple(int(v) for v in anchor)])
        r_out = max(float(np.linalg.norm((centre - a_mm) - ((centre - a_mm) @ axis) * axis)) + depth, r_loc,
                    float(sp.min()))
        return TubeFrame(axis=axis, centre=centre, inward=inward, r_out=r_out, anchor=a_mm)

    def _window(self, anchor, half_mm: float) -> tuple[slice, ...]:
        half = np.ceil(half_mm / self.spacing).astype(int)
        return tuple(slice(max(int(a - h), 0), min(int(a + h + 1), n))
                     for a, h, n in zip(anchor, half, self.organ.shape))

    def crop_around(self, anchor, half_mm: float) -> tuple[slice, ...]:
        """Slices of the crop within ``half_mm`` of ``anchor`` (clipped)."""
        return self._window(anchor, half_mm)


@dataclass
class WallMassParams:
    """One wall-based mass. kind: focal | annular | polypoid; r: size scale (mm, about the
    radius of its largest extent); length: annular length / focal extent along the tube
    as a multiple of ``r``; arc: focal half-width across the tube as a multiple of ``r``;
    thickness: focal inward thickening as a multiple of ``r`` (capped by the lumen);
    stenosis: annular narrowing of the lumen (0 none, 1 occluded); wobble: contour
    irregularity (fraction)."""

    kind: str
    r: float
    length: float = 1.1
    arc: float = 0.9
    thickness: float = 0.5
    stenosis: float = 0.7
    wobble: float = 0.1

    def scaled(self, r: float) -> WallMassParams:
        return WallMassParams(self.kind, float(r), self.length, self.arc, self.thickness, self.stenosis, self.wobble)


def draw_mass_params(rng: np.random.Generator, kind: str, r: float) -> WallMassParams:
    """The shape draws of one mass, in a fixed order whatever the kind."""
    if kind not in WALL_KINDS:
        raise ValueError(f"unknown wall-mass kind {kind!r}; expected one of {WALL_KINDS}")
    length, arc, thick, sten, wob = (rng.uniform(0.9, 1.3), rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.6),
                                     rng.uniform(0.5, 0.95), rng.uniform(0.05, 0.15))
    return WallMassParams(kind, float(r), float(length), float(arc), float(thick), float(sten), float(wob))


def wall_mass(fr: TubeFrame, p: WallMassParams, coords: tuple[np.ndarray, np.ndarray, np.ndarray],
              wall_mm: float, noise: np.ndarray | None = None) -> np.ndarray:
    """Implicit shape ``f`` (float32, the coordinates' broadcast shape): the mass is ``f <= 1``.

    coords: mm coordinates (crop frame, as :meth:`WallMap.coords_mm`); wall_mm: the wall's
    thickness (mm); noise: optional unit-variance field (same shape) that roughens the
    contour by ``p.wobble``. The caller clips the mass to the organ.

    - focal: a lens on the anchor's side of the wall, ``length * r`` along the tube and
      ``arc * r`` around it, thickening the wall inward by up to ``thickness * r``;
    - annular: the whole circumference over ``length * r`` each side of the anchor's
      cross-section, narrowing the lumen to ``1 - stenosis`` of its radius at the middle;
    - polypoid: a ball of radius ``r`` in the lumen touching the wall at the anchor, joined
      to the wall by a base of radius ``0.5 r``.
    """
    dx = coords[0] - np.float32(fr.centre[0])
    dy = coords[1] - np.float32(fr.centre[1])
    dz = coords[2] - np.float32(fr.centre[2])
    t, n = fr.axis.astype(np.float32), fr.inward.astype(np.float32)
    b = np.cross(t, n).astype(np.float32)
    a = dx * t[0] + dy * t[1] + dz * t[2]  # along the tube
    qn = -(dx * n[0] + dy * n[1] + dz * n[2])  # toward the anchor's side
    qb = dx * b[0] + dy * b[1] + dz * b[2]
    rho = np.sqrt(qn * qn + qb * qb)  # distance from the centre line
    r_out = np.float32(fr.r_out)
    r_in = np.float32(max(fr.r_out - wall_mm, 0.25 * fr.r_out))
    r = np.float32(max(p.r, 1e-3))
    if p.kind == "annular":
        half = np.float32(max(p.length * p.r, 1e-3))
        u = np.abs(a) / half
        r_res = r_in * (1.0 - np.float32(p.stenosis) * np.clip(1.0 - u * u, 0.0, 1.0))
        g = (r_out - rho) / np.maximum(r_out - r_res, np.float32(1e-3))
        f = np.maximum(u, g)
    elif p.kind == "focal":
        ra = np.float32(max(p.length * p.r, 1e-3))
        theta = np.abs(np.arctan2(qb, qn))  # 0 on the anchor's side
        th_max = np.float32(min(p.arc * p.r / fr.r_out, 0.8 * np.pi))
        e = np.sqrt((a / ra) ** 2 + (theta / th_max) ** 2)
        h = np.float32(min(p.thickness * p.r, 0.9 * float(r_in)))
        g = (r_out - rho) / (np.float32(wall_mm) + h * np.clip(1.0 - e * e, 0.0, 1.0) + np.float32(1e-3))
        f = np.maximum(e, g)
    elif p.kind == "polypoid":
        # the ball's centre sits r inside the inner wall surface (at most half the lumen past the centre line)
        c = np.float32(max(float(r_in) - p.r, -0.5 * float(r_in)))
        pc = (qn - c) ** 2 + qb * qb + a * a
        ball = np.sqrt(pc) / r
        base = np.sqrt((qn - (r_out - np.float32(wall_mm) * 0.5)) ** 2 + qb * qb + a * a) / (np.float32(0.5) * r)
        f = np.minimum(ball, base)
    else:
        raise ValueError(f"unknown wall-mass kind {p.kind!r}; expected one of {WALL_KINDS}")
    if noise is not None and p.wobble:
        f = f * (1.0 + np.float32(p.wobble) * noise)
    return f.astype(np.float32)
