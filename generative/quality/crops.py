"""Tumor-centred crops: the discriminator's view of one tumor.

A crop is a fixed-size cube (default 32^3 voxels at 1.5 mm, a 48 mm field of view)
centred on one lesion component. A tumor wider than ``max_fill`` of that view is seen
at a coarser spacing, just enough to fit it into that fraction (a 60 mm liver tumor:
3.75 mm voxels), so that its boundary and surroundings stay in the crop; otherwise a
large tumor fills the crop and looks like nothing the filter learned (its real-tumor
scores were the lowest, benchmarks/RESULTS.md). Channel 0 is the CT
windowed to [-175, 250] HU and scaled to [0, 1] (the paper's preprocessing);
channel 1 is that tumor's mask. The crop is sampled straight from the case's
own grid (trilinear CT, nearest mask) so that the whole volume never has to be
resampled to score a handful of tumors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cc3d
import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.case import Case
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM, max_axial_diameter_mm
from cohort.preprocess import scale_hu

#: HU given to crop voxels that fall outside the scan (air).
OUTSIDE_HU = -1000.0


@dataclass
class CropConfig:
    """How a tumor crop is sampled. ``size`` voxels a side at ``spacing_mm`` (mm)."""

    size: int = 32
    spacing_mm: float = 1.5
    hu_min: float = -175.0
    hu_max: float = 250.0
    #: upper edges (mm, max axial diameter) of the size bins: early <= 20, medium <= 50, large above
    size_bins_mm: list[float] = field(default_factory=lambda: [EARLY_TUMOR_DIAMETER_MM, 50.0])
    #: components smaller than this are specks, not tumors, and are not judged
    min_voxels: int = 8
    #: the largest share of the crop's side a tumor's bounding box may span: wider tumors get a coarser
    #: spacing (0: always ``spacing_mm``, as discriminators saved before this setting were trained)
    max_fill: float = 0.5


SIZE_BIN_NAMES = ("early", "medium", "large")


def size_bin(diameter_mm: float, edges_mm: list[float] | tuple[float, ...]) -> str:
    """"early" (<= edges[0] mm), "medium" (<= edges[1] mm) or "large"."""
    if diameter_mm <= edges_mm[0]:
        return "early"
    if diameter_mm <= edges_mm[1]:
        return "medium"
    return "large"


@dataclass
class TumorInfo:
    """One lesion component of a case: where it is and how big (no pixels)."""

    case_id: str
    index: int  # order within the case: by lesion class, then by decreasing size
    label: int  # vocabulary index (27..32)
    lesion: str
    organ: str  # organ type the lesion class grows in ("liver", "kidney", ...)
    voxels: int
    volume_ml: float
    diameter_mm: float  # maximum axial diameter
    size_bin: str
    centroid_vox: tuple[float, float, float]
    bbox: tuple[tuple[int, int, int], tuple[int, int, int]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TumorCrop:
    """A tumor and its crop. ``image``: float32 (2, S, S, S); channel 0 CT in [0, 1], channel 1 mask {0, 1}."""

    info: TumorInfo
    image: np.ndarray


def tumor_components(label: np.ndarray) -> list[tuple[int, np.ndarray, tuple[slice, slice, slice]]]:
    """Every 26-connected lesion component: (lesion label, boolean mask inside bbox, bbox slices).

    Ordered like :func:`cohort.lesions.measure_lesions`: by class, then by decreasing size.
    """
    out = []
    for lab in L.LESION_LABELS:
        mask = label == lab
        if not mask.any():
            continue
        comps = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
        stats = cc3d.statistics(comps)
        counts = stats["voxel_counts"]
        ids = sorted((i for i in range(1, len(counts)) if counts[i] > 0), key=lambda i: -int(counts[i]))
        for i in ids:
            sl = tuple(stats["bounding_boxes"][i])
            out.append((int(lab), comps[sl] == i, sl))
    return out


def find_tumors(case: Case, config: CropConfig) -> list[tuple[TumorInfo, np.ndarray]]:
    """The case's tumors with their full-grid boolean masks, shape (X, Y, Z) each."""
    spacing = case.spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = []
    for lab, sub, sl in tumor_components(case.label):
        n = int(sub.sum())
        if n < config.min_voxels:
            continue
        lo = tuple(int(s.start) for s in sl)
        hi = tuple(int(s.stop) for s in sl)
        centroid = tuple(round(float(c + o), 2) for c, o in zip(ndimage.center_of_mass(sub), lo))
        diam = round(max_axial_diameter_mm(sub, spacing), 3)
        lesion = L.INDEX_TO_NAME[lab]
        info = TumorInfo(
            case_id=case.case_id, index=len(out), label=lab, lesion=lesion,
            organ=L.LESION_TO_ORGAN_TYPE.get(lesion, lesion), voxels=n, volume_ml=round(n * voxel_ml, 4),
            diameter_mm=diam, size_bin=size_bin(diam, config.size_bins_mm), centroid_vox=centroid, bbox=(lo, hi),
        )
        full = np.zeros(case.label.shape, dtype=bool)
        full[sl] = sub
        out.append((info, full))
    return out


def crop_spacing(extent_mm: float, config: CropConfig) -> float:
    """The crop's spacing (mm) for a tumor whose bounding box spans ``extent_mm`` at most: ``spacing_mm``,
    or coarser so that the tumor spans ``max_fill`` of the crop."""
    if config.max_fill <= 0:
        return float(config.spacing_mm)
    return float(max(config.spacing_mm, extent_mm / (config.max_fill * config.size)))


def mask_extent_mm(mask: np.ndarray, case_spacing: tuple[float, float, float]) -> float:
    """The largest side (mm) of the bounding box of a boolean mask (0 when empty)."""
    sl = ndimage.find_objects(mask.astype(np.uint8))
    if not sl or sl[0] is None:
        return 0.0
    return float(max((s.stop - s.start) * sp for s, sp in zip(sl[0], case_spacing)))


def bbox_extent_mm(bbox: tuple[tuple[int, ...], tuple[int, ...]], case_spacing: tuple[float, float, float]) -> float:
    """The largest side (mm) of a :class:`TumorInfo` bounding box ((lo), (hi) exclusive)."""
    return float(max((b - a) * sp for a, b, sp in zip(bbox[0], bbox[1], case_spacing)))


def crop_grid(centre_vox: tuple[float, float, float], case_spacing: tuple[float, float, float],
              config: CropConfig, spacing_mm: float | None = None) -> np.ndarray:
    """Voxel coordinates (3, S, S, S) of a crop of ``config.size``^3 at ``spacing_mm`` (default ``config.spacing_mm``)."""
    s = config.size
    offs = (np.arange(s, dtype=np.float64) - (s - 1) / 2.0) * (spacing_mm or config.spacing_mm)
    axes = [centre_vox[a] + offs / case_spacing[a] for a in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=0)


def sample_crop(ct: np.ndarray, mask: np.ndarray, centre_vox: tuple[float, float, float],
                case_spacing: tuple[float, float, float], config: CropConfig,
                extent_mm: float | None = None) -> np.ndarray:
    """Resample one (2, S, S, S) float32 crop: windowed CT in [0, 1] and the mask.

    ct: HU (X, Y, Z); mask: bool (X, Y, Z). Points outside the scan read as air. The spacing is
    :func:`crop_spacing` of the tumor's extent (``extent_mm``, measured from the mask when not given).
    """
    spacing = None
    if config.max_fill > 0:
        spacing = crop_spacing(mask_extent_mm(mask, case_spacing) if extent_mm is None else extent_mm, config)
    grid = crop_grid(centre_vox, case_spacing, config, spacing)
    # Only the bounding box of the grid is needed: sample a sub-volume to keep this cheap on big scans.
    lo = np.maximum(np.floor(grid.reshape(3, -1).min(1)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(grid.reshape(3, -1).max(1)).astype(int) + 2, np.array(ct.shape))
    if np.any(hi <= lo):  # crop entirely outside the scan
        img = np.zeros((2, config.size, config.size, config.size), np.float32)
        img[0] = scale_hu(np.full(1, OUTSIDE_HU), config.hu_min, config.hu_max)[0]
        return img
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = grid - lo.reshape(3, 1, 1, 1)
    ct_c = ndimage.map_coordinates(np.asarray(ct[sl], np.float32), local, order=1, mode="constant", cval=OUTSIDE_HU)
    m_c = ndimage.map_coordinates(mask[sl].astype(np.float32), local, order=0, mode="constant", cval=0.0)
    return np.stack([scale_hu(ct_c, config.hu_min, config.hu_max), (m_c > 0.5).astype(np.float32)]).astype(np.float32)


def tumor_crop(case: Case, info: TumorInfo, mask: np.ndarray, config: CropConfig) -> np.ndarray:
    """The crop of one tumor :func:`find_tumors` found in ``case`` (its centroid, its bounding box's extent)."""
    return sample_crop(case.ct, mask, info.centroid_vox, case.spacing, config, bbox_extent_mm(info.bbox, case.spacing))


def extract_crops(case: Case, config: CropConfig) -> list[TumorCrop]:
    """One crop per tumor of ``case`` (see module docstring for the two channels)."""
    return [TumorCrop(info, tumor_crop(case, info, mask, config)) for info, mask in find_tumors(case, config)]
