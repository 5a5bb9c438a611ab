"""2.5D LPIPS perceptual loss for 3D volumes, strictly offline.

The ``lpips`` package is built with ``pnet_rand=True`` so torchvision never
tries to download the ImageNet backbone; its own linear heads ship inside the
package. The backbone weights are then loaded from a file the user gives, or
from ``$TORCH_HOME/hub/checkpoints/<torchvision file name>`` when they already
have torchvision's cache. Missing weights stop with a message naming the file
and the two explicit alternatives (``perceptual: none``, ``perceptual: random``).

2.5D: like MAISI's ``PerceptualLoss(is_fake_3d=True, fake_3d_ratio)``, a share of
the slices along each of the three axes is scored as 2D images.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

log = logging.getLogger(__name__)

#: torchvision's file names for the ImageNet backbones lpips uses
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


#: slices smaller than this (pixels) are upsampled before LPIPS
MIN_SLICE = 64


class PerceptualWeightsMissing(FileNotFoundError):
    """The LPIPS backbone weights are not on disk (they are never downloaded)."""


def default_backbone_path(net: str) -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return torch_home / "hub" / "checkpoints" / BACKBONE_FILES[net]


def _torchvision_features(net: str) -> torch.nn.Module:
    import torchvision.models as tv

    if net == "alex":
        return tv.alexnet(weights=None)
    if net == "vgg":
        return tv.vgg16(weights=None)
    if net == "squeeze":
        return tv.squeezenet1_1(weights=None)
    raise ValueError(f"perceptual_net: {net!r} is not alex|vgg|squeeze")


def build_lpips(net: str = "alex", weights: str | Path | None = "", random_backbone: bool = False) -> torch.nn.Module:
    """An LPIPS module (frozen, eval) whose backbone weights come from disk.

    weights: path to the torchvision ``.pth`` state dict; ``""``/None looks in the torch cache.
    random_backbone: keep the random-feature backbone (a weaker but honest perceptual
        term; logged as such).
    Raises :class:`PerceptualWeightsMissing` naming the expected file.
    """
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if random_backbone:
        log.warning("LPIPS backbone (%s) has RANDOM features (perceptual: random): not ImageNet LPIPS", net)
    else:
        path = Path(weights) if weights else default_backbone_path(net)
        if not path.exists():
            raise PerceptualWeightsMissing(
                f"{path}: LPIPS backbone weights not found (torchvision file {BACKBONE_FILES[net]}). Nothing is "
                "downloaded: put that file there (or set loss.perceptual_weights to its path), or choose "
                "loss.perceptual: none (no perceptual term) or loss.perceptual: random (random-feature backbone)."
            )
        tv_model = _torchvision_features(net)
        tv_model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        features = tv_model.features
        # lpips' trunk slices hold torchvision's feature layers under their original indices
        for sl in (getattr(model.net, f"slice{i}") for i in range(1, model.net.N_slices + 1)):
            for name, module in sl.named_children():
                module.load_state_dict(features[int(name)].state_dict())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Perceptual25D(torch.nn.Module):
    """LPIPS averaged over a random share of axial, coronal and sagittal slices.

    Inputs (B, 1, D, H, W) in [0, 1]; returns a scalar.
    """

    def __init__(self, lpips_model: torch.nn.Module, fake_3d_ratio: float = 0.25):
        super().__init__()
        self.lpips = lpips_model
        self.ratio = fake_3d_ratio

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        losses = []
        for axis_pattern in ("b c d h w -> (b d) c h w", "b c d h w -> (b h) c d w", "b c d h w -> (b w) c d h"):
            xs, ys = rearrange(x, axis_pattern), rearrange(y, axis_pattern)
            n = max(1, int(round(xs.shape[0] * self.ratio)))
            idx = torch.randperm(xs.shape[0], generator=generator)[:n].to(x.device)
            # lpips wants 3 channels in [-1, 1]
            a = xs[idx].float().repeat(1, 3, 1, 1) * 2 - 1
            b = ys[idx].float().repeat(1, 3, 1, 1) * 2 - 1
            if min(a.shape[-2:]) < MIN_SLICE:  # the ImageNet trunks pool a small slice down to nothing
                size = [max(MIN_SLICE, s) for s in a.shape[-2:]]
                a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
                b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
            losses.append(self.lpips(a, b).mean())
        return torch.stack(losses).mean()


def build_perceptual(kind: str, net: str = "alex", weights: str = "", fake_3d_ratio: float = 0.25) -> Perceptual25D | None:
    """``kind``: lpips | random | none (returns None)."""
    if kind == "none":
        return None
    return Perceptual25D(build_lpips(net, weights, random_backbone=(kind == "random")), fake_3d_ratio)
