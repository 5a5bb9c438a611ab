"""On-the-fly tumor synthesis for segmentation training, as a MONAI dictionary transform.

Put it before intensity scaling (it works on HU), or tell it the scaling with
``hu_range`` so it can undo and redo it::

    Compose([LoadImaged(...), EnsureChannelFirstd(...),
             RandTumorSynthesisd(("image", "label"), CASynthesizer(), prob=0.5, specs=TumorSpec("liver")),
             ScaleIntensityRanged("image", -175, 250, 0, 1, clip=True), ...])

Only healthy samples are changed: a sample whose label already holds any
lesion voxel, or lacks the spec's organ, passes through untouched.

The synthesis itself goes through :func:`segmentation.synthesis.synthesize_patch`, the
path segmentation training takes for its on-the-fly tumors (``segmentation`` never
imports ``generative``; this module imports that one function).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from cohort import labels as L
from generative.tumors.base import SynthesisError, Synthesizer, TumorSpec
from segmentation.synthesis import synthesize_patch


def _spacing_of(img: Any) -> tuple[float, float, float] | None:
    """Voxel spacing (mm) from a MetaTensor's affine, or None."""
    aff = getattr(img, "affine", None)
    if aff is None:
        return None
    a = np.asarray(aff.cpu() if isinstance(aff, torch.Tensor) else aff, dtype=np.float64)
    if a.ndim == 3:
        a = a[0]
    return tuple(float(s) for s in np.sqrt((a[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _like(new: np.ndarray, old: Any) -> Any:
    """``new`` in the container and dtype of ``old`` (MetaTensor keeps its meta)."""
    if isinstance(old, torch.Tensor):
        t = torch.as_tensor(new, dtype=old.dtype, device=old.device)
        if hasattr(old, "copy_meta_from"):
            out = old.clone()
            out.data = t  # MetaTensor: same meta, new values
            return out
        return t
    return new.astype(np.asarray(old).dtype, copy=False)


class RandTumorSynthesisd(Randomizable, MapTransform):
    """Add a synthetic tumor to healthy samples with probability ``prob``.

    keys: (image key, label key); image (1, X, Y, Z) HU (or scaled from ``hu_range``),
    label (1, X, Y, Z) vocabulary indices; numpy arrays or (Meta)Tensors.
    synthesizer: any :class:`~generative.tumors.base.Synthesizer` (CA, rules, diffusion).
    specs: one :class:`TumorSpec` or several (one is drawn per sample).
    spacing: fixed spacing (mm); else ``spacing_key`` in the dict (3 numbers); else the
        image MetaTensor's affine; else 1 mm.
    hu_range: (lo, hi) when the image is already scaled to [0, 1] from that HU window
        (e.g. (-175, 250)); None when the image is HU.
    records_key: when set, the synthesizer's records go to ``d[records_key]`` (a list, empty when
        skipped); off by default because lists of varying length do not collate in a DataLoader.
    """

    def __init__(self, keys: KeysCollection, synthesizer: Synthesizer, prob: float = 0.5,
                 specs: TumorSpec | Sequence[TumorSpec] = TumorSpec("liver"),
                 spacing: Sequence[float] | None = None, spacing_key: str | None = None,
                 hu_range: tuple[float, float] | None = None, records_key: str | None = None,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"RandTumorSynthesisd needs keys=(image, label), got {self.keys}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.synthesizer = synthesizer
        self.prob = float(prob)
        self.specs = [specs] if isinstance(specs, TumorSpec) else list(specs)
        if not self.specs:
            raise ValueError("RandTumorSynthesisd needs at least one TumorSpec")
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.spacing_key = spacing_key
        self.hu_range = hu_range
        self.records_key = records_key
        self._do = False
        self._spec = self.specs[0]
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob
        self._spec = self.specs[int(self.R.randint(len(self.specs)))]
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _spacing(self, d: Mapping[Hashable, Any], img: Any) -> tuple[float, float, float]:
        if self.spacing is not None:
            return self.spacing  # type: ignore[return-value]
        if self.spacing_key is not None and self.spacing_key in d:
            return tuple(float(s) for s in _to_numpy(d[self.spacing_key]).reshape(-1)[:3])  # type: ignore[return-value]
        return _spacing_of(img) or (1.0, 1.0, 1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if self.records_key:
            d[self.records_key] = []
        ik, lk = self.keys
        if not self._do or ik not in d or lk not in d:
            return d
        img, lab = d[ik], d[lk]
        x = _to_numpy(img)
        y = _to_numpy(lab)
        if x.ndim != 4 or x.shape[0] != 1 or y.shape != x.shape:
            raise ValueError(f"RandTumorSynthesisd expects image and label of shape (1, X, Y, Z), got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        label = np.rint(y[0]).astype(np.uint8)
        if np.isin(label, L.LESION_LABELS).any() or not np.isin(label, L.organ_indices(self._spec.organ)).any():
            return d  # not a healthy sample of this organ
        ct = x[0].astype(np.float32)
        if self.hu_range is not None:
            lo, hi = self.hu_range
            ct = ct * (hi - lo) + lo
        # the patch-synthesis path of segmentation training; a SynthesisError (e.g. organ too small
        # for the CA to grow in) leaves the sample healthy
        new_ct, new_lab, syn = synthesize_patch(self.synthesizer, ct, label, self._spacing(d, img), self._spec,
                                                np.random.default_rng(self._seed), skip=SynthesisError)
        if not syn.applied:
            return d
        if self.hu_range is not None:
            lo, hi = self.hu_range
            new_ct = np.clip((new_ct - lo) / (hi - lo), 0.0, 1.0)
        d[ik] = _like(new_ct[None].astype(np.float32), img)
        d[lk] = _like(new_lab[None], lab)
        if self.records_key:
            d[self.records_key] = syn.records
        return d
