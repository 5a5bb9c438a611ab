"""MAISI's pretrained CT autoencoder as the pipeline's autoencoder.

:func:`load_maisi_autoencoder` builds MONAI's ``AutoencoderKlMaisi``
(``monai.apps.generation.maisi.networks.autoencoderkl_maisi``) with the MAISI bundle's network
settings and loads a checkpoint the user downloaded by hand (a torch ``.pt`` state dict, plain or
nested under a key such as ``unet_state_dict``, the key MAISI's own scripts read). Nothing is ever
downloaded here. The result, :class:`MaisiAutoencoder`, has the interface the pipeline uses
(``encode(x) -> (z_mu, z_sigma)``, ``decode(z)``, ``downsample`` = 4, ``config``, ``intensity``,
``save_pretrained`` / ``from_pretrained`` through :mod:`cohort.saved` as ``maisi_autoencoder``).

Its images are CT scaled with MAISI's window, [-1000, 1000] HU -> [0, 1] clipped
(:data:`generative.diffusion.intensity.WINDOW_MAISI`), not the project's [-175, 250]: the mapping is
saved with the model and a pipeline refuses data prepared with another.

Two of the bundle's settings only save GPU memory and do not change the weights; they are applied
where they work: ``num_splits`` (convolutions run on ``num_splits`` slabs along ``dim_split``) is
lowered per call to what the input's size allows (MONAI's split convolution fails when slabs are
thinner than its halo or unequal: a 32^3 crop with the bundle's 4 splits, or a side of 20), and
``norm_float16`` (group norms return float16) is applied only on CUDA under autocast (MAISI always
runs its VAE so; on CPU, or in float32, the next convolution would refuse the half input).

Settings (Project-MONAI/tutorials generation/maisi/configs/config_maisi3d-rflow.json,
``autoencoder_def``): spatial_dims 3, 1 channel in and out, latent_channels 4, num_channels
[64, 128, 256], num_res_blocks [2, 2, 2], norm_num_groups 32, norm_eps 1e-6, no attention,
use_checkpointing false, use_convtranspose false, norm_float16 true, num_splits 4, dim_split 1.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch
from monai.apps.generation.maisi.networks.autoencoderkl_maisi import (
    AutoencoderKlMaisi,
    MaisiConvolution,
    MaisiGroupNorm3D,
)

from cohort.errors import CohortError
from generative.diffusion.intensity import WINDOW_MAISI
from generative.diffusion.models import IntensityMixin, PretrainedMixin

#: the MAISI CT bundle's ``autoencoder_def`` (the defaults of :func:`load_maisi_autoencoder`)
MAISI_NETWORK_SETTINGS: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 4,
    "num_channels": [64, 128, 256],
    "num_res_blocks": [2, 2, 2],
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
    "use_checkpointing": False,
    "use_convtranspose": False,
    "norm_float16": True,
    "num_splits": 4,
    "dim_split": 1,
}

#: keys a MAISI checkpoint may nest its state dict under (the first present wins)
NESTED_KEYS = ("unet_state_dict", "state_dict", "autoencoder", "autoencoder_state_dict", "model_state_dict",
               "model", "network")

#: a split convolution needs slabs at least this thick (its halo is 3 voxels, 4 after a stride 2)
MIN_SLAB = 4

DOWNLOAD_HINT = ("download the MAISI CT bundle by hand (its autoencoder checkpoint, a .pt file: Project-MONAI "
                 "model zoo 'maisi_ct_generative' or NVIDIA-Medtech/NV-Generate-CTMR) and give that file's path; "
                 "this project never downloads weights")


def _fit_splits(conv: MaisiConvolution, args: tuple) -> None:
    """Forward pre-hook: the most slabs (up to the configured number) that cut the input into equal,
    even slabs at least :data:`MIN_SLAB` thick (MONAI's split convolution is only right for those)."""
    n, size = conv.max_splits, args[0].shape[conv.dim_split + 2]
    while n > 1 and (size % n or size // n < MIN_SLAB or (size // n) % 2):
        n -= 1
    conv.num_splits = n


def _half_norm_where_supported(norm: MaisiGroupNorm3D, args: tuple) -> None:
    """Forward pre-hook: float16 group-norm output only on CUDA under autocast."""
    x = args[0]
    norm.norm_float16 = bool(norm.half_output and x.is_cuda and torch.is_autocast_enabled("cuda"))


class MaisiAutoencoder(IntensityMixin, PretrainedMixin, AutoencoderKlMaisi):
    """MONAI ``AutoencoderKlMaisi`` with the pipeline's interface; saved as ``maisi_autoencoder``.
    ``len(num_channels) - 1`` halvings per axis (the bundle's 3 levels: 4x)."""

    model_type = "maisi_autoencoder"
    default_intensity = WINDOW_MAISI

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._remember(kwargs)
        self.intensity = self.default_intensity
        for m in self.modules():
            if isinstance(m, MaisiConvolution):
                m.max_splits = m.num_splits
                m.register_forward_pre_hook(_fit_splits)
            elif isinstance(m, MaisiGroupNorm3D):
                m.half_output = m.norm_float16
                m.register_forward_pre_hook(_half_norm_where_supported)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.config["num_channels"]) - 1)


def network_settings_with(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's settings with ``overrides``; an unknown key is a ValueError naming it."""
    known = set(inspect.signature(AutoencoderKlMaisi.__init__).parameters) - {"self"}
    overrides = dict(overrides or {})
    if bad := sorted(set(overrides) - known):
        raise ValueError(f"MAISI network settings: unknown key(s) {bad}; AutoencoderKlMaisi takes {sorted(known)}")
    return {**MAISI_NETWORK_SETTINGS, **overrides}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """The autoencoder state dict of a MAISI ``.pt`` file: the file itself, or the first of
    :data:`NESTED_KEYS` holding one; a ``module.`` prefix (a DDP save) is dropped. Errors name the file."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise CohortError(path, f"missing MAISI autoencoder checkpoint: {DOWNLOAD_HINT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CohortError(path, f"holds more than tensors and plain containers, so it is not read ({e}); if you "
                                "trust the file, load it with torch.load(weights_only=False) and torch.save its "
                                "state dict alone") from None
    except Exception as e:  # a truncated download, not a torch file at all
        raise CohortError(path, f"not a readable torch checkpoint ({type(e).__name__}: {e}); {DOWNLOAD_HINT}") from None
    sd = obj if _is_state_dict(obj) else None
    if sd is None and isinstance(obj, dict):
        sd = next((obj[k] for k in NESTED_KEYS if _is_state_dict(obj.get(k))), None)
    if sd is None:
        top = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CohortError(path, f"no autoencoder state dict found: expected tensors at the top level or under one of "
                                f"{list(NESTED_KEYS)}, the file holds {top}")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _mismatch(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> str:
    """"" when ``sd`` fits ``model`` exactly, else what differs (counts and a few keys)."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want
              if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    parts = [f"{len(v)} {name} (e.g. {v[:3]})" for name, v in
             (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes)) if v]
    return "; ".join(parts)


def load_maisi_autoencoder(checkpoint_path: str | Path, network_settings: dict[str, Any] | None = None,
                           device: str | torch.device = "cpu") -> MaisiAutoencoder:
    """``AutoencoderKlMaisi`` with the bundle's settings (``network_settings`` overrides some) and the
    weights of ``checkpoint_path``. A missing file or weights that do not fit the network are a
    :class:`CohortError` naming the file (with a few missing / unexpected keys)."""
    settings = network_settings_with(network_settings)
    sd = read_checkpoint(checkpoint_path)
    model = MaisiAutoencoder(**settings)
    if why := _mismatch(model, sd):
        raise CohortError(checkpoint_path, f"does not fit AutoencoderKlMaisi with settings {settings}: {why}")
    model.load_state_dict(sd)
    return model.to(device).eval()
