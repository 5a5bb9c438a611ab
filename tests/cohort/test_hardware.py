"""Precision selection from the hardware (probes mocked), the warning, and the shipped configs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import cohort.hardware as H
from cohort.config import yaml_load


@pytest.fixture(autouse=True)
def _fresh_warnings():
    H._warned.clear()
    H._logged.clear()
    yield
    H._warned.clear()


def _cpu(monkeypatch, capability: str, **features: bool) -> None:
    probes = {"_is_avx2_supported": features.get("avx2", True), "_is_avx512_supported": features.get("avx512", False),
              "_is_avx512_bf16_supported": features.get("avx512_bf16", False),
              "_is_amx_tile_supported": features.get("amx", False), "_is_vnni_supported": False}
    for name, value in probes.items():
        monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


def test_auto_on_avx2_cpu_is_fp32(monkeypatch):
    _cpu(monkeypatch, "AVX2")
    p = H.resolve_precision("auto", "cpu")
    assert (p.value, p.label, p.autocast_dtype) == ("no", "fp32", None)
    assert "AVX2" in p.reason and "fp32" in p.reason


@pytest.mark.parametrize("features,how", [({"avx512": True, "avx512_bf16": True}, "AVX512-BF16"),
                                          ({"avx512": True, "amx": True}, "AMX")])
def test_auto_on_native_bf16_cpu_is_bf16(monkeypatch, features, how):
    _cpu(monkeypatch, "AVX512", **features)
    p = H.resolve_precision("auto", "cpu")
    assert p.value == "bf16" and p.autocast_dtype is torch.bfloat16
    assert how in p.reason


def test_emulated_capability_turns_native_bf16_off(monkeypatch):
    # ATEN_CPU_CAPABILITY=avx2 on an AVX512-BF16 machine: the kernels cannot use it
    _cpu(monkeypatch, "AVX2", avx512=True, avx512_bf16=True)
    assert not H.cpu_bf16_native()
    assert H.resolve_precision("auto", "cpu").value == "no"


@pytest.mark.parametrize("bf16,expected", [(True, "bf16"), (False, "no")])
def test_auto_on_cuda_follows_the_device(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    p = H.resolve_precision("auto", "cuda")
    assert p.value == expected and "Fake GPU" in p.reason


def test_explicit_bf16_on_emulating_cpu_runs_but_warns(monkeypatch, caplog):
    _cpu(monkeypatch, "AVX2")
    with caplog.at_level(logging.WARNING), pytest.warns(RuntimeWarning, match="without native bf16"):
        p = H.resolve_precision("bf16", "cpu", "train autoencoder")
    assert p.value == "bf16" and p.reason == "asked for explicitly"
    msg = caplog.records[-1].getMessage()
    assert "train autoencoder" in msg and H.EMULATED_BF16_SLOWDOWN in msg and "auto" in msg


def test_explicit_bf16_on_native_cpu_is_silent(monkeypatch, recwarn):
    _cpu(monkeypatch, "AVX512", avx512=True, avx512_bf16=True)
    assert H.resolve_precision("bf16", "cpu").value == "bf16"
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="mixed_precision: 'fp8'"):
        H.resolve_precision("fp8", "cpu")


def test_cpu_kind_names_capability(monkeypatch):
    _cpu(monkeypatch, "AVX2")
    assert H.cpu_kind() == "AVX2, bf16 emulated"
    _cpu(monkeypatch, "AVX512", avx512=True, amx=True)
    assert H.cpu_kind() == "AVX512, bf16 native (AMX)"


def _precision_values(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "mixed_precision":
                yield f"{path}{k}", v
            yield from _precision_values(v, f"{path}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _precision_values(v, f"{path}{i}.")


def test_no_shipped_config_hard_codes_bf16():
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) > 10
    found = []
    for f in files:
        text = f.read_text()
        for key, value in _precision_values(yaml_load(text) or {}):
            found.append((f.name, key, value))
            assert value in ("auto", "no"), f"{f}: {key} is {value!r}; leave it out or say auto/no"
        # --set strings inside YAML (demo overrides) count too
        assert "mixed_precision=bf16" not in text and "mixed_precision=fp16" not in text, f
    assert all(v in ("auto", "no") for *_, v in found)


@pytest.mark.parametrize("setting,device,precision,expected", [
    ("auto", "cpu", "no", True), ("auto", "cpu", "bf16", False), ("auto", "cuda", "no", False),
    ("channels_last", "cuda", "bf16", True), ("contiguous", "cpu", "no", False)])
def test_channels_last_choice(setting, device, precision, expected):
    assert H.use_channels_last(setting, device, precision) is expected


def test_unknown_memory_format_is_an_error():
    with pytest.raises(ValueError, match="memory_format: 'nhwc'"):
        H.use_channels_last("nhwc", "cpu")


def test_cpu_bf16_falls_back_to_fp32_for_feature_maps_with_a_side_of_two(monkeypatch, caplog):
    _cpu(monkeypatch, "AVX512", avx512=True, avx512_bf16=True)
    auto = H.resolve_precision("auto", "cpu")
    assert auto.value == "bf16"
    for side in (None, 1, 3, 8):  # unknown, or sizes whose gradients were always finite
        assert H.guard_small_feature_maps(auto, side) is auto
    with pytest.warns(RuntimeWarning, match="side of 2 voxels"):
        p = H.guard_small_feature_maps(auto, 2, "train diffusion")
    assert (p.value, p.requested, p.device) == ("no", "auto", "cpu") and "-> fp32" in p.reason
    asked = H.resolve_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="mixed_precision=bf16 on this CPU: .*side of 2 voxels.*mixed_precision: no"):
        H.guard_small_feature_maps(asked, 2, "train unet")
    fp32 = H.resolve_precision("no", "cpu")
    assert H.guard_small_feature_maps(fp32, 2) is fp32
    cuda = H.Precision("auto", "bf16", "cuda", "auto: a GPU")
    assert H.guard_small_feature_maps(cuda, 2) is cuda  # the CPU kernels' problem only


def test_smallest_feature_map_of_each_generator_stage(tmp_path):
    from dataclasses import replace

    from cohort.config import config_dir, load_config
    from generative.diffusion.config import GenerativeConfig
    from generative.diffusion.training import build_pipeline
    from generative.train import smallest_feature_map

    def cfg(stage, crop, *sets):
        c = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml",
                        [f"data.crop_size=[{crop},{crop},{crop}]", *sets])
        return replace(c, stage=stage)

    # the autoencoder stage runs its networks once: the discriminator's last layers are the smallest
    assert smallest_feature_map(cfg("autoencoder", 16)) == 3 and smallest_feature_map(cfg("autoencoder", 32)) == 7
    assert smallest_feature_map(cfg("autoencoder", 8)) is None  # a crop the discriminator cannot take
    torch.manual_seed(0)
    build_pipeline(cfg("diffusion", 16)).save_pretrained(tmp_path / "model")
    down = 2 ** (len(cfg("diffusion", 16).autoencoder.channels) - 1)
    for stage in ("diffusion", "controlnet"):
        for crop in (16, 32):
            got = smallest_feature_map(cfg(stage, crop, f"init_from={tmp_path / 'model'}"))
            assert got == crop // down // 2  # the UNet's second level


def test_smallest_conv_side_runs_the_networks_once():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 3, stride=2, padding=1),
                              torch.nn.Conv3d(4, 4, 3, padding=1))
    assert H.smallest_conv_side([(net, torch.zeros(1, 1, 16, 8, 12))]) == 4  # the last conv sees 8 x 4 x 6
    other = torch.nn.Conv3d(1, 2, 3)
    assert H.smallest_conv_side([(net, torch.zeros(1, 1, 16, 16, 16)), (other, torch.zeros(1, 1, 5, 5, 5))]) == 5
    assert H.smallest_conv_side([(net, torch.zeros(1, 3, 8, 8, 8))]) is None  # wrong channels: cannot run
    assert H.smallest_conv_side([(torch.nn.Linear(2, 2), torch.zeros(1, 2))]) is None
    assert all(not m._forward_hooks for m in net.modules())  # the hooks are gone


def test_segmentation_and_filter_training_avoid_cpu_bf16_on_two_voxel_feature_maps(monkeypatch, tmp_path):
    import dataclasses

    from cohort.config import config_dir, load_config
    from generative.quality.config import FilterConfig
    from generative.quality.train import prepare_run
    from segmentation.train import _open_run
    from tests.segmentation.helpers import tiny_config

    _cpu(monkeypatch, "AVX512", avx512=True, avx512_bf16=True)
    cfg = tiny_config([{"name": "real", "path": str(tmp_path)}])
    deep = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, blocks_down=[1, 1, 1, 1], blocks_up=[1, 1, 1]))
    with pytest.warns(RuntimeWarning, match="side of 2 voxels"):
        run = _open_run(deep, tmp_path / "seg", False, False, None, False)
    assert run.precision.value == "no" and run.cfg.train.mixed_precision == "no"
    fc = load_config(FilterConfig, config_dir() / "generative" / "filter_tiny.yaml", ["model.channels=[8,16,32,64]"])  # 16 -> 2 at the last level
    from dataclasses import asdict

    from accelerate.state import AcceleratorState

    from generative.quality.discriminator import TumorDiscriminator

    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.warns(RuntimeWarning, match="side of 2 voxels"):
        precision, _ = prepare_run(fc.train, lambda: [(TumorDiscriminator(**asdict(fc.model)), torch.zeros(1, 2, 16, 16, 16))])
    assert precision.value == "no"
    AcceleratorState._reset_state(reset_partial_state=True)
