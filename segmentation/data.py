"""Training data: output classes, cached preprocessed cases, the mixing sampler, patches and augmentation.

The pipeline of one training draw ``i`` (deterministic in ``(seed, i)``):

1. :class:`MixingSampler` picks a source by its weight and a case uniformly
   within it.
2. The case comes from the in-memory cache (:class:`CaseCache`): loaded,
   reoriented to RAS, resampled to 1.5 mm and cropped once, then kept, so
   preprocessing is not redone every epoch (MONAI's CacheDataset idea).
3. With probability ``onthefly.prob`` a healthy real case gets a synthetic
   tumor from the caller's synthesizer, applied to the patch only so that
   synthesis stays cheap next to the training step
   (:func:`segmentation.synthesis.synthesize_patch`, the path the MONAI
   transform ``RandTumorSynthesisd`` takes too).
4. A patch is cropped around a foreground voxel (``pos_fraction``) or a random
   background voxel, HU are clipped and scaled to [0, 1], labels are mapped to
   output channels, and MONAI augmentation (affine, flips, intensity) runs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as T
from rich.progress import Progress

from cohort import labels as L
from cohort.case import Case, CaseRef
from cohort.errors import CohortError
from segmentation.config import OnTheFlyConfig, SegConfig, SegDataConfig, SourceConfig
from segmentation.synthesis import Synthesis, synthesize_patch

#: at most this many voxel indices are kept per case and region to centre crops on
MAX_CENTRE_CANDIDATES = 20000


# ----------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class ClassMap:
    """Output channels <-> vocabulary labels. Channel 0 is background, channel k is ``classes[k-1]``.

    A class is a vocabulary name ("liver_lesion") or an organ type ("kidney" =
    kidney_left + kidney_right). Vocabulary labels not covered by any class
    become background.
    """

    classes: tuple[str, ...]

    @property
    def num_channels(self) -> int:
        return len(self.classes) + 1

    @property
    def names(self) -> list[str]:
        return ["background", *self.classes]

    def lut(self) -> np.ndarray:
        """(NUM_CLASSES,) uint8 lookup vocabulary index -> channel."""
        lut = np.zeros(L.NUM_CLASSES, np.uint8)
        for ch, name in enumerate(self.classes, start=1):
            lut[list(L.organ_indices(name))] = ch
        return lut

    def to_channels(self, label: np.ndarray) -> np.ndarray:
        """Vocabulary label map (any shape, uint8) -> channel indices (uint8, same shape)."""
        return self.lut()[label]

    @property
    def lesion_channels(self) -> list[int]:
        return [ch for ch, n in enumerate(self.classes, start=1) if all(i in L.LESION_LABELS for i in L.organ_indices(n))]

    def to_vocabulary(self, channels: np.ndarray, ct_hu: np.ndarray | None = None,
                      affine: np.ndarray | None = None) -> np.ndarray:
        """Channel indices -> canonical vocabulary (uint8, same shape).

        An organ type covering both sides (kidney) is split into left/right by
        which side of the body midline each voxel lies (RAS+ world x below the
        midline is the patient's left); without ``ct_hu``/``affine`` it becomes
        the first organ of the type.
        """
        out = np.zeros(channels.shape, np.uint8)
        split: list[np.ndarray] = []
        for ch, name in enumerate(self.classes, start=1):
            idx = L.organ_indices(name)
            m = channels == ch
            out[m] = idx[0]
            if set(idx) == {L.NAME_TO_INDEX["kidney_left"], L.NAME_TO_INDEX["kidney_right"]} and m.any():
                split.append(m)
        if split and ct_hu is not None and affine is not None:
            from cohort.layouts.base import split_kidneys

            for m in split:
                out = split_kidneys(ct_hu, affine, out, m)
        return out


# ----------------------------------------------------------------------------- sources


def open_source(src: SourceConfig, seed: int = 0, problems: dict[str, str] | None = None) -> list[CaseRef]:
    """The case references of a source: its cohort (or manifest), filtered and subset as configured.

    ``accepted_only`` keeps the cases the quality filter accepted, by cohort's one
    rule (:func:`cohort.layouts.manifest.keep_accepted`: the manifest line's or the
    sidecar's ``accepted``; no decision is not accepted; a cohort that was never
    filtered is an error). ``max_cases`` keeps a subset drawn with ``seed`` (stable
    across runs, nested: the first n of a larger subset are the same cases).
    ``problems``, when given, receives the cases the listing found but cannot
    use ({case id: why}: a case folder without its CT, a dangling link), so the
    caller can report them instead of dropping them.
    """
    from cohort.layouts import open_cohort

    cohort = open_cohort(src.path, layout=src.layout, accepted_only=src.accepted_only)
    if problems is not None:
        problems.update(cohort.problems)
    refs = list(cohort.refs)
    if src.accepted_only and not refs:
        raise CohortError(src.path, f"source {src.name!r}: no case is marked accepted (accepted_only: true)")
    if not refs:
        raise CohortError(src.path, f"source {src.name!r}: the cohort has no cases")
    refs.sort(key=lambda r: r.case_id)
    if src.max_cases is not None and src.max_cases < len(refs):
        order = np.random.default_rng([seed, _stable_int(src.name)]).permutation(len(refs))
        refs = [refs[i] for i in sorted(order[: src.max_cases])]
    return refs


def _stable_int(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------- cache


@dataclass
class CachedCase:
    """A case in training space: RAS, ``spacing`` mm, HU not yet scaled (synthesis needs HU).

    ct_hu: int16 (X, Y, Z) HU, rounded after resampling (CT is stored as whole HU anyway;
    int16 halves the cache); label: uint8 vocabulary indices, same shape.
    ``by_label[v]``: flat voxel indices of vocabulary label ``v`` (at most
    :data:`MAX_CENTRE_CANDIDATES`) to centre crops on; only labels present.
    """

    case_id: str
    source: int
    ct_hu: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    by_label: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def present(self) -> frozenset[int]:
        return frozenset(self.by_label)

    def candidates(self, labels) -> np.ndarray:
        """Flat indices of the voxels of any of ``labels`` (vocabulary indices)."""
        parts = [self.by_label[v] for v in labels if v in self.by_label]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    @property
    def nbytes(self) -> int:
        return int(self.ct_hu.nbytes + self.label.nbytes)


def to_training_space(case: Case, data: SegDataConfig):
    """RAS+, ``data.spacing`` mm (CT linear, labels nearest), optionally cropped to organs.

    Returns :class:`cohort.preprocess.Preprocessed` (case + record). The same
    steps prediction runs (:mod:`segmentation.predict`, without the organ crop),
    so a model sees at inference what it saw in training.
    """
    from cohort import preprocess as P

    return P.preprocess(case, tuple(float(s) for s in data.spacing),
                        crop_organs=list(data.crop_roi_organs) or None, margin_mm=data.crop_margin_mm)


def cache_case(case: Case, source: int, data: SegDataConfig) -> CachedCase:
    """Preprocess a loaded case into a :class:`CachedCase` (crop-centre candidates included)."""
    return _index_cached(to_training_space(case, data).case, source)


def _disk_key(ref: CaseRef, data: SegDataConfig) -> str:
    parts = [str(ref.image), str(ref.label)]
    for p in (ref.image, ref.label):
        if p is not None and Path(p).exists():
            st = Path(p).stat()
            parts += [str(st.st_size), str(st.st_mtime_ns)]
    parts += [repr(list(data.spacing)), repr(list(data.crop_roi_organs)), repr(data.crop_margin_mm)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def load_cached(ref: CaseRef, source: int, data: SegDataConfig) -> CachedCase:
    """:func:`cache_case` for a reference, through ``data.cache_dir`` (npz) when set."""
    if data.cache_dir:
        path = Path(data.cache_dir) / f"{ref.case_id}-{_disk_key(ref, data)}.npz"
        if path.exists():
            z = np.load(path)
            return _index_cached(Case(ref.case_id, z["ct"], z["label"], z["affine"], {}), source)
        loaded = to_training_space(ref.load(), data).case
        from cohort.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # np.savez appends ".npz" to names without it
                np.savez(f, ct=_to_int16(loaded.ct), label=loaded.label.astype(np.uint8),
                         affine=np.asarray(loaded.affine, np.float64))
        return _index_cached(loaded, source)
    return cache_case(ref.load(), source, data)


def _index_cached(c: Case, source: int) -> CachedCase:
    rng = np.random.default_rng(_stable_int(c.case_id))
    lab = np.ascontiguousarray(c.label.astype(np.uint8))
    # one pass: voxel indices sorted by label, split per label
    flat = lab.reshape(-1)
    order = np.argsort(flat, kind="stable")
    values, starts = np.unique(flat[order], return_index=True)
    bounds = [*starts[1:], flat.size]
    by_label = {}
    for v, a, b in zip(values, starts, bounds):
        if v == 0:
            continue
        idx = order[a:b]
        if idx.size > MAX_CENTRE_CANDIDATES:
            idx = np.sort(rng.choice(idx, MAX_CENTRE_CANDIDATES, replace=False))
        by_label[int(v)] = idx.astype(np.int64)
    return CachedCase(case_id=c.case_id, source=source, ct_hu=_to_int16(c.ct), label=lab,
                      spacing=tuple(float(s) for s in c.spacing), affine=np.asarray(c.affine, np.float64),
                      by_label=by_label)


def _to_int16(ct: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(ct), -32768, 32767).astype(np.int16))


def build_cache(refs_per_source: Sequence[Sequence[CaseRef]], data: SegDataConfig, desc: str = "caching cases", show: bool = True) -> list[list[CachedCase]]:
    """Preprocess every case of every source once (rich progress). Failures name the case file."""
    total = sum(len(r) for r in refs_per_source)
    out: list[list[CachedCase]] = []
    with Progress(disable=not show, transient=True) as prog:
        task = prog.add_task(desc, total=total)
        for s, refs in enumerate(refs_per_source):
            cases = []
            for ref in refs:
                cases.append(load_cached(ref, s, data))
                prog.advance(task)
            out.append(cases)
    return out


# ----------------------------------------------------------------------------- sampler


class MixingSampler(torch.utils.data.Sampler):
    """Draws ``(source, case)`` pairs: a source by weight, then a case uniformly within it.

    Draw ``i`` depends only on ``(seed, i)``, so a resumed run continues the
    same sequence (``start``) and any process can recompute any draw.
    ``weights`` None draws uniformly over all cases (sources by size).
    Iterating yields draw indices ``start .. start + num_draws - 1``.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None = None, seed: int = 0,
                 num_draws: int = 1, start: int = 0):
        if not sizes or any(n <= 0 for n in sizes):
            raise ValueError(f"every source needs at least one case, got sizes {list(sizes)}")
        w = np.asarray(sizes if weights is None else weights, dtype=np.float64)
        if w.shape != (len(sizes),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {weights} do not fit sources of sizes {list(sizes)}")
        self.sizes = [int(n) for n in sizes]
        self.probs = w / w.sum()
        self._cum = np.cumsum(self.probs)
        self.seed = int(seed)
        self.num_draws = int(num_draws)
        self.start = int(start)

    def draw(self, i: int) -> tuple[int, int]:
        u, v = np.random.default_rng([self.seed, int(i)]).random(2)
        s = int(min(np.searchsorted(self._cum, u, side="right"), len(self.sizes) - 1))
        return s, int(v * self.sizes[s])

    def __iter__(self):
        return iter(range(self.start, self.start + self.num_draws))

    def __len__(self) -> int:
        return self.num_draws


# ----------------------------------------------------------------------------- patches


def crop_patch(arr: np.ndarray, centre: Sequence[int], size: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """The ``size`` box of ``arr`` (X, Y, Z) around ``centre``, shifted inside the volume;
    padded with ``pad_value`` where the volume is smaller than the box."""
    pads, sl = [], []
    for c, n, s in zip(centre, arr.shape, size):
        if n >= s:
            lo = int(np.clip(int(c) - s // 2, 0, n - s))
            sl.append(slice(lo, lo + s))
            pads.append((0, 0))
        else:
            sl.append(slice(0, n))
            before = (s - n) // 2
            pads.append((before, s - n - before))
    out = arr[tuple(sl)]
    if any(p != (0, 0) for p in pads):
        out = np.pad(out, pads, constant_values=pad_value)
    return out


def scale_hu(ct_hu: np.ndarray, data: SegDataConfig) -> np.ndarray:
    """HU clipped to [hu_min, hu_max] and scaled to [0, 1] (float32)."""
    from cohort import preprocess as P

    return P.scale_hu(ct_hu, data.hu_min, data.hu_max).astype(np.float32)


def build_augmentation(data: SegDataConfig) -> T.Compose:
    """nnU-Net-style augmentation with MONAI dictionary transforms on ``image`` (1, X, Y, Z)
    in [0, 1] and ``label`` (1, X, Y, Z). Probabilities and ranges after nnU-Net's defaults
    (Isensee et al. 2021: rotation +-30 deg, scale 0.7-1.4, noise, blur, brightness, gamma, mirroring)."""
    keys = ("image", "label")
    return T.Compose([
        T.RandAffined(keys, prob=0.2, rotate_range=(math.pi / 6,) * 3, scale_range=(0.3,) * 3,
                      mode=("bilinear", "nearest"), padding_mode="border"),
        T.RandGaussianNoised("image", prob=0.1, std=0.03),
        T.RandGaussianSmoothd("image", prob=0.1, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        T.RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5)),
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandFlipd(keys, prob=0.5, spatial_axis=2),
    ])


class PatchDataset(torch.utils.data.Dataset):
    """Training patches for draw indices (see the module docstring).

    Item: ``image`` float32 (1, X, Y, Z) in [0, 1], ``label`` int64 (1, X, Y, Z)
    channel indices, ``source`` int, ``synth`` bool (on-the-fly tumor added),
    ``synth_seconds`` float.

    ``synthesizer``: any object called as ``synthesizer(ct_hu, label, spacing,
    spec, rng)`` returning something with ``.ct`` (HU) and ``.label``
    (vocabulary) on the same grid (duck-typed; segmentation never imports the
    generators). ``spec_for(organ, rng)`` builds the ``spec`` argument; by
    default the organ type name is passed.
    """

    def __init__(self, cache: list[list[CachedCase]], sampler: MixingSampler, cfg: SegConfig,
                 synthesizer: Any = None, spec_for: Callable[[str, np.random.Generator], Any] | None = None,
                 synth_sources: Sequence[int] | None = None):
        self.cache = cache
        self.sampler = sampler
        self.data = cfg.data
        self.otf: OnTheFlyConfig = cfg.onthefly
        self.class_map = ClassMap(tuple(cfg.classes))
        self._lut = torch.as_tensor(self.class_map.lut().astype(np.int64))
        self.patch = tuple(int(p) for p in cfg.data.patch_size)
        self._class_labels = [L.organ_indices(n) for n in cfg.classes]
        self._lesion_classes = {k for k, labs in enumerate(self._class_labels) if set(labs) <= set(L.LESION_LABELS)}
        self.augment = build_augmentation(cfg.data) if cfg.data.augment else None
        self.synthesizer = synthesizer if (cfg.onthefly.method is not None or synthesizer is not None) else None
        self.spec_for = spec_for
        named = set(cfg.onthefly.sources)
        self.synth_sources = set(synth_sources) if synth_sources is not None else {
            i for i, s in enumerate(cfg.sources) if (s.name in named if named else s.kind == "real")}

    def __len__(self) -> int:
        return self.sampler.start + self.sampler.num_draws

    def __getitem__(self, i: int) -> dict[str, Any]:
        s, k = self.sampler.draw(i)
        c = self.cache[s][k]
        rng = np.random.default_rng([self.sampler.seed, int(i), 1])
        ct, lab, syn = self._patch(c, rng)
        image = torch.from_numpy(scale_hu(ct, self.data))[None]
        label = self._lut[torch.from_numpy(lab.astype(np.int64))][None]
        item = {"image": image, "label": label}
        if self.augment is not None:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            item = self.augment(item)
        img = torch.as_tensor(item["image"]).float().contiguous()
        lbl = torch.as_tensor(item["label"]).round().long().contiguous()
        return {"image": img, "label": lbl, "source": s, "synth": syn.applied, "synth_seconds": syn.seconds}

    # -- helpers

    def _centre(self, c: CachedCase, rng: np.random.Generator, candidates: np.ndarray | None = None) -> tuple[int, ...]:
        """A crop centre: a voxel of ``candidates``; else with ``pos_fraction`` a voxel of one output
        class (a lesion class with ``lesion_fraction`` when the case has one, otherwise a class drawn
        uniformly, so small organs get patches; nnU-Net's class-balanced foreground sampling), else a
        random background voxel (MONAI's RandCropByPosNegLabel "neg" centres)."""
        if candidates is None and rng.random() < self.data.pos_fraction:
            present = [k for k, labs in enumerate(self._class_labels) if any(v in c.by_label for v in labs)]
            if present:
                lesions = [k for k in present if k in self._lesion_classes]
                pool = lesions if (lesions and rng.random() < self.data.lesion_fraction) else present
                candidates = c.candidates(self._class_labels[pool[int(rng.integers(len(pool)))]])
        if candidates is None or candidates.size == 0:
            flat = c.label.reshape(-1)
            for _ in range(8):
                j = int(rng.integers(flat.size))
                if flat[j] == 0:
                    break
            return tuple(int(v) for v in np.unravel_index(j, c.label.shape))
        j = int(candidates[rng.integers(candidates.size)])
        return tuple(int(v) for v in np.unravel_index(j, c.label.shape))

    def _patch(self, c: CachedCase, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Synthesis]:
        syn = Synthesis()
        organ = self._synth_organ(c, rng)
        if organ is not None:
            centre = self._centre(c, rng, c.candidates(L.organ_indices(organ)))
            ct = crop_patch(c.ct_hu, centre, self.patch, pad_value=-1000).astype(np.float32)
            lab = crop_patch(c.label, centre, self.patch, pad_value=0).copy()
            spec = self.spec_for(organ, rng) if self.spec_for is not None else organ
            # a ValueError (SynthesisError is one) means the organ is too small in this patch for
            # the method: train on the healthy patch rather than stop the run
            ct, lab, syn = synthesize_patch(self.synthesizer, ct, lab, c.spacing, spec, rng, skip=ValueError)
            return ct, lab, Synthesis(syn.applied, organ, syn.seconds)
        centre = self._centre(c, rng)
        return (crop_patch(c.ct_hu, centre, self.patch, pad_value=-1000),
                crop_patch(c.label, centre, self.patch, pad_value=0), syn)

    def _synth_organ(self, c: CachedCase, rng: np.random.Generator) -> str | None:
        """The organ to grow a tumor in for this draw, or None (not drawn, not healthy, no synthesizer)."""
        if self.synthesizer is None or c.source not in self.synth_sources:
            return None
        if rng.random() >= self.otf.prob:
            return None
        healthy = [o for o in self.otf.organs
                   if any(v in c.by_label for v in L.organ_indices(o)) and L.lesion_index_for(o) not in c.present]
        if not healthy:
            return None
        return healthy[int(rng.integers(len(healthy)))]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack patches: image (B, 1, X, Y, Z) float32, label (B, 1, X, Y, Z) int64, source (B,) int64."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
        "source": torch.as_tensor([it["source"] for it in items], dtype=torch.int64),
        "synth": torch.as_tensor([it["synth"] for it in items], dtype=torch.bool),
        "synth_seconds": torch.as_tensor([it["synth_seconds"] for it in items], dtype=torch.float64),
    }
