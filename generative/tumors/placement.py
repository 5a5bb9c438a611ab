"""Where a tumor goes: inside the organ, off its edge and off the vessels.

SyntheticTumors (Hu et al., CVPR 2023, ``random_select``) picks the centre on an
axial slice in the middle 30-70 % of the organ's superior-inferior extent, away
from the edge (a 5x5 erosion), and then clips the tumor to the organ. Here the
centre is drawn among organ voxels whose distance (mm) to the organ surface and
to any ``avoid`` voxel exceeds the tumor's largest radius plus ``margin_mm``,
and the drawn shape is checked to lie wholly inside; only when the organ is too
small for the requested size is the tumor clipped (``Placement.clipped``).

Tubular organs (colon, esophagus; :data:`cohort.tubes.TUBULAR_ORGANS`): the
solid-organ rule would centre every tumor in the lumen, the point of a tube
farthest from its surface, i.e. in gas or stool. :class:`WallPlacementSampler`
uses the same distance map the other way round, as a wall-distance map: the
centre is drawn among organ voxels within the wall band (depth from the outer
surface at most ``wall_mm``, :data:`cohort.tubes.WALL_MM`: colon 3 mm,
esophagus 4 mm) and away from ``avoid``; the drawn shape is clipped to the
organ, so it thickens the wall and bulges into the lumen, the way colorectal
and esophageal cancers grow (the part outside the outer wall is cut off: these
lesions are labelled inside the organ, like every other). :func:`sampler_for`
picks the sampler for an organ.

Stable API (the diffusion generator uses it):
:func:`place_tumor_mask`, :func:`place_tumor`, :class:`PlacementSampler`, :class:`Placement`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt

from cohort.tubes import WALL_MM, is_tubular
from generative.tumors.base import SynthesisError, bbox_of
from generative.tumors.shapes import SIZE_CLASSES_MM, ellipsoid_mask, sample_radii_mm

#: SyntheticTumors' band of the organ's axial (axis 2) extent for tumor centres
Z_BAND: tuple[float, float] = (0.3, 0.7)


@dataclass
class Placement:
    """A placed tumor. ``local`` is a bool mask over the organ crop ``box`` (slices into
    the full (X, Y, Z) volume); ``center_vox`` in full-volume voxel coordinates."""

    local: np.ndarray
    box: tuple[slice, slice, slice]
    center_vox: tuple[int, int, int]
    radii_mm: tuple[float, float, float]
    size_class: str | None
    clipped: bool
    tries: int
    site: str = "interior"  # "wall": centred in the wall band of a tubular organ and clipped to it

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask on the full grid, bool (X, Y, Z)."""
        out = np.zeros(shape, dtype=bool)
        out[self.box] = self.local
        return out

    def as_dict(self) -> dict:
        d = {"center_vox": list(self.center_vox), "radii_mm": [round(r, 2) for r in self.radii_mm],
             "size_class": self.size_class, "clipped": self.clipped, "placement_tries": self.tries}
        if self.site != "interior":
            d["site"] = self.site
        return d


class PlacementSampler:
    """Places tumors in one organ; the distance map (mm) is computed once for many tumors.

    organ_mask: bool (X, Y, Z); spacing: mm per axis; avoid: bool (X, Y, Z) voxels a tumor must
    keep ``margin_mm`` away from (vessels, existing lesions), or None.
    """

    def __init__(self, organ_mask: np.ndarray, spacing, avoid: np.ndarray | None = None,
                 margin_mm: float = 2.0, z_band: tuple[float, float] = Z_BAND):
        if not organ_mask.any():
            raise SynthesisError("organ mask is empty: nowhere to place a tumor")
        self.shape = tuple(organ_mask.shape)
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.margin_mm = float(margin_mm)
        self.box = bbox_of(organ_mask)
        inside = organ_mask[self.box].copy()
        self.organ_local = inside.copy()
        if avoid is not None:
            inside &= ~avoid[self.box]
        # pad with "outside" so the crop edge counts as organ surface
        padded = np.pad(inside, 1, constant_values=False)
        self.dist_mm = distance_transform_edt(padded, sampling=self.spacing)[1:-1, 1:-1, 1:-1].astype(np.float32)
        zs = np.flatnonzero(inside.any(axis=(0, 1)))
        if zs.size == 0:
            raise SynthesisError("every organ voxel is also an avoided voxel (vessel/lesion): nowhere to place a tumor")
        z0, z1 = int(zs[0]), int(zs[-1])
        self.z_lo = int(round(z0 + z_band[0] * (z1 - z0)))
        self.z_hi = int(round(z0 + z_band[1] * (z1 - z0)))

    def _candidates(self, need_mm: float) -> tuple[np.ndarray, bool]:
        band = np.zeros_like(self.dist_mm, dtype=bool)
        band[:, :, self.z_lo: self.z_hi + 1] = True
        for region in (band, np.ones_like(band)):
            cand = np.argwhere((self.dist_mm > need_mm) & region)
            if len(cand):
                return cand, False
        # too small for this size: the deepest voxels; the tumor will be clipped
        top = float(self.dist_mm.max())
        return np.argwhere(self.dist_mm >= 0.9 * top), True

    def place(self, rng: np.random.Generator, size: float | str, elastic: bool = True,
              max_tries: int = 32, occupied: np.ndarray | None = None) -> Placement:
        """Place one tumor. ``size``: a size class name (see :data:`SIZE_CLASSES_MM`) or a
        diameter in mm; radii are jittered x U(0.75, 1.25) per axis either way.
        ``occupied``: bool mask over the organ crop (``self.box``) of earlier tumors the new
        one should not touch; tried for 3/4 of the attempts, then overlap is allowed."""
        size_class = size if isinstance(size, str) else None
        radii_mm = sample_radii_mm(rng, size_class=size_class,
                                   diameter_mm=None if size_class else float(size))  # type: ignore[arg-type]
        radii_vox = radii_mm / self.spacing
        # elastic deformation pushes the surface out by a few voxels: leave room for it
        cand, too_small = self._candidates(float(radii_mm.max()) * (1.15 if elastic else 1.0) + self.margin_mm)
        allowed = self.dist_mm > self.margin_mm
        local, t = None, 0
        for t in range(1, max_tries + 1):
            c = cand[int(rng.integers(len(cand)))]
            local = ellipsoid_mask(self.dist_mm.shape, c, radii_vox, rng, elastic=elastic)
            if not local.any():
                continue
            if occupied is not None and t <= 3 * max_tries // 4 and (local & occupied).any():
                continue
            if too_small:
                break  # it will be clipped wherever it goes
            if not (local & ~allowed).any():
                return Placement(local, self.box, self._full_center(c), tuple(float(r) for r in radii_mm),
                                 size_class, False, t)
        if local is None:
            raise SynthesisError(f"could not draw a {size!r} tumor (radii {np.round(radii_vox, 2).tolist()} voxels)")
        # could not fit whole: keep what lies in the allowed region (or in the organ at worst)
        clipped = local & allowed
        if not clipped.any():
            clipped = local & self.organ_local
        if not clipped.any():
            raise SynthesisError(f"could not place a {size!r} tumor in an organ of {int(self.organ_local.sum())} voxels")
        return Placement(clipped, self.box, self._full_center(c), tuple(float(r) for r in radii_mm),
                         size_class, True, t)

    def occupy(self, occupied: np.ndarray, placement: Placement) -> None:
        """Mark a placed tumor, grown by one voxel, in ``occupied`` (bool over the organ crop)
        so that later tumors stay separate connected components."""
        sub = bbox_of(placement.local, margin=1)
        occupied[sub] |= binary_dilation(placement.local[sub], structure=np.ones((3, 3, 3), bool))  # 26-connected

    def _full_center(self, c) -> tuple[int, int, int]:
        return tuple(int(ci + s.start) for ci, s in zip(c, self.box))  # type: ignore[return-value]


class WallPlacementSampler(PlacementSampler):
    """Places tumors in the wall of a tubular organ (see the module doc).

    organ_mask: bool (X, Y, Z), the whole tube (wall and lumen); wall_mm: band width (default
    the organ's :data:`~cohort.tubes.WALL_MM`); ``dist_mm`` here is the wall-distance map:
    depth (mm) of each organ voxel below the outer surface. Centres keep ``margin_mm`` plus the
    tumor's radius from ``avoid`` voxels (earlier lesions, vessels) where they can.
    """

    def __init__(self, organ_mask: np.ndarray, spacing, avoid: np.ndarray | None = None,
                 margin_mm: float = 2.0, wall_mm: float = 3.0):
        super().__init__(organ_mask, spacing, avoid=None, margin_mm=margin_mm)
        self.wall_mm = float(wall_mm)
        self.avoid_local = None if avoid is None else avoid[self.box] & self.organ_local
        if self.avoid_local is not None and self.avoid_local.any():
            self.away_mm = distance_transform_edt(~self.avoid_local, sampling=self.spacing).astype(np.float32)
        else:
            self.away_mm = None
        self.wall = self.organ_local & (self.dist_mm <= self.wall_mm)
        if not self.wall.any():
            raise SynthesisError("the tubular organ has no wall voxels (empty mask)")

    def place(self, rng: np.random.Generator, size: float | str, elastic: bool = True,
              max_tries: int = 32, occupied: np.ndarray | None = None) -> Placement:
        """One wall tumor: the size draw as :meth:`PlacementSampler.place`, a centre in the wall band
        (off ``avoid`` by radius + margin when possible), the shape clipped to the organ minus
        ``avoid`` (and minus ``occupied`` for 3/4 of the tries)."""
        size_class = size if isinstance(size, str) else None
        radii_mm = sample_radii_mm(rng, size_class=size_class,
                                   diameter_mm=None if size_class else float(size))  # type: ignore[arg-type]
        radii_vox = radii_mm / self.spacing
        cand_mask = self.wall
        if self.away_mm is not None:
            far = cand_mask & (self.away_mm > float(radii_mm.max()) + self.margin_mm)
            cand_mask = far if far.any() else cand_mask & (self.away_mm > self.margin_mm)
        cand = np.argwhere(cand_mask)
        if len(cand) == 0:
            raise SynthesisError("no wall voxel of the tubular organ is free of existing lesions and vessels")
        allowed = self.organ_local if self.avoid_local is None else self.organ_local & ~self.avoid_local
        local, c, t = None, cand[0], 0
        for t in range(1, max_tries + 1):
            c = cand[int(rng.integers(len(cand)))]
            shape = ellipsoid_mask(self.dist_mm.shape, c, radii_vox, rng, elastic=elastic) & allowed
            if not shape.any():
                continue
            local = shape
            if occupied is None or t > 3 * max_tries // 4 or not (shape & occupied).any():
                break
        if local is None:
            raise SynthesisError(f"could not draw a {size!r} tumor on the wall "
                                 f"(radii {np.round(radii_vox, 2).tolist()} voxels)")
        return Placement(local, self.box, self._full_center(c), tuple(float(r) for r in radii_mm), size_class,
                         True, t, site="wall")


def sampler_for(organ: str, organ_mask: np.ndarray, spacing, avoid: np.ndarray | None = None,
                margin_mm: float = 2.0, wall_mm: float | None = None) -> PlacementSampler:
    """The placement sampler of an organ type: :class:`WallPlacementSampler` for tubular organs
    (colon, esophagus), :class:`PlacementSampler` (interior) for the others."""
    if is_tubular(organ):
        return WallPlacementSampler(organ_mask, spacing, avoid=avoid, margin_mm=margin_mm,
                                    wall_mm=WALL_MM[organ] if wall_mm is None else wall_mm)
    return PlacementSampler(organ_mask, spacing, avoid=avoid, margin_mm=margin_mm)


def place_tumor(organ_mask: np.ndarray, spacing, size: float | str, rng: np.random.Generator,
                avoid: np.ndarray | None = None, margin_mm: float = 2.0, elastic: bool = True) -> Placement:
    """Place one tumor (see :class:`PlacementSampler`); returns the :class:`Placement`."""
    return PlacementSampler(organ_mask, spacing, avoid=avoid, margin_mm=margin_mm).place(rng, size, elastic=elastic)


def place_tumor_mask(organ_mask: np.ndarray, spacing, size: float | str, rng: np.random.Generator,
                     avoid: np.ndarray | None = None, margin_mm: float = 2.0, elastic: bool = True) -> np.ndarray:
    """A tumor mask, bool (X, Y, Z), inside ``organ_mask`` and more than ``margin_mm`` from its
    surface and from ``avoid`` (e.g. the vessel mask).

    size: diameter in mm (float) or a size class ("tiny", "small", "medium", "large";
    radii 4/8/16/32 mm). Radii are jittered x U(0.75, 1.25) per axis and the ellipsoid
    is elastically deformed when ``elastic``. When the organ is too small for the size,
    the tumor is clipped to the allowed region rather than refused.
    """
    return place_tumor(organ_mask, spacing, size, rng, avoid=avoid, margin_mm=margin_mm, elastic=elastic).full(
        tuple(organ_mask.shape))


__all__ = ["Z_BAND", "Placement", "PlacementSampler", "WallPlacementSampler", "place_tumor", "place_tumor_mask",
           "sampler_for", "SIZE_CLASSES_MM"]
