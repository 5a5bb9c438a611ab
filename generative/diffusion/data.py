"""Training data: preprocessed volumes, step-indexed random crops, the latent cache.

Randomness is a function of ``(seed, step, rank)``: the crops of step 1234 are
the same whether the run started there or resumed there, which is what makes
``--resume`` reproduce the next loss exactly.

Volumes are kept as (D, H, W) = the case's (X, Y, Z) voxel axes after
RAS reorientation and resampling (the networks do not care which axis is which).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cohort import labels as L
from cohort.case import Case
from cohort.errors import BatchReport, CohortError
from cohort.io import atomic_path
from cohort.layouts import open_cohort
from cohort.preprocess import resample, scale_hu, to_ras


@dataclass
class Volume:
    """One preprocessed training case. image: float32 [0, 1] (D, H, W); label: uint8 (D, H, W)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray


def prepare_case(case: Case, spacing_mm: list[float] | tuple[float, ...]) -> Volume:
    """RAS, resample to ``spacing_mm`` (empty = native), HU window -> [0, 1]."""
    case = to_ras(case)
    if len(spacing_mm):
        case = resample(case, spacing_mm)
    return Volume(case.case_id, scale_hu(case.ct), case.label.astype(np.uint8))


def load_volumes(cohort_dir: str | Path, spacing_mm, max_cases: int = 0,
                 report: BatchReport | None = None) -> list[Volume]:
    """Read and preprocess a training cohort; bad cases go into ``report``. Raises when none is usable."""
    cohort = open_cohort(cohort_dir)
    refs = cohort.refs[:max_cases] if max_cases else cohort.refs
    sub = type(cohort)(cohort.root, cohort.layout, refs, dict(cohort.problems))
    vols = [prepare_case(c, spacing_mm) for c in sub.iter_cases(report)]
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
                tumor_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A crop of ``size`` voxels; with probability ``tumor_fraction`` centred on a random
    lesion voxel. Volumes smaller than the crop are padded (image 0, label 0)."""
    img, lab = vol.image, vol.label
    pad = [(0, max(0, s - n)) for s, n in zip(size, img.shape)]
    if any(p[1] for p in pad):
        img, lab = np.pad(img, pad), np.pad(lab, pad)
    lesion = np.isin(lab, L.LESION_LABELS)
    if rng.random() < tumor_fraction and lesion.any():
        idx = np.argwhere(lesion)
        centre = idx[rng.integers(len(idx))]
        start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, img.shape)]
    else:
        start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, img.shape)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, size))
    return img[sl], lab[sl]


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

def cache_key(volumes: list[Volume], crop_size, crops_per_case: int, seed: int, ae_hash: str) -> str:
    h = hashlib.sha256(f"{ae_hash}|{list(crop_size)}|{crops_per_case}|{seed}".encode())
    for v in volumes:
        h.update(v.case_id.encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_latent_cache(autoencoder: torch.nn.Module, volumes: list[Volume], crop_size, crops_per_case: int,
                       seed: int, tumor_fraction: float, path: str | Path) -> dict[str, torch.Tensor]:
    """Encode a fixed set of crops once and store them in ``path`` (safetensors, atomic).

    Returns {"latent": (N, 4, d, h, w) unscaled z_mu, "image": (N, 1, D, H, W), "label":
    (N, 1, D, H, W) uint8}. An existing file is read instead (the encoder is frozen
    in the later stages, so its latents never change).
    """
    path = Path(path)
    if path.exists():
        return load_file(str(path))
    rng = np.random.default_rng([int(seed), 7])
    lat, img, lab = [], [], []
    autoencoder.eval()
    dev = next(autoencoder.parameters()).device
    for vol in volumes:
        for _ in range(crops_per_case):
            i, l_ = random_crop(vol, tuple(crop_size), rng, tumor_fraction)
            x = torch.from_numpy(i[None, None].copy()).to(dev)
            lat.append(autoencoder.encode(x)[0].cpu())
            img.append(torch.from_numpy(i[None].copy()))
            lab.append(torch.from_numpy(l_[None].copy()))
    cache = {"latent": torch.cat(lat).contiguous(), "image": torch.stack(img).contiguous(),
             "label": torch.stack(lab).contiguous()}
    with atomic_path(path) as tmp:
        save_file(cache, str(tmp))
    return cache


def scale_factor_of(latents: torch.Tensor) -> float:
    """1 / std(z) over the cache (Rombach et al.; MAISI), so latents have unit variance."""
    return float(1.0 / latents.float().std().clamp_min(1e-6))


def cache_batch(cache: dict[str, torch.Tensor], batch_size: int, rng: np.random.Generator,
                scale_factor: float) -> dict[str, torch.Tensor]:
    """A random batch from the cache; latents multiplied by ``scale_factor``."""
    idx = torch.from_numpy(rng.integers(0, cache["latent"].shape[0], batch_size))
    return {"latent": cache["latent"][idx].float() * scale_factor, "image": cache["image"][idx].float(),
            "label": cache["label"][idx].long()}
