"""Rule-based tumor synthesis (SyntheticTumors; Hu et al., "Label-Free Liver Tumor
Segmentation", CVPR 2023, ``TumorGenerated/utils.py``).

Recipe: choose a size class (tiny, small, medium, large, or "mix" = all four at
once) and a count per class (tiny/small 3-10, medium 2-5, large 1-3); place each
tumor as an elastically deformed ellipsoid of radius 4/8/16/32 mm x U(0.75, 1.25)
per axis, centred in the middle 30-70 % of the organ's axial extent away from
its edge (:mod:`generative.tumors.placement`); blur the union's edge with a
Gaussian of sigma U(1, 2) voxels; darken the organ by ``texture * blur *
d`` HU, inside the organ only. The reference's ``d`` is U(65, 145) HU, an
absolute value tuned on contrast-enhanced liver (``hu_mode="absolute"``); by
default (``"relative"``) it is scaled by the organ's measured contrast (median
HU of its own voxels, vessels and lesions excluded) above a 0 HU floor over the
reference organ's (liver/pancreas 130, kidney 170 HU; see
:func:`generative.tumors.texture.contrast_scale`), so a tumor in a non-contrast
45 HU liver is darkened by 22-50 HU instead of falling to fat density.

Differences from the reference, on purpose: the reference clips tumors that
cross the organ surface; here they are placed to fit (and only clipped when the
organ is too small), and vessels / existing lesions are avoided when labelled.

Tubular organs (colon, esophagus; issue 18). SyntheticTumors was built for the
liver (and applied to pancreas and kidney): a solid organ whose interior is
parenchyma. Two of its steps assume that, and change for a tube:

- where: its centre is drawn inside the organ away from the edge (an eroded
  mask), which in a tube is the lumen (gas, fluid, stool), not tissue. Here the
  centre is drawn in the wall band of the wall-distance map
  (:class:`generative.tumors.placement.WallPlacementSampler`) and the same
  elastically deformed ellipsoid is clipped to the organ, i.e. a mass in and on
  the wall that bulges into the lumen (the reference clips to the organ too);
- HU: it darkens the voxels already there, which under a wall tumor are partly
  lumen; darkened gas stays gas. Here the lumen-like voxels under the tumor
  (below the wall's lower quartile minus one IQR) are first filled toward the
  wall's median HU, with the reference's own blurred tumor weight (doubled and
  clipped to 1, so the fill is complete where the tumor is), like Pixel2Cancer
  fills pancreatic fat under a tumor; the darkening is then the reference's rule
  with the organ's HU measured on the wall's soft-tissue voxels (HU > -150).

The uterus is solid and uses the reference's placement and darkening (its
reference HU is the liver's 130, close to an enhanced myometrium).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

from cohort import labels as L
from cohort.config import check_choices
from cohort.tubes import WALL_MM, is_tubular
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
from generative.tumors.placement import sampler_for
from generative.tumors.shapes import SIZE_CLASSES_MM, count_for_class
from generative.tumors.texture import (
    MIN_CONTRAST_HU,
    REFERENCE_ORGAN_HU,
    SOFT_TISSUE_FLOOR_HU,
    contrast_scale,
    measure_organ_hu,
    reference_hu,
    tumor_texture,
)

#: the reference transform draws one of these with equal probability (tumor_prob 0.2 each)
TUMOR_TYPES: tuple[str, ...] = ("tiny", "small", "medium", "large", "mix")


@dataclass
class RulesConfig:
    """Parameters of the rule-based synthesizer (defaults: SyntheticTumors).

    HU (issue 19): ``hu_difference`` is the reference's absolute darkening, U(65, 145) HU,
    which assumes contrast-enhanced CT. ``hu_mode="relative"`` (default) multiplies it by
    (organ median - hu_floor) / (reference - hu_floor), with the organ's median HU measured
    in the scan (its own voxels: vessels and lesions excluded) and ``reference`` from
    ``reference_organ_hu`` (the centre of Pixel2Cancer's organ ranges: liver/pancreas 130,
    kidney 170 HU); a liver at 130 HU gets the reference's darkening, a non-contrast 45 HU
    liver 22-50 HU. ``hu_mode="absolute"`` uses ``hu_difference`` as it is (the reference).
    """

    hu_difference: tuple[float, float] = (65.0, 145.0)  # darkening, HU (absolute; scaled in relative mode)
    hu_mode: Literal["relative", "absolute"] = "relative"  # organ-relative darkening or the reference's fixed HU
    hu_floor: float = SOFT_TISSUE_FLOOR_HU  # relative mode: the HU the organ's contrast is measured above
    reference_organ_hu: dict[str, float] = field(default_factory=lambda: dict(REFERENCE_ORGAN_HU))
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
        check_choices(self.config)  # hu_mode of a config built in code
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

    def hu_rule(self, ct_hu: np.ndarray, organ: np.ndarray, organ_name: str) -> tuple[float, dict]:
        """The darkening's scale (1 in absolute mode) and what it rests on, for provenance:
        ``hu_mode``, ``hu_scale``, and in relative mode the organ's measured HU (median,
        quartiles, over ``organ``, which holds no vessel or lesion voxels: they carry their own
        labels), the floor and the reference organ HU."""
        cfg = self.config
        if cfg.hu_mode != "relative":
            return 1.0, {"hu_mode": "absolute", "hu_scale": 1.0}
        ref = reference_hu(organ_name, cfg.reference_organ_hu)
        stats = measure_organ_hu(ct_hu, organ)
        scale = contrast_scale(stats.median, ref, cfg.hu_floor, MIN_CONTRAST_HU)
        return scale, {"hu_mode": "relative", "hu_scale": round(scale, 4), **stats.as_dict(),
                       "reference_organ_hu": ref, "hu_floor": cfg.hu_floor}

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
        tubular = is_tubular(spec.organ)
        sampler = sampler_for(spec.organ, organ, sp, avoid=avoid, margin_mm=cfg.margin_mm)
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
        stats_mask = organ
        if tubular:  # the wall's soft tissue, not the lumen's gas and stool
            wall = np.zeros_like(organ)
            wall[box] = sampler.organ_local & (sampler.dist_mm <= WALL_MM[spec.organ])
            soft = wall & (ct_hu > -150.0)
            stats_mask = soft if soft.any() else organ
        scale, hu = self.hu_rule(ct_hu, stats_mask, spec.organ)
        diff *= scale
        sub = bbox_of(geo, margin=int(np.ceil(3 * sigma)) + 1)
        g = gaussian_filter(geo[sub].astype(np.float32), sigma)
        tex = tumor_texture(g.shape, rng)
        full_sub = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sub))
        ct = np.array(ct_hu, dtype=np.float32, copy=True)
        inside = organ[full_sub]
        base = ct[full_sub]
        if tubular:  # lumen under the tumor becomes wall tissue first (see the module doc)
            wall_hu = measure_organ_hu(ct_hu, stats_mask)
            below = base < wall_hu.q25 - max(wall_hu.iqr, 10.0)
            base = base + (np.float32(wall_hu.median) - base) * np.clip(2.0 * g, 0.0, 1.0) * below
            hu["wall_median_hu"] = round(wall_hu.median, 2)
        ct[full_sub] = np.where(inside, base - tex * g * diff, ct[full_sub])
        out = np.array(label, dtype=np.uint8, copy=True)
        out[box][geo] = lesion

        hu["hu_difference"] = round(diff, 2)
        records = tumor_records(geo, lesion, sp, spec.organ, self.name, box=box, tumor_type=kind,
                                hu_mode=hu["hu_mode"], hu_difference=round(diff, 2),
                                organ_median_hu=hu.get("organ_median_hu"))
        info = {"method": self.name, "tumor_type": kind, "edge_sigma_vox": round(sigma, 3),
                "hu_difference": round(diff, 2), "hu": hu, "placements": [p.as_dict() for p in placements],
                "seconds": round(time.perf_counter() - t0, 3)}
        return SynthesisResult(ct, out, records, info)
