"""Models from MONAI core: folders with config.json + model.safetensors, identical after reload."""

import json

import pytest
import torch

from cohort.errors import CohortError
from generative.diffusion.models import (
    Autoencoder,
    LatentControlNet,
    LatentUNet,
    build_autoencoder,
    build_discriminator,
    build_unet,
    controlnet_from_unet,
    load_model,
    model_hash,
)

torch.set_num_threads(2)


def test_autoencoder_compresses_4x_to_4_channels_and_round_trips(tmp_path):
    torch.manual_seed(0)
    ae = build_autoencoder((8, 16, 16), latent_channels=4, norm_num_groups=8).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        z_mu, z_sigma = ae.encode(x)
        recon = ae.decode(z_mu)
    assert z_mu.shape == (1, 4, 4, 4, 4) and recon.shape == x.shape
    ae.save_pretrained(tmp_path / "ae")
    assert {p.name for p in (tmp_path / "ae").iterdir()} == {"config.json", "model.safetensors"}
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["model_type"] == "autoencoder"
    again = Autoencoder.from_pretrained(tmp_path / "ae").eval()
    with torch.no_grad():
        assert torch.equal(again.decode(again.encode(x)[0]), recon)
    assert model_hash(tmp_path / "ae") == model_hash(tmp_path / "ae")


def test_unet_controlnet_discriminator_round_trip_identical(tmp_path):
    torch.manual_seed(0)
    unet = build_unet(4, (16, 32), (False, True), norm_num_groups=8, num_head_channels=8).eval()
    cn = controlnet_from_unet(unet, conditioning_channels=5, embedding_channels=(8, 16, 16)).eval()
    disc = build_discriminator(8, 2).eval()
    z, t, cond = torch.randn(1, 4, 8, 8, 8), torch.tensor([500]), torch.rand(1, 5, 32, 32, 32)
    with torch.no_grad():
        down, mid = cn(z, t, cond)
        out = unet(z, t, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    for name, m in (("unet", unet), ("cn", cn), ("disc", disc)):
        m.save_pretrained(tmp_path / name)
    u2, c2 = LatentUNet.from_pretrained(tmp_path / "unet").eval(), LatentControlNet.from_pretrained(tmp_path / "cn").eval()
    d2 = load_model(tmp_path / "disc").eval()
    with torch.no_grad():
        down2, mid2 = c2(z, t, cond)
        assert torch.equal(mid2, mid)
        assert torch.equal(u2(z, t, down_block_additional_residuals=down2, mid_block_additional_residual=mid2), out)
        x = torch.full((1, 1, 32, 32, 32), 0.5)
        assert torch.equal(d2(x)[-1], disc(x)[-1])


def test_controlnet_starts_as_the_unet_encoder_and_a_no_op():
    torch.manual_seed(0)
    unet = build_unet(4, (16, 32), (False, True), norm_num_groups=8, num_head_channels=8)
    cn = controlnet_from_unet(unet, 5, (8, 16, 16))
    u_state = unet.state_dict()
    shared = [k for k in cn.state_dict() if k in u_state and cn.state_dict()[k].shape == u_state[k].shape]
    assert len(shared) > 20
    assert all(torch.equal(cn.state_dict()[k], u_state[k]) for k in shared)
    with torch.no_grad():
        down, mid = cn(torch.randn(1, 4, 8, 8, 8), torch.tensor([3]), torch.rand(1, 5, 32, 32, 32))
    assert float(mid.abs().max()) == 0.0  # zero convolutions: the UNet is unchanged at step 0


def test_from_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(CohortError, match="config.json"):
        Autoencoder.from_pretrained(tmp_path)
    build_discriminator(8, 2).save_pretrained(tmp_path / "d")
    with pytest.raises(CohortError, match="discriminator"):
        Autoencoder.from_pretrained(tmp_path / "d")
