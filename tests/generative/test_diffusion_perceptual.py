"""LPIPS stays offline: weights from a given file or the torch cache, never downloaded."""

import pytest
import torch
import torchvision

from generative.diffusion.perceptual import (
    BACKBONE_FILES,
    Perceptual25D,
    PerceptualWeightsMissing,
    build_lpips,
    build_perceptual,
)


def test_missing_weights_name_the_file_and_the_two_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PerceptualWeightsMissing) as e:
        build_lpips("alex")
    msg = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints" / BACKBONE_FILES["alex"]) in msg
    assert "perceptual: none" in msg and "perceptual: random" in msg


def test_backbone_weights_load_from_a_path_and_from_torch_home(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None)
    path = tmp_path / "hub" / "checkpoints" / BACKBONE_FILES["alex"]
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    model = build_lpips("alex", path)
    assert torch.equal(getattr(model.net.slice1, "0").weight, ref.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").weight, ref.features[10].weight)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = build_lpips("alex", "")
    assert torch.equal(getattr(cached.net.slice3, "6").weight, ref.features[6].weight)
    assert not any(p.requires_grad for p in cached.parameters())


def test_25d_loss_is_zero_for_identical_volumes_and_positive_otherwise():
    loss = build_perceptual("random", "alex", fake_3d_ratio=0.25)
    assert isinstance(loss, Perceptual25D)
    x = torch.rand(1, 1, 16, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert float(loss(x, x, g)) == 0.0
    assert float(loss(x, torch.rand_like(x), g)) > 0.0
    assert build_perceptual("none") is None
