"""Surface distances and the normalized surface Dice (NSD), DeepMind semantics.

The semantics follow Nikolov et al., "Clinically applicable segmentation of
head and neck anatomy for radiotherapy" (2021) and DeepMind's
``surface-distance`` package, which the Medical Segmentation Decathlon,
FLARE and AbdomenAtlas report NSD with:

* surface points are the corners of the voxel grid (points between 2x2x2
  voxel neighbourhoods) whose neighbourhood is neither all inside nor all
  outside the mask;
* each such point carries the area (mm^2) of the marching-cubes surface
  element of its neighbourhood code, computed for the voxel spacing;
* distances (mm) are Euclidean distances between surface points of the two
  masks, via a distance transform with ``sampling=spacing``;
* NSD at tolerance tau = (area of GT surface within tau of the predicted
  surface + area of predicted surface within tau of the GT surface) /
  (GT area + predicted area).

The two distance metrics beside NSD come from the same surface points, as
DeepMind's ``compute_robust_hausdorff`` and
``compute_average_surface_distance`` define them:

* HD95 (robust Hausdorff at 95 %): each direction's distances are sorted and
  weighted by their surface element areas; the directed 95th percentile is
  the first distance at which the cumulative area reaches 95 % of that
  surface's area. HD95 is the larger of the two directed percentiles (GT to
  prediction, prediction to GT), in mm.
* MSD (mean surface distance): the area-weighted mean distance of each
  direction, and MSD the average of the two directed means, in mm. (This is
  not the "ASSD" of MONAI or medpy, which pools all surface points of both
  masks with equal weights.)
* Empty masks: both empty -> NaN (not applicable); exactly one empty -> inf
  (no surface to reach: DeepMind's value, which its release 0.1 cannot
  compute under NumPy 2 because it writes ``np.Inf``). The metric
  functions of :mod:`evaluation.metrics` only compute them on tumor-positive
  cases, so inf there means an empty prediction of a present lesion class.

The area table is generated here from geometry rather than typed in: for
each of the 256 neighbourhood codes the surface is the set of polygons
through the midpoints of the cube edges that cross the mask boundary. The
choices the published table makes are reproduced by three rules (checked
against DeepMind's table, all 256 codes, at three anisotropic spacings):
configurations with more than four corners inside use their complement (the
classic marching-cubes table derives them that way, so code c and 255 - c
have the same surface); on a face with two diagonal inside corners the
corners are cut off separately; and each polygon is split into the
triangles of its largest-area triangulation. A triangle's area at spacing
(s0, s1, s2) is the norm of its unit-grid area vector scaled by
(s1*s2, s0*s2, s0*s1).

Speed: everything runs on the bounding box of the union of both masks,
padded by one voxel so that the neighbourhood codes of the outermost
corners see the background. No larger margin is needed: every surface
point of both masks lies inside that box, and a distance transform gives
the exact distance to the nearest zero of its own array, so cropping
changes no distance (``crop=False`` computes on the full grid to show it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: corner (a, b, c) of a 2x2x2 neighbourhood is bit 4a + 2b + c of its code
_CORNERS: tuple[tuple[int, int, int], ...] = tuple((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1))
_EDGES: tuple[tuple[int, int], ...] = tuple(
    (i, j) for i in range(8) for j in range(i + 1, 8)
    if sum(abs(p - q) for p, q in zip(_CORNERS[i], _CORNERS[j])) == 1
)
_FACES: tuple[tuple[int, ...], ...] = tuple(
    tuple(i for i, p in enumerate(_CORNERS) if p[axis] == side) for axis in range(3) for side in (0, 1)
)


def _polygons(inside: Sequence[int]) -> list[np.ndarray]:
    """Closed surface polygons of one cube configuration, as (V, 3) unit-grid vertices."""
    cut = [k for k, (i, j) in enumerate(_EDGES) if inside[i] != inside[j]]
    links: dict[int, list[int]] = {k: [] for k in cut}
    for face in _FACES:
        on_face = [k for k in cut if _EDGES[k][0] in face and _EDGES[k][1] in face]
        if len(on_face) == 2:
            pairs = [on_face]
        elif len(on_face) == 4:
            # ambiguous face: cut each inside corner off on its own
            pairs = [[k for k in on_face if c in _EDGES[k]] for c in face if inside[c]]
        else:
            pairs = []
        for a, b in pairs:
            links[a].append(b)
            links[b].append(a)
    polys, seen = [], set()
    for start in cut:
        if start in seen:
            continue
        cycle, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = links[cur][0] if links[cur][0] != prev else links[cur][1]
            if nxt == start:
                break
            cycle.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        verts = [(np.array(_CORNERS[_EDGES[k][0]]) + np.array(_CORNERS[_EDGES[k][1]])) / 2.0 for k in cycle]
        polys.append(np.array(verts, dtype=np.float64))
    return polys


def _triangulations(lo: int, hi: int, memo: dict) -> list[list[tuple[int, int, int]]]:
    """Every triangulation of the polygon chain lo..hi closed by the edge (lo, hi)."""
    if hi - lo < 2:
        return [[]]
    key = (lo, hi)
    if key not in memo:
        out = []
        for k in range(lo + 1, hi):
            for left in _triangulations(lo, k, memo):
                for right in _triangulations(k, hi, memo):
                    out.append(left + right + [(lo, k, hi)])
        memo[key] = out
    return memo[key]


def _area_vectors(poly: np.ndarray, tris: list[tuple[int, int, int]]) -> np.ndarray:
    """(T, 3) area vectors (half cross products) of triangles of ``poly``."""
    i, j, k = (np.array(t) for t in zip(*tris))
    return 0.5 * np.cross(poly[j] - poly[i], poly[k] - poly[i])


@functools.cache
def _surfel_triangles() -> tuple[np.ndarray, np.ndarray]:
    """All surface triangles of the 256 codes: (code (T,), unit-grid area vector (T, 3))."""
    codes, vectors = [], []
    for code in range(256):
        c = code if bin(code).count("1") <= 4 else 255 - code
        inside = [(c >> bit) & 1 for bit in range(8)]
        for poly in _polygons(inside):
            candidates = [_area_vectors(poly, t) for t in _triangulations(0, len(poly) - 1, {})]
            best = max(candidates, key=lambda v: float(np.linalg.norm(v, axis=1).sum()))
            codes += [code] * len(best)
            vectors.append(best)
    return np.array(codes, dtype=np.int64), np.concatenate(vectors)


@functools.lru_cache(maxsize=64)
def _area_table_cached(spacing: tuple[float, float, float]) -> np.ndarray:
    codes, vec = _surfel_triangles()
    s0, s1, s2 = spacing
    areas = np.linalg.norm(vec * np.array([s1 * s2, s0 * s2, s0 * s1]), axis=1)
    table = np.bincount(codes, weights=areas, minlength=256)
    table.setflags(write=False)
    return table


def surface_area_table(spacing: Sequence[float]) -> np.ndarray:
    """Area (mm^2) of the surface element of each 2x2x2 neighbourhood code, shape (256,).

    Bit ``4a + 2b + c`` of a code is voxel (i + a, j + b, k + c) of the
    neighbourhood. (DeepMind's kernel numbers the corners the other way round:
    their code is this code with its 8 bits reversed.)
    """
    return _area_table_cached(tuple(float(s) for s in spacing))


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every voxel corner of a padded mask.

    mask: (X, Y, Z) bool, already padded with one background voxel on each
    side. Returns uint8 codes of shape (X - 1, Y - 1, Z - 1); entry (i, j, k)
    describes voxels i..i+1, j..j+1, k..k+1.
    """
    m = mask.astype(np.uint8, copy=False)
    x, y, z = (n - 1 for n in m.shape)
    code = np.zeros((x, y, z), dtype=np.uint8)
    for bit, (a, b, c) in enumerate(_CORNERS):
        code |= m[a:a + x, b:b + y, c:c + z] << np.uint8(bit)
    return code


@dataclass
class SurfaceDistances:
    """Surface points of two masks and their distances to the other surface.

    distances_gt_to_pred: (Ng,) mm from each GT surface point to the nearest
        predicted surface point (inf when the prediction is empty).
    distances_pred_to_gt: (Np,) mm, the other way.
    areas_gt, areas_pred: (Ng,), (Np,) surface element areas in mm^2.
    """

    distances_gt_to_pred: np.ndarray
    distances_pred_to_gt: np.ndarray
    areas_gt: np.ndarray
    areas_pred: np.ndarray

    def surface_dice(self, tolerance_mm: float) -> float:
        """NSD at ``tolerance_mm``: NaN when both masks are empty, 0 when exactly one is."""
        total = float(self.areas_gt.sum() + self.areas_pred.sum())
        if total == 0.0:
            return float("nan")
        hit = float(self.areas_gt[self.distances_gt_to_pred <= tolerance_mm].sum()
                    + self.areas_pred[self.distances_pred_to_gt <= tolerance_mm].sum())
        return hit / total

    def _empty(self) -> float | None:
        """NaN when both surfaces are empty, inf when one is, None when both exist."""
        n_gt, n_pred = self.areas_gt.size, self.areas_pred.size
        if n_gt == 0 and n_pred == 0:
            return float("nan")
        if n_gt == 0 or n_pred == 0:
            return float("inf")
        return None

    def robust_hausdorff(self, percent: float = 95.0) -> float:
        """Larger of the two directed area-weighted ``percent``-th percentile distances (mm).

        NaN when both masks are empty, inf when exactly one is (see module docs).
        """
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"percent must be in [0, 100], got {percent}")
        special = self._empty()
        if special is not None:
            return special
        return max(_directed_percentile(self.distances_gt_to_pred, self.areas_gt, percent),
                   _directed_percentile(self.distances_pred_to_gt, self.areas_pred, percent))

    def directed_mean_distances(self) -> tuple[float, float]:
        """Area-weighted mean distance (mm) GT -> prediction and prediction -> GT."""
        special = self._empty()
        if special is not None:
            return special, special
        return (float(np.sum(self.distances_gt_to_pred * self.areas_gt) / np.sum(self.areas_gt)),
                float(np.sum(self.distances_pred_to_gt * self.areas_pred) / np.sum(self.areas_pred)))

    def mean_surface_distance(self) -> float:
        """Average of the two directed area-weighted mean distances (mm); NaN both empty, inf one empty."""
        a, b = self.directed_mean_distances()
        return (a + b) / 2.0


def _directed_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """First distance (ascending) at which the cumulative area share reaches ``percent`` %."""
    order = np.argsort(distances, kind="stable")
    d, a = distances[order], areas[order]
    share = np.cumsum(a) / np.sum(a)
    i = int(np.searchsorted(share, percent / 100.0))  # first index with share >= percent
    return float(d[min(i, d.size - 1)])


def _union_bbox(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of ``a | b`` as slices, or None when both are empty."""
    out = []
    for axis in range(a.ndim):
        others = tuple(i for i in range(a.ndim) if i != axis)
        proj = np.flatnonzero(a.any(axis=others) | b.any(axis=others))
        if proj.size == 0:
            return None
        out.append(slice(int(proj[0]), int(proj[-1]) + 1))
    return tuple(out)


def surface_distances(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], *,
                      crop: bool = True) -> SurfaceDistances:
    """Surface points, their areas and their distances to the other mask's surface.

    gt, pred: (X, Y, Z) boolean masks on the same grid; spacing: mm per axis.
    ``crop=False`` runs on the whole grid (same result, slower; for checks).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"masks must be 3D and on the same grid, got {gt.shape} and {pred.shape}")
    if len(spacing) != 3:
        raise ValueError(f"spacing must have 3 values (mm), got {tuple(spacing)}")
    spacing = tuple(float(s) for s in spacing)
    empty = np.zeros(0)
    box = _union_bbox(gt, pred) if crop else tuple(slice(0, n) for n in gt.shape)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    table = surface_area_table(spacing)
    codes_gt = neighbour_codes(np.pad(gt[box], 1))
    codes_pred = neighbour_codes(np.pad(pred[box], 1))
    border_gt = (codes_gt != 0) & (codes_gt != 255)
    border_pred = (codes_pred != 0) & (codes_pred != 255)

    def dist_to(border: np.ndarray) -> np.ndarray:
        if not border.any():
            return np.full(border.shape, np.inf)
        return ndimage.distance_transform_edt(~border, sampling=spacing)

    # only the distances at the other mask's surface points are needed
    d_gt = dist_to(border_gt)[border_pred] if border_pred.any() else empty
    d_pred = dist_to(border_pred)[border_gt] if border_gt.any() else empty
    return SurfaceDistances(
        distances_gt_to_pred=d_pred,
        distances_pred_to_gt=d_gt,
        areas_gt=table[codes_gt[border_gt]],
        areas_pred=table[codes_pred[border_pred]],
    )


def normalized_surface_dice(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float = 2.0, *, crop: bool = True) -> float:
    """NSD of two (X, Y, Z) masks at ``tolerance_mm`` (spacing in mm).

    Both empty: NaN (undefined; callers exclude the case). One empty: 0.0.
    """
    return surface_distances(gt, pred, spacing, crop=crop).surface_dice(tolerance_mm)


@dataclass(frozen=True)
class SurfaceMetrics:
    """NSD, HD95 and MSD of one pair of masks, from one set of surface distances (mm)."""

    nsd: float
    hd95: float
    msd: float


def surface_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0,
                    percent: float = 95.0, *, crop: bool = True) -> SurfaceMetrics:
    """NSD at ``tolerance_mm``, HD95 (robust Hausdorff at ``percent``) and mean surface distance.

    gt, pred: (X, Y, Z) boolean masks; spacing: mm per axis. One distance
    computation serves all three. Both masks empty: all NaN; exactly one
    empty: NSD 0, HD95 and MSD inf.
    """
    sd = surface_distances(gt, pred, spacing, crop=crop)
    return SurfaceMetrics(sd.surface_dice(tolerance_mm), sd.robust_hausdorff(percent), sd.mean_surface_distance())


def hausdorff_distance_95(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], percent: float = 95.0, *,
                          crop: bool = True) -> float:
    """HD95 (mm) of two (X, Y, Z) masks: the larger directed area-weighted 95th percentile distance."""
    return surface_distances(gt, pred, spacing, crop=crop).robust_hausdorff(percent)


def mean_surface_distance(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], *, crop: bool = True) -> float:
    """Mean surface distance (mm): the average of the two directed area-weighted means."""
    return surface_distances(gt, pred, spacing, crop=crop).mean_surface_distance()
