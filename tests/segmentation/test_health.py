"""segmentation.health: a lesion output that never predicts its own training tumors is reported as collapsed."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from segmentation.data import build_cache
from segmentation.engine import split_sources
from segmentation.health import FIT_NAME, collapsed_classes, final_layer_signs, fit_message, lesion_fit
from segmentation.networks import build_network, network_kwargs
from segmentation.train import train_segmentation
from tests.segmentation.helpers import tiny_config


class Threshold(torch.nn.Module):
    """An oracle on the helper cases: lesion (-20 HU, scaled 0.36) where the image is dark inside the body."""

    def __init__(self, channels: int, lesion_channel: int, sign: float = 1.0):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, channels, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            # lesion logit = sign * 60 * (0.5 - x) above 0.2 (the body), the rest 0
            self.conv.weight[lesion_channel] = -60.0 * sign
            self.conv.bias[lesion_channel] = 30.0 * sign

    def forward(self, x):
        out = self.conv(x)
        body = (x > 0.2).float()
        return out * body + (1 - body) * torch.tensor([8.0] + [0.0] * (out.shape[1] - 1)).view(1, -1, 1, 1, 1)


@pytest.fixture(scope="module")
def cache(cohorts):
    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}])
    return cfg, build_cache(split_sources(cfg).train, cfg.data, show=False)


def test_final_layer_signs_counts_positive_weights_of_a_1x1_head():
    cfg = tiny_config([])
    net = build_network("segresnet", network_kwargs(cfg.network, 4, cfg.data.patch_size))
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        last.weight.copy_(torch.tensor([1.0, -1.0]).repeat_interleave(last.weight[0].numel() // 2)
                          .reshape(last.weight[0].shape).expand_as(last.weight))
        last.weight[2] = -1.0
    half = last.weight[0].numel() // 2
    assert final_layer_signs(net) == [half, half, 0, half]
    assert final_layer_signs(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))) is None  # not a 1x1 head


def test_an_oracle_is_not_collapsed_and_finds_its_training_tumors(cache):
    cfg, c = cache
    fit = lesion_fit(Threshold(4, 2), c, cfg.classes, cfg.data, patches=8)
    r = fit["classes"]["liver_lesion"]
    assert fit["patches"] == 8 and r["voxels"] > 0
    assert r["recall"] > 0.95 and r["max_prob"] > 0.99 and r["collapsed"] is False
    assert collapsed_classes(fit) == [] and fit_message(fit, "run") is None


def test_a_dead_lesion_channel_is_reported_collapsed(cache):
    cfg, c = cache
    fit = lesion_fit(Threshold(4, 2, sign=-1.0), c, cfg.classes, cfg.data, patches=8)  # lesion suppressed
    r = fit["classes"]["liver_lesion"]
    assert r["recall"] == 0.0 and r["max_prob"] < 0.5 and r["collapsed"] is True
    assert collapsed_classes(fit) == ["liver_lesion"]
    msg = fit_message(fit, "runs/x")
    assert msg.startswith("runs/x: the lesion output collapsed: liver_lesion (max probability")
    assert "failed training, not a property of the data" in msg and "tumorgen segment fit" in msg


def test_patches_are_deterministic_and_a_cohort_without_lesions_reports_none(cache, cohorts):
    cfg, c = cache
    net = Threshold(4, 2)
    assert lesion_fit(net, c, cfg.classes, cfg.data, patches=6, seed=3) == lesion_fit(net, c, cfg.classes, cfg.data,
                                                                                        patches=6, seed=3)
    hcfg = tiny_config([{"name": "healthy", "path": str(cohorts["healthy"])}], data={"val_fraction": 0.0})
    healthy = build_cache(split_sources(hcfg).train, hcfg.data, show=False)
    fit = lesion_fit(net, healthy, hcfg.classes, hcfg.data)
    assert fit["patches"] == 0 and fit["classes"] == {} and collapsed_classes(fit) == []


def test_training_records_the_fit_and_segment_fit_flags_a_dead_head(cohorts, tmp_path, capsys):
    from tumorgen.cli import main

    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}])
    run = tmp_path / "run"
    train_segmentation(cfg, run, show=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fit"]["classes"]["liver_lesion"]["voxels"] > 0
    assert json.loads((run / FIT_NAME).read_text()) == summary["fit"]
    # kill the lesion channel of the saved model: every final weight negative, bias very low
    weights = load_file(run / "model" / "model.safetensors")
    name = sorted(k for k in weights if k.startswith("conv_final") and k.endswith("weight"))[-1]
    weights[name][2] = -abs(weights[name][2]) - 1.0
    weights[name.replace("weight", "bias")][2] = -30.0
    save_file(weights, run / "model" / "model.safetensors")
    (run / FIT_NAME).unlink()
    assert main(["segment", "fit", str(run)]) == 1
    out = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "collapsed" in out and "liver_lesion" in out and "another train.seed" in out
    fit = json.loads((run / FIT_NAME).read_text())
    assert fit["classes"]["liver_lesion"]["collapsed"] is True and fit["final_layer_positive_weights"][2] == 0
    assert main(["segment", "fit", str(tmp_path / "nothing")]) == 2
    assert "not a finished segmentation run" in " ".join(capsys.readouterr().err.split())
