"""Training data: preprocessed volumes, step-indexed random crops, the latent cache.

Randomness is a function of ``(seed, step, rank)``: the crops of step 1234 are
the same whether the run started there or resumed there, which is what makes
``--resume`` reproduce the next loss exactly.

Volumes are kept as (D, H, W) = the case's (X, Y, Z) voxel axes after
RAS reorientation and resampling (the networks do not care which axis is which).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cohort import labels as L
from cohort.appearance import CONDITION_ATTRIBUTES as APPEARANCE_ATTRIBUTES
from cohort.case import Case
from cohort.errors import BatchReport, CohortError
from cohort.io import atomic_path
from cohort.layouts import open_cohort
from cohort.preprocess import resample, to_ras
from generative.diffusion.intensity import Intensity


@dataclass
class Volume:
    """One preprocessed training case. image: float32 [0, 1] (D, H, W); label: uint8 (D, H, W).

    ``instances``: uint8 (D, H, W), lesion i (:func:`cohort.appearance.lesion_instances`) as i;
    ``attributes``: float32 (n + 1, K), row i the normalised appearance attributes of lesion i
    (:func:`cohort.appearance.normalise`, row 0 zeros), so ``attributes[instances]`` paints
    each lesion with its own values. ``appearance``: the measured records (what the model
    folder stores as the distribution to draw from at sampling). ``intensity``: how ``image`` was
    scaled from HU (it must be the autoencoder's)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray | None = None
    attributes: np.ndarray | None = None
    appearance: list = field(default_factory=list)
    intensity: Intensity = field(default_factory=Intensity)


def prepare_case(case: Case, spacing_mm: list[float] | tuple[float, ...], intensity: Intensity | None = None) -> Volume:
    """RAS, resample to ``spacing_mm`` (empty = native), HU -> [0, 1] with ``intensity`` (the
    autoencoder's mapping; None = the default [-175, 250] window); every lesion's appearance
    measured on the resampled HU (the grid the model sees)."""
    intensity = intensity or Intensity()
    from cohort.appearance import attribute_table, lesion_instances, measure_appearance

    case = to_ras(case)
    if len(spacing_mm):
        case = resample(case, spacing_mm)
    label = case.label.astype(np.uint8)
    inst, classes = lesion_instances(label)
    if len(classes) > 254:
        raise CohortError(case.case_id, f"{len(classes)} lesions: at most 254 per case can be conditioned on")
    app = measure_appearance(case.ct, label, case.spacing, instances=(inst, classes))
    table = attribute_table([a.attributes() for a in app], APPEARANCE_ATTRIBUTES)
    rows = [{"case_id": case.case_id, **a.as_dict()} for a in app]
    return Volume(case.case_id, intensity.scale(case.ct), label, inst.astype(np.uint8), table, rows, intensity)


def load_volumes(cohort_dir: str | Path, spacing_mm, max_cases: int = 0,
                 report: BatchReport | None = None, intensity: Intensity | None = None) -> list[Volume]:
    """Read and preprocess a training cohort (HU scaled with ``intensity``, the autoencoder's
    mapping; None = the default window); bad cases go into ``report``. Raises when none is usable."""
    cohort = open_cohort(cohort_dir)
    refs = cohort.refs[:max_cases] if max_cases else cohort.refs
    sub = type(cohort)(cohort.root, cohort.layout, refs, dict(cohort.problems))
    vols = [prepare_case(c, spacing_mm, intensity) for c in sub.iter_cases(report)]
    if not vols:
        raise CohortError(cohort_dir, "no usable training case")
    return vols


def step_rng(seed: int, step: int, rank: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator of one training step (independent of how the run got there)."""
    return np.random.default_rng([int(seed), int(step), int(rank), int(stream)])


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A torch generator seeded from ``(seed, step, rank)`` for noise and timesteps."""
    s = int(step_rng(seed, step, rank, stream=1).integers(0, 2**62))
    return torch.Generator().manual_seed(s)


def random_crop(vol: Volume, size: tuple[int, int, int], rng: np.random.Generator,
                tumor_fraction: float, with_instances: bool = False):
    """A crop of ``size`` voxels; with probability ``tumor_fraction`` centred on a random
    lesion voxel. Volumes smaller than the crop are padded (image 0, label 0).
    Returns (image, label), or (image, label, instances) with ``with_instances``."""
    img, lab = vol.image, vol.label
    inst = vol.instances if vol.instances is not None else np.zeros(lab.shape, np.uint8)
    pad = [(0, max(0, s - n)) for s, n in zip(size, img.shape)]
    if any(p[1] for p in pad):
        img, lab, inst = np.pad(img, pad), np.pad(lab, pad), np.pad(inst, pad)
    lesion = np.isin(lab, L.LESION_LABELS)
    if rng.random() < tumor_fraction and lesion.any():
        idx = np.argwhere(lesion)
        centre = idx[rng.integers(len(idx))]
        start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, img.shape)]
    else:
        start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, img.shape)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, size))
    return (img[sl], lab[sl], inst[sl]) if with_instances else (img[sl], lab[sl])


def crop_batch(volumes: list[Volume], size, batch_size: int, rng: np.random.Generator,
               tumor_fraction: float) -> dict[str, torch.Tensor]:
    """{"image": (B, 1, D, H, W) float32, "label": (B, 1, D, H, W) int64}."""
    imgs, labs = [], []
    for _ in range(batch_size):
        vol = volumes[int(rng.integers(len(volumes)))]
        i, l_ = random_crop(vol, tuple(size), rng, tumor_fraction)
        imgs.append(i)
        labs.append(l_)
    return {"image": torch.from_numpy(np.stack(imgs)[:, None].copy()),
            "label": torch.from_numpy(np.stack(labs)[:, None].astype(np.int64))}


# ---- latent cache --------------------------------------------------------------------------

#: crops per encoder call while the latent cache is built
ENCODE_BATCH = 8
#: bump when what the cache holds changes (v2: lesion instances and their appearance attributes)
CACHE_VERSION = 2


def cache_key(volumes: list[Volume], crop_size, crops_per_case: int, seed: int, ae_hash: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{','.join(APPEARANCE_ATTRIBUTES)}|{ae_hash}|{list(crop_size)}|"
                       f"{crops_per_case}|{seed}".encode())
    if volumes and volumes[0].intensity != Intensity():  # the default window keeps the keys of earlier caches
        h.update(repr(volumes[0].intensity).encode())
    for v in volumes:
        h.update(v.case_id.encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_latent_cache(autoencoder: torch.nn.Module, volumes: list[Volume], crop_size, crops_per_case: int,
                       seed: int, tumor_fraction: float, path: str | Path) -> dict[str, torch.Tensor]:
    """Encode a fixed set of crops once and store them in ``path`` (safetensors, atomic).

    Returns {"latent": (N, 4, d, h, w) unscaled z_mu, "image": (N, 1, D, H, W), "label":
    (N, 1, D, H, W) uint8, "instances": (N, 1, D, H, W) uint8 (lesions renumbered 1.. per
    crop), "attributes": (N, M + 1, K) float32 (row j of crop n: its lesion j's normalised
    appearance)}. An existing file is read instead (the encoder is frozen in the later
    stages, so its latents never change). Volumes scaled with another intensity mapping than the
    autoencoder's are refused (ValueError naming the cases).
    """
    want = getattr(autoencoder, "intensity", Intensity())
    if bad := [v for v in volumes if v.intensity != want]:
        raise ValueError(f"case(s) {[v.case_id for v in bad[:3]]} were scaled with {bad[0].intensity.describe()} but "
                         f"the autoencoder reads {want.describe()}: prepare them with its intensity")
    path = Path(path)
    if path.exists():
        return load_file(str(path))
    rng = np.random.default_rng([int(seed), 7])
    autoencoder.eval()
    dev = next(autoencoder.parameters()).device
    K, N, size = len(APPEARANCE_ATTRIBUTES), len(volumes) * crops_per_case, tuple(int(c) for c in crop_size)
    # filled in place: thousands of small kept tensors between the encoder's large temporary buffers
    # fragment glibc's heap (measured: +1.4 GB for 120 crops, +15 GB and climbing on 2048; +0.06 GB here)
    img = torch.zeros((N, 1, *size), dtype=torch.float32)
    lab = torch.zeros((N, 1, *size), dtype=torch.uint8)
    ins = torch.zeros((N, 1, *size), dtype=torch.uint8)
    lat: torch.Tensor | None = None
    tabs: list[np.ndarray] = []
    n = 0
    for vol in volumes:
        table = vol.attributes if vol.attributes is not None else np.zeros((1, K), np.float32)
        for _ in range(crops_per_case):
            i, l_, n_ = random_crop(vol, size, rng, tumor_fraction, with_instances=True)
            present = np.unique(n_)
            present = present[present > 0]
            renum = np.zeros(int(n_.max()) + 1, np.uint8)
            renum[present] = np.arange(1, len(present) + 1)
            img[n, 0] = torch.from_numpy(np.ascontiguousarray(i))
            lab[n, 0] = torch.from_numpy(np.ascontiguousarray(l_))
            ins[n, 0] = torch.from_numpy(renum[n_])
            tabs.append(np.concatenate([np.zeros((1, K), np.float32), table[present]]))
            n += 1
    for a in range(0, N, ENCODE_BATCH):  # encoded in batches: same latents, fewer, larger calls
        z = autoencoder.encode(img[a:a + ENCODE_BATCH].to(dev))[0].cpu()
        if lat is None:
            lat = torch.zeros((N, *z.shape[1:]), dtype=z.dtype)
        lat[a:a + ENCODE_BATCH] = z
    m = max(len(t) for t in tabs)
    attrs = np.zeros((len(tabs), m, K), np.float32)
    for j, t in enumerate(tabs):
        attrs[j, :len(t)] = t
    cache = {"latent": lat, "image": img, "label": lab, "instances": ins, "attributes": torch.from_numpy(attrs)}
    with atomic_path(path) as tmp:
        save_file(cache, str(tmp))
    return cache


def scale_factor_of(latents: torch.Tensor) -> float:
    """1 / std(z) over the cache (Rombach et al.; MAISI), so latents have unit variance."""
    return float(1.0 / latents.float().std().clamp_min(1e-6))


def cache_batch(cache: dict[str, torch.Tensor], batch_size: int, rng: np.random.Generator,
                scale_factor: float) -> dict[str, torch.Tensor]:
    """A random batch from the cache; latents multiplied by ``scale_factor``; "appearance"
    (B, K, D, H, W): each lesion's normalised attributes painted into its voxels."""
    idx = torch.from_numpy(rng.integers(0, cache["latent"].shape[0], batch_size))
    batch = {"latent": cache["latent"][idx].float() * scale_factor, "image": cache["image"][idx].float(),
             "label": cache["label"][idx].long()}
    if "instances" in cache:
        inst, tab = cache["instances"][idx, 0].long(), cache["attributes"][idx]  # (B, D, H, W), (B, M, K)
        painted = torch.stack([t[i] for t, i in zip(tab, inst)])  # (B, D, H, W, K)
        batch["appearance"] = painted.permute(0, 4, 1, 2, 3).contiguous()
    return batch
