"""The phantom patient: organ, vessel and bone geometry as tissue and label maps.

Organs are implicit shapes (ellipsoids, tubes, swept cross-sections) in a
coordinate frame bent by a smooth random displacement, with smooth random
wobble on every contour, so each seed gives a different patient. Shapes are
laid out in anatomy units (half the in-plane field of view; see
:class:`~cohort.phantom.fields.Grid`) with axes x -> patient's right,
y -> anterior, z -> superior. Nothing here knows the scanner: a
:class:`~cohort.phantom.sites.SiteProfile` turns tissues into HU later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cohort import labels as L
from cohort.phantom.fields import Grid, smooth_field
from cohort.phantom.sites import BASE_HU

#: Tissue classes (internal; several tissues share one label, e.g. kidney cortex and medulla).
TISSUES: tuple[str, ...] = tuple(BASE_HU)
TISSUE: dict[str, int] = {t: i for i, t in enumerate(TISSUES)}

#: Texture amplitude (HU) per tissue: (fine ~3 mm, coarse ~12 mm) smooth-noise components.
TEXTURE_HU: dict[str, tuple[float, float]] = {
    "air": (0.0, 0.0), "lung": (45.0, 25.0), "gas": (8.0, 4.0), "fat": (9.0, 6.0), "visceral_fat": (12.0, 9.0),
    "muscle": (6.0, 4.0), "bone_cortex": (60.0, 30.0), "bone_trabecular": (45.0, 30.0), "disc": (8.0, 4.0),
    "csf": (3.0, 1.0), "aorta": (4.0, 3.0), "postcava": (6.0, 5.0), "portal_vein": (5.0, 3.0),
    "hepatic_vessel": (5.0, 3.0), "liver": (5.0, 6.0), "spleen": (6.0, 4.0), "kidney_cortex": (6.0, 3.0),
    "kidney_medulla": (7.0, 3.0), "pancreas": (11.0, 5.0), "stomach_wall": (6.0, 3.0),
    "stomach_content": (8.0, 6.0), "bowel_wall": (6.0, 3.0), "bowel_content": (10.0, 8.0),
    "gall_bladder": (3.0, 2.0), "esophagus_wall": (6.0, 3.0), "myometrium": (8.0, 4.0), "endometrium": (5.0, 3.0),
    "stool": (40.0, 18.0),
}

#: "basic": the abdomen of phantom version 1 (no esophagus, no uterus, a plain colon tube);
#: "full": the same patient plus a haustral colon, the esophagus and, in female patients, the
#: uterus (:mod:`cohort.phantom.hollow`).
ANATOMIES: tuple[str, ...] = ("basic", "full")
SEXES: tuple[str, ...] = ("F", "M")

_LBL = L.NAME_TO_INDEX


@dataclass
class Anatomy:
    """One patient on one grid.

    tissue: uint8 (X, Y, Z) indices into :data:`TISSUES`; label: uint8 (X, Y, Z)
    vocabulary indices; tex_fine / tex_coarse: float32 (X, Y, Z) unit-variance
    smooth noise used for tissue texture; body: bool (X, Y, Z) inside the skin;
    params: the sampled geometry (organ centres and sizes, anatomy units);
    anatomy: one of :data:`ANATOMIES`; sex: "F", "M" (the uterus is drawn in "F" full
    anatomies only).
    """

    grid: Grid
    tissue: np.ndarray
    label: np.ndarray
    tex_fine: np.ndarray
    tex_coarse: np.ndarray
    body: np.ndarray
    params: dict = field(default_factory=dict)
    anatomy: str = "basic"
    sex: str | None = None


def _rot(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World -> local rotation: yaw about z (axial plane), pitch about x, roll about y (radians)."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    return (ry @ rx @ rz).astype(np.float32)


class _Canvas:
    """Warped coordinates plus the tissue and label maps being painted, with crop helpers."""

    def __init__(self, grid: Grid, rng: np.random.Generator, warp_amp: float):
        self.grid = grid
        u = grid.unit_mm
        self.ax = [grid.axis_unit(i) for i in range(3)]
        self.bounds = tuple((-f / 2.0 / u, f / 2.0 / u) for f in grid.fov_mm)
        # smooth displacement (~40 mm correlation): bends every organ together, like a real body
        disp = [smooth_field(rng, self.ax, self.bounds, 40.0 / u) * np.float32(warp_amp) for _ in range(3)]
        self.X = self.ax[0][:, None, None] + disp[0]
        self.Y = self.ax[1][None, :, None] + disp[1]
        self.Z = self.ax[2][None, None, :] + disp[2]
        # contour wobble fields: organ-scale (25 mm) and lobulation-scale (10 mm)
        self.P1 = smooth_field(rng, self.ax, self.bounds, 25.0 / u)
        self.P2 = smooth_field(rng, self.ax, self.bounds, 10.0 / u)
        self.tissue = np.zeros(grid.shape, np.uint8)
        self.label = np.zeros(grid.shape, np.uint8)

    def box(self, center, half) -> tuple[slice, slice, slice]:
        """Voxel slices covering centre +- half (anatomy units), clipped to the grid (may be empty)."""
        sl = []
        for a in range(3):
            ax = self.ax[a]
            lo = np.searchsorted(ax, center[a] - half[a])
            hi = np.searchsorted(ax, center[a] + half[a])
            sl.append(slice(int(lo), int(max(lo, hi))))
        return tuple(sl)  # type: ignore[return-value]

    def local(self, sl, center, rot: np.ndarray | None = None):
        """Coordinates (u, v, w) relative to ``center`` in the crop ``sl``, optionally rotated."""
        dx = self.X[sl] - np.float32(center[0])
        dy = self.Y[sl] - np.float32(center[1])
        dz = self.Z[sl] - np.float32(center[2])
        if rot is None:
            return dx, dy, dz
        r = rot
        return (r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz,
                r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz,
                r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz)

    def paint(self, sl, mask: np.ndarray, tissue: str, label: str | None) -> None:
        if mask.size == 0:
            return
        self.tissue[sl][mask] = TISSUE[tissue]
        self.label[sl][mask] = 0 if label is None else _LBL[label]

    def ellipsoid(self, center, axes, rot=None, wobble: float = 0.0, wobble_field: str = "P1", pad: float = 1.3):
        """(slices, q): q = normalised radius of an ellipsoid with contour wobble; inside is q <= 1."""
        half = [a * pad + 0.06 for a in axes]
        if rot is not None:
            half = [max(axes) * pad + 0.06] * 3
        sl = self.box(center, half)
        u, v, w = self.local(sl, center, rot)
        q = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (w / axes[2]) ** 2)
        if wobble:
            q = q + np.float32(wobble) * getattr(self, wobble_field)[sl]
        return sl, q


def _tube(cv: _Canvas, points: np.ndarray, radius: float):
    """(slices, d): distance (anatomy units) from a polyline through ``points`` (N, 3), within its box."""
    lo = points.min(0) - radius * 1.5 - 0.05
    hi = points.max(0) + radius * 1.5 + 0.05
    sl = cv.box((lo + hi) / 2, (hi - lo) / 2)
    X, Y, Z = cv.X[sl], cv.Y[sl], cv.Z[sl]
    d = np.full(X.shape, np.inf, np.float32)
    for a, b in zip(points[:-1], points[1:]):
        ab = (b - a).astype(np.float32)
        t = ((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / np.float32(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        dd = np.sqrt((X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2 + (Z - a[2] - t * ab[2]) ** 2)
        np.minimum(d, dd, out=d)
    return sl, d


def build_anatomy(grid: Grid, rng: np.random.Generator, anatomy: str = "basic", sex: str | None = None,
                  rng_extra: np.random.Generator | None = None) -> Anatomy:
    """Sample one patient and paint it on ``grid``.

    anatomy: "basic" (version 1, unchanged) or "full": the colon is repainted with haustra
    (after the kidneys, so that no solid organ cuts the tube), then the esophagus last (it
    never paints over the stomach, aorta or postcava) and, before the colon, the uterus when
    ``sex`` is "F". The full anatomy's own geometry comes from ``rng_extra`` (its own stream:
    the basic organs are the same patient's).

    Painting order sets precedence (later wins): body wall, bowel, stomach,
    liver and its vessels, gall bladder, spleen, duodenum, pancreas, portal/splenic
    vein, kidneys, great vessels, spine, lungs, ribs. All random draws happen in a fixed order, so a
    seed always gives the same patient whatever the grid: first the geometry
    (:func:`_sample_geometry`), then the canvas's warp and wobble fields, then
    :func:`_draw_fields`; the painting steps draw nothing.
    """
    if anatomy not in ANATOMIES:
        raise ValueError(f"unknown phantom anatomy {anatomy!r}; choose from {ANATOMIES}")
    if sex is not None and sex not in SEXES:
        raise ValueError(f"phantom sex must be one of {SEXES} or None, got {sex!r}")
    p = _sample_geometry(rng)
    cv = _Canvas(grid, rng, warp_amp=0.035)
    fields = _draw_fields(cv, rng)
    full = anatomy == "full"
    if full:
        from cohort.phantom import hollow

        if rng_extra is None:
            raise ValueError("the full anatomy needs its own random stream (rng_extra)")
        p["hollow"] = hollow.sample_hollow_geometry(rng_extra, p)

    wall = _paint_body_wall(cv, p["body"])
    _paint_back_muscles(cv, p["spine"]["y"], wall.body)
    _paint_small_bowel(cv, p["bowel"], wall.cavity, fields)
    if not full:
        _paint_colon(cv, p["colon"], wall.cavity, fields.gas)
    elif sex == "F":
        hollow.paint_uterus(cv, p["hollow"]["uterus"], wall.cavity)
    _paint_stomach(cv, p["stomach"], wall.cavity)
    _paint_liver(cv, p["liver"], wall.cavity, fields)
    _paint_gall_bladder(cv, p["gall_bladder"], wall.cavity)
    _paint_spleen(cv, p["spleen"], wall.cavity)
    _paint_duodenum(cv, p["duodenum"], p["pancreas"]["x_head"], wall.cavity)
    _paint_pancreas(cv, p["pancreas"], wall.cavity)
    _paint_portal_vein(cv, p["portal"], p["pancreas"], wall.cavity)
    _paint_kidneys(cv, p["kidneys"], wall.body)
    if full:
        hollow.paint_colon(cv, p["hollow"]["colon"], p["colon"]["jitter"], wall.cavity, fields)
    _paint_great_vessels(cv, p["vessels"])
    _paint_spine(cv, p["spine"], wall.body)
    _paint_lungs(cv, wall.cavity)
    _paint_ribs(cv, p["ribs"], p["body"]["cy"], wall)
    if full:
        hollow.paint_esophagus(cv, p["hollow"]["esophagus"], p["vessels"], p["stomach"], wall.cavity)

    return Anatomy(grid=grid, tissue=cv.tissue, label=cv.label, tex_fine=fields.tex_fine,
                   tex_coarse=fields.tex_coarse, body=wall.body, params=p, anatomy=anatomy, sex=sex)


# ---- geometry and random fields: every draw of a patient, in a fixed order ----

def _sample_geometry(rng: np.random.Generator) -> dict:
    """The patient's geometry: organ centres, semi-axes, angles (radians) and shape knobs, in anatomy units.

    The draws run in the order written (keyword arguments evaluate left to
    right), so reordering anything here changes every patient. The dict is
    what :attr:`Anatomy.params` records.
    """
    U = rng.uniform
    p: dict = {}
    p["body"] = dict(ax=U(0.86, 0.95), ay=U(0.66, 0.78), cy=U(-0.02, 0.04), power=U(2.0, 2.6),
                     fat=U(0.05, 0.13), muscle=U(0.035, 0.055))
    liver_s = U(0.9, 1.1)
    p["liver"] = dict(c1=(0.40 + U(-0.03, 0.03), 0.0 + U(-0.04, 0.04), 0.26 + U(-0.05, 0.05)),
                      a1=(0.40 * liver_s, 0.50 * liver_s, 0.50 * liver_s),
                      c2=(0.02 + U(-0.05, 0.05), 0.22 + U(-0.03, 0.03), 0.36 + U(-0.04, 0.04)),
                      a2=(0.30 * liver_s * U(0.8, 1.15), 0.20 * liver_s, 0.25 * liver_s))
    p["gall_bladder"] = dict(present=bool(U() < 0.85), c=(0.26 + U(-0.04, 0.04), 0.30 + U(-0.03, 0.03), U(-0.06, 0.06)),
                             a=(0.075 * U(0.8, 1.2), 0.085 * U(0.8, 1.2), 0.15 * U(0.8, 1.2)), tilt=U(-0.4, 0.4))
    spl = U(0.85, 1.15)
    p["spleen"] = dict(c=(-0.58 + U(-0.03, 0.03), -0.22 + U(-0.04, 0.04), 0.30 + U(-0.05, 0.05)),
                       a=(0.15 * spl, 0.27 * spl, 0.28 * spl), yaw=U(0.35, 0.7))
    # both kidney sizes are drawn (the tuple) before either side's position
    p["kidneys"] = {side: dict(c=(sgn * (0.35 + U(-0.03, 0.03)), -0.34 + U(-0.03, 0.03), dz + U(-0.05, 0.05)),
                               a=(0.14 * s, 0.12 * s, 0.26 * s), yaw=sgn * U(0.3, 0.6), roll=sgn * U(0.05, 0.25))
                    for side, sgn, dz, s in (("left", -1.0, 0.02, U(0.9, 1.1)), ("right", 1.0, -0.06, U(0.9, 1.1)))}
    p["pancreas"] = dict(x_head=0.22 + U(-0.03, 0.03), x_tail=-0.50 + U(-0.04, 0.04), y0=-0.03 + U(-0.03, 0.03),
                         bend=U(0.15, 0.35), z0=U(-0.04, 0.04), rise=U(0.05, 0.18), thick=U(0.9, 1.15))
    p["stomach"] = dict(c=(-0.30 + U(-0.04, 0.04), 0.18 + U(-0.04, 0.04), 0.34 + U(-0.05, 0.05)),
                        a=(0.24 * U(0.8, 1.15), 0.22 * U(0.8, 1.15), 0.26 * U(0.8, 1.15)), yaw=U(-0.5, 0.1),
                        gas=U(0.1, 0.7), wall=U(0.1, 0.16))
    p["vessels"] = dict(aorta=(-0.06 + U(-0.02, 0.02), -0.215 + U(-0.02, 0.01)), aorta_r=0.065 * U(0.85, 1.15),
                        cava=(0.13 + U(-0.02, 0.02), -0.19 + U(-0.02, 0.02)), cava_a=(0.07 * U(0.8, 1.2), 0.05 * U(0.8, 1.2)))
    p["spine"] = dict(y=-0.40 + U(-0.02, 0.02), r=0.12 * U(0.9, 1.1), period=U(0.36, 0.44), phase=U(0, 1))
    p["colon"] = dict(r=0.075 * U(0.85, 1.15), jitter=U(-0.04, 0.04, size=(6, 3)).round(4).tolist())
    p["bowel"] = dict(level=U(-0.04, 0.1), loop=U(0.55, 0.75))
    p["ribs"] = dict(phase=U(0, 2 * np.pi), k=int(rng.integers(8, 11)))
    p["portal"] = dict(r=0.035 * U(0.85, 1.15), jitter=U(-0.03, 0.03, size=(4, 3)).round(4).tolist())
    p["duodenum"] = dict(r=0.05 * U(0.85, 1.15), jitter=U(-0.03, 0.03, size=(5, 3)).round(4).tolist())
    return p


@dataclass
class _Fields:
    """Smooth unit-variance noise, float32 (X, Y, Z) on the canvas grid (correlation lengths in mm).

    vess1, vess2 (14 mm): hepatic vessels run where both are near zero; bowel
    (16 mm): small-bowel loops are its near-zero band; gas (8 mm): gas pockets
    where it is high; tex_fine (3 mm), tex_coarse (12 mm): tissue texture.
    """

    vess1: np.ndarray
    vess2: np.ndarray
    bowel: np.ndarray
    gas: np.ndarray
    tex_fine: np.ndarray
    tex_coarse: np.ndarray


def _draw_fields(cv: _Canvas, rng: np.random.Generator) -> _Fields:
    """The fields after the canvas's own, drawn one after another in the order of :class:`_Fields`."""
    u = cv.grid.unit_mm
    vess1 = smooth_field(rng, cv.ax, cv.bounds, 14.0 / u)
    vess2 = smooth_field(rng, cv.ax, cv.bounds, 14.0 / u)
    bowel = smooth_field(rng, cv.ax, cv.bounds, 16.0 / u)
    gas = smooth_field(rng, cv.ax, cv.bounds, 8.0 / u)
    tex_fine = smooth_field(rng, cv.ax, cv.bounds, 3.0 / u)
    tex_coarse = smooth_field(rng, cv.ax, cv.bounds, 12.0 / u)
    return _Fields(vess1, vess2, bowel, gas, tex_fine, tex_coarse)


# ---- painting steps, in precedence order (later wins); none of them draws random numbers ----

_FULL = (slice(None),) * 3


@dataclass
class _Wall:
    """The body outline on the canvas grid.

    body / cavity: bool (X, Y, Z) inside the skin / inside the muscle wall;
    r: float32 (X, Y, Z) normalised superellipse radius (1 at the skin);
    r_muscle / r_cavity: r at the fat-muscle and muscle-cavity boundaries.
    """

    body: np.ndarray
    cavity: np.ndarray
    r: np.ndarray
    r_muscle: float
    r_cavity: float


def _paint_body_wall(cv: _Canvas, b: dict) -> _Wall:
    """Subcutaneous fat, abdominal-wall muscle and visceral fat: a superellipse tapering upward."""
    X, Y, Z = cv.X, cv.Y, cv.Z
    taper = 1.0 + 0.03 * Z
    ay = np.where(Y < b["cy"], b["ay"] * 0.88, b["ay"])  # flatter back than belly
    r = ((np.abs(X) / (b["ax"] * taper)) ** b["power"] + (np.abs(Y - b["cy"]) / (ay * taper)) ** b["power"]) ** (1 / b["power"])
    r = r + np.float32(0.015) * cv.P1
    mean_ax = 0.5 * (b["ax"] + b["ay"])
    body = r <= 1.0
    cv.paint(_FULL, body, "fat", None)
    r_muscle = 1.0 - b["fat"] / mean_ax
    r_cavity = r_muscle - b["muscle"] / mean_ax
    cv.paint(_FULL, r <= r_muscle, "muscle", None)
    cavity = r <= r_cavity
    cv.paint(_FULL, cavity, "visceral_fat", None)
    return _Wall(body=body, cavity=cavity, r=r, r_muscle=r_muscle, r_cavity=r_cavity)


def _paint_back_muscles(cv: _Canvas, spine_y: float, body: np.ndarray) -> None:
    """Paraspinal muscles behind the spine and psoas muscles beside it (``spine_y``: vertebral centre y)."""
    for sgn in (-1.0, 1.0):
        sl, q = cv.ellipsoid((sgn * 0.17, spine_y - 0.20, 0.0), (0.14, 0.12, 5.0), wobble=0.05)
        cv.paint(sl, (q <= 1.0) & body[sl], "muscle", None)
        sl, q = cv.ellipsoid((sgn * 0.19, spine_y + 0.02, 0.0), (0.07, 0.07, 5.0), wobble=0.05)
        grow = np.clip(0.35 - cv.Z[sl], 0.0, 1.0)  # psoas thickens going down
        cv.paint(sl, (q <= 0.3 + grow * 1.2) & body[sl], "muscle", None)


def _paint_small_bowel(cv: _Canvas, bw: dict, cavity: np.ndarray, fields: _Fields) -> None:
    """Small-intestine loops in the lower, anterior cavity: wall, content and gas pockets."""
    region = cavity & (cv.Z < bw["level"]) & (cv.Y > -0.3)
    loops = np.abs(fields.bowel) < bw["loop"]
    lumen = np.abs(fields.bowel) < bw["loop"] * 0.55
    cv.paint(_FULL, region & loops, "bowel_wall", "intestine")
    cv.paint(_FULL, region & lumen, "bowel_content", "intestine")
    cv.paint(_FULL, region & lumen & (fields.gas > 1.0), "gas", "intestine")


def _paint_colon(cv: _Canvas, co: dict, cavity: np.ndarray, gas: np.ndarray) -> None:
    """The colon frame: ascending (right), transverse (anterior), descending (left), entering from below."""
    j = np.asarray(co["jitter"], np.float32)
    zb = float(cv.bounds[2][0]) - 0.1
    path = np.array([[0.60, -0.05, zb], [0.58, 0.0, -0.05], [0.30, 0.40, -0.12], [-0.25, 0.42, -0.08],
                     [-0.58, 0.10, 0.02], [-0.60, -0.05, zb]], np.float32)
    path[1:-1] += j[1:-1]  # the ends stay below the grid, so the colon always leaves through the bottom
    sl, d = _tube(cv, path, co["r"])
    inside = cavity[sl]
    cv.paint(sl, (d <= co["r"]) & inside, "bowel_wall", "colon")
    col_lumen = (d <= co["r"] * 0.72) & inside
    cv.paint(sl, col_lumen, "bowel_content", "colon")
    cv.paint(sl, col_lumen & ((gas[sl] > 0.2) | (cv.Y[sl] > 0.3)), "gas", "colon")


def _paint_stomach(cv: _Canvas, st: dict, cavity: np.ndarray) -> None:
    """Wall, fluid and gas cap (supine: gas rises anteriorly, so the air-fluid level is a plane of y)."""
    sl, q = cv.ellipsoid(st["c"], st["a"], _rot(st["yaw"]), wobble=0.06)
    m = (q <= 1.0) & cavity[sl]
    cv.paint(sl, m, "stomach_wall", "stomach")
    lum = (q <= 1.0 - st["wall"]) & cavity[sl]
    cv.paint(sl, lum, "stomach_content", "stomach")
    level = st["c"][1] + st["a"][1] * (1.0 - 2.0 * st["gas"]) * 0.6
    cv.paint(sl, lum & (cv.Y[sl] > level), "gas", "stomach")


def _paint_liver(cv: _Canvas, lv: dict, cavity: np.ndarray, fields: _Fields) -> None:
    """Two lobes joined by a smooth union, with hepatic vessels threading the parenchyma."""
    c1, a1, c2, a2 = lv["c1"], lv["a1"], lv["c2"], lv["a2"]
    lo = np.minimum(np.subtract(c1, a1), np.subtract(c2, a2)) - 0.1
    hi = np.maximum(np.add(c1, a1), np.add(c2, a2)) + 0.1
    sl = cv.box((lo + hi) / 2, (hi - lo) / 2)
    d1 = cv.local(sl, c1)
    d2 = cv.local(sl, c2)
    q1 = np.sqrt((d1[0] / a1[0]) ** 2 + (d1[1] / a1[1]) ** 2 + (d1[2] / a1[2]) ** 2)
    q2 = np.sqrt((d2[0] / a2[0]) ** 2 + (d2[1] / a2[1]) ** 2 + (d2[2] / a2[2]) ** 2)
    k = np.float32(0.25)  # smooth-min blend width: a continuous bridge between the lobes
    h = np.clip(0.5 + 0.5 * (q2 - q1) / k, 0.0, 1.0)
    q = q2 * (1 - h) + q1 * h - k * h * (1 - h) + np.float32(0.07) * cv.P1[sl]
    liver = (q <= 1.0) & cavity[sl]
    cv.paint(sl, liver, "liver", "liver")
    # vessels stay off the capsule (q <= 0.9), so the liver outline is parenchyma
    tubes = (np.abs(fields.vess1[sl]) < 0.11) & (np.abs(fields.vess2[sl]) < 0.11) & (q <= 0.9) & liver
    cv.paint(sl, tubes, "hepatic_vessel", "hepatic_vessel")


def _paint_gall_bladder(cv: _Canvas, gb: dict, cavity: np.ndarray) -> None:
    """A tilted ellipsoid under the liver; absent in ~15% of patients, as after cholecystectomy."""
    if gb["present"]:
        sl, q = cv.ellipsoid(gb["c"], gb["a"], _rot(0.0, gb["tilt"]), wobble=0.04, wobble_field="P2")
        cv.paint(sl, (q <= 1.0) & cavity[sl], "gall_bladder", "gall_bladder")


def _paint_spleen(cv: _Canvas, sp: dict, cavity: np.ndarray) -> None:
    """A crescent: an ellipsoid minus a medial bite."""
    sl, q = cv.ellipsoid(sp["c"], sp["a"], _rot(sp["yaw"]), wobble=0.08)
    bite_c = (sp["c"][0] + 0.7 * sp["a"][0] * np.cos(sp["yaw"]), sp["c"][1] + 0.7 * sp["a"][0] * np.sin(sp["yaw"]), sp["c"][2])
    u_, v_, w_ = cv.local(sl, bite_c, _rot(sp["yaw"]))
    bite = (u_ / (sp["a"][0] * 0.9)) ** 2 + (v_ / (sp["a"][1] * 0.75)) ** 2 + (w_ / (sp["a"][2] * 0.8)) ** 2 <= 1.0
    cv.paint(sl, (q <= 1.0) & ~bite & cavity[sl], "spleen", "spleen")


def _paint_duodenum(cv: _Canvas, du: dict, x_head: float, cavity: np.ndarray) -> None:
    """The duodenal C-loop around the pancreatic head (``x_head``: the head's x), wall and content."""
    xh = x_head
    dpath = np.array([[xh - 0.2, 0.22, 0.2], [xh + 0.1, 0.08, 0.12], [xh + 0.13, -0.04, -0.02],
                      [xh + 0.05, -0.06, -0.16], [xh - 0.2, -0.02, -0.14]], np.float32)
    dpath += np.asarray(du["jitter"], np.float32)
    sl, d = _tube(cv, dpath, du["r"])
    cv.paint(sl, (d <= du["r"]) & cavity[sl], "bowel_wall", "duodenum")
    cv.paint(sl, (d <= du["r"] * 0.6) & cavity[sl], "bowel_content", "duodenum")


def _paint_pancreas(cv: _Canvas, pa: dict, cavity: np.ndarray) -> None:
    """A cross-section swept along a curve from the head (right, thick) to the tail (left, thin, higher)."""
    xh, xt = pa["x_head"], pa["x_tail"]
    xm, half_len = 0.5 * (xh + xt), 0.5 * (xh - xt)
    sl = cv.box((xm, pa["y0"] - 0.05, pa["z0"] + 0.05), (half_len + 0.1, 0.35, 0.35))
    Xs, Ys, Zs = cv.X[sl], cv.Y[sl], cv.Z[sl]
    t = (Xs - xt) / (xh - xt)  # 0 at the tail, 1 at the head
    yc = pa["y0"] - pa["bend"] * (1 - t) ** 2 * 0.6
    zc = pa["z0"] + pa["rise"] * (1 - t)
    ty = (0.065 + 0.075 * np.clip(t, 0, 1) ** 2) * pa["thick"]
    tz = (0.07 + 0.09 * np.clip(t, 0, 1) ** 2) * pa["thick"]
    qp = ((Ys - yc) / ty) ** 2 + ((Zs - zc) / tz) ** 2 + ((Xs - xm) / half_len) ** 8
    qp = np.sqrt(qp) + np.float32(0.18) * cv.P2[sl]
    cv.paint(sl, (qp <= 1.0) & cavity[sl], "pancreas", "pancreas")


def _paint_portal_vein(cv: _Canvas, pv: dict, pa: dict, cavity: np.ndarray) -> None:
    """The splenic vein in a groove on the pancreas' back, joining the portal vein that climbs to the liver hilum.

    The path follows the pancreas centreline of :func:`_paint_pancreas` at three points, shifted back by
    0.8 of its half-thickness.
    """
    xh, xt = pa["x_head"], pa["x_tail"]
    ts = np.array([0.05, 0.5, 0.85], np.float32)
    xs = xt + ts * (xh - xt)
    ys = pa["y0"] - pa["bend"] * (1 - ts) ** 2 * 0.6 - 0.8 * (0.065 + 0.075 * ts**2) * pa["thick"]
    zs = pa["z0"] + pa["rise"] * (1 - ts)
    vpath = np.concatenate([np.stack([xs, ys, zs], 1), [[xh + 0.08, pa["y0"] - 0.02, pa["z0"] + 0.22]]]).astype(np.float32)
    vpath += np.asarray(pv["jitter"], np.float32)
    sl, d = _tube(cv, vpath, pv["r"])
    cv.paint(sl, (d <= pv["r"]) & cavity[sl], "portal_vein", "portal_vein_and_splenic_vein")


def _paint_kidneys(cv: _Canvas, kidneys: dict, body: np.ndarray) -> None:
    """Each kidney: cortex shell, medullary pyramids, renal sinus fat at the hilum.

    Clipped to ``body``, not the visceral cavity: the kidneys sit against the back wall.
    """
    for side, kd in kidneys.items():
        rot = _rot(kd["yaw"], 0.0, kd["roll"])
        sl, q = cv.ellipsoid(kd["c"], kd["a"], rot, wobble=0.04, wobble_field="P2")
        u_, v_, w_ = cv.local(sl, kd["c"], rot)
        medial = -np.sign(kd["c"][0]) * u_ / kd["a"][0]  # > 0 toward the spine
        kid = (q <= 1.0) & body[sl]
        cv.paint(sl, kid, "kidney_cortex", f"kidney_{side}")
        ang = np.arctan2(w_ / kd["a"][2], v_ / kd["a"][1] + 1e-6)
        pyramids = (q > 0.3) & (q < 0.72) & (np.cos(7.0 * ang) > -0.3) & kid
        cv.paint(sl, pyramids, "kidney_medulla", f"kidney_{side}")
        sinus = kid & (medial > 0.35) & (np.abs(w_ / kd["a"][2]) < 0.4) & (q > 0.15)
        cv.paint(sl, sinus, "visceral_fat", None)


def _paint_great_vessels(cv: _Canvas, vs: dict) -> None:
    """Aorta (left of midline, drifting with z) and postcava (right), running the whole length."""
    X, Y, Z = cv.X, cv.Y, cv.Z
    ax_, ay_ = vs["aorta"]
    qa = np.sqrt((X - ax_ - 0.02 * Z) ** 2 + (Y - ay_) ** 2) / vs["aorta_r"]
    cv.paint(_FULL, qa <= 1.0, "aorta", "aorta")
    cx_, cy_ = vs["cava"]
    qc = np.sqrt(((X - cx_) / vs["cava_a"][0]) ** 2 + ((Y - cy_) / vs["cava_a"][1]) ** 2) + 0.05 * cv.P2
    cv.paint(_FULL, qc <= 1.0, "postcava", "postcava")


def _paint_spine(cv: _Canvas, spn: dict, body: np.ndarray) -> None:
    """Vertebral bodies with cortical rim and periodic discs, posterior elements, and the spinal canal."""
    X, Y, Z = cv.X, cv.Y, cv.Z
    rv = spn["r"]
    rr = np.sqrt((X / (rv * 1.08)) ** 2 + ((Y - spn["y"]) / rv) ** 2)
    disc = ((Z / spn["period"] + spn["phase"]) % 1.0) < 0.2
    cv.paint(_FULL, rr <= 1.0, "bone_cortex", None)
    cv.paint(_FULL, (rr <= 0.82) & ~disc, "bone_trabecular", None)
    cv.paint(_FULL, (rr <= 1.0) & disc, "disc", None)
    post = np.sqrt((X / 0.05) ** 2 + ((Y - spn["y"] + rv + 0.09) / 0.10) ** 2) <= 1.0
    lam = (np.abs(X) < 0.11) & (np.abs(Y - spn["y"] + rv + 0.06) < 0.025)
    cv.paint(_FULL, (post | lam) & body, "bone_cortex", None)
    canal = np.sqrt(X ** 2 + (Y - spn["y"] + rv + 0.055) ** 2) <= 0.055
    cv.paint(_FULL, canal, "csf", None)


def _paint_lungs(cv: _Canvas, cavity: np.ndarray) -> None:
    """Lung bases: the posterior costophrenic recesses, reaching into the top slices."""
    for sgn, name in ((-1.0, "lung_left"), (1.0, "lung_right")):
        sl, q = cv.ellipsoid((sgn * 0.45, -0.22, 1.02), (0.33, 0.42, 0.42), wobble=0.05)
        cv.paint(sl, (q <= 1.0) & cavity[sl], "lung", name)


def _paint_ribs(cv: _Canvas, ribs: dict, body_cy: float, wall: _Wall) -> None:
    """Ribs: oblique stripes in the muscle wall of the upper abdomen (``body_cy``: the body outline's centre y)."""
    X, Y, Z = cv.X, cv.Y, cv.Z
    theta = np.arctan2(Y - body_cy, X)
    band = (wall.r > wall.r_cavity) & (wall.r <= wall.r_muscle + 0.01) & (Z > -0.15) & (Y > body_cy - 0.5)
    rib = band & (np.cos(ribs["k"] * theta + 9.0 * Z + ribs["phase"]) > 0.8)
    cv.paint(_FULL, rib, "bone_cortex", None)
