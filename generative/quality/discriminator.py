"""The tumor discriminator: a small 3D CNN that says how real a tumor looks.

Input: a tumor-centred crop (B, 2, S, S, S), channel 0 windowed CT in [0, 1],
channel 1 the tumor mask (see :mod:`generative.quality.crops`). Output: one
logit per crop (B,); ``sigmoid(logit)`` is P(real).

The idea follows FreeTumor (Wu et al., "FreeTumor: Large-Scale Generative
Tumor Synthesis", Luffy03/FreeTumor), which uses an adversarial
discriminator to judge synthetic tumors; this one is trained after the fact,
on real tumors against a generator's output, so any generator can be filtered.

A saved model is a folder: ``config.json`` (constructor arguments plus the
crop settings it was trained with) and ``model.safetensors``; with ``feature_trees.json`` (boosted
trees on the radiomic crop features, :mod:`generative.quality.trees`, fitted after the CNN) its
P(real) is the geometric mean of the CNN's and the trees' (:meth:`TumorDiscriminator.predict_parts`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn

from cohort import saved
from cohort.errors import CohortError
from cohort.io import read_json, write_json
from generative.quality.crops import CropConfig
from generative.quality.features import FEATURE_NAMES, FEATURE_NAMES_V1, crop_features
from generative.quality.trees import BoostedTrees

CONFIG_NAME = saved.CONFIG_NAME
#: model_type in config.json (cohort.saved)
MODEL_TYPE = "tumor_discriminator"
WEIGHTS_NAME = "model.safetensors"
#: written beside the model by training: held-out scores (calibrated policy, audit) and the HU check's bounds
CALIBRATION_NAME = "calibration.json"
HU_BOUNDS_NAME = "hu_bounds.json"
#: the boosted trees on the crop features (optional; without it the CNN scores alone)
TREES_NAME = "feature_trees.json"


@dataclass
class ModelConfig:
    """Discriminator architecture. One stride-2 block per entry of ``channels``."""

    in_channels: int = 2
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    #: "batch" keeps absolute intensity information (instance norm would erase a wrong-HU tumor's offset)
    norm: Literal["batch", "instance", "none"] = "batch"
    dropout: float = 0.2
    #: add the radiomic features of :mod:`generative.quality.features` (through a small MLP) to the head:
    #: with a few hundred training crops they carry most of the signal (benchmarks/RESULTS.md, filter)
    features: bool = True
    #: hidden width of the features' MLP
    feature_hidden: int = 32


class TumorDiscriminator(nn.Module):
    """(B, C, D, H, W) crop -> (B,) logit of P(real).

    A stem convolution, then one stride-2 convolution block per level, global
    pooling inside the tumor mask at every level plus global pooling, and a linear head. Built from MONAI's ``Convolution`` block.
    With ``features`` the head also sees the crop's radiomic features (:func:`generative.quality.features.crop_features`,
    standardised with statistics of the training crops, :meth:`set_feature_stats`) through a two-layer MLP.
    ``hu_window`` is the crops' CT window (:class:`CropConfig` hu_min, hu_max), for the features' HU.
    ``features`` defaults to False here so that folders saved before it existed load unchanged; new
    training takes :class:`ModelConfig`'s default (True).
    """

    def __init__(self, in_channels: int = 2, channels: list[int] | tuple[int, ...] = (16, 32, 64),
                 norm: Literal["batch", "instance", "none"] = "batch", dropout: float = 0.2,
                 features: bool = False, feature_hidden: int = 32,
                 hu_window: tuple[float, float] | list[float] = (-175.0, 250.0),
                 feature_names: tuple[str, ...] | list[str] | None = None):
        super().__init__()
        self.config = {"in_channels": int(in_channels), "channels": [int(c) for c in channels],
                       "norm": str(norm), "dropout": float(dropout), "features": bool(features),
                       "feature_hidden": int(feature_hidden), "hu_window": [float(v) for v in hu_window]}
        if features:  # the features it was trained on, by name: a later feature list leaves saved models as they were
            self.config["feature_names"] = list(feature_names or FEATURE_NAMES)
        norm_arg = None if norm in ("none", "", None) else norm
        layers: list[nn.Module] = [Convolution(3, in_channels, channels[0], strides=1, kernel_size=3,
                                               act=("leakyrelu", {"negative_slope": 0.2}), norm=norm_arg)]
        prev = channels[0]
        for ch in channels:
            layers.append(Convolution(3, prev, ch, strides=2, kernel_size=3,
                                      act=("leakyrelu", {"negative_slope": 0.2}), norm=norm_arg))
            prev = ch
        self.features = nn.ModuleList(layers)
        self.drop = nn.Dropout(dropout)
        # masked means at every level (stem included) + the global mean of the last level
        n_head = channels[0] + sum(channels) + prev
        self.feature_mlp: nn.Module | None = None
        if features:
            nf = len(self.config["feature_names"])
            self.register_buffer("feature_mean", torch.zeros(nf))
            self.register_buffer("feature_std", torch.ones(nf))
            self.feature_mlp = nn.Sequential(nn.Linear(nf, feature_hidden), nn.LeakyReLU(0.1),
                                             nn.Linear(feature_hidden, feature_hidden), nn.LeakyReLU(0.1))
            n_head += feature_hidden
        self.head = nn.Linear(n_head, 1)
        #: the second opinion on the crop features (attached after training, saved beside the weights)
        self.trees: BoostedTrees | None = None

    @torch.no_grad()
    def set_feature_stats(self, x: torch.Tensor, batch_size: int = 64) -> None:
        """Standardise the radiomic features with their mean and sd over the crops ``x`` (N, C, D, H, W)
        (the training crops; stored in the weights so scoring uses the same scale)."""
        if self.feature_mlp is None or len(x) == 0:
            return
        f = torch.cat([crop_features(x[i:i + batch_size].float(), *self.config["hu_window"], self.config["feature_names"])
                       for i in range(0, len(x), batch_size)])
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(f.std(0).clamp_min(1e-3) if len(f) > 1 else torch.ones_like(f[0]))

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, D, H, W), channel -1 the tumor mask -> logits (B,). ``features``: the crops' radiomic
        features in the head's names, when the caller has them already (else computed here).

        The head sees the mean of the features inside the tumor at every level
        (the mask downsampled to each feature grid) plus the mean over the whole
        crop (context). Pooling inside the tumor at full resolution matters: a
        5 mm tumor is a few voxels of a 32^3 crop and vanishes in a global mean.
        """
        mask = x[:, -1:].float()
        h = x
        pooled = []
        for layer in self.features:
            h = layer(h)  # (B, F, d, h, w)
            m = nn.functional.adaptive_avg_pool3d(mask, h.shape[2:])  # tumor fraction per feature voxel
            pooled.append((h * m).sum((2, 3, 4)) / m.sum((2, 3, 4)).clamp_min(1e-3))
        pooled.append(h.mean((2, 3, 4)))
        if self.feature_mlp is not None:
            if features is None:
                features = crop_features(x, *self.config["hu_window"], self.config["feature_names"])
            f = (features.to(self.feature_mean) - self.feature_mean) / self.feature_std
            pooled.append(self.feature_mlp(f.clamp(-8, 8).to(h.dtype)))
        return self.head(self.drop(torch.cat(pooled, dim=1))).squeeze(1)

    @torch.no_grad()
    def tree_features(self, x: torch.Tensor, names: list[str] | tuple[str, ...] | None = None,
                      batch_size: int = 64) -> np.ndarray:
        """(N, F) crop features of (N, C, D, H, W) crops in ``names`` (default: the trees' own, else
        :data:`FEATURE_NAMES`)."""
        names = names or (self.trees.feature_names if self.trees is not None else list(FEATURE_NAMES))
        out = [crop_features(x[i:i + batch_size].float(), *self.config["hu_window"], names).numpy()
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(names)), np.float32)

    @torch.no_grad()
    def predict_parts(self, x: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the CNN's P(real), the trees' P(real) or None without trees) for (N, C, D, H, W) crops, each (N,)
        float32 on CPU; the CNN in eval mode, batched. When the head and the trees read the same features they
        are computed once per batch."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        shared = (self.trees is not None and self.feature_mlp is not None
                  and list(self.trees.feature_names) == list(self.config["feature_names"]))
        p_cnn, feats = [], []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev).float()
            f = crop_features(xb, *self.config["hu_window"], self.config["feature_names"]) if shared else None
            p_cnn.append(torch.sigmoid(self(xb, f)).float().cpu())
            if shared:
                feats.append(f.cpu().numpy())
        self.train(was)
        p = torch.cat(p_cnn) if p_cnn else torch.zeros(0)
        if self.trees is None:
            return p, None
        f_tr = np.concatenate(feats) if shared and feats else self.tree_features(x.cpu())
        return p, torch.from_numpy(self.trees.predict_proba(f_tr).astype(np.float32))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """P(real) for (N, C, D, H, W) crops: the CNN's, or with trees the geometric mean of the CNN's and the
        trees' (a tumor must look real to both); (N,) float32 on CPU."""
        return self.combine(*self.predict_parts(x, batch_size))

    @staticmethod
    def combine(p_cnn: torch.Tensor, p_trees: torch.Tensor | None) -> torch.Tensor:
        """The filter's P(real) from its two opinions: the geometric mean, or the CNN's alone without trees."""
        return p_cnn if p_trees is None else (p_cnn * p_trees).sqrt()

    # ------------------------------------------------------------ saving
    def save_pretrained(self, out_dir: str | Path, crop: CropConfig | None = None,
                        extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ ``feature_trees.json`` with trees) into ``out_dir``
        (atomic per file; a stale trees file from an earlier save is removed)."""
        more: dict[str, Any] = {}
        if crop is not None:
            more["crop"] = asdict(crop)
        if extra:
            more.update(extra)
        out = saved.save_folder(out_dir, MODEL_TYPE, dict(self.config), self.state_dict(), **more)
        trees = Path(out_dir) / TREES_NAME
        if self.trees is not None:
            write_json(trees, self.trees.to_dict())
        elif trees.exists():
            trees.unlink()
        return out

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, map_location: str | torch.device = "cpu") -> TumorDiscriminator:
        """Rebuild from a folder written by :meth:`save_pretrained` (no training YAML needed)."""
        model_dir = Path(model_dir)
        cfg = read_model_config(model_dir)
        weights = model_dir / WEIGHTS_NAME
        if not weights.exists():
            raise CohortError(weights, "discriminator weights missing (expected model.safetensors beside config.json)")
        kw = dict(cfg["kwargs"])
        if kw.get("features") and "feature_names" not in kw:
            kw["feature_names"] = list(FEATURE_NAMES_V1)  # saved before the names were
        model = cls(**kw)
        try:
            model.load_state_dict(saved.load_weights(model_dir, str(map_location)))
        except RuntimeError as e:
            raise CohortError(weights, f"weights do not fit the architecture in config.json ({e})") from e
        trees = model_dir / TREES_NAME
        if trees.exists():
            try:
                model.trees = BoostedTrees.from_dict(read_json(trees), str(trees))
            except (ValueError, KeyError, TypeError) as e:
                raise CohortError(trees, f"unreadable feature trees ({e}); retrain the filter or delete the file "
                                         "to score with the CNN alone") from e
            unknown = [n for n in model.trees.feature_names if n not in FEATURE_NAMES]
            if unknown:
                raise CohortError(trees, f"feature trees read unknown features {unknown}")
        model.eval()
        return model


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """The discriminator folder's ``config.json`` as a dict; errors name the file."""
    path = Path(model_dir) / CONFIG_NAME
    if not path.exists():
        raise CohortError(path, "not a discriminator folder: config.json missing (train one with `tumorgen filter train`)")
    return saved.read_config(model_dir, MODEL_TYPE)


def crop_config_of(model_dir: str | Path) -> CropConfig:
    """The crop settings a saved discriminator was trained with."""
    cfg = read_model_config(model_dir)
    crop = dict(cfg.get("crop", {}))
    crop.setdefault("max_fill", 0.0)  # saved before the setting: trained on fixed-spacing crops
    return CropConfig(**crop)
