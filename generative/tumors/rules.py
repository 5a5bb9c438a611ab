"""Rule-based tumor synthesis (SyntheticTumors; Hu et al., "Label-Free Liver Tumor
Segmentation", CVPR 2023, ``TumorGenerated/utils.py``).

Recipe: choose a size class (tiny, small, medium, large, or "mix" = all four at
once) and a count per class (tiny/small 3-10, medium 2-5, large 1-3); place each
tumor as an elastically deformed ellipsoid of radius 4/8/16/32 mm x U(0.75, 1.25)
per axis, centred in the middle 30-70 % of the organ's axial extent away from
its edge (:mod:`generative.tumors.placement`); blur the union's edge with a
Gaussian of sigma U(1, 2) voxels; darken the organ by ``texture * blur *
U(65, 145)`` HU, inside the organ only.

Differences from the reference, on purpose: the reference clips tumors that
cross the organ surface; here they are placed to fit (and only clipped when the
organ is too small), and vessels / existing lesions are avoided when labelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from cohort import labels as L
from generative.tumors.base import (
    SynthesisError,
    SynthesisResult,
    TumorSpec,
    bbox_of,
    check_inputs,
    organ_mask,
    tumor_records,
    vessel_mask,
)
from generative.tumors.placement import PlacementSampler
from generative.tumors.shapes import SIZE_CLASSES_MM, count_for_class
from generative.tumors.texture import tumor_texture

#: the reference transform draws one of these with equal probability (tumor_prob 0.2 each)
TUMOR_TYPES: tuple[str, ...] = ("tiny", "small", "medium", "large", "mix")


@dataclass
class RulesConfig:
    """Parameters of the rule-based synthesizer (defaults: SyntheticTumors)."""

    hu_difference: tuple[float, float] = (65.0, 145.0)  # darkening, HU
    edge_sigma: tuple[float, float] = (1.0, 2.0)  # edge blur, voxels
    margin_mm: float = 2.0  # distance kept from the organ surface and vessels
    avoid_vessels: bool = True
    elastic: bool = True
    separate: bool = True  # keep tumors apart when they fit (the reference lets them merge)
    size_types: tuple[str, ...] = TUMOR_TYPES  # drawn uniformly when the spec names no size


class RuleSynthesizer:
    """SyntheticTumors as a :class:`~generative.tumors.base.Synthesizer` (name "rules")."""

    name = "rules"

    def __init__(self, config: RulesConfig | None = None):
        self.config = config or RulesConfig()
        for t in self.config.size_types:
            if t != "mix" and t not in SIZE_CLASSES_MM:
                raise ValueError(f"RulesConfig.size_types: unknown size type {t!r}; expected {TUMOR_TYPES}")

    def plan(self, spec: TumorSpec, rng: np.random.Generator) -> tuple[str, list[float | str]]:
        """The tumors to draw: (tumor type, list of size classes or diameters in mm)."""
        if spec.diameter_mm is not None:
            return f"{spec.diameter_mm:g}mm", [float(spec.diameter_mm)] * (spec.count or 1)
        kind = spec.size or str(self.config.size_types[int(rng.integers(len(self.config.size_types)))])
        if kind == "mix":
            return kind, [c for c in SIZE_CLASSES_MM for _ in range(spec.count or count_for_class(rng, c, mix=True))]
        if kind not in SIZE_CLASSES_MM:
            raise SynthesisError(f"unknown tumor size {kind!r}; expected one of {TUMOR_TYPES}")
        return kind, [kind] * (spec.count or count_for_class(rng, kind))

    def __call__(self, ct_hu: np.ndarray, label: np.ndarray, spacing, spec: TumorSpec,
                 rng: np.random.Generator) -> SynthesisResult:
        """ct_hu: float32 HU (X, Y, Z); label: uint8 vocabulary (X, Y, Z); spacing: mm."""
        t0 = time.perf_counter()
        cfg = self.config
        sp = check_inputs(ct_hu, label, spacing)
        organ = organ_mask(label, spec.organ)
        lesion = L.lesion_index_for(spec.organ)
        avoid = np.isin(label, L.LESION_LABELS)
        if cfg.avoid_vessels:
            avoid |= vessel_mask(label)
        sampler = PlacementSampler(organ, sp, avoid=avoid, margin_mm=cfg.margin_mm)
        kind, sizes = self.plan(spec, rng)
        box = sampler.box
        geo = np.zeros(sampler.dist_mm.shape, dtype=bool)
        occupied = np.zeros_like(geo) if cfg.separate else None
        placements = []
        # largest first: the big ones need the room, the small ones fit between them
        for s in sorted(sizes, key=lambda s: -(SIZE_CLASSES_MM[s] if isinstance(s, str) else s / 2)):
            p = sampler.place(rng, s, elastic=cfg.elastic, occupied=occupied)
            placements.append(p)
            geo |= p.local
            if occupied is not None:
                sampler.occupy(occupied, p)
        geo &= sampler.organ_local

        # render on the tumors' bounding box (+ blur support) only
        sigma = float(rng.uniform(*cfg.edge_sigma))
        diff = float(rng.uniform(*cfg.hu_difference))
        sub = bbox_of(geo, margin=int(np.ceil(3 * sigma)) + 1)
        g = gaussian_filter(geo[sub].astype(np.float32), sigma)
        tex = tumor_texture(g.shape, rng)
        full_sub = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sub))
        ct = np.array(ct_hu, dtype=np.float32, copy=True)
        inside = organ[full_sub]
        ct[full_sub] = np.where(inside, ct[full_sub] - tex * g * diff, ct[full_sub])
        out = np.array(label, dtype=np.uint8, copy=True)
        out[box][geo] = lesion

        records = tumor_records(geo, lesion, sp, spec.organ, self.name, box=box, tumor_type=kind)
        info = {"method": self.name, "tumor_type": kind, "edge_sigma_vox": round(sigma, 3),
                "hu_difference": round(diff, 2), "placements": [p.as_dict() for p in placements],
                "seconds": round(time.perf_counter() - t0, 3)}
        return SynthesisResult(ct, out, records, info)
