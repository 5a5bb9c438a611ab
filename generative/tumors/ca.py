"""Cellular-automaton tumor growth (Pixel2Cancer; Lai et al., "From Pixel to Cancer:
Cellular Automata in Computed Tomography", MICCAI 2024; reference code
``Tumor_Synthesis/utils.py`` and ``cellular/csrc/cellular.cu``).

The model, in HU at the data's own spacing (the CA counts voxels):

1. Quantize the organ (its bounding box) into three density levels by HU
   within the organ's range [lo, hi) (liver/pancreas 100-160, kidney 140-200):
   level 0 below lo + (hi-lo)/3, level 1, level 2; voxels at or above ``hi``
   (contrast-filled vessels) and voxels outside the organ are "out of range"
   (level 3, the boundary/vessel state).
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
   times U(65, 145) HU times state/10 is subtracted (state blurred lightly
   in-plane); bright vessels and high-density tissue under the tumor are
   scaled toward the organ range first; necrotic voxels subtract a further
   texture x U(90, 110) HU (the reference adds ``texture * d * blur(-1 at
   necrosis)``, i.e. necrosis renders darker, like fluid); a light in-plane
   blur smooths the tumor where it overlies dense tissue. Changes are kept
   to the organ.

``CAConfig.compat`` (pixel2cancer_compat) reproduces two behaviours of the
reference code that differ from the paper's description:

- the CUDA kernel passes its float random number to ``check_tissue`` as an
  ``int``; it truncates to 0, so ``0 < 0.3`` and ``0 < 0.1`` always hold and
  every density level is invaded with probability 1;
- the tumor label is ``state > 0``, so necrotic voxels (-1) are not labelled
  tumor (they keep the organ label).

The default is the corrected behaviour: the probabilities are applied and
necrotic voxels are tumor.

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

import numpy as np
import torch
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
)
from generative.tumors.shapes import RADIUS_JITTER, SIZE_CLASSES_MM
from generative.tumors.texture import SIGMA_A_CHOICES, SIGMA_B_CHOICES, tumor_texture

#: per-organ HU range of the density quantization (Pixel2Cancer ``Organ_HU``)
ORGAN_HU: dict[str, tuple[float, float]] = {"liver": (100.0, 160.0), "pancreas": (100.0, 160.0),
                                           "kidney": (140.0, 200.0)}
#: maximum growth steps per organ (Pixel2Cancer ``steps``)
MAX_STEPS: dict[str, int] = {"liver": 150, "pancreas": 80, "kidney": 80}
#: steps beyond which a tumor may turn necrotic (Pixel2Cancer ``Tumor_size``)
NECROSIS_GATE_STEPS: dict[str, int] = {"liver": 50, "pancreas": 30, "kidney": 30}
#: labelled structures that belong to the organ region (vessels inside the liver)
ORGAN_EXTRAS: dict[str, tuple[str, ...]] = {"liver": ("hepatic_vessel",)}

THRESHOLD = 10  # the largest population of a cell
SEED_STATE = 5  # threshold / 2
NECROTIC = -1
BOUNDARY = 100  # boundary/vessel state; BOUNDARY + pressure (0..2)
WALL = 127  # outside the region: a try that lands here fails
OUT_OF_RANGE = 3  # density level of boundary/vessel voxels
MAX_PRESSURE = 2  # the reference clamps states at hi + 2

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
    """Parameters of the CA synthesizer (defaults: Pixel2Cancer, corrected behaviour)."""

    compat: bool = False  # pixel2cancer_compat: reproduce the reference's two quirks (see module doc)
    organ_hu: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in ORGAN_HU.items()})
    max_steps: dict[str, int] = field(default_factory=lambda: dict(MAX_STEPS))
    necrosis_gate_steps: dict[str, int] = field(default_factory=lambda: dict(NECROSIS_GATE_STEPS))
    min_steps: int = 5
    invasion_prob: list[float] = field(default_factory=lambda: [1.0, 0.3, 0.1])  # per density level
    seeds: list[int] = field(default_factory=lambda: [1, 9])  # inclusive range (reference randint(1, 10))
    satellite_prob: float = 1.0 / 3.0
    satellites: list[int] = field(default_factory=lambda: [3, 9])  # inclusive
    satellite_reach_vox: int = 10
    max_try: int = 3
    necrosis_prob: float = 0.5
    hu_difference: list[float] = field(default_factory=lambda: [65.0, 145.0])
    necrosis_hu: list[float] = field(default_factory=lambda: [90.0, 110.0])
    blur_sigma_vox: float = 0.8  # cv2.GaussianBlur 3x3 with sigma 0 uses 0.8
    size_step_factor: int = 2  # size-targeted growth runs at most this x the organ's max steps
    # torch intra-op threads while growing on CPU (0: leave as is). Each step is a handful of small
    # gather/scatter ops; on a shared 2-core machine 2 threads took 14 s CPU where 1 took 0.34 s.
    cpu_threads: int = 1
    device: str = "cpu"  # "cpu", "cuda", or "auto"

    def hu_range(self, organ: str) -> tuple[float, float]:
        lo, hi = self.organ_hu.get(_organ_key(organ), self.organ_hu.get("liver", ORGAN_HU["liver"]))
        return float(lo), float(hi)

    def steps_max(self, organ: str) -> int:
        return int(self.max_steps.get(_organ_key(organ), MAX_STEPS["liver"]))

    def gate(self, organ: str) -> int:
        return int(self.necrosis_gate_steps.get(_organ_key(organ), NECROSIS_GATE_STEPS["liver"]))

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


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
         stop_diameter_vox: tuple[float, float] | None = None) -> GrowthResult:
    """Run the CA on one region. level: int8 (X, Y, Z) from :func:`quantize_density`;
    seeds: (k, 3) int voxel indices (state 5).

    necrosis: True/False runs/skips the death phase after growth; None decides it as the
    reference does: when the steps run exceed ``gate_steps``, with ``config.necrosis_prob``.
    stop_diameter_vox: (dx, dy) target in-plane extent in voxels along X and Y; growth stops
    early once the tumor's extent reaches it along either axis (size-targeted growth).
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


def _reached(idx: torch.Tensor, shape, target: tuple[float, float]) -> bool:
    """Whether the tumor cells' extent along X or Y (voxels) has reached ``target``."""
    sy, sz = shape[1] * shape[2], shape[2]
    x, y = idx // sy, (idx % sy) // sz
    ex = int(x.max() - x.min()) + 1
    ey = int(y.max() - y.min()) + 1
    return ex >= target[0] or ey >= target[1]


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
           hu_range: tuple[float, float], texture: np.ndarray, rng: np.random.Generator,
           config: CAConfig) -> np.ndarray:
    """Map the CA state to HU. All arrays (X, Y, Z) over the same region; level0 is the density
    level before growth; returns float32 HU, changed only on ``organ`` voxels."""
    lo, hi = hu_range
    step = (hi - lo) / 3.0
    tumor = ((state >= 1) & (state <= THRESHOLD)) | (state == NECROTIC)
    tumor &= organ
    t1 = np.where(state == NECROTIC, THRESHOLD, np.where(tumor, state, 0)).astype(np.float32)
    t1 = _blur_inplane(t1, config.blur_sigma_vox)
    img = ct_hu.astype(np.float32, copy=True)
    covered = t1 != 0
    # bright vessels and dense tissue under the tumor are pulled toward the organ's range first
    vessel = (level0 == OUT_OF_RANGE) & (t1 >= THRESHOLD / 2)
    dense = (level0 == 2) & covered
    img[vessel] *= (lo + step / 2) / hi
    img[dense] *= (lo + 2 * step) / hi
    fat = None
    if _organ_key(organ_name) == "pancreas" and covered.any():
        fat = (img <= 65) & covered
        m = float(img[covered].mean())
        img += texture * rng.uniform(min(m, 2 * m), max(m, 2 * m)) * t1 * fat / THRESHOLD
    out = img - texture * rng.uniform(*config.hu_difference) * t1 / THRESHOLD
    necrotic = state == NECROTIC
    if necrotic.any():
        t2 = _blur_inplane(-(necrotic & organ).astype(np.float32), config.blur_sigma_vox)
        out = out + texture * rng.uniform(*config.necrosis_hu) * t2
    region = _blur_inplane(np.where(covered, out, 0.0).astype(np.float32), config.blur_sigma_vox)
    sel = (t1 >= THRESHOLD / 2) & (level0 >= 2)
    if fat is not None:
        sel |= ((t1 >= THRESHOLD / 2) & fat) | ((t1 >= THRESHOLD / 2) & (out < 0))
    out[sel] = region[sel]
    return np.where(organ, out, ct_hu).astype(np.float32)


class CASynthesizer:
    """Pixel2Cancer's cellular automaton as a :class:`~generative.tumors.base.Synthesizer` (name "ca")."""

    name = "ca"

    def __init__(self, config: CAConfig | None = None):
        self.config = config or CAConfig()

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
                    satellites: bool = True) -> np.ndarray:
        """Seeds (and satellites) as (k, 3) voxel indices into ``level`` (non-vessel organ voxels)."""
        cfg = self.config
        free = level < OUT_OF_RANGE
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
        """ct_hu: float32 HU (X, Y, Z); label: uint8 vocabulary (X, Y, Z); spacing: mm (recorded;
        the CA itself counts voxels, as the reference does at the data's spacing)."""
        t0 = time.perf_counter()
        cfg = self.config
        sp = check_inputs(ct_hu, label, spacing)
        region_full = self._region(label, spec.organ)
        box = bbox_of(region_full)
        region = region_full[box]
        ct = np.asarray(ct_hu, dtype=np.float32)[box]
        lesion = L.lesion_index_for(spec.organ)
        hu = cfg.hu_range(spec.organ)
        vessels = np.isin(label[box], [L.NAME_TO_INDEX[n] for n in ORGAN_EXTRAS.get(_organ_key(spec.organ), ())])
        level0 = quantize_density(ct, region, hu, vessels=vessels)
        target_mm = self.target_diameter_mm(spec, rng)
        if spec.steps is not None:
            steps = int(spec.steps)
        elif target_mm is not None:
            steps = cfg.size_step_factor * cfg.steps_max(spec.organ)  # a cap; growth stops at the size
        else:
            steps = int(rng.integers(cfg.min_steps, cfg.steps_max(spec.organ)))
        count = spec.count if spec.count is not None else (1 if target_mm is not None else None)
        # size-targeted growth measures one lesion's extent: no satellites around it
        seeds = self.seed_points(level0, count, rng, satellites=target_mm is None)
        stop = None if target_mm is None else (target_mm / sp[0], target_mm / sp[1])
        g = grow(level0, seeds, steps, rng, cfg, necrosis=None, gate_steps=cfg.gate(spec.organ),
                 stop_diameter_vox=stop)
        steps, necrosis = g.steps, g.necrosis

        tumor = ((g.state >= 1) & (g.state <= THRESHOLD)) & region
        necrotic = (g.state == NECROTIC) & region
        labelled = tumor if cfg.compat else (tumor | necrotic)
        if not (tumor | necrotic).any():
            raise SynthesisError("the CA grew no tumor inside the organ")
        sub = bbox_of(tumor | necrotic, margin=2)
        tex = tumor_texture(tuple(s.stop - s.start for s in sub), rng,
                            sigma_a=float(rng.choice(SIGMA_A_CHOICES)), sigma_b=float(rng.choice(SIGMA_B_CHOICES)))
        new_sub = render(ct[sub], g.state[sub], level0[sub], region[sub], spec.organ, hu, tex, rng, cfg)
        out_ct = np.array(ct_hu, dtype=np.float32, copy=True)
        full_sub = tuple(slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sub))
        out_ct[full_sub] = new_sub
        out_label = np.array(label, dtype=np.uint8, copy=True)
        out_label[box][labelled] = lesion

        details = {"steps": steps, "necrosis": necrosis, "compat": cfg.compat, "n_seeds": int(len(seeds)),
                   "target_diameter_mm": None if target_mm is None else round(target_mm, 2)}
        records = tumor_records(labelled, lesion, sp, spec.organ, self.name, box=box, **details)
        info = {"method": self.name, "steps": steps, "target_diameter_mm": target_mm, "necrosis": necrosis, "compat": cfg.compat,
                "seeds": [[int(v + b.start) for v, b in zip(p, box)] for p in seeds],
                "tumor_voxels": int(tumor.sum()), "necrotic_voxels": int(necrotic.sum()),
                "device": str(cfg.torch_device()), "seconds": round(time.perf_counter() - t0, 3)}
        return SynthesisResult(out_ct, out_label, records, info)


def ca_tumor_mask(organ_mask: np.ndarray, spacing, size: float | str, rng: np.random.Generator,
                  avoid: np.ndarray | None = None, margin_mm: float = 2.0,
                  config: CAConfig | None = None) -> np.ndarray:
    """A CA-grown tumor shape, bool (X, Y, Z), for mask-driven makers (the diffusion inpainter's
    ``mask_provider`` signature). No CT is given, so the organ is one density level (level 0)
    with ``avoid`` voxels (vessels) as out-of-range; one seed is placed like an ellipsoid
    centre (:class:`~generative.tumors.placement.PlacementSampler`) and grown until the
    diameter of ``size`` (a class or mm) is reached. The result lies inside the organ and
    off ``avoid``."""
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
    level = np.where(allowed, 0, OUT_OF_RANGE).astype(np.int8)
    sp = [float(v) for v in spacing]
    g = grow(level, seed[None], cfg.size_step_factor * MAX_STEPS["liver"], rng, cfg, necrosis=False,
             stop_diameter_vox=(target / sp[0], target / sp[1]))
    local = (g.state >= 1) & (g.state <= THRESHOLD) & allowed
    out = np.zeros(organ_mask.shape, dtype=bool)
    out[sampler.box] = local
    return out
