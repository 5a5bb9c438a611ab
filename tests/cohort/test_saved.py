"""cohort.saved: one config.json schema for every saved network; older folders still load."""

import json

import pytest
import torch

from cohort import saved
from cohort.errors import CohortError


def test_round_trip_and_type_check(tmp_path):
    net = torch.nn.Linear(3, 2)
    saved.save_folder(tmp_path / "m", "toy", {"in_features": 3, "out_features": 2}, net.state_dict(), note="x")
    cfg = saved.read_config(tmp_path / "m", "toy")
    assert cfg == {"format": 1, "model_type": "toy", "kwargs": {"in_features": 3, "out_features": 2}, "note": "x"}
    back = torch.nn.Linear(**cfg["kwargs"])
    back.load_state_dict(saved.load_weights(tmp_path / "m"))
    assert torch.equal(back.weight, net.weight)
    with pytest.raises(CohortError, match="holds a 'toy', expected 'unet'"):
        saved.read_config(tmp_path / "m", "unet")


@pytest.mark.parametrize("legacy,model_type,key", [
    ({"name": "segresnet", "kwargs": {"a": 1}}, "segmentation", "network"),          # segmentation before
    ({"model": {"channels": [8]}, "class": "TumorDiscriminator", "crop": {"size": 16}}, "tumor_discriminator", "crop"),
    ({"model_type": "unet", "kwargs": {"a": 1}}, "unet", "kwargs"),                  # diffusion networks before
])
def test_folders_written_before_the_one_format_still_read(tmp_path, legacy, model_type, key):
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    cfg = saved.read_config(tmp_path, model_type)
    assert cfg["format"] == 1 and cfg["model_type"] == model_type and key in cfg and "kwargs" in cfg


def test_unknown_and_newer_folders_say_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"weights": "x"}))
    with pytest.raises(CohortError, match="not a saved model of this product"):
        saved.read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": 9, "model_type": "unet", "kwargs": {}}))
    with pytest.raises(CohortError, match="newer version"):
        saved.read_config(tmp_path)
