"""Tumor appearance attributes: one function measures them, the same way, on real and synthetic tumors.

For every lesion (26-connected component of a lesion class) in a CT (HU) and label map:

* ``contrast_hu``: mean HU inside the tumor minus the mean HU of a shell of its host organ
  around it (organ voxels between ``shell_near_mm`` and ``shell_far_mm`` from the tumor, other
  lesions excluded). The near gap keeps partial-volume blur out of the organ's value; the
  shell follows the scan's contrast phase, so the number is relative, not absolute HU.
* ``heterogeneity_hu``: the HU standard deviation inside the tumor (texture plus noise; real
  and synthetic are measured on the same kind of scan, so the noise is common to both).
* ``rim_hu``: mean HU of a ring just inside the boundary (depth at most ``rim_fraction`` of the
  tumor's deepest point) minus the mean HU of its core (depth beyond half the deepest point):
  positive for rim-enhancing tumors, negative for a bright core. NaN when the tumor is too thin
  to have a core (its deepest point under two voxels).
* ``necrotic_fraction``: the share of tumor voxels below ``necrotic_hu`` (30 HU: fluid and
  non-enhancing necrosis lie at 0-30 HU whatever the phase).
* ``edge_hu_per_mm``: the HU step across the boundary per mm: |mean of the tumor's boundary
  voxels - mean of the organ voxels touching it| / the mean voxel spacing. A blurred edge
  spreads the same contrast over more millimetres and scores lower.
* size: ``diameter_mm`` (maximum axial diameter, :mod:`cohort.lesions`), ``volume_ml``, and
  ``size_class``: early (<= 20 mm, the seed paper's early tumors), medium (<= 50 mm), large.

``organ_hu`` (the shell's mean), ``mean_hu`` and ``core_contrast_hu`` are kept so any attribute can be re-derived.
:data:`CONDITION_ATTRIBUTES` are the ones a ControlNet can be conditioned on, with the
scale that brings each to about unit range (:func:`normalise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

from cohort import labels as L
from cohort.lesions import EARLY_TUMOR_DIAMETER_MM, max_axial_diameter_mm

#: attribute -> the value that counts as 1 in a conditioning channel (about the attribute's range)
CONDITION_SCALE: dict[str, float] = {"contrast_hu": 100.0, "heterogeneity_hu": 50.0, "rim_hu": 50.0,
                                     "necrotic_fraction": 1.0, "edge_hu_per_mm": 50.0}
CONDITION_ATTRIBUTES: tuple[str, ...] = tuple(CONDITION_SCALE)
SIZE_CLASSES: tuple[str, ...] = ("early", "medium", "large")
MEDIUM_MAX_MM = 50.0


@dataclass(frozen=True)
class AppearanceConfig:
    shell_near_mm: float = 1.5
    shell_far_mm: float = 6.0
    rim_fraction: float = 0.35
    necrotic_hu: float = 30.0


@dataclass
class TumorAppearance:
    """The measured appearance of one lesion (see the module docstring for each attribute)."""

    label: int
    organ: str  # organ type (liver, pancreas, kidney, ...)
    voxels: int
    diameter_mm: float
    volume_ml: float
    size_class: str
    mean_hu: float
    organ_hu: float
    contrast_hu: float
    heterogeneity_hu: float
    rim_hu: float
    necrotic_fraction: float
    edge_hu_per_mm: float
    core_contrast_hu: float = float("nan")  # the core (see rim_hu) minus the organ shell
    centroid_vox: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def attributes(self) -> dict[str, float]:
        """The conditioning attributes only, in :data:`CONDITION_ATTRIBUTES` order."""
        return {a: float(getattr(self, a)) for a in CONDITION_ATTRIBUTES}


def size_class(diameter_mm: float) -> str:
    if diameter_mm <= EARLY_TUMOR_DIAMETER_MM:
        return "early"
    return "medium" if diameter_mm <= MEDIUM_MAX_MM else "large"


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def measure_tumor(ct: np.ndarray, tumor: np.ndarray, host: np.ndarray, spacing: Sequence[float],
                  config: AppearanceConfig = AppearanceConfig()) -> dict[str, float]:
    """The attributes of one tumor mask (bool, same grid as ``ct``) inside ``host`` (bool: the
    organ voxels that may serve as its surroundings, lesions excluded). Works on the bounding
    box of the tumor grown by the shell, so it costs little on whole volumes."""
    sp = np.asarray(spacing, float)
    pad = np.ceil(config.shell_far_mm / sp).astype(int) + 2
    idx = np.argwhere(tumor)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, tumor.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    t, h, hu = tumor[sl], host[sl] & ~tumor[sl], ct[sl].astype(np.float64)
    vals = hu[t]
    outside = ndimage.distance_transform_edt(~t, sampling=sp)  # mm to the tumor, 0 inside
    depth = ndimage.distance_transform_edt(t, sampling=sp)  # mm to the outside, 0 outside
    shell = h & (outside > config.shell_near_mm) & (outside <= config.shell_far_mm)
    organ_hu = _mean(hu[shell])
    mean_hu = float(vals.mean())
    dmax = float(depth.max())
    if dmax >= 2 * sp.min():
        rim = t & (depth <= max(sp.min(), config.rim_fraction * dmax))
        core = t & (depth > 0.5 * dmax)
        core_hu = _mean(hu[core])
        rim_hu = _mean(hu[rim]) - core_hu
    else:
        core_hu = rim_hu = float("nan")
    inner = t & (depth <= sp.min() * 1.01)  # tumor voxels with a 6-neighbour outside
    outer = h & (outside <= sp.min() * 1.01)
    edge = abs(_mean(hu[inner]) - _mean(hu[outer])) / float(sp.mean()) if outer.any() else float("nan")
    return {"mean_hu": mean_hu, "organ_hu": organ_hu, "contrast_hu": mean_hu - organ_hu,
            "heterogeneity_hu": float(vals.std()), "rim_hu": rim_hu, "core_contrast_hu": core_hu - organ_hu,
            "necrotic_fraction": float((vals < config.necrotic_hu).mean()), "edge_hu_per_mm": edge}


def host_mask(label: np.ndarray, lesion_label: int) -> np.ndarray:
    """The organ voxels a lesion of ``lesion_label`` is measured against (its organ type, without lesions)."""
    organ = L.LESION_TO_ORGAN_TYPE.get(L.INDEX_TO_NAME[int(lesion_label)])
    idx = L.organ_indices(organ) if organ else ()
    return np.isin(label, idx) if idx else np.zeros(label.shape, bool)


def lesion_instances(label: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Every lesion component as an instance map (int32, 0 = none, i = the i-th lesion) and the
    lesion class of each instance (ordered by class, then by decreasing size)."""
    inst = np.zeros(label.shape, np.int32)
    classes: list[int] = []
    for lab in L.LESION_LABELS:
        mask = label == lab
        if not mask.any():
            continue
        comps, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
        sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
        for i in np.argsort(-sizes, kind="stable"):
            classes.append(int(lab))
            inst[comps == i + 1] = len(classes)
    return inst, classes


def measure_appearance(ct: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                       config: AppearanceConfig = AppearanceConfig(),
                       instances: tuple[np.ndarray, list[int]] | None = None) -> list[TumorAppearance]:
    """The appearance of every lesion of a case, in :func:`lesion_instances` order.

    ct: HU (X, Y, Z); label: the canonical vocabulary on the same grid; spacing in mm."""
    if ct.shape != label.shape:
        raise ValueError(f"ct {ct.shape} and label {label.shape} are not on one grid")
    inst, classes = instances if instances is not None else lesion_instances(label)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: list[TumorAppearance] = []
    hosts: dict[int, np.ndarray] = {}
    for i, lab in enumerate(classes, start=1):
        tumor = inst == i
        if lab not in hosts:
            hosts[lab] = host_mask(label, lab)
        a = measure_tumor(ct, tumor, hosts[lab], spacing, config)
        d = max_axial_diameter_mm(tumor, spacing)
        n = int(tumor.sum())
        organ = L.LESION_TO_ORGAN_TYPE.get(L.INDEX_TO_NAME[lab], L.INDEX_TO_NAME[lab])
        out.append(TumorAppearance(label=lab, organ=organ, voxels=n, diameter_mm=round(d, 3),
                                   volume_ml=round(n * voxel_ml, 4), size_class=size_class(d),
                                   centroid_vox=[round(float(c), 2) for c in np.argwhere(tumor).mean(0)],
                                   **{k: round(float(v), 4) for k, v in a.items()}))
    return out


def normalise(attrs: dict[str, float], names: Sequence[str] = CONDITION_ATTRIBUTES) -> np.ndarray:
    """Attribute values -> conditioning values (float32, one per name); NaN (undefined) -> 0."""
    v = np.array([float(attrs.get(n, float("nan"))) / CONDITION_SCALE[n] for n in names], np.float32)
    return np.nan_to_num(v, nan=0.0)


def attribute_table(values: Sequence[dict[str, float]], names: Sequence[str] = CONDITION_ATTRIBUTES) -> np.ndarray:
    """(n + 1, K) float32: row i the normalised attributes of lesion i (:func:`normalise`), row 0 zeros,
    so ``table[instances]`` paints each lesion of a :func:`lesion_instances` map with its own values."""
    table = np.zeros((len(values) + 1, len(names)), np.float32)
    for i, v in enumerate(values, start=1):
        table[i] = normalise(v, names)
    return table


def paint(instances: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(K, *instances.shape) float32 conditioning channels: each lesion's row of ``table`` inside its voxels."""
    return np.moveaxis(table[instances], -1, 0).astype(np.float32)


def paint_drawn(label: np.ndarray, spacing: Sequence[float], table: list[dict], rng: np.random.Generator,
                names: Sequence[str] = CONDITION_ATTRIBUTES, asked: dict[str, float] | None = None) -> np.ndarray:
    """(K, X, Y, Z) float32 conditioning channels for every lesion of ``label``: attributes drawn
    per lesion with :func:`draw_appearance` (its organ and size class), normalised, inside its voxels."""
    inst, classes = lesion_instances(label)
    drawn = [draw_appearance(table, L.LESION_TO_ORGAN_TYPE.get(L.INDEX_TO_NAME[lab], ""),
                             size_class(max_axial_diameter_mm(inst == i, spacing)), rng, asked, names)[0]
             for i, lab in enumerate(classes, start=1)]
    return paint(inst, attribute_table(drawn, names))


def classify(a: TumorAppearance | dict) -> str:
    """The phantom world's appearance type a measured tumor looks like (hypo, hyper, rim,
    necrotic, heterogeneous): an explicit rule on the attributes, so real and synthetic
    tumors are typed the same way. Its agreement with the phantom's own types is reported
    by ``tumorgen generator eval``."""
    d = a.as_dict() if isinstance(a, TumorAppearance) else a
    rim, core = d.get("rim_hu", float("nan")), d.get("core_contrast_hu", float("nan"))
    if rim == rim and rim >= 20 and core == core:
        # a bright ring: enhancing above the organ (rim), or viable tissue around a fluid core (necrotic)
        return "rim" if core + rim >= 15 or core > -40 else "necrotic"
    if d["necrotic_fraction"] >= 0.3 and d["contrast_hu"] < -30:
        return "necrotic"
    if d["heterogeneity_hu"] >= 20 and abs(d["contrast_hu"]) < 25:
        return "heterogeneous"
    return "hyper" if d["contrast_hu"] > 0 else "hypo"


def draw_appearance(table: list[dict], organ: str, size: str, rng: np.random.Generator,
                    asked: dict[str, float] | None = None, names: Sequence[str] = CONDITION_ATTRIBUTES) -> tuple[dict[str, float], dict]:
    """The attributes one new tumor is generated with, and where they came from.

    One training tumor is drawn uniformly among those of the same organ type and size class
    (early / medium / large), falling back to the organ, then to every tumor, so the
    attributes keep their joint distribution (a bright tumor keeps its own texture and rim);
    ``asked`` values replace the drawn ones. Deterministic in ``rng``."""
    asked = dict(asked or {})
    pools = [("organ and size class", [r for r in table if r.get("organ") == organ and r.get("size_class") == size]),
             ("organ", [r for r in table if r.get("organ") == organ]), ("all training tumors", list(table))]
    scope, pool = next(((k, p) for k, p in pools if p), ("none", []))
    row = pool[int(rng.integers(len(pool)))] if pool else {}
    values = {n: float(asked[n]) if n in asked else float(row.get(n, 0.0)) for n in names}
    values = {n: (0.0 if v != v else v) for n, v in values.items()}  # an undefined rim conditions as 0
    source = {"asked": asked, "drawn_from": scope, "pool_size": len(pool), "row": row.get("case_id")}
    return values, source
