"""The four networks of the latent diffusion model, built from MONAI core, saved as folders.

Each model is a MONAI network with a thin :class:`PretrainedMixin` that keeps its
constructor arguments, so ``save_pretrained(dir)`` writes ``config.json`` (the
arguments) + ``model.safetensors`` (the weights) and ``from_pretrained(dir)``
rebuilds it without the training YAML (the diffusers convention, in ~60 lines
instead of a dependency on ``ModelMixin``'s hub machinery).

Shapes: images (B, 1, D, H, W) in [0, 1] (HU scaled over the autoencoder's ``intensity`` window,
[-175, 250] for this project's own autoencoders, :mod:`generative.diffusion.intensity`);
latents (B, 4, D/4, H/4, W/4). MAISI's pretrained autoencoder: :mod:`generative.diffusion.maisi`.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.networks.nets import AutoencoderKL, ControlNet, DiffusionModelUNet, PatchDiscriminator
from monai.networks.utils import copy_model_state

from cohort import saved
from cohort.errors import CohortError
from generative.diffusion.intensity import Intensity

CONFIG_NAME, WEIGHTS_NAME = saved.CONFIG_NAME, saved.WEIGHTS_NAME


class PretrainedMixin:
    """``save_pretrained(dir)`` / ``from_pretrained(dir)`` for a MONAI network.

    Subclasses call ``_remember(kwargs)`` in ``__init__``; the kwargs must be
    JSON-serialisable (ints, floats, bools, lists).
    """

    model_type: ClassVar[str] = ""
    config: dict[str, Any]

    def _remember(self, kwargs: dict[str, Any]) -> None:
        self.config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}

    def _extra_config(self) -> dict[str, Any]:
        """Keys besides the constructor arguments that ``config.json`` records (none by default)."""
        return {}

    def _apply_config(self, cfg: dict[str, Any], directory: Path) -> None:
        """Restore what :meth:`_extra_config` wrote (``cfg`` is the whole ``config.json``)."""

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (:mod:`cohort.saved`)."""
        return saved.save_folder(directory, self.model_type, self.config, self.state_dict(),  # type: ignore[attr-defined]
                                 **self._extra_config())

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu"):
        """Rebuild the model saved in ``directory``; checks that the folder holds this model type."""
        cfg = saved.read_config(directory, cls.model_type or None)
        weights = saved.load_weights(directory, str(device))
        model = cls(**cfg["kwargs"])
        model.load_state_dict(weights)  # type: ignore[attr-defined]
        model._apply_config(cfg, Path(directory))
        return model


class IntensityMixin:
    """An autoencoder's HU -> [0, 1] mapping (:class:`Intensity`), saved in ``config.json`` as
    ``intensity``; a folder without it holds the class's default."""

    default_intensity: ClassVar[Intensity] = Intensity()
    intensity: Intensity

    def _extra_config(self) -> dict[str, Any]:
        return {"intensity": self.intensity.as_dict()}

    def _apply_config(self, cfg: dict[str, Any], directory: Path) -> None:
        self.intensity = read_intensity(cfg, directory, self.default_intensity)


def read_intensity(cfg: dict[str, Any], directory: str | Path, default: Intensity) -> Intensity:
    """The ``intensity`` of a saved autoencoder's ``config.json`` (``default`` when absent)."""
    if "intensity" not in cfg:
        return default
    try:
        return Intensity.from_dict(cfg["intensity"])
    except (TypeError, ValueError) as e:
        raise CohortError(Path(directory) / CONFIG_NAME, f"bad intensity: {e}") from None


class Autoencoder(IntensityMixin, PretrainedMixin, AutoencoderKL):
    """MONAI AutoencoderKL; ``len(channels) - 1`` halvings per axis (3 levels = 4x). Reads images
    scaled with :attr:`intensity` (the [-175, 250] HU window)."""

    model_type = "autoencoder"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._remember(kwargs)
        self.intensity = self.default_intensity

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.config["channels"]) - 1)


class LatentUNet(PretrainedMixin, DiffusionModelUNet):
    """MONAI DiffusionModelUNet on latents (B, 4, d, h, w) -> same shape."""

    model_type = "unet"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._remember(kwargs)

    @property
    def size_multiple(self) -> int:
        """Latent sizes must be divisible by this (one halving per level but the last)."""
        return 2 ** (len(self.config["channels"]) - 1)


class _CachedEmbedding(torch.nn.Module):
    """Stands in for the conditioning embedding while one condition tensor is sampled from:
    returns the embedding computed once for ``cond``, computes any other input as usual."""

    def __init__(self, inner: torch.nn.Module, cond: torch.Tensor):
        super().__init__()
        self.inner, self.cond = inner, cond
        self.emb = inner(cond)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.emb if c is self.cond else self.inner(c)


class LatentControlNet(PretrainedMixin, ControlNet):
    """MONAI ControlNet: conditioning (B, Cc, D, H, W) at image resolution is brought to
    latent size by its conditioning embedding (``len(conditioning_embedding_num_channels) - 1``
    stride-2 convolutions)."""

    model_type = "controlnet"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._remember(kwargs)

    @contextlib.contextmanager
    def condition_cache(self, cond: torch.Tensor):
        """Inside the block, the full-resolution conditioning embedding of ``cond`` is computed
        once and reused at every call with that same tensor (the condition does not change
        over the denoising steps; MONAI's forward would recompute it each step). No gradients."""
        inner = self.controlnet_cond_embedding
        with torch.no_grad():
            self.controlnet_cond_embedding = _CachedEmbedding(inner, cond)
        try:
            yield self
        finally:
            self.controlnet_cond_embedding = inner


class Discriminator(PretrainedMixin, PatchDiscriminator):
    """MONAI PatchDiscriminator for the autoencoder's least-squares adversarial loss."""

    model_type = "discriminator"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._remember(kwargs)


MODEL_TYPES: dict[str, type[PretrainedMixin]] = {
    c.model_type: c for c in (Autoencoder, LatentUNet, LatentControlNet, Discriminator)
}


#: the model types a pipeline's ``autoencoder/`` may hold (``maisi_autoencoder``: :mod:`generative.diffusion.maisi`)
AUTOENCODER_TYPES = ("autoencoder", "maisi_autoencoder")


def _model_types() -> dict[str, type[PretrainedMixin]]:
    from generative.diffusion.maisi import MaisiAutoencoder  # imported here: maisi builds on this module

    return {**MODEL_TYPES, MaisiAutoencoder.model_type: MaisiAutoencoder}


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load any saved model folder, dispatching on ``config.json``'s ``model_type``."""
    kind = saved.read_config(directory)["model_type"]
    types = _model_types()
    if kind not in types:
        raise CohortError(Path(directory) / CONFIG_NAME, f"unknown model_type {kind!r} (known: {sorted(types)})")
    return types[kind].from_pretrained(directory, device)  # type: ignore[return-value]


def load_autoencoder(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The autoencoder saved in ``directory``: this project's (:class:`Autoencoder`) or MAISI's
    (:class:`generative.diffusion.maisi.MaisiAutoencoder`); both have ``encode``, ``decode``,
    ``downsample``, ``config``, ``intensity``."""
    kind = saved.read_config(directory, AUTOENCODER_TYPES)["model_type"]
    return _model_types()[kind].from_pretrained(directory, device)  # type: ignore[return-value]


def autoencoder_intensity(directory: str | Path) -> Intensity:
    """The intensity mapping of the autoencoder saved in ``directory``, without loading its weights."""
    cfg = saved.read_config(directory, AUTOENCODER_TYPES)
    return read_intensity(cfg, directory, _model_types()[cfg["model_type"]].default_intensity)  # type: ignore[attr-defined]


def model_hash(directory: str | Path) -> str:
    """sha256 of the weights file: the model's identity in provenance sidecars."""
    h = hashlib.sha256()
    with open(Path(directory) / WEIGHTS_NAME, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pipeline_hash(directory: str | Path, components: tuple[str, ...] = ("autoencoder", "unet", "controlnet")) -> str:
    """sha256 over the weight hashes of a pipeline folder's components (those present) and, for an
    appearance-conditioned model, its ``appearance.json`` (the distribution sampling draws from is
    part of what makes its tumors; folders without one hash as before)."""
    h = hashlib.sha256()
    for name in components:
        if (Path(directory) / name / WEIGHTS_NAME).exists():
            h.update(f"{name}:{model_hash(Path(directory) / name)}".encode())
    if (table := Path(directory) / "appearance.json").exists():
        h.update(b"appearance:" + hashlib.sha256(table.read_bytes()).hexdigest().encode())
    return h.hexdigest()


# ---- builders from typed configs ---------------------------------------------------------

def build_autoencoder(channels: tuple[int, ...], latent_channels: int = 4, num_res_blocks: int = 1,
                      norm_num_groups: int = 8, attention: bool = False) -> Autoencoder:
    """3D AutoencoderKL, 1 channel in/out. No attention by default: MAISI's 3D autoencoder
    drops it too, attention at full resolution does not fit 3D memory."""
    return Autoencoder(
        spatial_dims=3, in_channels=1, out_channels=1, channels=list(channels),
        num_res_blocks=[num_res_blocks] * len(channels), attention_levels=[False] * len(channels),
        latent_channels=latent_channels, norm_num_groups=norm_num_groups,
        with_encoder_nonlocal_attn=attention, with_decoder_nonlocal_attn=attention,
    )


def build_unet(latent_channels: int, channels: tuple[int, ...], attention_levels: tuple[bool, ...],
               num_res_blocks: int = 1, norm_num_groups: int = 8, num_head_channels: int = 8) -> LatentUNet:
    return LatentUNet(
        spatial_dims=3, in_channels=latent_channels, out_channels=latent_channels, channels=list(channels),
        attention_levels=list(attention_levels), num_res_blocks=[num_res_blocks] * len(channels),
        norm_num_groups=norm_num_groups, num_head_channels=num_head_channels,
    )


def controlnet_from_unet(unet: LatentUNet, conditioning_channels: int,
                         embedding_channels: tuple[int, ...]) -> LatentControlNet:
    """A ControlNet with the UNet's encoder architecture, initialised from its weights
    (the ControlNet paper's recipe: the trainable copy starts as the frozen encoder, and
    its zero convolutions make it a no-op at step 0)."""
    u = unet.config
    net = LatentControlNet(
        spatial_dims=3, in_channels=u["in_channels"], channels=u["channels"],
        attention_levels=u["attention_levels"], num_res_blocks=u["num_res_blocks"],
        norm_num_groups=u["norm_num_groups"], num_head_channels=u["num_head_channels"],
        conditioning_embedding_in_channels=conditioning_channels,
        conditioning_embedding_num_channels=list(embedding_channels),
    )
    copy_model_state(net, unet.state_dict())
    return net


def build_discriminator(channels: int = 16, num_layers_d: int = 2) -> Discriminator:
    return Discriminator(spatial_dims=3, num_layers_d=num_layers_d, channels=channels, in_channels=1,
                         out_channels=1, norm="INSTANCE")
