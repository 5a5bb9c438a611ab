"""Scanner "sites": how one phantom patient looks on different CT scanners and protocols.

A site fixes the contrast phase (which organs and vessels are enhanced, in
HU), the scanner noise, the voxel spacing, the field of view and the
partial-volume blur. Sites A and B are the in-distribution pair (portal-venous
and arterial phase, thin and thick slices); site C is the out-of-distribution
one (a delayed phase, much noisier, a HU calibration offset and a coarser,
anisotropic grid).

Typical enhancement values follow the usual multiphase abdominal CT figures
(unenhanced liver 50-60 HU, portal-venous liver 100-120 HU, arterial aorta
250-350 HU, corticomedullary kidney differentiation in the arterial phase;
e.g. Bae, "Intravenous contrast medium administration and scan timing at CT",
Radiology 2010). The full anatomy's organs: esophageal and colonic wall enhance
like bowel wall (unenhanced ~40 HU, +35-45 HU portal-venous); the myometrium
enhances avidly (~130 HU portal-venous) and the endometrium stays lower, catching
up in the delayed phase; stool is a mottled mixture near -45 HU with gas bubbles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Mean HU of each tissue before contrast (unenhanced CT).
BASE_HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "gas": -990.0,
    "fat": -100.0,  # subcutaneous
    "visceral_fat": -90.0,
    "muscle": 50.0,
    "bone_cortex": 650.0,
    "bone_trabecular": 220.0,
    "disc": 80.0,
    "csf": 12.0,
    "aorta": 40.0,
    "postcava": 40.0,
    "portal_vein": 40.0,
    "hepatic_vessel": 38.0,
    "liver": 58.0,
    "spleen": 48.0,
    "kidney_cortex": 32.0,
    "kidney_medulla": 30.0,
    "pancreas": 42.0,
    "stomach_wall": 40.0,
    "stomach_content": 15.0,
    "bowel_wall": 40.0,
    "bowel_content": 20.0,
    "gall_bladder": 10.0,
    # the full anatomy's organs (cohort.phantom.hollow); appended so the tissue indices above stay
    "esophagus_wall": 42.0,  # muscular wall, like bowel wall
    "myometrium": 48.0,  # unenhanced uterus, slightly above muscle
    "endometrium": 30.0,  # lower than the myometrium in every phase
    "stool": -45.0,  # mottled feces: soft tissue mixed with trapped gas (bubbles are painted as gas)
}

#: Contrast phase -> HU added to the unenhanced value of each tissue.
PHASE_SHIFT_HU: dict[str, dict[str, float]] = {
    "non_contrast": {},
    # late arterial (~35 s): aorta bright, cortex >> medulla, pancreas peaks, liver barely up
    "arterial": {
        "aorta": 260.0, "postcava": 40.0, "portal_vein": 110.0, "hepatic_vessel": 60.0,
        "liver": 17.0, "spleen": 72.0, "kidney_cortex": 150.0, "kidney_medulla": 40.0,
        "pancreas": 70.0, "stomach_wall": 50.0, "bowel_wall": 45.0, "muscle": 8.0,
        "esophagus_wall": 40.0, "myometrium": 55.0, "endometrium": 15.0,
    },
    # portal-venous (~70 s): liver peaks, vessels similar, kidney nephrographic
    "portal_venous": {
        "aorta": 130.0, "postcava": 100.0, "portal_vein": 140.0, "hepatic_vessel": 120.0,
        "liver": 52.0, "spleen": 70.0, "kidney_cortex": 140.0, "kidney_medulla": 115.0,
        "pancreas": 50.0, "stomach_wall": 40.0, "bowel_wall": 40.0, "muscle": 12.0,
        "esophagus_wall": 35.0, "myometrium": 80.0, "endometrium": 35.0,
    },
    # delayed (~3-5 min): everything washing out, medulla catches up with the cortex
    "delayed": {
        "aorta": 70.0, "postcava": 65.0, "portal_vein": 65.0, "hepatic_vessel": 55.0,
        "liver": 30.0, "spleen": 35.0, "kidney_cortex": 90.0, "kidney_medulla": 110.0,
        "pancreas": 25.0, "stomach_wall": 20.0, "bowel_wall": 20.0, "muscle": 8.0,
        "esophagus_wall": 20.0, "myometrium": 55.0, "endometrium": 40.0,  # the endometrium enhances late
    },
}


@dataclass(frozen=True)
class SiteProfile:
    """One scanner + protocol.

    spacing_mm: voxel size (x, y, z) in mm; fov_mm: physical extent (x, y, z)
    in mm, so the voxel count is ``round(fov_mm / spacing_mm)``. blur_mm: sigma
    (mm) of the in-plane point-spread function (partial volume); the slice
    profile adds ``slice_blur * spacing_z``. noise_sigma_hu: standard deviation
    of the scanner noise; noise_corr_mm: its correlation length (CT noise is
    not white). hu_shift: extra per-tissue HU offsets on top of the phase;
    hu_offset: a calibration offset added to every voxel inside the body.
    """

    name: str
    phase: str = "portal_venous"
    noise_sigma_hu: float = 12.0
    noise_corr_mm: float = 0.6
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    fov_mm: tuple[float, float, float] = (144.0, 144.0, 96.0)
    blur_mm: float = 0.7
    slice_blur: float = 0.35
    hu_shift: dict[str, float] = field(default_factory=dict)
    hu_offset: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.phase not in PHASE_SHIFT_HU:
            raise ValueError(f"site {self.name!r}: unknown contrast phase {self.phase!r}; "
                             f"known: {sorted(PHASE_SHIFT_HU)}")
        unknown = sorted(set(self.hu_shift) - set(BASE_HU))
        if unknown:
            raise ValueError(f"site {self.name!r}: hu_shift names unknown tissues {unknown}; known: {sorted(BASE_HU)}")
        if len(self.spacing_mm) != 3 or any(s <= 0 for s in self.spacing_mm):
            raise ValueError(f"site {self.name!r}: spacing_mm must be 3 positive numbers, got {self.spacing_mm}")
        if len(self.fov_mm) != 3 or any(s <= 0 for s in self.fov_mm):
            raise ValueError(f"site {self.name!r}: fov_mm must be 3 positive numbers, got {self.fov_mm}")
        if self.noise_sigma_hu < 0 or self.blur_mm < 0:
            raise ValueError(f"site {self.name!r}: noise_sigma_hu and blur_mm must be >= 0")

    def tissue_hu(self) -> dict[str, float]:
        """Mean HU of every tissue at this site: unenhanced + phase + site shift."""
        phase = PHASE_SHIFT_HU[self.phase]
        return {t: v + phase.get(t, 0.0) + self.hu_shift.get(t, 0.0) for t, v in BASE_HU.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "phase": self.phase, "noise_sigma_hu": self.noise_sigma_hu,
            "noise_corr_mm": self.noise_corr_mm, "spacing_mm": list(self.spacing_mm),
            "fov_mm": list(self.fov_mm), "blur_mm": self.blur_mm, "slice_blur": self.slice_blur,
            "hu_shift": dict(self.hu_shift), "hu_offset": self.hu_offset, "description": self.description,
        }


_SITES = {
    "A": SiteProfile(
        name="A", phase="portal_venous", noise_sigma_hu=12.0, noise_corr_mm=0.6,
        spacing_mm=(0.8, 0.8, 2.5), blur_mm=0.6,
        description="portal-venous phase, low noise, thin in-plane pixels, 2.5 mm slices",
    ),
    "B": SiteProfile(
        name="B", phase="arterial", noise_sigma_hu=18.0, noise_corr_mm=0.9,
        spacing_mm=(1.0, 1.0, 5.0), blur_mm=0.9, hu_shift={"liver": -5.0},
        description="late arterial phase, moderate noise, 5 mm slices",
    ),
    "C": SiteProfile(
        name="C", phase="delayed", noise_sigma_hu=32.0, noise_corr_mm=1.4,
        spacing_mm=(1.6, 1.6, 3.0), blur_mm=1.4, hu_offset=18.0, hu_shift={"fat": 12.0, "visceral_fat": 12.0},
        description="out-of-distribution: delayed phase, high noise, +18 HU calibration offset, coarse grid",
    ),
}

#: The built-in sites. "A"/"B" in-distribution, "C" out-of-distribution.
SITES: dict[str, SiteProfile] = _SITES


def get_site(site: str | SiteProfile, extra: dict[str, SiteProfile] | None = None) -> SiteProfile:
    """A :class:`SiteProfile` from a name or a profile itself.

    Names are looked up in ``extra`` (e.g. from :func:`load_sites`) first, then
    among the built-in sites ("A", "B", "C", case-insensitive).
    """
    if isinstance(site, SiteProfile):
        return site
    if extra and str(site) in extra:
        return extra[str(site)]
    key = str(site).strip().upper()
    if key not in SITES:
        known = list(SITES) + list(extra or {})
        raise ValueError(f"unknown phantom site {site!r}; known sites: {', '.join(known)}")
    return SITES[key]


def load_sites(path: str | Path) -> dict[str, SiteProfile]:
    """Extra sites from a YAML file (values only), e.g. ``configs/demo/phantom_sites.yaml``.

    Layout: ``sites: {NAME: {base: A, phase: ..., noise_sigma_hu: ..., ...}}``;
    ``base`` (optional) names a built-in site whose values the entry starts
    from. Unknown keys, wrong types and unknown phases raise
    :class:`cohort.config.ConfigError` naming the file and the key.
    """
    from cohort.config import ConfigError, from_dict, read_yaml_mapping

    path = Path(path)
    data = read_yaml_mapping(path, "sites file")
    if set(data) != {"sites"} or not isinstance(data["sites"], dict):
        raise ConfigError(f"{path}: expected a top-level mapping with the single key 'sites'")
    out: dict[str, SiteProfile] = {}
    for name, entry in data["sites"].items():
        where = f"{path}: sites.{name}"
        entry = dict(entry or {})
        base = entry.pop("base", None)
        values: dict[str, Any] = {}
        if base is not None:
            if str(base).upper() not in SITES:
                raise ConfigError(f"{where}.base: unknown built-in site {base!r}; built-in: {', '.join(SITES)}")
            values = SITES[str(base).upper()].as_dict()
            values.pop("description", None)
        values.update(entry)
        values["name"] = str(name)
        values.setdefault("description", f"from {path.name}")
        out[str(name)] = from_dict(SiteProfile, values, source=where)
    return out
