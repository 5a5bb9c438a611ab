"""Tumors for the phantom: placement inside the organ, irregular shape, varied appearance.

A lesion is an ellipsoid with a smooth random radial deformation, placed
where the organ is deep enough to hold it and clipped to the organ's
footprint, so every lesion voxel was organ (or a vessel inside it) before the
tumor went in. Its size is calibrated so the measured maximum axial diameter
(:func:`cohort.lesions.max_axial_diameter_mm`) matches the request.
Appearances cover the usual enhancement patterns (hypo-/hyper-attenuating,
rim-enhancing, necrotic core, heterogeneous); their contrast to the organ is
drawn from ranges that overlap the organ's own HU, so a global threshold
cannot segment them.

Tumors of the colon and the esophagus grow in and from the wall instead
(:mod:`cohort.tubes`): the centre is a wall voxel (the wall is the tube's
voxels that are not lumen tissue: gas, fluid, stool), and the shape is one of
three kinds in the tube's local frame: ``focal`` (a lens thickening the wall on
one side), ``annular`` (the whole circumference over a length, narrowing the
lumen) or ``polypoid`` (a ball in the lumen on a base on the wall). Their size
is calibrated the same way (measured maximum axial diameter, never above the
request by more than a voxel, and never above 20 mm for an early request) and
recorded with the kind. Uterine masses use the solid-organ placement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM, max_axial_diameter_mm
from cohort.phantom.fields import Grid, smooth_field, smoothstep
from cohort.tubes import WALL_KINDS, WALL_MM, WallMap, draw_mass_params, is_tubular, wall_mass

APPEARANCES: tuple[str, ...] = ("hypo", "hyper", "rim", "necrotic", "heterogeneous")
TUMOR_ORGANS: tuple[str, ...] = ("liver", "pancreas", "kidney", "kidney_left", "kidney_right", "colon", "esophagus",
                                 "uterus")

#: Where each organ's tumors may grow (vocabulary names): the organ plus vessels running inside it.
FOOTPRINT: dict[str, tuple[str, ...]] = {
    "liver": ("liver", "hepatic_vessel"),
    "pancreas": ("pancreas",),
    "kidney_left": ("kidney_left",),
    "kidney_right": ("kidney_right",),
    "colon": ("colon",),
    "esophagus": ("esophagus",),
    "uterus": ("uterus",),
}

#: Reference tissue (for HU) of each organ (a wall tumor's contrast is taken against the wall).
ORGAN_TISSUE: dict[str, str] = {"liver": "liver", "pancreas": "pancreas",
                                "kidney_left": "kidney_cortex", "kidney_right": "kidney_cortex",
                                "colon": "bowel_wall", "esophagus": "esophagus_wall", "uterus": "myometrium"}

#: Appearance frequencies per organ type when none is requested (PDAC is mostly hypo-attenuating,
#: renal cell carcinoma often heterogeneous/hyper-enhancing, liver lesions span all patterns).
APPEARANCE_PRIOR: dict[str, tuple[float, ...]] = {
    "liver": (0.35, 0.15, 0.2, 0.15, 0.15),
    "pancreas": (0.6, 0.05, 0.1, 0.1, 0.15),
    "kidney": (0.25, 0.2, 0.15, 0.15, 0.25),
    # colorectal and esophageal carcinoma: soft tissue, often heterogeneous, ulcerated/necrotic when large
    "colon": (0.3, 0.15, 0.05, 0.15, 0.35),
    "esophagus": (0.35, 0.1, 0.05, 0.15, 0.35),
    # uterine masses: hypo-enhancing relative to the avid myometrium, often heterogeneous or cystic
    "uterus": (0.45, 0.05, 0.1, 0.15, 0.25),
}

#: Kind frequencies of wall tumors (focal, annular, polypoid) for early (<= 20 mm) and larger
#: requests: early colorectal cancers are mostly polypoid or flat, advanced ones often annular.
KIND_PRIOR: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "colon": ((0.4, 0.1, 0.5), (0.25, 0.5, 0.25)),
    "esophagus": ((0.5, 0.2, 0.3), (0.3, 0.55, 0.15)),
}


@dataclass(frozen=True)
class TumorRequest:
    """One lesion to insert.

    organ: "liver", "pancreas", "kidney" (either side), "kidney_left"/"kidney_right",
    "colon", "esophagus" or "uterus"; diameter_mm: target maximum axial diameter (mm);
    appearance: one of :data:`APPEARANCES`, or None to draw one from the organ's prior;
    kind: for colon and esophagus, the wall-tumor kind (``focal``, ``annular``,
    ``polypoid``), or None to draw one (:data:`KIND_PRIOR`).
    """

    organ: str
    diameter_mm: float
    appearance: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.organ not in TUMOR_ORGANS:
            raise ValueError(f"TumorRequest: organ {self.organ!r} has no phantom tumors; choose from {TUMOR_ORGANS}")
        if not (self.diameter_mm > 0):
            raise ValueError(f"TumorRequest: diameter_mm must be > 0, got {self.diameter_mm}")
        if self.appearance is not None and self.appearance not in APPEARANCES:
            raise ValueError(f"TumorRequest: unknown appearance {self.appearance!r}; choose from {APPEARANCES}")
        if self.kind is not None and (not is_tubular(self.organ) or self.kind not in WALL_KINDS):
            raise ValueError(f"TumorRequest: kind {self.kind!r} is for colon/esophagus tumors only, one of {WALL_KINDS}"
                             f" (organ {self.organ!r})")

    def as_record(self) -> dict:
        """The request as the sidecar lists it (``kind`` only for wall tumors)."""
        d = {"organ": self.organ, "diameter_mm": self.diameter_mm, "appearance": self.appearance}
        if is_tubular(self.organ):
            d["kind"] = self.kind
        return d

    @property
    def organ_type(self) -> str:
        return "kidney" if self.organ.startswith("kidney") else self.organ


#: Size-band factors for random tumors per organ type: the phantom's pancreas and kidneys are
#: smaller than the liver, so their lesions are mostly early ones.
RANDOM_SIZE_FACTOR: dict[str, float] = {"liver": 1.0, "pancreas": 0.45, "kidney": 0.5, "colon": 0.6,
                                         "esophagus": 0.45, "uterus": 0.5}


def random_requests(rng: np.random.Generator, organs: tuple[str, ...] = ("liver", "pancreas", "kidney"),
                    n: int | None = None) -> list[TumorRequest]:
    """1-3 lesions with a size mix: ~45% 5-20 mm (early), ~35% 20-35 mm, ~20% 35-55 mm (liver;
    pancreas and kidney bands scaled by :data:`RANDOM_SIZE_FACTOR`).

    Diameters are targets; a lesion bigger than its organ can hold is shrunk
    to fit at insertion (recorded as ``shrunk``).
    """
    if not organs:
        raise ValueError("random tumors need at least one organ type")
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])) if n is None else n
    out = []
    for _ in range(n):
        organ = str(organs[int(rng.integers(len(organs)))])
        band = rng.choice(3, p=[0.45, 0.35, 0.2])
        lo, hi = ((5.0, EARLY_TUMOR_DIAMETER_MM), (20.0, 35.0), (35.0, 55.0))[band]
        # the miniature pancreas and kidneys hold less: scale their bands down so most requests fit
        f = RANDOM_SIZE_FACTOR.get(organ, 1.0)
        out.append(TumorRequest(organ, round(float(rng.uniform(max(lo * f, 5.0), hi * f)), 1), None))
    return out


@dataclass
class PlacedTumor:
    """A lesion after insertion; ``as_dict`` is what goes into the case sidecar."""

    organ: str
    organ_name: str
    label: int
    requested_diameter_mm: float
    target_diameter_mm: float
    appearance: str
    shrunk: bool
    contrast_hu: float
    edge_mm: float
    voxels: int
    volume_ml: float
    max_axial_diameter_mm: float
    centroid_vox: tuple[float, float, float]
    early: bool
    kind: str | None = None  # wall tumors: focal | annular | polypoid

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["kind"] is None:  # solid-organ records keep their version-1 keys
            d.pop("kind")
        return d


def _appearance_field(rng, appearance: str, rho: np.ndarray, n1: np.ndarray, n2: np.ndarray,
                      organ_hu: float) -> tuple[np.ndarray, float]:
    """Tumor HU in its crop from its normalised radius ``rho`` (0 centre, 1 edge) and two noise fields.

    Returns (HU float32, nominal contrast vs the organ in HU).
    """
    U = rng.uniform
    if appearance == "hypo":
        delta = -U(12.0, 70.0)
        hu = organ_hu + delta + U(4.0, 12.0) * n1
    elif appearance == "hyper":
        delta = U(12.0, 55.0)
        hu = organ_hu + delta + U(4.0, 12.0) * n1
    elif appearance == "rim":
        rim, core, width = U(25.0, 80.0), -U(15.0, 55.0), U(0.15, 0.3)
        s = smoothstep(1.0 - width - 0.12, 1.0 - width + 0.05, rho + 0.08 * n2)
        hu = organ_hu + core + (rim - core) * s + U(4.0, 10.0) * n1
        delta = core
    elif appearance == "necrotic":
        viable, fluid, frac = -U(0.0, 25.0), U(5.0, 25.0), U(0.4, 0.7)
        s = smoothstep(frac - 0.08, frac + 0.08, rho + 0.2 * n2)  # 0 in the core, 1 in the viable rim
        hu = (fluid + U(2.0, 6.0) * n1) * (1 - s) + (organ_hu + viable + U(5.0, 12.0) * n1) * s
        delta = fluid - organ_hu
    elif appearance == "heterogeneous":
        delta = U(-20.0, 20.0)
        hu = organ_hu + delta + U(15.0, 30.0) * n1 + U(8.0, 20.0) * n2
    else:  # pragma: no cover - guarded by TumorRequest
        raise ValueError(appearance)
    return np.asarray(hu, np.float32), float(delta)


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    objs = ndimage.find_objects(mask.astype(np.uint8))
    return objs[0] if objs else None


def insert_tumors(hu: np.ndarray, label: np.ndarray, grid: Grid, tissue_hu: dict[str, float],
                  requests: list[TumorRequest], rng: np.random.Generator,
                  instance: np.ndarray | None = None, lumen: np.ndarray | None = None) -> list[PlacedTumor]:
    """Insert lesions into ``hu`` (float32 HU, (X, Y, Z), before blur and noise) and ``label`` in place.

    instance: optional uint8 (X, Y, Z) map that receives lesion i (0-based) as i + 1.
    lumen: optional bool (X, Y, Z) lumen voxels of hollow organs (gas, fluid, stool); wall
    tumors start from the other organ voxels (without it, from a band of :data:`WALL_MM`).

    Lesions never overlap (each keeps a 2 mm gap from the ones before it).
    Raises ValueError naming the request when its organ is absent from the grid.

    Each lesion, in turn: its geometry draws, the organ with room for it, its
    centre (shrinking it if nothing is deep enough), its deformed shape and
    calibrated radius, its appearance, then the HU blend, the label and
    instance maps and its record. ``rng`` is used for the geometry draws and
    the appearance only, in that order, lesion after lesion.
    """
    sp = np.asarray(grid.spacing, np.float64)
    occupied = np.zeros(label.shape, bool)
    placed: list[PlacedTumor] = []
    for req in requests:
        d = _draw_lesion(rng, req)
        if is_tubular(req.organ):
            _insert_wall_tumor(req, d, hu, label, grid, tissue_hu, rng, occupied, placed, instance, lumen)
            continue
        room = _free_footprint(req, d.side_draw, label, occupied, sp, grid)
        center, r_target, shrunk = _pick_centre(req, d, room, sp)
        csl, rho0, n1, n2 = _lesion_shape(center, r_target, d, sp, label.shape)
        r = _calibrate_radius(rho0, r_target, sp)
        rho = rho0 / np.float32(r)
        fp_c = room.fp[csl]
        lesion = _clip_to_footprint(rho, fp_c, center, csl)
        organ_hu = tissue_hu[ORGAN_TISSUE[room.organ_name]]
        t_hu, contrast = _appearance_field(rng, d.appearance, rho, n1, n2, organ_hu)
        _blend_lesion(hu[csl], t_hu, rho, r, fp_c, lesion, d.edge_mm)

        lab = L.lesion_index_for(room.organ_name)
        label[csl][lesion] = lab
        if instance is not None:
            instance[csl][lesion] = len(placed) + 1
        occupied[csl] |= ndimage.binary_dilation(lesion, iterations=max(1, int(round(2.0 / sp.min()))))
        placed.append(_record(req, room.organ_name, lab, r_target, d, shrunk, contrast, lesion, sp, csl))
    return placed


def _insert_wall_tumor(req: TumorRequest, d: _LesionDraws, hu: np.ndarray, label: np.ndarray, grid: Grid,
                       tissue_hu: dict[str, float], rng: np.random.Generator, occupied: np.ndarray,
                       placed: list[PlacedTumor], instance: np.ndarray | None, lumen: np.ndarray | None) -> None:
    """One colon or esophagus tumor, grown from the wall (see the module doc); appends its record.

    Draws after :func:`_draw_lesion`'s: the kind (when not requested), the shape
    (:func:`cohort.tubes.draw_mass_params`), then the appearance as for any lesion.
    """
    sp = np.asarray(grid.spacing, np.float64)
    organ = req.organ
    early_req = req.diameter_mm <= EARLY_TUMOR_DIAMETER_MM
    kind = req.kind or str(rng.choice(WALL_KINDS, p=KIND_PRIOR[organ][0 if early_req else 1]))
    mp = draw_mass_params(rng, kind, req.diameter_mm / 2.0)
    fp = np.isin(label, [L.NAME_TO_INDEX[n] for n in FOOTPRINT[organ]]) & ~occupied
    if not fp.any():
        raise ValueError(f"cannot place {req}: no {organ} voxels free on this grid "
                         f"(shape {grid.shape}, spacing {grid.spacing} mm)")
    wm = WallMap(fp, sp, wall_mm=WALL_MM[organ], lumen=None if lumen is None else lumen & fp)
    cand = wm.candidates()
    anchor = cand[min(int(d.pick * len(cand)), len(cand) - 1)]
    fr = wm.frame(anchor)
    wall_mm = wm.thickness_mm()
    half = req.diameter_mm * 0.5 * max(mp.length, 1.0) * 1.6 + 2.0 * fr.r_out + 2.0 * float(sp.max())
    sub = wm.crop_around(anchor, half)
    coords = wm.coords_mm(sub)
    axes_mm = [np.arange(s.start, s.stop) * v for s, v in zip(sub, sp)]
    bounds = tuple((float(a[0]) - 1.0, float(a[-1]) + 1.0) for a in axes_mm)
    r0 = req.diameter_mm / 2.0
    srng = np.random.default_rng(d.sub_seed)
    shape_noise = smooth_field(srng, tuple(axes_mm), bounds, max(r0 * 0.7, 2.0))
    n1 = smooth_field(srng, tuple(axes_mm), bounds, max(r0 * 0.25, 1.5))
    n2 = smooth_field(srng, tuple(axes_mm), bounds, max(r0 * 0.5, 2.0))
    organ_c = wm.organ[sub]
    a_mask = np.zeros(organ_c.shape, bool)
    a_mask[tuple(int(a - s.start) for a, s in zip(anchor, sub))] = True

    def shape_at(r: float):
        f = wall_mass(fr, mp.scaled(r), coords, wall_mm, shape_noise)
        m = (f <= 1.0) & organ_c
        return f, (m if m.any() else a_mask)

    cap = req.diameter_mm + float(sp[:2].mean())  # at most one voxel above the request
    if early_req:
        cap = min(cap, EARLY_TUMOR_DIAMETER_MM)
    r, best = r0, None
    for _ in range(6):
        f, m = shape_at(r)
        meas = max_axial_diameter_mm(m, sp)
        ok = meas <= cap
        score = (0 if ok else 1, abs(meas - req.diameter_mm))
        if best is None or score < best[0]:
            best = (score, r, f, m, meas)
        if ok and abs(meas - req.diameter_mm) <= 0.5 * float(sp[:2].mean()):
            break
        r *= float(np.clip(req.diameter_mm / max(meas, 1e-3), 0.6, 1.6)) if ok else 0.8
    _, r, f, lesion, meas = best
    shrunk = meas < 0.8 * req.diameter_mm
    r_target = meas / 2.0 if shrunk else r0
    organ_hu = tissue_hu[ORGAN_TISSUE[organ]]
    t_hu, contrast = _appearance_field(rng, d.appearance, f, n1, n2, organ_hu)
    csl = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(wm.box, sub))
    _blend_lesion(hu[csl], t_hu, f, max(r, 1.0), organ_c, lesion, d.edge_mm)
    lab = L.lesion_index_for(organ)
    label[csl][lesion] = lab
    if instance is not None:
        instance[csl][lesion] = len(placed) + 1
    occupied[csl] |= ndimage.binary_dilation(lesion, iterations=max(1, int(round(2.0 / sp.min()))))
    t = _record(req, organ, lab, r_target, d, shrunk, contrast, lesion, sp, csl)
    t.kind = kind
    placed.append(t)


@dataclass(frozen=True)
class _LesionDraws:
    """One lesion's draws from the main stream, made before anything depends on the organ.

    side_draw: in [0, 1), which kidney is tried first for organ "kidney";
    appearance: one of :data:`APPEARANCES`; elong: (1, y, z) axis factors of
    the ellipsoid; yaw: in-plane rotation (radians); wob: radial deformation
    amplitude (fraction of the radius); edge_mm: soft-margin width (mm);
    pick: in [0, 1), which deep-enough voxel becomes the centre; sub_seed:
    seed of the lesion's own noise fields.
    """

    side_draw: float
    appearance: str
    elong: tuple[float, float, float]
    yaw: float
    wob: float
    edge_mm: float
    pick: float
    sub_seed: int


def _draw_lesion(rng: np.random.Generator, req: TumorRequest) -> _LesionDraws:
    """The geometry draws of ``req``, in a fixed order (the appearance is drawn only when not requested)."""
    # geometry draws come first and in a fixed order, whatever the organ turns out to hold
    side_draw = rng.uniform()
    appearance = req.appearance or str(rng.choice(APPEARANCES, p=APPEARANCE_PRIOR[req.organ_type]))
    elong = (1.0, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.1))
    yaw, wob, edge_mm, pick = rng.uniform(0, np.pi), rng.uniform(0.04, 0.16), rng.uniform(0.5, 2.0), rng.uniform()
    sub_seed = int(rng.integers(2**31))
    return _LesionDraws(side_draw, appearance, elong, yaw, wob, edge_mm, pick, sub_seed)


@dataclass
class _Room:
    """Where a lesion may grow in one organ.

    organ_name: vocabulary name ("liver", "kidney_left", ...); fp: bool (X, Y, Z)
    footprint voxels not yet taken by a lesion or its gap; bb: the footprint's
    bounding box grown by one voxel; dt: float64 over ``bb``, distance (mm) from
    each footprint voxel to the nearest voxel outside it.
    """

    organ_name: str
    fp: np.ndarray
    bb: tuple[slice, ...]
    dt: np.ndarray


def _free_footprint(req: TumorRequest, side_draw: float, label: np.ndarray, occupied: np.ndarray,
                    sp: np.ndarray, grid: Grid) -> _Room:
    """The organ side for ``req``: the first that is deep enough, else the deepest.

    "kidney" tries both sides, ``side_draw`` deciding which first. A side is
    deep enough when its widest inscribed diameter reaches 80% of the request.
    """
    if req.organ == "kidney":
        sides = ["kidney_left", "kidney_right"] if side_draw < 0.5 else ["kidney_right", "kidney_left"]
    else:
        sides = [req.organ]
    best = None
    for organ_name in sides:
        fp_labels = [L.NAME_TO_INDEX[n] for n in FOOTPRINT[organ_name]]
        fp = np.isin(label, fp_labels) & ~occupied
        bb = _bbox(fp)
        if bb is None:
            continue
        # one voxel of margin, so the distance transform sees the footprint's edge as background
        bb = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(bb, label.shape))
        dt = ndimage.distance_transform_edt(fp[bb], sampling=sp)
        if best is None or dt.max() > best.dt.max():
            best = _Room(organ_name, fp, bb, dt)
        if dt.max() * 2.0 >= req.diameter_mm * 0.8:
            best = _Room(organ_name, fp, bb, dt)
            break
    if best is None:
        raise ValueError(f"cannot place {req}: no {req.organ} voxels free on this grid "
                         f"(shape {grid.shape}, spacing {grid.spacing} mm)")
    return best


def _pick_centre(req: TumorRequest, d: _LesionDraws, room: _Room, sp: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """(centre voxel index (3,), target radius mm, shrunk): a centre deep enough for the lesion.

    When no voxel is deep enough the radius shrinks to what the deepest one
    holds (never below 0.75 voxel).
    """
    dt, bb = room.dt, room.bb
    # room needed: the in-plane radius, allowing the contour wobble to be clipped a little
    r_target = req.diameter_mm / 2.0
    need = r_target * max(d.elong) * (1.0 + d.wob) * 0.85
    shrunk = False
    if dt.max() < need:
        shrunk = True
        r_target = max(dt.max() / (max(d.elong) * (1.0 + d.wob) * 0.85), 0.75 * float(sp.min()))
        need = min(dt.max(), r_target * max(d.elong) * (1.0 + d.wob) * 0.85)
    cand = np.flatnonzero(dt.ravel() >= need)
    ci = np.unravel_index(cand[min(int(d.pick * len(cand)), len(cand) - 1)], dt.shape)
    center = np.array([ci[a] + bb[a].start for a in range(3)])
    return center, r_target, shrunk


def _lesion_shape(center: np.ndarray, r_target: float, d: _LesionDraws, sp: np.ndarray,
                  shape: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(crop, rho0, n1, n2): the lesion's crop of the grid and its fields there.

    rho0: float (crop) deformed radius (mm) of the rotated, elongated ellipsoid
    (the lesion is rho0 <= r); n1, n2: float32 (crop) unit-variance noise for
    the appearance, fine (~r/4) and coarse (~r/2). All three fields come from
    the lesion's own stream (``d.sub_seed``), in that order.
    """
    # crop around the centre, big enough for the largest calibrated shape
    half_mm = r_target * max(d.elong) * (1.0 + d.wob) * 1.6 + 2.0 * sp.max()
    half = np.ceil(half_mm / sp).astype(int)
    csl = tuple(slice(max(int(center[a] - half[a]), 0), min(int(center[a] + half[a] + 1), shape[a]))
                for a in range(3))
    axes_mm = [(np.arange(csl[a].start, csl[a].stop) - center[a]) * sp[a] for a in range(3)]
    dx, dy, dz = np.meshgrid(*[a.astype(np.float32) for a in axes_mm], indexing="ij", sparse=True)
    c, s = np.cos(d.yaw), np.sin(d.yaw)
    u = (c * dx + s * dy) / d.elong[0]
    v = (-s * dx + c * dy) / d.elong[1]
    w = dz / d.elong[2]
    sub = np.random.default_rng(d.sub_seed)
    bounds = tuple((float(a[0]) - 1.0, float(a[-1]) + 1.0) for a in axes_mm)
    corr = max(r_target * 0.7, 2.0)
    shape_noise = smooth_field(sub, tuple(axes_mm), bounds, corr)
    n1 = smooth_field(sub, tuple(axes_mm), bounds, max(r_target * 0.25, 1.5))
    n2 = smooth_field(sub, tuple(axes_mm), bounds, max(r_target * 0.5, 2.0))
    rho0 = np.sqrt(u * u + v * v + w * w) * (1.0 + d.wob * shape_noise)  # mm; the lesion is rho <= r
    return csl, rho0, n1, n2


def _calibrate_radius(rho0: np.ndarray, r_target: float, sp: np.ndarray) -> float:
    """The radius r (mm) whose mask ``rho0 <= r`` measures closest to 2 * r_target in max axial diameter."""
    # calibrate the radius so the measured axial diameter (unclipped) hits the target
    # (a few secant-like steps; near the voxel size the measure jumps, so keep the best one seen)
    r, tried = r_target, []
    for _ in range(3):
        meas = max_axial_diameter_mm(rho0 <= r, sp)
        tried.append((abs(meas - 2.0 * r_target), r))
        r *= (2.0 * r_target) / max(meas, 1e-3)
    return min(tried)[1]


def _clip_to_footprint(rho: np.ndarray, fp_c: np.ndarray, center: np.ndarray, csl: tuple[slice, ...]) -> np.ndarray:
    """bool (crop) lesion mask: rho <= 1 inside the organ footprint ``fp_c``, or the centre voxel if that is empty."""
    lesion = (rho <= 1.0) & fp_c
    if not lesion.any():  # tiny organ: fall back to the centre voxel
        lesion = np.zeros_like(fp_c)
        lesion[tuple(int(center[a] - csl[a].start) for a in range(3))] = True
    return lesion


def _blend_lesion(hu_c: np.ndarray, t_hu: np.ndarray, rho: np.ndarray, r: float, fp_c: np.ndarray,
                  lesion: np.ndarray, edge_mm: float) -> None:
    """Blend tumor HU ``t_hu`` into the crop view ``hu_c`` in place: full weight on the lesion, a soft margin
    of ``edge_mm`` around it (capped at 0.4 r) inside the footprint ``fp_c``, untouched elsewhere."""
    # soft margin (well-circumscribed to infiltrative), confined to the organ footprint
    edge = min(edge_mm, 0.4 * r)  # a small lesion still reaches its full contrast inside
    wgt = np.clip(0.5 + (1.0 - rho) * np.float32(r / edge), 0.0, 1.0) * fp_c
    wgt = np.maximum(wgt, lesion)
    hu_c += wgt * (t_hu - hu_c)


def _record(req: TumorRequest, organ_name: str, lab: int, r_target: float, d: _LesionDraws, shrunk: bool,
            contrast: float, lesion: np.ndarray, sp: np.ndarray, csl: tuple[slice, ...]) -> PlacedTumor:
    """The sidecar record of one inserted lesion, its size measured from the final (clipped) mask."""
    t = PlacedTumor(
        organ=req.organ_type, organ_name=organ_name, label=lab, requested_diameter_mm=float(req.diameter_mm),
        target_diameter_mm=round(2.0 * float(r_target), 2), appearance=d.appearance, shrunk=shrunk,
        contrast_hu=round(contrast, 1), edge_mm=round(float(d.edge_mm), 2), voxels=0, volume_ml=0.0,
        max_axial_diameter_mm=0.0, centroid_vox=(0.0, 0.0, 0.0), early=True,
    )
    measure(t, lesion, sp, [sl.start for sl in csl])
    return t


def measure(t: PlacedTumor, lesion: np.ndarray, spacing, offset=(0, 0, 0)) -> None:
    """Fill a lesion's size record from its mask (``offset``: voxel index of the mask's corner)."""
    sp = np.asarray(spacing, np.float64)
    vox = int(lesion.sum())
    diam = float(max_axial_diameter_mm(lesion, sp)) if vox else 0.0
    idx = np.argwhere(lesion).mean(0) + np.asarray(offset) if vox else np.zeros(3)
    t.voxels = vox
    t.volume_ml = round(vox * float(np.prod(sp)) / 1000.0, 4)
    t.max_axial_diameter_mm = round(diam, 3)
    t.centroid_vox = tuple(round(float(x), 2) for x in idx)
    t.early = diam <= EARLY_TUMOR_DIAMETER_MM
