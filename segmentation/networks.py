"""Segmentation networks (MONAI) and the self-describing model folder.

A saved model is a folder (diffusers' ``save_pretrained`` idea):

- ``config.json``: the network constructor arguments (:mod:`cohort.saved`: ``model_type: segmentation``, ``network``, ``kwargs``),
- ``model.safetensors``: the weights,
- ``segmentation.json``: classes, preprocessing and inference settings,

so :func:`load_model` rebuilds everything prediction needs without the
training YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cohort import saved
from cohort.errors import CohortError
from cohort.io import read_json, write_json
from segmentation.config import InferConfig, NetworkConfig, SegDataConfig

CONFIG_NAME = saved.CONFIG_NAME
WEIGHTS_NAME = "model.safetensors"
SEG_NAME = "segmentation.json"


def network_kwargs(cfg: NetworkConfig, out_channels: int, patch_size: list[int] | tuple[int, ...]) -> dict[str, Any]:
    """Constructor arguments of the configured MONAI network (JSON-serialisable)."""
    if cfg.name == "segresnet":
        kw: dict[str, Any] = dict(spatial_dims=3, in_channels=1, out_channels=out_channels,
                                  init_filters=cfg.init_filters, blocks_down=list(cfg.blocks_down),
                                  blocks_up=list(cfg.blocks_up), dropout_prob=cfg.dropout or None)
    elif cfg.name == "dynunet":
        # nnU-Net-like plan: halve until the patch is <= 4 voxels a side or 5 downsamplings
        levels = 1
        size = min(patch_size)
        while size // 2 >= 4 and levels < 6:
            size //= 2
            levels += 1
        kw = dict(spatial_dims=3, in_channels=1, out_channels=out_channels,
                  kernel_size=[[3, 3, 3]] * levels, strides=[[1, 1, 1]] + [[2, 2, 2]] * (levels - 1),
                  upsample_kernel_size=[[2, 2, 2]] * (levels - 1),
                  filters=[min(cfg.init_filters * 2**i, 320) for i in range(levels)],
                  dropout=cfg.dropout or None, norm_name="instance", res_block=True)
    elif cfg.name == "swinunetr":
        kw = dict(spatial_dims=3, in_channels=1, out_channels=out_channels, feature_size=max(12, cfg.init_filters // 12 * 12),
                  drop_rate=cfg.dropout)
    else:
        raise ValueError(f"unknown network {cfg.name!r}")
    kw.update(cfg.extra)
    return kw


def build_network(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A MONAI network from its name and constructor arguments. Input (B, 1, X, Y, Z),
    output logits (B, C, X, Y, Z)."""
    from monai.networks import nets

    if name == "segresnet":
        return nets.SegResNet(**kwargs)
    if name == "dynunet":
        return nets.DynUNet(**kwargs)
    if name == "swinunetr":
        return nets.SwinUNETR(**kwargs)
    raise ValueError(f"unknown network {name!r}; choose segresnet, dynunet or swinunetr")


@dataclass
class SegModel:
    """A loaded model folder: the network (eval mode) and what prediction needs to know."""

    net: nn.Module
    classes: list[str]
    data: SegDataConfig
    infer: InferConfig
    info: dict[str, Any]


def save_model(net: nn.Module, out_dir: str | Path, name: str, kwargs: dict[str, Any], classes: list[str],
               data: SegDataConfig, infer: InferConfig, info: dict[str, Any] | None = None) -> Path:
    """Write the model folder (see the module docstring). Weights are saved in float32."""
    from dataclasses import asdict

    out = Path(out_dir)
    saved.save_folder(out, "segmentation", kwargs, {k: v.float() for k, v in net.state_dict().items()}, network=name)
    write_json(out / SEG_NAME, {"classes": list(classes), "data": asdict(data), "infer": asdict(infer),
                                "info": info or {}})
    return out


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> SegModel:
    """Rebuild a saved model folder; errors name the missing or bad file."""
    from cohort.config import from_dict

    d = Path(model_dir)
    for f in (CONFIG_NAME, WEIGHTS_NAME, SEG_NAME):
        if not (d / f).exists():
            raise CohortError(d / f, "model folder is missing this file (expected config.json, model.safetensors, "
                                     "segmentation.json; pass a training run folder or its model/ subfolder)")
    cfg = saved.read_config(d, "segmentation")
    seg = read_json(d / SEG_NAME)
    net = build_network(cfg["network"], cfg["kwargs"])
    try:
        net.load_state_dict(saved.load_weights(d))
    except RuntimeError as e:
        raise CohortError(d / WEIGHTS_NAME, f"weights do not fit the network in config.json ({e})") from None
    net.to(device).eval()
    return SegModel(net, list(seg["classes"]), from_dict(SegDataConfig, seg["data"], source=str(d / SEG_NAME)),
                    from_dict(InferConfig, seg["infer"], source=str(d / SEG_NAME)), seg.get("info", {}))


def resolve_model_dir(path: str | Path) -> Path:
    """A training run folder points at its ``model/``; a model folder is itself."""
    p = Path(path)
    if (p / CONFIG_NAME).exists():
        return p
    if (p / "model" / CONFIG_NAME).exists():
        return p / "model"
    raise CohortError(p, "not a model folder: no config.json here or in model/")
