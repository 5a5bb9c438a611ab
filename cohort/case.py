"""A case: CT, label map on the same grid, geometry and provenance.

``Case`` holds arrays in memory; ``CaseRef`` points at files and loads on
demand, so a cohort of hundreds of CTs can be listed without reading them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cohort import labels as L
from cohort.errors import CohortError
from cohort.io import ImageMeta


@dataclass
class Case:
    """One case in memory.

    ct: float32 HU, shape (X, Y, Z), RAS+ voxel axes when it came through
        :func:`cohort.preprocess.to_ras`.
    label: uint8 vocabulary indices (see :mod:`cohort.labels`), same shape.
    affine: 4x4 voxel -> world (mm).
    meta: provenance (the JSON sidecar): source, real/synthetic, generator,
        seed, tumors, ...
    """

    case_id: str
    ct: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ct.shape)

    @property
    def image_meta(self) -> ImageMeta:
        return ImageMeta.from_affine(self.affine, self.ct.shape, self.meta.get("source_path"))

    def mask(self, name_or_type: str) -> np.ndarray:
        """Boolean mask of an organ type ("kidney" = both), organ or lesion name."""
        return np.isin(self.label, L.organ_indices(name_or_type))

    def has(self, name_or_type: str) -> bool:
        return bool(self.mask(name_or_type).any())

    def present_labels(self) -> list[str]:
        return [L.INDEX_TO_NAME[int(v)] for v in np.unique(self.label) if v != 0]

    def copy(self) -> Case:
        return Case(self.case_id, self.ct.copy(), self.label.copy(), np.array(self.affine), dict(self.meta))


@dataclass
class CaseRef:
    """A case on disk, not yet read. ``loader`` reads and maps it onto the vocabulary."""

    case_id: str
    image: Path
    label: Path | None
    layout: str
    loader: Callable[[CaseRef], Case] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    sidecar: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def load(self) -> Case:
        if self.loader is None:
            raise CohortError(self.image, "case reference has no loader")
        return self.loader(self)
