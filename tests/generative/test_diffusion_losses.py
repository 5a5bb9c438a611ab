"""The autoencoder's loss terms: gradient difference and lesion weighting (generative.diffusion.training)."""

import pytest
import torch

from cohort import labels as L
from generative.diffusion.config import LossConfig
from generative.diffusion.training import AutoencoderLosses, gradient_l1, lesion_weights, weighted_l1


def _edge(sharp: bool) -> torch.Tensor:
    """(1, 1, 8, 8, 8): 0.2 left of x=4, 0.8 right of it; blurred over 3 voxels when not sharp."""
    x = torch.full((1, 1, 8, 8, 8), 0.2)
    x[:, :, 4:] = 0.8
    if not sharp:
        x[:, :, 3], x[:, :, 4] = 0.4, 0.6
    return x


def test_gradient_loss_sees_a_blurred_edge_and_ignores_an_offset():
    sharp, soft = _edge(True), _edge(False)
    assert gradient_l1(sharp + 0.1, sharp).item() == pytest.approx(0.0, abs=1e-7)  # same edges, other level
    assert gradient_l1(soft, sharp).item() > 0
    # along x the sharp edge steps 0.6 once, the blurred one 0.2 three times: |0.2-0| + |0.2-0.6| + |0.2-0| per line
    assert gradient_l1(soft, sharp).item() == pytest.approx((0.2 + 0.4 + 0.2) * 64 / (7 * 64) / 3, rel=1e-5)
    # L1 sees two voxel planes 0.2 off
    assert weighted_l1(soft, sharp).item() == pytest.approx(0.2 * 2 / 8, rel=1e-5)


def test_lesion_weights_cover_the_lesion_and_its_margin():
    lab = torch.zeros((1, 1, 9, 9, 9), dtype=torch.int64)
    lab[0, 0, 4, 4, 4] = L.NAME_TO_INDEX["liver_lesion"]
    lab[0, 0, 0, 0, 0] = L.NAME_TO_INDEX["liver"]
    w = lesion_weights(lab, 4.0, 1)
    assert w.shape == lab.shape and w.dtype == torch.float32
    assert w[0, 0, 3:6, 3:6, 3:6].eq(5.0).all() and int((w == 5.0).sum()) == 27
    assert w[0, 0, 0, 0, 0] == 1.0 and int((w == 1.0).sum()) == 9**3 - 27
    assert int((lesion_weights(lab, 4.0, 0) == 5.0).sum()) == 1


def test_loss_terms_are_off_by_default_and_reach_the_total_when_set():
    x = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    recon = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    lab = torch.zeros(x.shape, dtype=torch.int64)
    lab[..., 2:5, 2:5, 2:5] = L.NAME_TO_INDEX["liver_lesion"]
    mu, sigma = torch.zeros(1, 2, 4, 4, 4), torch.ones(1, 2, 4, 4, 4)
    base = LossConfig(perceptual="none", adv_weight=0.0)
    loss0, logs0 = AutoencoderLosses(base, None).generator(x, recon, mu, sigma, None, 0, None, label=lab)
    assert "gradient" not in logs0 and loss0.item() == pytest.approx((recon - x).abs().mean().item(), rel=1e-6)
    cfg = LossConfig(perceptual="none", adv_weight=0.0, gradient_weight=2.0, lesion_weight=3.0, lesion_margin_vox=0)
    loss1, logs1 = AutoencoderLosses(cfg, None).generator(x, recon, mu, sigma, None, 0, None, label=lab)
    w = lesion_weights(lab, 3.0, 0)
    assert logs1["l1"] == pytest.approx(((recon - x).abs() * w).mean().item(), rel=1e-6)
    assert loss1.item() == pytest.approx(logs1["l1"] + 2.0 * logs1["gradient"], rel=1e-6)
    # without a label the lesion weight cannot apply: plain L1
    _, logs2 = AutoencoderLosses(cfg, None).generator(x, recon, mu, sigma, None, 0, None)
    assert logs2["l1"] == pytest.approx(logs0["l1"], rel=1e-6)
