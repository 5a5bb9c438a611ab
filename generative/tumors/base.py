"""One interface for every tumor maker: CA, rule-based and the diffusion sampler.

A synthesizer takes a healthy CT (HU), its label map (vocabulary indices, see
:mod:`cohort.labels`), the voxel spacing, a :class:`TumorSpec` and a NumPy
random generator, and returns a :class:`SynthesisResult`: the new CT, the new
label map and one record per synthesized tumor (size bookkeeping from
:func:`cohort.lesions.measure_lesions` plus method details). Inputs are never
modified; the same generator state gives the same result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cohort import labels as L
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM, measure_lesions

#: label names that count as vessels inside an organ (tumors are kept off them where the method allows)
VESSEL_NAMES: tuple[str, ...] = ("hepatic_vessel", "portal_vein_and_splenic_vein", "aorta", "postcava")


class SynthesisError(ValueError):
    """A case on which a tumor cannot be synthesized (no organ, organ too small, ...)."""


@dataclass
class TumorSpec:
    """What to synthesize.

    organ: organ type ("liver", "pancreas", "kidney" = either kidney, ...) or organ name.
    size: size class ("tiny", "small", "medium", "large", "mix") or None for the method's
        default. Rules/diffusion draw ellipsoids of that class; the CA grows one seed until
        the class diameter (2 x radius x U(0.75, 1.25)) is reached.
    diameter_mm: a target diameter instead of a size class (mm), or None.
    steps: CA growth steps (None: sampled the way Pixel2Cancer does, U{5..max-1}, unless a
        size or diameter is given); wins over size/diameter for the CA.
    count: number of tumors (rules: per size class; CA: number of seeds), None for the
        method's default range.
    """

    organ: str = "liver"
    size: str | None = None
    diameter_mm: float | None = None
    steps: int | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        L.organ_indices(self.organ)  # raises UnknownLabelError naming the organ
        L.lesion_index_for(self.organ)
        if self.diameter_mm is not None and self.diameter_mm <= 0:
            raise ValueError(f"TumorSpec.diameter_mm must be > 0, got {self.diameter_mm}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"TumorSpec.steps must be >= 1, got {self.steps}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"TumorSpec.count must be >= 1, got {self.count}")

    @staticmethod
    def parse(text: str) -> TumorSpec:
        """Parse "organ=liver,size=small,count=2" (the CLI's inline form)."""
        kw: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise ValueError(f"bad tumor spec {text!r}: expected key=value pairs, got {part!r}")
            k, v = (s.strip() for s in part.split("=", 1))
            if k in ("steps", "count"):
                kw[k] = int(v)
            elif k == "diameter_mm":
                kw[k] = float(v)
            elif k in ("organ", "size"):
                kw[k] = v
            else:
                raise ValueError(f"bad tumor spec {text!r}: unknown key {k!r} (organ, size, diameter_mm, steps, count)")
        return TumorSpec(**kw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SynthesisResult:
    """ct: float32 HU (X, Y, Z); label: uint8 vocabulary (X, Y, Z); records: one dict per
    synthesized tumor (organ, label, voxels, volume_ml, max_axial_diameter_mm, early,
    centroid_vox, bbox, method, ...); info: method-level details (seeds, steps, ...)."""

    ct: np.ndarray
    label: np.ndarray
    records: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Synthesizer(Protocol):
    """Anything that turns a healthy case into a tumor-bearing one.

    ``__call__(ct_hu (X, Y, Z) float32 HU, label (X, Y, Z) uint8, spacing (mm, mm, mm),
    spec, rng) -> SynthesisResult``. Must not modify its inputs; the same ``rng`` state
    gives the same output.
    """

    name: str

    def __call__(self, ct_hu: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float],
                 spec: TumorSpec, rng: np.random.Generator) -> SynthesisResult: ...


def organ_mask(label: np.ndarray, organ: str) -> np.ndarray:
    """Boolean (X, Y, Z) mask of an organ type; raises :class:`SynthesisError` when absent."""
    mask = np.isin(label, L.organ_indices(organ))
    if not mask.any():
        raise SynthesisError(f"no {organ} voxels in the label map (labels present: "
                             f"{[L.INDEX_TO_NAME.get(int(v), str(v)) for v in np.unique(label) if v]})")
    return mask


def vessel_mask(label: np.ndarray) -> np.ndarray:
    """Voxels labelled as a vessel (hepatic vessels, portal/splenic vein, aorta, IVC)."""
    return np.isin(label, [L.NAME_TO_INDEX[n] for n in VESSEL_NAMES])


def check_inputs(ct_hu: np.ndarray, label: np.ndarray, spacing) -> tuple[float, float, float]:
    """Validate the synthesizer inputs; returns spacing as a float triple (mm)."""
    if ct_hu.ndim != 3 or ct_hu.shape != label.shape:
        raise SynthesisError(f"expected CT and label of the same 3D shape, got {ct_hu.shape} and {label.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or min(sp) <= 0:
        raise SynthesisError(f"spacing must be three positive mm values, got {spacing}")
    return sp  # type: ignore[return-value]


def bbox_of(mask: np.ndarray, margin: int | tuple[int, int, int] = 0) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty mask as slices, grown by ``margin`` voxels and clipped to the array."""
    m = (margin,) * 3 if isinstance(margin, int) else margin
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - m[ax], 0), min(int(idx[-1]) + 1 + m[ax], mask.shape[ax])))
    return tuple(out)  # type: ignore[return-value]


def tumor_records(tumor: np.ndarray, lesion_label: int, spacing, organ: str, method: str,
                  box: tuple[slice, slice, slice] | None = None, **details: Any) -> list[dict[str, Any]]:
    """Size records of the connected components of a synthesized tumor mask.

    tumor: bool (X, Y, Z), either on the full grid or on the crop ``box`` of it (then
    centroids and bounding boxes are shifted back to full-grid voxel coordinates). Each
    record is :meth:`cohort.lesions.LesionRecord.as_dict` (voxels, volume_ml,
    max_axial_diameter_mm, early = diameter <= 20 mm, centroid_vox, bbox) plus
    ``organ``, ``method`` and ``details``.
    """
    off = np.zeros(3, int) if box is None else np.array([s.start for s in box])
    lab = np.zeros(tumor.shape, np.uint8)
    lab[tumor] = lesion_label
    recs = []
    for r in measure_lesions(lab, spacing, lesion_labels=(lesion_label,)):
        d = r.as_dict()
        d["early"] = bool(r.max_axial_diameter_mm <= EARLY_TUMOR_DIAMETER_MM)
        d["centroid_vox"] = [round(float(c + o), 2) for c, o in zip(r.centroid_vox, off)]
        d["bbox"] = [[int(v + o) for v, o in zip(r.bbox[0], off)], [int(v + o) for v, o in zip(r.bbox[1], off)]]
        d.update(organ=organ, method=method, **details)
        recs.append(d)
    return recs
