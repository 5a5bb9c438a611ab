"""``make_phantom``: one procedural abdominal CT case with known ground truth."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cohort.case import Case
from cohort.phantom.anatomy import ANATOMIES, SEXES, build_anatomy
from cohort.phantom.fields import Grid
from cohort.phantom.render import render, subslices
from cohort.phantom.sites import SiteProfile, get_site
from cohort.phantom.tumors import TumorRequest, random_requests

#: Default organ types that get random tumors.
DEFAULT_TUMOR_ORGANS: tuple[str, ...] = ("liver", "pancreas", "kidney")
#: Tumor organ types that only the "full" anatomy draws completely (the esophagus and the uterus
#: exist only there, the colon gets its haustra): asking for tumors in one of them selects it.
FULL_ANATOMY_ORGANS: tuple[str, ...] = ("colon", "esophagus", "uterus")
#: Bump when the generator changes what a seed produces. "basic" is version 1 unchanged; "full"
#: (the basic patient plus a haustral colon, the esophagus and the uterus) is version 2.
PHANTOM_VERSION = 1
ANATOMY_VERSION: dict[str, int] = {"basic": 1, "full": 2}

# independent random streams per seed: the anatomy stream never sees tumor or noise draws,
# so a healthy and a tumor-bearing case of one seed are the same patient; the full anatomy's
# extra organs and the patient's sex have streams of their own, so the basic patient of a seed
# (and its tumors and noise) is byte-identical to phantom version 1
_ANATOMY, _TUMOR, _NOISE, _HOLLOW, _SEX = 0, 1, 2, 3, 4


@dataclass
class PhantomPair:
    """The same patient and scan, without and with tumors (identical outside the lesions' margins)."""

    healthy: Case
    tumor: Case


def _triple(v, what: str) -> tuple[float, float, float]:
    if np.isscalar(v):
        v = (float(v),) * 3
    v = tuple(float(x) for x in v)
    if len(v) != 3 or any(not (x > 0) for x in v):
        raise ValueError(f"{what} must be a positive number or 3 positive numbers, got {v}")
    return v  # type: ignore[return-value]


def phantom_grid(site: str | SiteProfile = "A", *, spacing: float | Sequence[float] | None = None,
                 fov_mm: float | Sequence[float] | None = None, shape: Sequence[int] | None = None,
                 scale: float = 1.0) -> Grid:
    """The voxel grid a phantom is drawn on.

    fov_mm (default the site's, 144 x 144 x 96 mm) is multiplied by ``scale``;
    spacing defaults to the site's. With ``shape`` and ``spacing`` both given the
    field of view becomes shape * spacing; with only ``shape``, spacing = fov / shape.
    """
    prof = get_site(site)
    fov = np.asarray(_triple(prof.fov_mm if fov_mm is None else fov_mm, "fov_mm")) * float(scale)
    if shape is not None:
        shape = tuple(int(n) for n in (shape if not np.isscalar(shape) else (shape,) * 3))
        if len(shape) != 3 or min(shape) < 4:
            raise ValueError(f"shape must be 3 sizes >= 4, got {shape}")
        sp = _triple(spacing, "spacing") if spacing is not None else tuple(f / n for f, n in zip(fov, shape))
        return Grid(shape, tuple(float(s) for s in sp))  # type: ignore[arg-type]
    sp = _triple(prof.spacing_mm if spacing is None else spacing, "spacing")
    return Grid.from_options(tuple(fov), sp)


def _streams(seed: int, site: SiteProfile):
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    return (np.random.default_rng([seed, _ANATOMY]), np.random.default_rng([seed, _TUMOR]),
            np.random.default_rng([seed, _NOISE, zlib.crc32(site.name.encode())]))


def _check_tumors(tumors) -> None:
    if tumors is None or (isinstance(tumors, str) and tumors == "random"):
        return
    if isinstance(tumors, str):
        raise ValueError(f"tumors must be None, 'random' or a list of TumorRequest, got {tumors!r}")
    bad = [t for t in tumors if not isinstance(t, TumorRequest)]
    if bad:
        raise ValueError(f"tumors list must hold TumorRequest objects, got {bad[0]!r}")


def _requests(tumors, rng, organs, sex: str) -> list[TumorRequest]:
    if tumors is None:
        return []
    if isinstance(tumors, str):
        # a male patient has no uterus: its random tumors are drawn among the other organs asked for
        avail = tuple(o for o in organs if not (o == "uterus" and sex != "F"))
        if not avail:
            raise ValueError(f"random tumors in {tuple(organs)}: none of these organs exists in a phantom of sex "
                             f"{sex!r} (the uterus is drawn in female phantoms only; pass sex='F')")
        return random_requests(rng, avail)
    out = list(tumors)
    if sex != "F" and any(t.organ == "uterus" for t in out):
        raise ValueError(f"a uterus tumor was requested for a phantom of sex {sex!r}; pass sex='F'")
    return out


def _organs_asked(tumors, organs) -> set[str]:
    if tumors is None or isinstance(tumors, str):
        return set(organs)
    return set(organs) | {t.organ_type for t in tumors}


def resolve_anatomy(anatomy: str | None, tumors, organs) -> str:
    """The anatomy a phantom is drawn with: ``anatomy`` when given, else "full" when any tumor
    organ asked for (``organs`` or the requests) is one of :data:`FULL_ANATOMY_ORGANS`, else
    "basic" (so cohorts of liver, pancreas and kidney tumors stay what they were)."""
    if anatomy is not None:
        if anatomy not in ANATOMIES:
            raise ValueError(f"unknown phantom anatomy {anatomy!r}; choose from {ANATOMIES}")
        return anatomy
    return "full" if _organs_asked(tumors, organs) & set(FULL_ANATOMY_ORGANS) else "basic"


def resolve_sex(seed: int, sex: str | None, tumors, organs) -> tuple[str, str]:
    """(sex, how it was set): given; else "F" when the uterus is the only tumor organ asked for;
    else drawn from the seed's own stream (half and half)."""
    if sex is not None:
        s = str(sex).strip().upper()
        if s not in SEXES:
            raise ValueError(f"phantom sex must be one of {SEXES} (or None to draw it per seed), got {sex!r}")
        return s, "given"
    asked = _organs_asked(tumors, organs)
    if asked and asked <= {"uterus"}:
        return "F", "uterine tumors asked for"
    return ("F" if np.random.default_rng([int(seed), _SEX]).random() < 0.5 else "M"), "drawn"


def _anatomy(grid: Grid, rng: np.random.Generator, anatomy: str = "basic", sex: str | None = None,
             rng_extra: np.random.Generator | None = None):
    """(k, anatomy): thick slices are drawn as k thinner sub-slices, averaged later in :func:`render`."""
    k = subslices(grid.spacing[2])
    fine = grid if k == 1 else Grid((grid.shape[0], grid.shape[1], grid.shape[2] * k),
                                    (grid.spacing[0], grid.spacing[1], grid.spacing[2] / k))
    return k, build_anatomy(fine, rng, anatomy=anatomy, sex=sex, rng_extra=rng_extra)


def _meta(case_id, prof, seed, grid, placed, requests, seconds, anat=None, sex_source=None) -> dict:
    return {
        "case_id": case_id,
        "kind": "real",  # a phantom stands in for real scans: it is the "real" side of every experiment
        "source": {"dataset": "phantom", "case_id": case_id, "path": None},
        "generator": "phantom",
        "seed": int(seed),
        "site": prof.name,
        "phase": prof.phase,
        "model_hash": None,
        "tumors": [p.as_dict() for p in placed],
        "sex": None if anat is None else anat.sex,
        "phantom": {"version": PHANTOM_VERSION if anat is None else ANATOMY_VERSION[anat.anatomy],
                    "anatomy": None if anat is None else anat.anatomy, "sex_source": sex_source,
                    "site_profile": prof.as_dict(), "fov_mm": list(grid.fov_mm),
                    "requests": [r.as_record() for r in requests]},
        "seconds": round(seconds, 3),
    }


def _setup(site, seed, tumors, spacing, fov_mm, shape, scale, organs, anatomy=None, sex=None):
    """Site, grid, random streams, tumor requests and anatomy: what every phantom starts from.
    Returns (profile, grid, tumor rng, noise rng, requests, k, anatomy, how the sex was set)."""
    prof = get_site(site)
    grid = phantom_grid(prof, spacing=spacing, fov_mm=fov_mm, shape=shape, scale=scale)
    rng_a, rng_t, rng_n = _streams(seed, prof)
    _check_tumors(tumors)
    kind = resolve_anatomy(anatomy, tumors, organs)
    sex, how = resolve_sex(seed, sex, tumors, organs)
    requests = _requests(tumors, rng_t, organs, sex)
    rng_h = np.random.default_rng([int(seed), _HOLLOW]) if kind == "full" else None
    k, anat = _anatomy(grid, rng_a, kind, sex, rng_h)
    return prof, grid, rng_t, rng_n, requests, k, anat, how


def make_pair(site: str | SiteProfile = "A", seed: int = 0, tumors: list[TumorRequest] | str | None = "random", *,
              spacing: float | Sequence[float] | None = None, fov_mm: float | Sequence[float] | None = None,
              shape: Sequence[int] | None = None, scale: float = 1.0,
              organs: Sequence[str] = DEFAULT_TUMOR_ORGANS, case_id: str | None = None,
              anatomy: str | None = None, sex: str | None = None) -> PhantomPair:
    """One patient scanned twice: healthy and with ``tumors``, same anatomy, texture and noise.

    See :func:`make_phantom` for the arguments. The pair is the controlled
    benchmark: any difference between the two volumes is the tumor.
    """
    t0 = time.perf_counter()
    prof, grid, rng_t, rng_n, requests, k, anat, how = _setup(site, seed, tumors, spacing, fov_mm, shape, scale,
                                                              organs, anatomy, sex)
    noise_state = rng_n.bit_generator.state
    ct_h, lab_h, _ = render(anat, prof, [], rng_t, rng_n, k)
    rng_n.bit_generator.state = noise_state  # the same noise realisation for both
    ct_t, lab_t, placed = render(anat, prof, requests, rng_t, rng_n, k)
    cid = case_id or f"PHANTOM_{prof.name}_seed{int(seed)}"
    dt = time.perf_counter() - t0
    healthy = Case(f"{cid}_healthy", ct_h, lab_h, grid.affine,
                   _meta(f"{cid}_healthy", prof, seed, grid, [], [], dt, anat, how))
    tumor = Case(cid, ct_t, lab_t, grid.affine, _meta(cid, prof, seed, grid, placed, requests, dt, anat, how))
    return PhantomPair(healthy, tumor)


def make_phantom(site: str | SiteProfile = "A", seed: int = 0, tumors: list[TumorRequest] | str | None = None, *,
                 spacing: float | Sequence[float] | None = None, fov_mm: float | Sequence[float] | None = None,
                 shape: Sequence[int] | None = None, scale: float = 1.0,
                 organs: Sequence[str] = DEFAULT_TUMOR_ORGANS, case_id: str | None = None,
                 anatomy: str | None = None, sex: str | None = None) -> Case:
    """A procedural abdominal CT with exact labels.

    site: a built-in site name ("A", "B", "C") or a :class:`SiteProfile`.
    seed: the patient; the anatomy depends on the seed only (not on the site or
        the spacing), so one seed at two sites is one patient on two scanners.
    tumors: None (healthy), "random" (1-3 lesions in ``organs`` with a size mix
        including early tumors) or a list of :class:`TumorRequest`.
    spacing / fov_mm / shape / scale: grid options, see :func:`phantom_grid`;
        the default at spacing 1.5 mm is 96 x 96 x 64 voxels (144 x 144 x 96 mm).
    organs: the organ types random tumors are drawn in: "liver", "pancreas", "kidney",
        "colon", "esophagus", "uterus" (a male patient's random tumors skip the uterus).
    anatomy: "basic" (version 1: no esophagus or uterus, a plain colon), "full" (the same
        patient plus a haustral colon, the esophagus and, in women, the uterus), or None:
        "full" when a tumor organ asked for (``organs`` or the requests) is colon,
        esophagus or uterus, else "basic" (cohorts of the other organs stay byte-identical).
    sex: "F", "M", or None: drawn per seed from its own stream ("F" when the uterus is the
        only tumor organ asked for); recorded as ``meta["sex"]``. The uterus is drawn in
        female full anatomies only; a uterus request for a male phantom is a ValueError.

    Returns a :class:`~cohort.case.Case`: ct float32 HU (X, Y, Z) in RAS+ voxel
    order (axis 0 -> patient's right, so the liver sits at high axis-0 indices),
    label uint8 in the canonical vocabulary, affine with the grid spacing, meta
    with provenance (kind "real", generator "phantom", site, seed) and one
    record per lesion (measured voxels, volume_ml, max_axial_diameter_mm,
    centroid_vox, appearance, requested diameter).
    """
    t0 = time.perf_counter()
    prof, grid, rng_t, rng_n, requests, k, anat, how = _setup(site, seed, tumors, spacing, fov_mm, shape, scale,
                                                              organs, anatomy, sex)
    ct, label, placed = render(anat, prof, requests, rng_t, rng_n, k)
    cid = case_id or f"PHANTOM_{prof.name}_seed{int(seed)}"
    return Case(cid, ct, label, grid.affine,
                _meta(cid, prof, seed, grid, placed, requests, time.perf_counter() - t0, anat, how))
