"""MAISI's pretrained CT autoencoder as the pipeline's autoencoder (a tiny random one stands in).

The checkpoint is written the way MAISI's bundle ships it (a torch .pt state dict, plain or nested
under a key); the loader must give back the same weights, the pipeline must sample and inpaint with
it, and its [-1000, 1000] HU window must travel with the model folder and be enforced.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

from cohort.config import config_dir, load_config
from cohort.errors import CohortError
from cohort.layouts import write_case
from generative.diffusion.config import GenerativeConfig
from generative.diffusion.data import build_latent_cache, prepare_case
from generative.diffusion.inpaint import DiffusionSynthesizer, InpaintSettings
from generative.diffusion.intensity import WINDOW_ABDOMEN, WINDOW_MAISI, Intensity
from generative.diffusion.maisi import MaisiAutoencoder, load_maisi_autoencoder, network_settings_with
from generative.diffusion.models import load_autoencoder, load_model
from generative.diffusion.pipeline import SPEC_NAME, LatentDiffusionPipeline
from generative.diffusion.training import build_pipeline, stage_intensity
from generative.tumors.base import TumorSpec
from tests.toys import toy_abdomen_case

torch.set_num_threads(2)

#: the smallest useful MAISI network; the bundle's num_splits (4) and norm_float16 stay on
TINY = {"num_channels": [8, 8, 8], "num_res_blocks": [1, 1, 1], "norm_num_groups": 4}
TINY_YAML = config_dir() / "demo" / "generative_tiny.yaml"


def _monai_net(seed: int = 0, **over) -> AutoencoderKlMaisi:
    torch.manual_seed(seed)
    return AutoencoderKlMaisi(**network_settings_with({**TINY, **over})).eval()


def _write_checkpoint(path, net, nest: str | None = None):
    sd = net.state_dict()
    torch.save(sd if nest is None else {nest: sd, "epoch": 273}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _write_checkpoint(tmp_path_factory.mktemp("maisi") / "autoencoder.pt", _monai_net(), "unet_state_dict")


@pytest.fixture(scope="module")
def cfg(ckpt):
    base = load_config(GenerativeConfig, TINY_YAML)
    return replace(base, autoencoder=replace(base.autoencoder, pretrained=str(ckpt), pretrained_settings=dict(TINY)))


@pytest.fixture(scope="module")
def pipe(cfg):
    torch.manual_seed(0)
    return build_pipeline(cfg, scale_factor=1.0)


@pytest.mark.parametrize("nest", [None, "unet_state_dict", "state_dict"])
def test_loader_reads_plain_and_nested_checkpoints_with_the_same_weights(tmp_path, nest):
    net = _monai_net(seed=1)
    ae = load_maisi_autoencoder(_write_checkpoint(tmp_path / "vae.pt", net, nest), TINY)
    assert isinstance(ae, MaisiAutoencoder) and ae.downsample == 4 and ae.intensity == WINDOW_MAISI
    want = net.state_dict()
    got = ae.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z_mu, z_sigma = ae.encode(x)
        assert z_mu.shape == z_sigma.shape == (1, 4, 8, 8, 8)
        assert ae.decode(z_mu).shape == (1, 1, 32, 32, 32)
        # the bundle's 4 split convolutions cannot cut a 32^3 crop: the loaded network lowers them and
        # computes what MONAI's network computes unsplit (norm_float16 is off on CPU, as in the hook)
        plain = _monai_net(seed=1, num_splits=1, norm_float16=False)  # MONAI's half norms need CUDA autocast
        assert torch.allclose(z_mu, plain.encode(x)[0], atol=1e-5)


def test_a_ddp_prefix_is_dropped(tmp_path):
    net = _monai_net(seed=2)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ddp.pt")
    ae = load_maisi_autoencoder(tmp_path / "ddp.pt", TINY)
    assert torch.equal(ae.state_dict()["decoder.blocks.0.conv.conv.weight"], net.state_dict()["decoder.blocks.0.conv.conv.weight"])


def test_weights_that_do_not_fit_name_the_file_and_some_keys(tmp_path):
    other = _write_checkpoint(tmp_path / "other.pt", _monai_net(num_channels=[8, 8, 16]))
    with pytest.raises(CohortError, match=r"other\.pt.*does not fit AutoencoderKlMaisi.*another shape"):
        load_maisi_autoencoder(other, TINY)
    sd = _monai_net().state_dict()
    sd.pop("encoder.blocks.0.conv.conv.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "keys.pt")
    with pytest.raises(CohortError, match=r"keys\.pt.*1 missing \(e\.g\. \['encoder\.blocks\.0\.conv\.conv\.weight'\]\)"
                                          r".*1 unexpected \(e\.g\. \['extra\.weight'\]\)"):
        load_maisi_autoencoder(tmp_path / "keys.pt", TINY)
    torch.save({"optimizer": {"lr": 1.0}, "epoch": 3}, tmp_path / "nothing.pt")
    with pytest.raises(CohortError, match=r"nothing\.pt.*no autoencoder state dict.*'epoch', 'optimizer'"):
        load_maisi_autoencoder(tmp_path / "nothing.pt", TINY)


def test_a_missing_checkpoint_says_to_download_the_bundle_by_hand(tmp_path):
    with pytest.raises(CohortError, match=r"absent\.pt: missing MAISI autoencoder checkpoint: download the MAISI CT "
                                          r"bundle by hand.*never downloads"):
        load_maisi_autoencoder(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="unknown key.*'num_chanels'"):
        load_maisi_autoencoder(tmp_path / "absent.pt", {"num_chanels": [8]})


def test_saved_folder_round_trips_with_its_intensity(ckpt, tmp_path):
    ae = load_maisi_autoencoder(ckpt, TINY)
    ae.save_pretrained(tmp_path / "ae")
    cfg = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert cfg["model_type"] == "maisi_autoencoder" and cfg["intensity"] == {"kind": "window", "hu_min": -1000.0,
                                                                              "hu_max": 1000.0}
    assert cfg["kwargs"]["num_splits"] == 4 and cfg["kwargs"]["norm_float16"] is True  # the bundle's settings
    for again in (load_autoencoder(tmp_path / "ae"), load_model(tmp_path / "ae")):
        assert isinstance(again, MaisiAutoencoder) and again.intensity == WINDOW_MAISI
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ae.state_dict().values()))


def test_pipeline_samples_decodes_tiled_and_records_the_maisi_window(pipe, tmp_path):
    assert pipe.spec.intensity == WINDOW_MAISI and pipe.autoencoder.downsample == 4
    case = toy_abdomen_case("s", seed=3)
    lab = torch.from_numpy(case.label.astype(np.int64))[None, None]
    a = pipe.sample(lab, steps=2, seed=1)
    assert a.shape == (1, 1, 32, 32, 32) and torch.equal(a, pipe.sample(lab, steps=2, seed=1))
    lat = torch.randn(1, 4, 12, 8, 8, generator=torch.Generator().manual_seed(0))
    tiled = pipe.decode(lat, tile=4)
    assert tiled.shape == (1, 1, 48, 32, 32) and torch.isfinite(tiled).all()
    pipe.save_pretrained(tmp_path / "p")
    spec = json.loads((tmp_path / "p" / SPEC_NAME).read_text())
    assert spec["intensity"] == {"kind": "window", "hu_min": -1000.0, "hu_max": 1000.0}
    again = LatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    assert isinstance(again.autoencoder, MaisiAutoencoder) and again.spec.intensity == WINDOW_MAISI
    assert torch.equal(again.sample(lab, steps=2, seed=1), a)


def test_inpainting_one_tumor_into_a_toy_ct(pipe, monkeypatch):
    healthy = toy_abdomen_case("h", shape=(40, 36, 32), seed=5, tumor=False)
    synth = DiffusionSynthesizer(pipe, InpaintSettings(steps=2, roi_size=[32, 32, 32], margin_mm=1.5, feather_mm=3.0))
    res = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="tiny"), np.random.default_rng(0))
    lo, hi = res.info["tumors"][0]["roi"]
    outside = np.ones(healthy.ct.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert np.array_equal(res.ct[outside], healthy.ct[outside]) and not np.array_equal(res.ct, healthy.ct)
    assert (res.label == 27).any() and np.isfinite(res.ct).all()
    # generated [0, 1] goes back to HU through the MAISI window: an all-white sample is 1000 HU
    monkeypatch.setattr(pipe, "sample", lambda label, **kw: torch.ones(label.shape))
    white = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="tiny"), np.random.default_rng(0))
    assert np.isclose(white.ct[white.label == 27], 1000.0).all()


def test_a_folder_whose_spec_and_autoencoder_disagree_is_refused(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    spec_path = tmp_path / "p" / SPEC_NAME
    spec = json.loads(spec_path.read_text())
    spec["intensity"] = {"kind": "window", "hu_min": -175, "hu_max": 250}
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(CohortError, match=r"pipeline\.json: intensity window \[-175, 250\].*does not match.*"
                                          r"\[-1000, 1000\]"):
        LatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    del spec["intensity"]  # a spec written before the field: the default window, so still refused
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(CohortError, match="does not match"):
        LatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    spec["intensity"] = {"kind": "percentile", "hu_min": 0, "hu_max": 1}
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(CohortError, match=r"pipeline\.json: not a valid pipeline spec.*kind"):
        LatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    with pytest.raises(ValueError, match="build the spec with the autoencoder's intensity"):
        LatentDiffusionPipeline(pipe.autoencoder, pipe.unet, pipe.controlnet, replace(pipe.spec, intensity=Intensity()))


def test_an_old_pipeline_without_intensity_loads_as_the_abdomen_window(tmp_path):
    torch.manual_seed(0)
    old = build_pipeline(load_config(GenerativeConfig, TINY_YAML), controlnet=False)
    old.save_pretrained(tmp_path / "old")
    for f in (tmp_path / "old" / SPEC_NAME, tmp_path / "old" / "autoencoder" / "config.json"):
        d = json.loads(f.read_text())
        d.pop("intensity")
        f.write_text(json.dumps(d))
    again = LatentDiffusionPipeline.from_pretrained(tmp_path / "old")
    assert again.spec.intensity == again.autoencoder.intensity == WINDOW_ABDOMEN == Intensity("window", -175, 250)


def test_data_is_prepared_with_the_autoencoders_window_and_other_data_refused(pipe, tmp_path):
    case = toy_abdomen_case("d", seed=1)
    maisi = prepare_case(case, [], WINDOW_MAISI)
    assert np.allclose(maisi.image, np.clip((case.ct + 1000) / 2000, 0, 1), atol=1e-6)
    abdomen = prepare_case(case, [])
    assert abdomen.intensity == WINDOW_ABDOMEN and not np.allclose(abdomen.image, maisi.image)
    with pytest.raises(ValueError, match=r"\['d'\] were scaled with window \[-175, 250\].*reads window \[-1000, 1000\]"):
        build_latent_cache(pipe.autoencoder, [abdomen], [32, 32, 32], 1, 0, 0.5, tmp_path / "c.safetensors")


def test_stages_take_the_window_from_the_init_from_folder(cfg, pipe, tmp_path):
    from generative.diffusion.training import export_pipeline

    export_pipeline(replace(cfg, stage="autoencoder"), {"autoencoder": pipe.autoencoder}, pipe.spec, tmp_path / "ae")
    assert stage_intensity(replace(cfg, stage="autoencoder")) == WINDOW_MAISI
    assert stage_intensity(replace(cfg, stage="diffusion", init_from=str(tmp_path / "ae"))) == WINDOW_MAISI
    pipe.save_pretrained(tmp_path / "dm")
    assert stage_intensity(replace(cfg, stage="controlnet", init_from=str(tmp_path / "dm"))) == WINDOW_MAISI
    spec = json.loads((tmp_path / "dm" / SPEC_NAME).read_text())
    spec.pop("intensity")
    (tmp_path / "dm" / SPEC_NAME).write_text(json.dumps(spec))
    with pytest.raises(CohortError, match=r"dm/pipeline\.json: intensity window \[-175, 250\].*does not match"):
        stage_intensity(replace(cfg, stage="controlnet", init_from=str(tmp_path / "dm")))
    torch.manual_seed(0)
    own = build_pipeline(load_config(GenerativeConfig, TINY_YAML), controlnet=False)
    own.save_pretrained(tmp_path / "own")
    plain_cfg = replace(load_config(GenerativeConfig, TINY_YAML), stage="diffusion", init_from=str(tmp_path / "own"))
    assert stage_intensity(plain_cfg) == WINDOW_ABDOMEN  # this project's autoencoder: today's window
    with pytest.raises(CohortError, match=r"own/autoencoder/config\.json: holds a 'autoencoder'.*MAISI"):
        stage_intensity(replace(cfg, stage="diffusion", init_from=str(tmp_path / "own")))


@pytest.mark.slow
def test_autoencoder_stage_exports_the_checkpoint_and_diffusion_trains_on_its_latents(cfg, tmp_path):
    from generative.train import train_stage

    for i in range(2):
        write_case(toy_abdomen_case(f"toy_{i}", seed=i), tmp_path / "cohort")
    base = replace(cfg, data=replace(cfg.data, cohort=str(tmp_path / "cohort"), crops_per_case=2),
                   train=replace(cfg.train, steps=2))
    ae = train_stage("autoencoder", base, tmp_path / "ae", progress=False)
    summary = json.loads((tmp_path / "ae" / "train_summary.json").read_text())
    assert summary["steps"] == 0 and summary["model_type"] == "maisi_autoencoder"
    assert isinstance(load_autoencoder(ae / "autoencoder"), MaisiAutoencoder)
    dm = train_stage("diffusion", replace(base, init_from=str(ae)), tmp_path / "dm", progress=False)
    got = LatentDiffusionPipeline.from_pretrained(dm)
    assert got.spec.intensity == WINDOW_MAISI and got.spec.scale_factor > 0
    assert isinstance(got.autoencoder, MaisiAutoencoder)
