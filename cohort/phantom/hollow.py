"""The phantom's hollow and pelvic organs: a haustral colon, the esophagus and the uterus.

Drawn only in the "full" anatomy (:data:`cohort.phantom.anatomy.ANATOMIES`), from a random
stream of their own, so a "basic" phantom of a seed is the same patient, voxel for voxel,
as before these organs existed, and a "full" one is that patient with them added.

- colon: a tube along the colonic frame (ascending on the patient's right, the
  hepatic flexure under the liver, the transverse colon anteriorly, the splenic
  flexure, descending on the left) with haustra: semilunar folds every 11-15 mm
  that narrow the lumen, and sacculations bulging between them. Its wall is ~2 mm;
  the lumen holds gas anteriorly (supine: the air-fluid level is a plane of y),
  fluid dependently and mottled stool with gas bubbles.
- esophagus: a thin-walled (~3 mm) tube of ~11 mm outer diameter anterior to the
  aorta, from the top slice through the hiatus to the cardia of the stomach, with a
  collapsed lumen of mucus and a little gas.
- uterus (female phantoms): an anteverted pear-shaped myometrium with a central
  endometrial stripe in the lowest slices, between the colon limbs.

Sizes are the phantom's (a miniature abdomen: the field of view is 144 mm across).
"""

from __future__ import annotations

import numpy as np

from cohort import labels as L
from cohort.phantom.fields import smoothstep

#: tissues of the colon's lumen, the esophagus' lumen and the endometrium: not wall
LUMEN_TISSUES: tuple[str, ...] = ("gas", "bowel_content", "stool")


def sample_hollow_geometry(rng: np.random.Generator, p: dict) -> dict:
    """Geometry of the full anatomy's extra organs, from their own stream, in a fixed order
    (the uterus is drawn for every patient, so a patient's other organs never depend on the sex).

    ``p``: the basic geometry (:func:`cohort.phantom.anatomy._sample_geometry`); its colon
    jitter is reused, so the haustral colon follows the same patient's frame.
    """
    U = rng.uniform
    return {
        "colon": dict(r=0.105 * U(0.88, 1.12), wall=0.028 * U(0.9, 1.15), period=U(0.155, 0.205), phase=U(0, 1),
                      fold=U(0.28, 0.4), gas_bias=U(-0.15, 0.2), stool=U(0.15, 0.45)),
        "esophagus": dict(r=0.075 * U(0.92, 1.08), wall=0.042 * U(0.9, 1.1), dx_top=U(0.02, 0.06),
                          dx_hiatus=U(-0.04, 0.0), z_hiatus=U(0.46, 0.54), gap=U(0.03, 0.045)),
        "uterus": dict(c=(U(-0.04, 0.04), 0.05 + U(-0.03, 0.03), -0.47 + U(-0.03, 0.03)),
                       a=tuple(float(v) for v in np.array([0.17, 0.11, 0.19]) * U(0.85, 1.15)),
                       pitch=U(0.2, 0.5), yaw=U(-0.25, 0.25), endo=U(0.7, 1.2)),
    }


def tube_frame(cv, points: np.ndarray, radius: float):
    """(slices, d, s, cy): distance from a polyline (anatomy units), arclength ``s`` of the nearest
    centre-line point and that point's y, within the polyline's box (grown by 1.5 radius)."""
    lo = points.min(0) - radius * 1.5 - 0.05
    hi = points.max(0) + radius * 1.5 + 0.05
    sl = cv.box((lo + hi) / 2, (hi - lo) / 2)
    X, Y, Z = cv.X[sl], cv.Y[sl], cv.Z[sl]
    d = np.full(X.shape, np.inf, np.float32)
    s = np.zeros(X.shape, np.float32)
    cy = np.zeros(X.shape, np.float32)
    start = 0.0
    for a, b in zip(points[:-1], points[1:]):
        ab = (b - a).astype(np.float32)
        seg = float(np.sqrt(ab @ ab))
        t = ((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / np.float32(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        dd = np.sqrt((X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2 + (Z - a[2] - t * ab[2]) ** 2)
        closer = dd < d
        d = np.where(closer, dd, d)
        s = np.where(closer, np.float32(start) + t * np.float32(seg), s)
        cy = np.where(closer, np.float32(a[1]) + t * ab[1], cy)
        start += seg
    return sl, d, s, cy


def colon_path(cv, jitter) -> np.ndarray:
    """The colonic frame (anatomy units): both limbs leave through the bottom of the grid, the
    hepatic flexure sits below the liver and the transverse colon anteriorly."""
    zb = float(cv.bounds[2][0]) - 0.1
    path = np.array([[0.58, -0.02, zb], [0.58, 0.02, -0.26], [0.36, 0.36, -0.34], [-0.25, 0.40, -0.28],
                     [-0.56, 0.12, -0.02], [-0.60, -0.04, zb]], np.float32)
    path[1:-1] += np.asarray(jitter, np.float32)[1:-1]
    return path


def paint_colon(cv, co: dict, jitter, cavity: np.ndarray, fields) -> None:
    """Haustral colon: wall, folds, gas anteriorly, fluid dependently, stool with gas bubbles."""
    path = colon_path(cv, jitter)
    R = float(co["r"])
    sl, d, s, cy = tube_frame(cv, path, R * 1.1)
    # narrow periodic folds (haustral septa) with a fold depth that varies along the colon
    fold = np.clip(np.cos(2.0 * np.pi * (s / np.float32(co["period"]) + np.float32(co["phase"]))), 0.0, 1.0) ** 6
    fold = fold * (0.65 + 0.35 * np.tanh(cv.P2[sl]))
    r_out = np.float32(R) * (1.05 - 0.12 * fold)  # sacculations bulge between the folds
    r_lum = r_out - np.float32(co["wall"]) - np.float32(co["fold"] * R) * fold
    inside = cavity[sl]
    colon = (d <= r_out) & inside
    cv.paint(sl, colon, "bowel_wall", "colon")
    lumen = (d <= r_lum) & inside
    cv.paint(sl, lumen, "bowel_content", "colon")
    # supine: gas rises anteriorly; the gas fraction of the lumen varies smoothly along the colon
    gas_frac = np.clip(0.45 + np.float32(co["gas_bias"]) + 0.3 * np.tanh(cv.P1[sl]), 0.05, 0.95)
    level = r_lum * (1.0 - 2.0 * gas_frac)
    gas = lumen & ((cv.Y[sl] - cy) > level)
    stool = lumen & ~gas & (fields.bowel[sl] > np.float32(co["stool"]))
    cv.paint(sl, stool, "stool", "colon")
    cv.paint(sl, gas | (stool & (fields.gas[sl] > 1.1)), "gas", "colon")


def esophagus_path(cv, es: dict, vs: dict, st: dict) -> np.ndarray:
    """From above the grid, anterior to the aorta (``vs``: great vessels), through the hiatus
    (``z_hiatus``) to the stomach's centre (``st``); anatomy units."""
    ax_, ay_ = vs["aorta"]
    y = ay_ + vs["aorta_r"] + es["r"] + es["gap"]
    zt = float(cv.bounds[2][1]) + 0.1
    zh = float(es["z_hiatus"])
    return np.array([[ax_ + 0.02 * zt + es["dx_top"], y, zt],
                     [ax_ + 0.02 * zh + es["dx_hiatus"], y, zh],
                     list(st["c"])], np.float32)


def paint_esophagus(cv, es: dict, vs: dict, st: dict, cavity: np.ndarray) -> None:
    """The esophagus: wall and a collapsed lumen (mucus, a little gas); it stops at the stomach
    wall and never paints over the aorta or the postcava."""
    path = esophagus_path(cv, es, vs, st)
    sl, d, _, _ = tube_frame(cv, path, float(es["r"]))
    keep = cavity[sl] & ~np.isin(cv.label[sl], [L.NAME_TO_INDEX[n] for n in ("stomach", "aorta", "postcava")])
    cv.paint(sl, (d <= es["r"]) & keep, "esophagus_wall", "esophagus")
    lumen = (d <= es["r"] - es["wall"]) & keep
    cv.paint(sl, lumen, "bowel_content", "esophagus")
    # a thin gas streak where the smooth "gas" field is high (smoothstep keeps it a streak)
    gas = lumen & (smoothstep(0.2, 0.8, cv.P2[sl]) > 0.5)
    cv.paint(sl, gas, "gas", "esophagus")


def paint_uterus(cv, ut: dict, cavity: np.ndarray) -> None:
    """An anteverted uterus: myometrium with a central endometrial stripe."""
    from cohort.phantom.anatomy import _rot

    rot = _rot(ut["yaw"], ut["pitch"])
    sl, q = cv.ellipsoid(ut["c"], ut["a"], rot, wobble=0.04, wobble_field="P2")
    u, v, w = cv.local(sl, ut["c"], rot)
    # pear shape: narrower toward the cervix (local w < 0)
    taper = np.float32(1.0) + np.float32(0.25) * np.clip(-w / np.float32(ut["a"][2]), 0.0, 1.0)
    q = q * taper
    body = (q <= 1.0) & cavity[sl]
    cv.paint(sl, body, "myometrium", "uterus")
    a = ut["a"]
    e = float(ut["endo"])
    qe = np.sqrt((u / (0.45 * a[0])) ** 2 + (v / (0.17 * a[1] * e)) ** 2 + ((w - 0.1 * a[2]) / (0.62 * a[2])) ** 2)
    cv.paint(sl, (qe <= 1.0) & body, "endometrium", "uterus")
