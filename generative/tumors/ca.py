"""Cellular-automaton tumor growth (Pixel2Cancer; Lai et al., "From Pixel to Cancer:
Cellular Automata in Computed Tomography", MICCAI 2024; reference code
``Tumor_Synthesis/utils.py`` and ``cellular/csrc/cellular.cu``).

The grid: the automaton counts voxels, so it runs on an isotropic grid of
``CAConfig.grid_mm`` (1 mm, the reference's: Pixel2Cancer resamples every CT
to 1 mm before synthesis) over the organ's bounding box (+ one scan voxel):
the CT is resampled trilinearly and the labels by nearest neighbour, the tumor
is grown and rendered there, and the tumor mask (its occupancy of each scan
voxel, >= 0.5) and the HU change (averaged over each scan voxel's footprint,
or interpolated where the scan is finer) come back to the scan's grid. Steps,
the satellite reach, the blur and the texture are thus in grid voxels (mm at
1 mm) and a tumor has the same physical size on every scanner; size targets
(a size class or ``diameter_mm``) stop growth once the extent along any of the
three axes reaches them. Voxels outside the organ (and outside its box) are
never changed. ``grid_mm = 0`` grows on the scan's own voxels (the behaviour
before issue 19: sizes then depend on the spacing, and z is stretched on thick
slices).

The model, in HU on that grid:

1. Quantize the organ (its bounding box) into three density levels by HU
   within a range [lo, hi): level 0 below lo + (hi-lo)/3, level 1, level 2;
   voxels at or above ``hi`` (contrast-filled vessels) and voxels outside the
   organ are "out of range" (level 3, the boundary/vessel state). The range is
   the organ's own (``hu_mode="relative"``, default): [q25 - IQR, q75 + IQR]
   of the organ's HU in this scan, so the thirds are its quartiles (a liver at
   130 +- 15 HU gives the reference's 100/120/140/160); or the reference's fixed
   ``organ_hu`` (``"absolute"``: liver/pancreas 100-160, kidney 140-200), which
   assumes contrast-enhanced CT.
2. Per-voxel state: organ 0, tumor population 1..10, necrotic -1, boundary
   ``BOUNDARY + pressure`` (pressure 0..2).
3. Seeds: 1-9 (``randint(1, 10)``) at random non-vessel organ voxels, state 5;
   with probability 1/3 each seed gets 3-9 satellite seeds at offsets of
   -10..9 voxels per axis (only where the voxel is organ).
4. Growth, ``steps`` synchronous updates (liver 150, pancreas 80, kidney 80
   at most; by default U{5..max-1} as the reference): a cell with state < 10
   proliferates (+1); a cell with state >= 5 also spreads: up to 3 tries of a
   random neighbour in the 3^3 box, stopping at the first success. A try
   succeeds on an organ/tumor neighbour with state < 10 with probability
   1.0 / 0.3 / 0.1 for its density level 0 / 1 / 2 (the neighbour gets +1).
   A state-10 cell that picks a boundary/vessel neighbour presses on it
   (pressure +1, capped at 2 per step; a voxel pressed past that within one
   step is invaded: it becomes tumor state 1 at density level 0).
5. Death: tumors grown longer than a size gate (liver 50, pancreas 30,
   kidney 30 steps) turn necrotic with probability 0.5: every seed and 5-19
   state-10 voxels near it (within steps/10 - 2) become -1, then for
   steps/7 + 1 rounds each necrotic cell converts a random state-10
   neighbour (up to 3 tries).
6. Rendering: texture (:func:`generative.tumors.texture.tumor_texture`)
   times the darkening times state/10 is subtracted (state blurred lightly
   in-plane); bright vessels and high-density tissue under the tumor are
   scaled toward the organ range first; necrotic voxels subtract a further
   texture x the necrosis darkening (the reference adds ``texture * d *
   blur(-1 at necrosis)``, i.e. necrosis renders darker, like fluid); a light
   in-plane blur smooths the tumor where it overlies dense tissue. Changes are
   kept to the organ. The darkening is the reference's U(65, 145) HU (necrosis
   U(90, 110)) in absolute mode; in relative mode it is scaled by the organ's
   measured contrast above a 0 HU floor over the reference organ's (the centre
   of ``organ_hu``: liver 130, kidney 170; see
   :func:`generative.tumors.texture.contrast_scale`), so a tumor is hypodense
   relative to its organ in any phase and not at fat density in a non-contrast
   scan. In relative mode the other absolute numbers follow the organ too: the
   vessel/dense pulls map ``hi`` to the same targets but compress about the
   organ's ``lo`` instead of 0 HU (vessels darker than their target are left
   alone), the pancreas' 65 HU fat threshold is scaled like the darkening and
   its fat fill is the tissue's contrast above the floor.

``CAConfig.compat`` (pixel2cancer_compat) reproduces the reference's fixed
(absolute) HU values and two behaviours of the reference code that differ from
the paper's description:

- the CUDA kernel passes its float random number to ``check_tissue`` as an
  ``int``; it truncates to 0, so ``0 < 0.3`` and ``0 < 0.1`` always hold and
  every density level is invaded with probability 1;
- the tumor label is ``state > 0``, so necrotic voxels (-1) are not labelled
  tumor (they keep the organ label).

The default is the corrected behaviour: the probabilities are applied and
necrotic voxels are tumor.

Tubular organs (colon, esophagus; issue 18). Pixel2Cancer grows tumors in liver,
pancreas and kidney, solid organs whose every voxel is parenchyma, and three of its
steps assume so; for a tube (its label holds wall and lumen) they change:

- seeds: the reference seeds at random organ voxels, which in a tube are mostly
  lumen. Here seeds are drawn among wall voxels only: the wall band of the
  wall-distance map (depth below the outer surface at most
  :data:`cohort.tubes.WALL_MM`, colon 3 mm, esophagus 4 mm) that is not gas;
- density: the reference quantizes the organ by HU, so the lumen's gas and stool,
  below the range, would be level 0, the most invadable "tissue", and the tumor
  would fill the lumen first. Here the lumen (deeper than the band, or gas below
  -150 HU) is given the middle level (``CAConfig.lumen_level``, invasion
  probability 0.3): the tumor spreads along the wall faster than into the lumen,
  giving wall thickening, annular narrowing and polypoid growth; the wall's own
  levels come from its soft-tissue HU (relative mode measures the organ on the
  wall's voxels above -150 HU, not on the gas);
- rendering: the reference darkens the voxels under the tumor, and darkened gas is
  still gas. As the reference fills pancreatic fat under a tumor (HU <= 65) with
  tissue HU before darkening, the lumen voxels under the tumor are first filled
  toward the wall's median HU, weighted by the tumor's blurred state.

The uterus is solid and keeps the reference's rules. The per-organ tables
(:data:`ORGAN_HU`, :data:`MAX_STEPS`, :data:`NECROSIS_GATE_STEPS`) have no
reference values for colon, esophagus and uterus; this project uses enhanced
bowel-wall / myometrium ranges and the pancreas' (smaller organ) step counts.

Differences that remain on purpose: updates are synchronous (every cell reads
the previous step's states; the kernel reads and writes one tensor
concurrently, so its result depends on thread order), a neighbour is drawn
among the 26 neighbours (the kernel draws 0..27 of a 27-cell box, self
included, and index 27 falls outside the box), and ``steps`` updates are run
(the reference runs steps + 1).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, gaussian_filter

from cohort import labels as L
from cohort.config import bounded, check_choices
from cohort.tubes import WALL_MM, is_tubular
from generative.tumors.base import (
    SynthesisError,
    SynthesisResult,
    TumorSpec,
    bbox_of,
    check_inputs,
    organ_mask,
    tumor_records,
)
from generative.tumors.shapes import RADIUS_JITTER, SIZE_CLASSES_MM
from generative.tumors.texture import (
    MIN_CONTRAST_HU,
    SIGMA_A_CHOICES,
    SIGMA_B_CHOICES,
    SOFT_TISSUE_FLOOR_HU,
    OrganHU,
    contrast_scale,
    measure_organ_hu,
    tumor_texture,
)

#: per-organ HU range of the density quantization (Pixel2Cancer ``Organ_HU``)
#: (colon, esophagus, uterus: not in the reference; enhanced bowel wall and myometrium, this project's)
ORGAN_HU: dict[str, tuple[float, float]] = {"liver": (100.0, 160.0), "pancreas": (100.0, 160.0),
                                           "kidney": (140.0, 200.0), "colon": (60.0, 120.0),
                                           "esophagus": (60.0, 120.0), "uterus": (100.0, 160.0)}
#: maximum growth steps per organ (Pixel2Cancer ``steps``; the three new organs take the pancreas')
MAX_STEPS: dict[str, int] = {"liver": 150, "pancreas": 80, "kidney": 80, "colon": 80, "esophagus": 80, "uterus": 80}
#: steps beyond which a tumor may turn necrotic (Pixel2Cancer ``Tumor_size``)
NECROSIS_GATE_STEPS: dict[str, int] = {"liver": 50, "pancreas": 30, "kidney": 30, "colon": 30, "esophagus": 30,
                                       "uterus": 30}
#: labelled structures that belong to the organ region (vessels inside the liver)
ORGAN_EXTRAS: dict[str, tuple[str, ...]] = {"liver": ("hepatic_vessel",)}

THRESHOLD = 10  # the largest population of a cell
SEED_STATE = 5  # threshold / 2
NECROTIC = -1
BOUNDARY = 100  # boundary/vessel state; BOUNDARY + pressure (0..2)
WALL = 127  # outside the region: a try that lands here fails
OUT_OF_RANGE = 3  # density level of boundary/vessel voxels
MAX_PRESSURE = 2  # the reference clamps states at hi + 2
#: the pancreas' fat threshold of the reference's rendering (HU; voxels at or below it under the tumor are filled)
PANCREAS_FAT_HU = 65.0
#: relative mode: the least organ IQR (HU) the density range is built from (a noiseless organ)
MIN_IQR_HU = 4.0

#: 26-neighbourhood offsets (dx, dy, dz)
_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                        if (i, j, k) != (0, 0, 0)], dtype=np.int64)


def _organ_key(organ: str) -> str:
    """The organ type that keys the per-organ tables ("kidney_left" -> "kidney")."""
    if organ in ORGAN_HU:
        return organ
    lesion = L.ORGAN_TO_LESION.get(organ)
    return L.LESION_TO_ORGAN_TYPE.get(lesion, organ) if lesion else organ


@dataclass
class CAConfig:
    """Parameters of the CA synthesizer (defaults: Pixel2Cancer, corrected behaviour).

    Grid (issue 19): ``grid_mm`` (default 1.0, the reference's 1 mm isotropic) is the
    spacing the automaton grows on, whatever the scan's; every voxel count below
    (``satellite_reach_vox``, ``blur_sigma_vox``, the texture sigmas, steps) is in grid
    voxels. ``grid_mm = 0`` grows on the scan's own voxels (the old behaviour).

    HU (issue 19): ``hu_mode="relative"`` (default) measures the organ in the scan (median
    and quartiles of its own voxels, vessels and lesions excluded) and takes the density
    range as [q25 - IQR, q75 + IQR] instead of ``organ_hu``, and multiplies the darkening
    ``hu_difference`` and ``necrosis_hu`` by (median - hu_floor) / (reference - hu_floor),
    reference = the centre of ``organ_hu`` (liver/pancreas 130, kidney 170 HU; see
    :func:`generative.tumors.texture.contrast_scale`). These replace the reference's
    absolute values, kept here and used as they are by ``hu_mode="absolute"`` and by
    ``compat``: ``organ_hu`` liver/pancreas [100, 160], kidney [140, 200]
    (Pixel2Cancer ``Organ_HU``), ``hu_difference`` U(65, 145), ``necrosis_hu`` U(90, 110),
    the pancreas' 65 HU fat threshold. A contrast-enhanced liver at 130 HU gets the
    reference's numbers; a non-contrast 45 HU liver a tumor of ~10-35 HU.
    """

    compat: bool = False  # pixel2cancer_compat: the reference's absolute HU and its two quirks (see module doc)
    grid_mm: float = bounded(1.0, ge=0.0)  # isotropic growth grid (mm); 0 = the scan's own voxels
    hu_mode: Literal["relative", "absolute"] = "relative"  # organ-relative HU or the reference's fixed values
    hu_floor: float = SOFT_TISSUE_FLOOR_HU  # relative mode: the HU the organ's contrast is measured above
    organ_hu: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in ORGAN_HU.items()})
    max_steps: dict[str, int] = field(default_factory=lambda: dict(MAX_STEPS))
    necrosis_gate_steps: dict[str, int] = field(default_factory=lambda: dict(NECROSIS_GATE_STEPS))
    min_steps: int = 5
    invasion_prob: list[float] = field(default_factory=lambda: [1.0, 0.3, 0.1])  # per density level
    seeds: list[int] = field(default_factory=lambda: [1, 9])  # inclusive range (reference randint(1, 10))
    satellite_prob: float = 1.0 / 3.0
    satellites: list[int] = field(default_factory=lambda: [3, 9])  # inclusive
    satellite_reach_vox: int = 10  # grid voxels
    max_try: int = 3
    necrosis_prob: float = 0.5
    hu_difference: list[float] = field(default_factory=lambda: [65.0, 145.0])  # absolute; scaled in relative mode
    necrosis_hu: list[float] = field(default_factory=lambda: [90.0, 110.0])  # absolute; scaled in relative mode
    blur_sigma_vox: float = 0.8  # grid voxels; cv2.GaussianBlur 3x3 with sigma 0 uses 0.8
    size_step_factor: int = 2  # size-targeted growth runs at most this x the organ's max steps
    # torch intra-op threads while growing on CPU (0: leave as is). Each step is a handful of small
    # gather/scatter ops; on a shared 2-core machine 2 threads took 14 s CPU where 1 took 0.34 s.
    cpu_threads: int = 1
    device: str = "cpu"  # "cpu", "cuda", or "auto"
    lumen_level: int = bounded(1, ge=0, le=2)  # tubular organs: density level of the lumen (see the module doc)

    def hu_range(self, organ: str) -> tuple[float, float]:
        """The reference's absolute density range of an organ (HU)."""
        lo, hi = self.organ_hu.get(_organ_key(organ), self.organ_hu.get("liver", ORGAN_HU["liver"]))
        return float(lo), float(hi)

    @property
    def relative(self) -> bool:
        """Whether HU are taken relative to the organ (``compat`` always uses the absolute values)."""
        return self.hu_mode == "relative" and not self.compat

    def hu_model(self, organ: str, stats: OrganHU | None) -> HUModel:
        """The HU rule for one tumor: the absolute reference values, or relative to ``stats``
        (the organ measured on the growth grid)."""
        lo, hi = self.hu_range(organ)
        if not self.relative or stats is None:
            return HUModel("absolute", lo, hi, 0.0, 1.0, None, (lo + hi) / 2)
        iqr = max(stats.iqr, MIN_IQR_HU)
        mid = (stats.q25 + stats.q75) / 2
        q25, q75 = mid - iqr / 2, mid + iqr / 2
        ref = (lo + hi) / 2
        scale = contrast_scale(stats.median, ref, self.hu_floor, MIN_CONTRAST_HU)
        return HUModel("relative", q25 - iqr, q75 + iqr, float(self.hu_floor), scale, stats, ref)

    def steps_max(self, organ: str) -> int:
        return int(self.max_steps.get(_organ_key(organ), MAX_STEPS["liver"]))

    def gate(self, organ: str) -> int:
        return int(self.necrosis_gate_steps.get(_organ_key(organ), NECROSIS_GATE_STEPS["liver"]))

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class HUModel:
    """The HU rule of one tumor. [lo, hi): density range (HU); floor: the HU contrasts are
    measured above; scale: the factor on the absolute darkening (1 in absolute mode);
    organ: the measured organ (relative mode); reference: the organ HU the absolute values
    assume."""

    mode: str
    lo: float
    hi: float
    floor: float
    scale: float
    organ: OrganHU | None
    reference: float

    @property
    def relative(self) -> bool:
        return self.mode == "relative"

    def pull(self, img: np.ndarray, target: float) -> np.ndarray:
        """Relative mode: compress HU toward the organ range so that ``hi`` maps to ``target``,
        about the range's lower end ``lo`` (the reference's ``img *= target / hi`` compresses
        about 0 HU, which only works for an organ far above 0 HU; ``lo < target < hi`` keeps
        the factor in (0, 1) for any organ)."""
        lo = self.lo
        return lo + (img - lo) * ((target - lo) / max(self.hi - lo, 1e-6))

    def as_dict(self) -> dict:
        d = {"hu_mode": self.mode, "density_range_hu": [round(self.lo, 2), round(self.hi, 2)],
             "reference_organ_hu": round(self.reference, 2), "hu_floor": round(self.floor, 2),
             "hu_scale": round(self.scale, 4)}
        if self.organ is not None:
            d.update(self.organ.as_dict())
        return d


def quantize_density(ct_hu: np.ndarray, organ: np.ndarray, hu_range: tuple[float, float],
                     vessels: np.ndarray | None = None) -> np.ndarray:
    """Density level per voxel, int8 (X, Y, Z): 0, 1, 2 by HU thirds of ``hu_range`` (below the
    range counts as level 0, as in the reference), 3 = out of range (HU >= hi, outside the
    organ, or a labelled vessel)."""
    lo, hi = hu_range
    step = (hi - lo) / 3.0
    level = np.full(ct_hu.shape, 2, dtype=np.int8)
    level[ct_hu < lo + 2 * step] = 1
    level[ct_hu < lo + step] = 0
    level[(ct_hu >= hi) | ~organ] = OUT_OF_RANGE
    if vessels is not None:
        level[vessels] = OUT_OF_RANGE
    return level


@dataclass
class GrowthResult:
    """state: int16 (X, Y, Z) over the region (organ 0, tumor 1..10, necrotic -1, boundary >= 100);
    level: int8 density levels after invasion; seeds: (k, 3) voxel indices of seeds and satellites."""

    state: np.ndarray
    level: np.ndarray
    seeds: np.ndarray
    steps: int
    necrosis: bool


def _neighbour_offsets(shape: tuple[int, int, int], device) -> torch.Tensor:
    sy, sz = shape[1] * shape[2], shape[2]
    return torch.as_tensor(_NEIGHBOURS @ np.array([sy, sz, 1]), device=device)


#: how often (steps) cells that can no longer act are dropped from the active list
_PRUNE_EVERY = 4


def _prune_saturated(state: torch.Tensor, idx: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """Drop state-10 cells whose 26 neighbours are all state 10: every try of theirs fails and
    nothing around them can change during growth, so they are inert for good (this only
    changes which random numbers are drawn, not the rule)."""
    full = state[idx] == THRESHOLD
    cand = idx[full]
    if cand.numel() == 0:
        return idx
    inert = (state[cand[:, None] + off[None, :]] == THRESHOLD).all(1)
    return torch.cat([idx[~full], cand[~inert]])


def grow(level: np.ndarray, seeds: np.ndarray, steps: int, rng: np.random.Generator, config: CAConfig,
         necrosis: bool | None = False, gate_steps: int | None = None,
         stop_diameter_vox: tuple[float, ...] | None = None) -> GrowthResult:
    """Run the CA on one region. level: int8 (X, Y, Z) from :func:`quantize_density`;
    seeds: (k, 3) int voxel indices (state 5).

    necrosis: True/False runs/skips the death phase after growth; None decides it as the
    reference does: when the steps run exceed ``gate_steps``, with ``config.necrosis_prob``.
    stop_diameter_vox: target extent in voxels along X, Y (and Z when three are given); growth
    stops early once the tumor's extent reaches it along any of those axes (size-targeted
    growth).
    Vectorised over tumor cells with torch; the device is ``config.torch_device()``."""
    with _cpu_threads(config):
        return _grow(level, seeds, steps, rng, config, necrosis, gate_steps, stop_diameter_vox)


@contextlib.contextmanager
def _cpu_threads(config: CAConfig):
    n = int(config.cpu_threads)
    before = torch.get_num_threads()
    if n <= 0 or config.torch_device().type != "cpu" or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _grow(level, seeds, steps, rng, config, necrosis, gate_steps, stop_diameter_vox) -> GrowthResult:
    dev = config.torch_device()
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(rng.integers(2**62)))
    shape = tuple(int(s) + 2 for s in level.shape)
    lv = torch.full(shape, 4, dtype=torch.int8, device=dev)  # 4: wall
    lv[1:-1, 1:-1, 1:-1] = torch.as_tensor(level, device=dev)
    lv = lv.reshape(-1)
    state = torch.where(lv == OUT_OF_RANGE, BOUNDARY, 0).to(torch.int16)
    state[lv == 4] = WALL
    probs = list(config.invasion_prob)
    if config.compat:
        probs = [1.0, 1.0, 1.0]  # int truncation of the uniform draw: every level passes
    ptab = torch.tensor(probs + [0.0, 0.0], device=dev)
    off = _neighbour_offsets(shape, dev)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], device=dev)
    seeds_t = torch.as_tensor(np.asarray(seeds, dtype=np.int64).reshape(-1, 3) + 1, device=dev)
    idx = torch.unique((seeds_t * strides).sum(1))
    state[idx] = SEED_STATE
    T = int(config.max_try)

    done_steps = 0
    for step in range(int(steps)):
        if step % _PRUNE_EVERY == _PRUNE_EVERY - 1:
            if stop_diameter_vox is not None and _reached(idx, shape, stop_diameter_vox):
                break
            idx = _prune_saturated(state, idx, off)
        done_steps = step + 1
        s = state[idx]
        spread = s >= SEED_STATE
        src, sv = idx[spread], s[spread]
        n = src.numel()
        d = torch.randint(0, 26, (n, T), generator=gen, device=dev)
        u = torch.rand((n, T), generator=gen, device=dev)
        full = sv >= THRESHOLD
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        hits, presses = [], []
        for t in range(T):
            tgt = src + off[d[:, t]]
            ts = state[tgt]
            ok = ~done & (ts < THRESHOLD) & (ts >= 0) & (u[:, t] < ptab[lv[tgt].long()])
            # a state-10 cell pushes on boundary/vessel voxels and tries again
            press = ~done & full & (ts >= BOUNDARY) & (ts < WALL)
            hits.append(tgt[ok])
            presses.append(tgt[press])
            done |= ok
        inc = torch.cat([idx[s < THRESHOLD]] + hits)
        uq, cnt = torch.unique(inc, return_counts=True)
        prev = state[uq]
        state[uq] = torch.clamp(prev + cnt.to(torch.int16), max=THRESHOLD)
        born = uq[prev == 0]
        pt = torch.cat(presses)
        if pt.numel():
            pu, pc = torch.unique(pt, return_counts=True)
            p = (state[pu] - BOUNDARY).to(torch.int64)
            invaded = pc >= (MAX_PRESSURE + 2 - p)
            state[pu] = torch.where(invaded, torch.ones_like(p), BOUNDARY + torch.clamp(p + pc, max=MAX_PRESSURE)
                                    ).to(torch.int16)
            lv[pu[invaded]] = 0
            born = torch.cat([born, pu[invaded]])
        if born.numel():
            idx = torch.cat([idx, born])

    if necrosis is None:
        gate = NECROSIS_GATE_STEPS["liver"] if gate_steps is None else gate_steps
        necrosis = bool(done_steps > gate and rng.random() < config.necrosis_prob)
    if necrosis:
        _die(state, lv, seeds_t, strides, off, done_steps, rng, gen, T, shape)

    out = state.reshape(shape)[1:-1, 1:-1, 1:-1].cpu().numpy()
    lev = lv.reshape(shape)[1:-1, 1:-1, 1:-1].cpu().numpy()
    return GrowthResult(out, lev, np.asarray(seeds).reshape(-1, 3), int(done_steps), bool(necrosis))


def _reached(idx: torch.Tensor, shape, target: tuple[float, ...]) -> bool:
    """Whether the tumor cells' extent (voxels) along X, Y (or Z, when ``target`` has three
    values) has reached ``target`` on any of those axes."""
    sy, sz = shape[1] * shape[2], shape[2]
    coords = (idx // sy, (idx % sy) // sz, idx % sz)
    return any(int(c.max() - c.min()) + 1 >= t for c, t in zip(coords, target))


def _die(state, lv, seeds_t, strides, off, steps, rng, gen, T, shape) -> None:
    """Death phase in place on the flat padded ``state`` (see module doc, step 5)."""
    dev = state.device
    state[(seeds_t * strides).sum(1)] = NECROTIC
    bias = int(steps / 10 - 2)
    if bias > 0:
        extra = []
        for p in seeds_t.cpu().numpy():
            k = int(rng.integers(5, 20))
            extra.append(p + rng.integers(-bias, bias, size=(k, 3)))
        pts = np.concatenate(extra)
        inside = np.all((pts >= 1) & (pts < np.array(shape) - 1), axis=1)
        flat = (torch.as_tensor(pts[inside], device=dev) * strides).sum(1)
        flat = flat[state[flat] == THRESHOLD]
        state[flat] = NECROTIC
    nidx = torch.nonzero(state == NECROTIC).reshape(-1)
    for r in range(int(steps / 7 + 1)):
        if r % _PRUNE_EVERY == _PRUNE_EVERY - 1:
            # necrotic cells with no state-10 neighbour left can never convert one again
            nidx = nidx[(state[nidx[:, None] + off[None, :]] == THRESHOLD).any(1)]
        n = nidx.numel()
        d = torch.randint(0, 26, (n, T), generator=gen, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        hits = []
        for t in range(T):
            tgt = nidx + off[d[:, t]]
            ok = ~done & (state[tgt] == THRESHOLD)
            hits.append(tgt[ok])
            done |= ok
        hit = torch.unique(torch.cat(hits))
        if hit.numel():
            state[hit] = NECROTIC
            nidx = torch.cat([nidx, hit])


def _blur_inplane(a: np.ndarray, sigma: float) -> np.ndarray:
    """Light Gaussian blur within axial slices (axes 0, 1), like the reference's 3x3 per-slice blur."""
    return gaussian_filter(a, (sigma, sigma, 0.0), truncate=1.5 / max(sigma, 1e-6), mode="nearest")


def render(ct_hu: np.ndarray, state: np.ndarray, level0: np.ndarray, organ: np.ndarray, organ_name: str,
           hu: HUModel, texture: np.ndarray, rng: np.random.Generator,
           config: CAConfig, lumen: np.ndarray | None = None,
           fill_hu: float | None = None) -> tuple[np.ndarray, dict[str, float | None]]:
    """Map the CA state to HU. All arrays (X, Y, Z) over the same region; level0 is the density
    level before growth; hu: the HU rule (:meth:`CAConfig.hu_model`). Returns float32 HU,
    changed only on ``organ`` voxels, and the darkening drawn (``hu_difference``, ``necrosis_hu``,
    HU, after the relative scale). lumen / fill_hu: a tubular organ's lumen (bool) and the
    wall HU it is filled toward under the tumor before the darkening (see the module doc)."""
    lo, hi = hu.lo, hu.hi
    step = (hi - lo) / 3.0
    tumor = ((state >= 1) & (state <= THRESHOLD)) | (state == NECROTIC)
    tumor &= organ
    t1 = np.where(state == NECROTIC, THRESHOLD, np.where(tumor, state, 0)).astype(np.float32)
    t1 = _blur_inplane(t1, config.blur_sigma_vox)
    img = ct_hu.astype(np.float32, copy=True)
    covered = t1 != 0
    if lumen is not None and fill_hu is not None:
        w = np.clip(t1 / (THRESHOLD / 2), 0.0, 1.0) * (lumen & organ)
        img += (np.float32(fill_hu) - img) * w
    # bright vessels and dense tissue under the tumor are pulled toward the organ's range first
    vessel = (level0 == OUT_OF_RANGE) & (t1 >= THRESHOLD / 2)
    dense = (level0 == 2) & covered
    if hu.relative:
        # a vessel already darker than its target (non-contrast CT) is left as it is
        v, tv = img[vessel], lo + step / 2
        img[vessel] = np.where(v > tv, np.maximum(hu.pull(v, tv), tv), v)
        img[dense] = hu.pull(img[dense], lo + 2 * step)
    else:
        img[vessel] *= (lo + step / 2) / hi
        img[dense] *= (lo + 2 * step) / hi
    fat = None
    if _organ_key(organ_name) == "pancreas" and covered.any():
        fat_hu = PANCREAS_FAT_HU if not hu.relative else hu.floor + (PANCREAS_FAT_HU - hu.floor) * hu.scale
        fat = (img <= fat_hu) & covered
        m = float(img[covered].mean())
        if hu.relative:  # the fill, like the darkening, is the tissue's contrast above the floor
            m = max(m - hu.floor, MIN_CONTRAST_HU)
        img += texture * rng.uniform(min(m, 2 * m), max(m, 2 * m)) * t1 * fat / THRESHOLD
    diff = rng.uniform(*config.hu_difference) * hu.scale
    out = img - texture * diff * t1 / THRESHOLD
    necrotic = state == NECROTIC
    nec = None
    if necrotic.any():
        t2 = _blur_inplane(-(necrotic & organ).astype(np.float32), config.blur_sigma_vox)
        nec = rng.uniform(*config.necrosis_hu) * hu.scale
        out = out + texture * nec * t2
    region = _blur_inplane(np.where(covered, out, 0.0).astype(np.float32), config.blur_sigma_vox)
    sel = (t1 >= THRESHOLD / 2) & (level0 >= 2)
    if fat is not None:
        sel |= ((t1 >= THRESHOLD / 2) & fat) | ((t1 >= THRESHOLD / 2) & (out < hu.floor))
    out[sel] = region[sel]
    drawn = {"hu_difference": round(float(diff), 2), "necrosis_hu": None if nec is None else round(float(nec), 2)}
    return np.where(organ, out, ct_hu).astype(np.float32), drawn


def _linear_axis(a: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` at coordinates ``x`` (voxel index units,
    clamped to the array)."""
    n = a.shape[axis]
    if n == 1:
        return np.take(a, np.zeros(len(x), np.int64), axis=axis)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, n - 2)
    shape = [1] * a.ndim
    shape[axis] = -1
    w = np.clip(x - i0, 0.0, 1.0).astype(a.dtype if a.dtype.kind == "f" else np.float32).reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i0 + 1, axis=axis) * w


def _nearest_axis(a: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    return np.take(a, np.clip(np.rint(x).astype(np.int64), 0, a.shape[axis] - 1), axis=axis)


def _footprint_axis(a: np.ndarray, x: np.ndarray, r: float, axis: int) -> np.ndarray:
    """Mean of ``a`` (piecewise constant per voxel, zero outside) over [x - r/2, x + r/2] along
    ``axis`` (voxel index units): the area average of a coarse voxel r fine voxels wide."""
    shape = list(a.shape)
    shape[axis] = 1
    cum = np.concatenate([np.zeros(shape), np.cumsum(a, axis=axis, dtype=np.float64)], axis=axis)
    hi = _linear_axis(cum, x + r / 2 + 0.5, axis)
    lo = _linear_axis(cum, x - r / 2 + 0.5, axis)
    return ((hi - lo) / r).astype(np.float32)


@dataclass
class GrowthGrid:
    """The isotropic grid the CA grows on, over a box of the scan.

    box: slices of the scan (X, Y, Z) the grid covers; spacing: the scan's (mm); mm: the grid
    spacing (0: the scan's own voxels); shape: grid voxels. Grid voxel j along an axis sits at
    box-local scan coordinate j * mm / spacing (voxel centres; grid index 0 = the box's first
    voxel). ``identity``: the grid is the scan box itself (no resampling)."""

    box: tuple[slice, slice, slice]
    spacing: tuple[float, float, float]
    mm: float
    shape: tuple[int, int, int]
    identity: bool

    @staticmethod
    def over(mask: np.ndarray, spacing, grid_mm: float) -> GrowthGrid:
        """The grid over ``mask``'s bounding box (+ one scan voxel) at ``grid_mm`` (0 = the scan's voxels)."""
        sp = tuple(float(v) for v in spacing)
        if grid_mm <= 0 or all(abs(v - grid_mm) <= 1e-6 * grid_mm for v in sp):
            box = bbox_of(mask)
            return GrowthGrid(box, sp, max(float(grid_mm), 0.0), tuple(b.stop - b.start for b in box), True)
        box = bbox_of(mask, margin=1)
        shape = tuple(int(np.floor((b.stop - b.start - 1) * v / grid_mm + 1e-6)) + 1 for b, v in zip(box, sp))
        return GrowthGrid(box, sp, float(grid_mm), shape, False)  # type: ignore[arg-type]

    @property
    def native(self) -> bool:
        """Growing on the scan's own (possibly anisotropic) voxels (``grid_mm = 0``)."""
        return self.mm <= 0

    def ratio(self, axis: int) -> float:
        """Grid voxels per scan voxel along ``axis``."""
        return 1.0 if self.native else self.spacing[axis] / self.mm

    def stop_vox(self, diameter_mm: float) -> tuple[float, ...]:
        """A target diameter in grid voxels: along X, Y, Z on the isotropic grid; along X and Y
        only on the scan's own voxels (the old rule: z would stop thick-slice scans early)."""
        if self.native:
            return (diameter_mm / self.spacing[0], diameter_mm / self.spacing[1])
        return (diameter_mm / self.mm,) * 3

    def to_grid(self, a: np.ndarray, order: int) -> np.ndarray:
        """The scan crop ``a`` (shape of ``box``) on the grid: order 1 linear (CT), 0 nearest (labels)."""
        if self.identity:
            return a
        out = a.astype(np.float32) if order == 1 else a
        # shrinking axes first keeps the intermediates small
        for ax in sorted(range(3), key=lambda k: self.shape[k] / max(a.shape[k], 1)):
            x = np.arange(self.shape[ax], dtype=np.float64) / self.ratio(ax)
            out = _linear_axis(out, x, ax) if order == 1 else _nearest_axis(out, x, ax)
        return out

    def to_scan(self, a: np.ndarray, sub: tuple[slice, slice, slice]) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """A grid array over the grid crop ``sub`` (zero outside it) back on the scan: the scan
        voxels it touches, as slices of the box, and the values there (float32): each scan
        voxel's footprint average where the scan is coarser than the grid, linear
        interpolation where it is finer."""
        if self.identity:
            return sub, a.astype(np.float32)
        out = np.pad(a.astype(np.float32), 1)  # zeros around: the support ends inside the array
        slices = []
        for ax in range(3):
            r, s0, s1 = self.ratio(ax), sub[ax].start, sub[ax].stop
            nb = self.box[ax].stop - self.box[ax].start
            i0 = max(0, int(np.floor((s0 - 1) / r - 1)))
            i1 = min(nb, int(np.ceil(s1 / r + 1)) + 1)
            x = np.arange(i0, i1, dtype=np.float64) * r - s0 + 1  # in the padded crop's voxels
            out = _footprint_axis(out, x, r, ax) if r > 1 else _linear_axis(out, x, ax)
            slices.append(slice(i0, i1))
        return tuple(slices), out  # type: ignore[return-value]

    def scan_voxel(self, p) -> list[int]:
        """Scan voxel (full-volume index) nearest to grid voxel ``p``."""
        return [int(round(b.start + v / self.ratio(ax))) for ax, (v, b) in enumerate(zip(p, self.box))]

    def as_dict(self) -> dict:
        return {"grid_mm": round(self.mm, 4), "grid_shape": list(self.shape), "resampled": not self.identity}


class CASynthesizer:
    """Pixel2Cancer's cellular automaton as a :class:`~generative.tumors.base.Synthesizer` (name "ca")."""

    name = "ca"

    def __init__(self, config: CAConfig | None = None):
        self.config = config or CAConfig()
        check_choices(self.config)  # hu_mode of a config built in code

    def _region(self, label: np.ndarray, organ_name: str) -> np.ndarray:
        names = ORGAN_EXTRAS.get(_organ_key(organ_name), ())
        return organ_mask(label, organ_name) | np.isin(label, [L.NAME_TO_INDEX[n] for n in names])

    @staticmethod
    def target_diameter_mm(spec: TumorSpec, rng: np.random.Generator) -> float | None:
        """Target diameter (mm) for size-targeted growth: ``spec.diameter_mm``, or twice a size
        class radius x U(0.75, 1.25); None (grow for ``steps``) otherwise."""
        if spec.diameter_mm is not None:
            return float(spec.diameter_mm)
        if spec.size in SIZE_CLASSES_MM:
            return float(2 * SIZE_CLASSES_MM[spec.size] * rng.uniform(*RADIUS_JITTER))
        return None

    def seed_points(self, level: np.ndarray, count: int | None, rng: np.random.Generator,
                    satellites: bool = True, where: np.ndarray | None = None) -> np.ndarray:
        """Seeds (and satellites) as (k, 3) voxel indices into ``level`` (non-vessel organ voxels,
        and within ``where`` when given: the wall of a tubular organ)."""
        cfg = self.config
        free = level < OUT_OF_RANGE
        if where is not None and (free & where).any():
            free = free & where
        cand = np.argwhere(free)
        if len(cand) == 0:
            raise SynthesisError("no non-vessel organ voxels to seed a tumor in")
        taken = np.zeros(level.shape, bool)
        n = count if count is not None else int(rng.integers(cfg.seeds[0], cfg.seeds[1] + 1))
        pts = []
        for _ in range(n):
            p = cand[int(rng.integers(len(cand)))]
            pts.append(p)
            taken[tuple(p)] = True
            if satellites and rng.random() < cfg.satellite_prob:
                r = int(cfg.satellite_reach_vox)
                for _ in range(int(rng.integers(cfg.satellites[0], cfg.satellites[1] + 1))):
                    q = p + rng.integers(-r, r, size=3)
                    if np.all(q >= 0) and np.all(q < level.shape) and free[tuple(q)] and not taken[tuple(q)]:
                        pts.append(q)
                        taken[tuple(q)] = True
        return np.array(pts, dtype=np.int64)

    def __call__(self, ct_hu: np.ndarray, label: np.ndarray, spacing, spec: TumorSpec,
                 rng: np.random.Generator) -> SynthesisResult:
        """ct_hu: float32 HU (X, Y, Z); label: uint8 vocabulary (X, Y, Z); spacing: mm. The CA grows
        on the ``grid_mm`` isotropic grid over the organ's box (see the module doc)."""
        t0 = time.perf_counter()
        cfg = self.config
        sp = check_inputs(ct_hu, label, spacing)
        extras = [L.NAME_TO_INDEX[n] for n in ORGAN_EXTRAS.get(_organ_key(spec.organ), ())]
        region_full = self._region(label, spec.organ)
        grid = GrowthGrid.over(region_full, sp, cfg.grid_mm)
        box = grid.box
        lab = grid.to_grid(label[box], order=0)
        ct = grid.to_grid(np.asarray(ct_hu, dtype=np.float32)[box], order=1)
        region = np.isin(lab, [*L.organ_indices(spec.organ), *extras])
        vessels = np.isin(lab, extras)
        lesion = L.lesion_index_for(spec.organ)
        tissue = region & ~vessels
        lumen = wall = None
        if is_tubular(spec.organ):  # the wall-distance map on the growth grid (see the module doc)
            gsp = sp if grid.native else (grid.mm,) * 3
            depth = distance_transform_edt(np.pad(region, 1), sampling=gsp)[1:-1, 1:-1, 1:-1]
            lumen = region & ((depth > WALL_MM[spec.organ]) | (ct < -150.0))
            wall = region & ~lumen
            if (wall & (ct > -150.0)).any():
                tissue = wall & (ct > -150.0)
        stats = measure_organ_hu(ct, tissue) if cfg.relative and tissue.any() else None
        hu = cfg.hu_model(spec.organ, stats)
        level0 = quantize_density(ct, region, (hu.lo, hu.hi), vessels=vessels)
        fill_hu = None
        if lumen is not None:
            level0[lumen] = int(cfg.lumen_level)
            fill_hu = float(np.median(ct[tissue])) if tissue.any() else (hu.lo + hu.hi) / 2
        target_mm = self.target_diameter_mm(spec, rng)
        if spec.steps is not None:
            steps = int(spec.steps)
        elif target_mm is not None:
            steps = cfg.size_step_factor * cfg.steps_max(spec.organ)  # a cap; growth stops at the size
        else:
            steps = int(rng.integers(cfg.min_steps, cfg.steps_max(spec.organ)))
        count = spec.count if spec.count is not None else (1 if target_mm is not None else None)
        # size-targeted growth measures one lesion's extent: no satellites around it
        seeds = self.seed_points(level0, count, rng, satellites=target_mm is None, where=wall)
        stop = None if target_mm is None else grid.stop_vox(target_mm)
        g = grow(level0, seeds, steps, rng, cfg, necrosis=None, gate_steps=cfg.gate(spec.organ),
                 stop_diameter_vox=stop)
        steps, necrosis = g.steps, g.necrosis

        tumor_g = ((g.state >= 1) & (g.state <= THRESHOLD)) & region
        necrotic_g = (g.state == NECROTIC) & region
        if not (tumor_g | necrotic_g).any():
            raise SynthesisError("the CA grew no tumor inside the organ")
        # render on the tumor's box, with room for the blur and for a scan voxel's footprint
        reach = 2 if grid.identity else 3 + int(np.ceil(max(grid.ratio(ax) for ax in range(3))))
        sub = bbox_of(tumor_g | necrotic_g, margin=reach)
        tex = tumor_texture(tuple(s.stop - s.start for s in sub), rng,
                            sigma_a=float(rng.choice(SIGMA_A_CHOICES)), sigma_b=float(rng.choice(SIGMA_B_CHOICES)))
        new_sub, drawn = render(ct[sub], g.state[sub], level0[sub], region[sub], spec.organ, hu, tex, rng, cfg,
                                lumen=None if lumen is None else lumen[sub], fill_hu=fill_hu)

        # back on the scan's grid: occupancy >= 0.5 is tumor, the HU change is the footprint mean
        region_box = region_full[box]
        if grid.identity:
            ssub, changed = sub, new_sub
            tumor_s, necrotic_s = tumor_g[sub], necrotic_g[sub]
        else:
            ssub, occ = grid.to_scan((tumor_g | necrotic_g)[sub], sub)
            _, occ_nec = grid.to_scan(necrotic_g[sub], sub)
            _, delta = grid.to_scan(new_sub - ct[sub], sub)
            inside = region_box[ssub]
            # a tumor smaller than half a scan voxel everywhere keeps its most occupied voxel(s)
            top = float(occ[inside].max()) if inside.any() else 0.0
            cut = min(0.5, top) if top > 0 else 0.5
            necrotic_s = (occ_nec >= cut) & (occ >= cut) & inside
            tumor_s = (occ >= cut) & inside & ~necrotic_s
            scan_ct = np.asarray(ct_hu, dtype=np.float32)[box][ssub]
            changed = np.where(inside, scan_ct + delta, scan_ct).astype(np.float32)
        labelled_s = tumor_s if cfg.compat else (tumor_s | necrotic_s)
        if not labelled_s.any():
            raise SynthesisError("the CA tumor is smaller than one scan voxel")
        out_ct = np.array(ct_hu, dtype=np.float32, copy=True)
        full_sub = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, ssub))
        out_ct[full_sub] = changed
        labelled = np.zeros(region_box.shape, bool)
        labelled[ssub] = labelled_s
        out_label = np.array(label, dtype=np.uint8, copy=True)
        out_label[box][labelled] = lesion

        hu_info = {**hu.as_dict(), **drawn}
        details = {"steps": steps, "necrosis": necrosis, "compat": cfg.compat, "n_seeds": int(len(seeds)),
                   "target_diameter_mm": None if target_mm is None else round(target_mm, 2),
                   "grid_mm": round(grid.mm, 4), "hu_mode": hu.mode, "hu_difference": drawn["hu_difference"],
                   "organ_median_hu": None if hu.organ is None else round(hu.organ.median, 2)}
        records = tumor_records(labelled, lesion, sp, spec.organ, self.name, box=box, **details)
        info = {"method": self.name, "steps": steps, "target_diameter_mm": target_mm, "necrosis": necrosis,
                "compat": cfg.compat, **grid.as_dict(), "hu": hu_info,
                "seeds": [grid.scan_voxel(p) for p in seeds],
                "tumor_voxels": int(tumor_s.sum()), "necrotic_voxels": int(necrotic_s.sum()),
                "grid_tumor_voxels": int(tumor_g.sum()), "grid_necrotic_voxels": int(necrotic_g.sum()),
                "device": str(cfg.torch_device()), "seconds": round(time.perf_counter() - t0, 3)}
        return SynthesisResult(out_ct, out_label, records, info)


def ca_tumor_mask(organ_mask: np.ndarray, spacing, size: float | str, rng: np.random.Generator,
                  avoid: np.ndarray | None = None, margin_mm: float = 2.0,
                  config: CAConfig | None = None) -> np.ndarray:
    """A CA-grown tumor shape, bool (X, Y, Z), for mask-driven makers (the diffusion inpainter's
    ``mask_provider`` signature). No CT is given, so the organ is one density level (level 0)
    with ``avoid`` voxels (vessels) as out-of-range; one seed is placed like an ellipsoid
    centre (:class:`~generative.tumors.placement.PlacementSampler`) and grown on the
    ``config.grid_mm`` grid until the diameter of ``size`` (a class or mm) is reached along
    any axis. The result lies inside the organ and off ``avoid``."""
    from generative.tumors.placement import PlacementSampler  # placement imports base only; no cycle

    cfg = config or CAConfig(satellite_prob=0.0)
    sampler = PlacementSampler(organ_mask, spacing, avoid=avoid, margin_mm=margin_mm)
    spec = TumorSpec("liver", size=size if isinstance(size, str) else None,
                     diameter_mm=None if isinstance(size, str) else float(size))
    target = CASynthesizer.target_diameter_mm(spec, rng)
    if target is None:  # "mix" or unknown: one of the classes
        target = float(2 * SIZE_CLASSES_MM["medium"] * rng.uniform(*RADIUS_JITTER))
    cand, _ = sampler._candidates(target / 2 + margin_mm)
    seed = cand[int(rng.integers(len(cand)))]
    allowed = sampler.dist_mm > margin_mm
    sp = tuple(float(v) for v in spacing)
    # the grid over the sampler's box (that box is the organ's; the grid adds no margin beyond it)
    grid = GrowthGrid.over(np.ones(allowed.shape, bool), sp, cfg.grid_mm)
    allowed_g = grid.to_grid(allowed, order=0)
    level = np.where(allowed_g, 0, OUT_OF_RANGE).astype(np.int8)
    seed_g = np.clip(np.rint(seed * np.array([grid.ratio(ax) for ax in range(3)])).astype(np.int64), 0,
                     np.array(grid.shape) - 1)
    if not allowed_g[tuple(seed_g)]:  # the seed's scan voxel is allowed; take the nearest allowed grid voxel
        free = np.argwhere(allowed_g)
        seed_g = free[int(np.argmin(((free - seed_g) ** 2).sum(1)))]
    g = grow(level, seed_g[None], cfg.size_step_factor * MAX_STEPS["liver"], rng, cfg, necrosis=False,
             stop_diameter_vox=grid.stop_vox(target))
    local_g = (g.state >= 1) & (g.state <= THRESHOLD) & allowed_g
    if grid.identity:
        local = local_g
    else:
        sub = bbox_of(local_g, margin=3 + int(np.ceil(max(grid.ratio(ax) for ax in range(3)))))
        ssub, occ = grid.to_scan(local_g[sub], sub)
        local = np.zeros(allowed.shape, bool)
        local[ssub] = occ >= 0.5
        local &= allowed
        if not local.any():  # a tumor thinner than a scan voxel: keep its seed voxel
            local[tuple(seed)] = True
    out = np.zeros(organ_mask.shape, dtype=bool)
    out[sampler.box] = local
    return out
