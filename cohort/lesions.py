"""Lesion components and their sizes: the bookkeeping every tumor maker and metric shares.

A lesion is a 26-connected component of one lesion class. Its maximum axial
diameter is the longest in-plane extent (mm) over the axial slices it spans
(axis 2 is superior-inferior in RAS+ voxel order), the RECIST-style size that
radiologists report; "early" tumors are those of at most 20 mm (AbdomenAtlas
2.0 / the seed paper's early-tumor sensitivity).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import cc3d
import numpy as np
from scipy.spatial import ConvexHull, QhullError

from cohort import labels as L

EARLY_TUMOR_DIAMETER_MM = 20.0


@dataclass(frozen=True)
class LesionRecord:
    """One connected lesion. ``bbox`` is (lo, hi) voxel indices, hi exclusive."""

    label: int
    name: str
    voxels: int
    volume_ml: float
    max_axial_diameter_mm: float
    centroid_vox: tuple[float, float, float]
    bbox: tuple[tuple[int, int, int], tuple[int, int, int]]

    @property
    def early(self) -> bool:
        return self.max_axial_diameter_mm <= EARLY_TUMOR_DIAMETER_MM

    def as_dict(self) -> dict:
        d = asdict(self)
        d["early"] = self.early
        return d


def _max_feret_2d(points_mm: np.ndarray) -> float:
    """Longest distance between two points of a 2D point set (mm)."""
    if len(points_mm) < 2:
        return 0.0
    pts = points_mm
    if len(pts) > 3:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear points: the extreme pair lies on the hull anyway
            pass
    if len(pts) > 2000:
        pts = pts[:: len(pts) // 2000 + 1]
    diff = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def max_axial_diameter_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Largest in-plane diameter of a binary mask over its axial slices (mm).

    Measured between voxel centres, plus one in-plane voxel width so that a
    single voxel measures its own size rather than 0.
    """
    sx, sy = float(spacing[0]), float(spacing[1])
    best = 0.0
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    for z in zs:
        ij = np.argwhere(mask[:, :, z])
        if len(ij) == 0:
            continue
        d = _max_feret_2d(ij * np.array([sx, sy]))
        best = max(best, d)
    return best + (sx + sy) / 2.0 if zs.size else 0.0


def measure_lesions(label: np.ndarray, spacing: Sequence[float],
                    lesion_labels: Iterable[int] | None = None) -> list[LesionRecord]:
    """Every 26-connected lesion component in a label map, with its size.

    label: (X, Y, Z) integer vocabulary map; spacing: mm per axis. Components are
    found per lesion class, ordered by class then by decreasing size.
    """
    lesion_labels = tuple(L.LESION_LABELS if lesion_labels is None else lesion_labels)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: list[LesionRecord] = []
    for lab in lesion_labels:
        mask = label == lab
        if not mask.any():
            continue
        comps = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
        stats = cc3d.statistics(comps)
        ids = [i for i in range(1, len(stats["voxel_counts"])) if stats["voxel_counts"][i] > 0]
        ids.sort(key=lambda i: -int(stats["voxel_counts"][i]))
        for i in ids:
            sl = stats["bounding_boxes"][i]
            sub = comps[sl] == i
            lo = tuple(int(s.start) for s in sl)
            hi = tuple(int(s.stop) for s in sl)
            out.append(LesionRecord(
                label=int(lab),
                name=L.INDEX_TO_NAME[int(lab)],
                voxels=int(stats["voxel_counts"][i]),
                volume_ml=round(int(stats["voxel_counts"][i]) * voxel_ml, 4),
                max_axial_diameter_mm=round(max_axial_diameter_mm(sub, spacing), 3),
                centroid_vox=tuple(round(float(c), 2) for c in stats["centroids"][i]),
                bbox=(lo, hi),
            ))
    return out


def lesion_components(label: np.ndarray, lesion_label: int | None = None) -> tuple[np.ndarray, int]:
    """26-connected components of one lesion class (or all lesion classes): (ids, count)."""
    mask = np.isin(label, L.LESION_LABELS) if lesion_label is None else (label == lesion_label)
    comps, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    return comps, int(n)
