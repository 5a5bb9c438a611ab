"""The pipeline: training_step, deterministic sampling, tiled decoding, tumor inpainting."""

import numpy as np
import pytest
import torch

from cohort import labels as L
from cohort.config import config_dir, load_config
from generative.diffusion.config import GenerativeConfig
from generative.diffusion.inpaint import DiffusionSynthesizer, InpaintSettings
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.diffusion.training import build_pipeline
from generative.tumors.base import Synthesizer, TumorSpec
from tests.toys import toy_abdomen_case

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    cfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml")
    return build_pipeline(cfg, scale_factor=1.0)


@pytest.fixture(scope="module")
def ddpm_pipe():
    torch.manual_seed(0)
    cfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml", ["scheduler.kind=ddpm"])
    return build_pipeline(cfg, scale_factor=1.0)


def _inputs():
    case = toy_abdomen_case("c", seed=3)
    lab = torch.from_numpy(case.label.astype(np.int64))[None, None]
    img = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(img)
    mask[..., 8:20, 8:20, 8:20] = 1
    return lab, img, mask


@pytest.mark.parametrize("sampler", ["rflow", "flow-euler"])
def test_sampling_is_deterministic_per_seed(pipe, sampler):
    lab, img, mask = _inputs()
    a = pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=3, seed=7)
    b = pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=3, seed=7)
    c = pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=3, seed=8)
    assert a.shape == (1, 1, 32, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_ddpm_family_samplers_are_deterministic(ddpm_pipe, sampler):
    lab, img, mask = _inputs()
    a = ddpm_pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=3, seed=1)
    b = ddpm_pipe.sample(lab, image=img, inpaint_mask=mask, sampler=sampler, steps=3, seed=1)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_tiled_decoding_covers_the_volume(pipe):
    lat = torch.randn(1, 4, 12, 8, 8, generator=torch.Generator().manual_seed(0))
    full, tiled = pipe.decode(lat), pipe.decode(lat, tile=4)
    assert tiled.shape == full.shape == (1, 1, 48, 32, 32) and torch.isfinite(tiled).all()
    assert torch.equal(pipe.decode(lat, tile=16), full)  # tiles larger than the volume: one pass


def test_training_step_is_finite_reproducible_and_weights_tumors(pipe):
    lab, img, _ = _inputs()
    assert (lab == L.NAME_TO_INDEX["liver_lesion"]).any()
    batch = {"latent": torch.randn(1, 4, 8, 8, 8), "label": lab, "image": img}
    l1 = pipe.training_step(batch, torch.Generator().manual_seed(0))["loss"]
    l2 = pipe.training_step(batch, torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(l1) and torch.equal(l1, l2)
    w = pipe.spec.tumor_loss_weight
    pipe.spec.tumor_loss_weight = 1.0
    try:
        l_plain = pipe.training_step(batch, torch.Generator().manual_seed(0))["loss"]
    finally:
        pipe.spec.tumor_loss_weight = w
    assert float(l1.detach()) > float(l_plain.detach())


def test_save_and_reload_pipeline_gives_identical_samples(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    again = LatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    lab, img, mask = _inputs()
    kw = dict(image=img, inpaint_mask=mask, steps=2, seed=3)
    assert torch.equal(pipe.sample(lab, **kw), again.sample(lab, **kw))


@pytest.mark.parametrize("spacing", [1.5, 2.0])
def test_inpainting_changes_only_the_roi_and_labels_only_inside_the_organ(pipe, spacing):
    healthy = toy_abdomen_case("h", shape=(40, 36, 32), spacing=spacing, seed=5, tumor=False)
    synth = DiffusionSynthesizer(pipe, InpaintSettings(steps=2, roi_size=[32, 32, 32], margin_mm=1.5, feather_mm=3.0))
    assert isinstance(synth, Synthesizer) and synth.name == "diffusion"
    ct0, lab0 = healthy.ct.copy(), healthy.label.copy()
    res = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="tiny"), np.random.default_rng(0))
    assert np.array_equal(healthy.ct, ct0) and np.array_equal(healthy.label, lab0)  # inputs untouched
    lo, hi = res.info["tumors"][0]["roi"]
    outside = np.ones(ct0.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert outside.any() and np.array_equal(res.ct[outside], ct0[outside])  # bit-identical
    changed = res.label != lab0
    lesion = L.NAME_TO_INDEX["liver_lesion"]
    assert changed.any() and np.all(res.label[changed] == lesion)
    assert np.all(lab0[res.label == lesion] == L.NAME_TO_INDEX["liver"])  # only where the liver was
    assert not np.array_equal(res.ct, ct0) and np.isfinite(res.ct).all()
    assert len(res.records) >= 1 and res.records[0]["method"] == "diffusion"
    # every changed voxel is inside the organ or the new tumor (the blend does not leak into neighbours)
    hu_changed = res.ct != ct0
    assert hu_changed.any() and np.all((lab0[hu_changed] == L.NAME_TO_INDEX["liver"]) | (res.label[hu_changed] == lesion))
    again = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="tiny"), np.random.default_rng(0))
    assert np.array_equal(again.ct, res.ct) and np.array_equal(again.label, res.label)


def test_tumor_blend_keeps_the_real_scan_beyond_the_band_and_region_blend_replaces_the_halo(pipe):
    from scipy import ndimage

    healthy = toy_abdomen_case("h", shape=(40, 36, 32), spacing=1.5, seed=5, tumor=False)
    spec, kw = TumorSpec(organ="liver", size="tiny"), {"steps": 2, "roi_size": [32, 32, 32], "margin_mm": 1.5}
    tum = DiffusionSynthesizer(pipe, InpaintSettings(**kw, blend="tumor", blend_mm=1.5, texture="scanner"))(
        healthy.ct, healthy.label, healthy.spacing, spec, np.random.default_rng(0))
    reg = DiffusionSynthesizer(pipe, InpaintSettings(**kw, blend="region", texture="generated"))(
        healthy.ct, healthy.label, healthy.spacing, spec, np.random.default_rng(0))
    lesion = L.NAME_TO_INDEX["liver_lesion"]
    assert np.array_equal(tum.label, reg.label)  # the same tumor mask either way
    d = ndimage.distance_transform_edt(tum.label != lesion, sampling=healthy.spacing)
    far = d > 3.0 + 1e-6  # beyond twice blend_mm: the real scan, bit for bit
    assert np.array_equal(tum.ct[far], healthy.ct[far])
    halo = (d > 3.0) & (d <= 6.0) & (healthy.label == L.NAME_TO_INDEX["liver"])
    assert halo.any() and not np.array_equal(reg.ct[halo], healthy.ct[halo])  # region blend: the decoded halo
    info = tum.info["tumors"][0]
    assert info["blend"] == "tumor" and info["texture"] == "scanner" and 0 <= info["donor_fraction"] <= 1
    assert "offset_hu" in info  # the decoded level matched to the scan on the organ both cover


def test_scanner_texture_tops_up_the_scans_noise_and_keeps_the_generated_tumor():
    from scipy import ndimage

    from generative.diffusion.inpaint import scanner_texture

    rng = np.random.default_rng(0)
    shape, sp = (40, 40, 40), (1.5, 1.5, 1.5)
    real = (60.0 + 12.0 * rng.standard_normal(shape)).astype(np.float32)  # an organ with scanner noise
    g = np.indices(shape) - 20
    where = np.sqrt((g ** 2).sum(0)) <= 5
    gen = np.where(where, 20.0, 60.0).astype(np.float32)  # a smooth generated tumor: no noise
    donor = ~ndimage.binary_dilation(where, iterations=3)
    out, info = scanner_texture(gen, real, where, donor, sp, 1.0, np.random.default_rng(1))
    hp = lambda v: v - ndimage.gaussian_filter(v, 1.0 / 1.5)  # noqa: E731
    core = ndimage.binary_erosion(where, iterations=2)
    assert np.std(hp(out)[core]) == pytest.approx(np.std(hp(real)[core]), rel=0.25)  # the scan's noise level
    assert np.mean(out[core]) == pytest.approx(20.0, abs=3.0)  # the generated tumor's HU
    assert np.array_equal(out[~where], gen[~where])  # nothing else changes
    assert info["donor_fraction"] > 0.95 and info["donor_shift"] is not None and info["gain"] == pytest.approx(1.0, abs=0.05)
    # a generated tumor that kept the scan's noise gets none added
    noisy = gen + np.where(where, real - 60.0, 0.0).astype(np.float32)
    kept, info2 = scanner_texture(noisy, real, where, donor, sp, 1.0, np.random.default_rng(1))
    assert info2["gain"] < 0.35 and np.abs(kept - noisy).max() < 0.35 * 12 * 6
    again, _ = scanner_texture(gen, real, where, donor, sp, 1.0, np.random.default_rng(1))
    assert np.array_equal(out, again)
    same, why = scanner_texture(gen, real, where, np.zeros(shape, bool), sp, 1.0, np.random.default_rng(1))
    assert np.array_equal(same, gen) and why["texture"] == "generated" and "no organ voxels" in why["why"]


def test_inpainting_needs_an_inpainting_controlnet():
    torch.manual_seed(0)
    cfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml")
    unconditional = build_pipeline(cfg, controlnet=False)
    with pytest.raises(ValueError, match="inpaint"):
        DiffusionSynthesizer(unconditional)
    x = unconditional.sample(shape=(16, 16, 16), steps=2, seed=0)  # the diffusion stage alone samples too
    assert x.shape == (1, 1, 16, 16, 16) and torch.equal(x, unconditional.sample(shape=(16, 16, 16), steps=2, seed=0))


def test_whole_volume_generation_from_a_label_map_alone(pipe):
    case = toy_abdomen_case("w", shape=(48, 32, 32), seed=1)
    lab = torch.from_numpy(case.label.astype(np.int64))[None, None]
    a = pipe.sample(lab, steps=2, seed=0, tile=4)
    assert a.shape == (1, 1, 48, 32, 32) and torch.equal(a, pipe.sample(lab, steps=2, seed=0, tile=4))
    with pytest.raises(ValueError, match="divisible"):
        pipe.sample(lab[..., :30], steps=1)


@pytest.mark.parametrize("sampler", ["rflow", "flow-euler"])
def test_latent_blend_holds_known_latents_and_stays_deterministic(pipe, sampler):
    """With latent blending, latent cells outside the inpainting mask end exactly at the encoded
    image; cells inside are generated. The same seed gives the same result."""
    lab, img, mask = _inputs()
    cond = pipe.make_condition(lab, img, mask, pipe.drawn_appearance(lab, 0))
    z_known = pipe.encode(img)
    m_lat = torch.nn.functional.max_pool3d(mask, 4, stride=4)
    out = pipe.denoise(z_known.shape, cond, sampler, 3, torch.Generator().manual_seed(0), known=(z_known, m_lat))
    keep = (m_lat == 0).expand_as(out)
    assert keep.any() and (~keep).any()
    assert torch.allclose(out[keep], z_known[keep], atol=1e-6)
    assert not torch.allclose(out[~keep], z_known[~keep], atol=1e-3)
    kw = dict(image=img, inpaint_mask=mask, sampler=sampler, steps=3, seed=4, latent_blend=True)
    a, b = pipe.sample(lab, **kw), pipe.sample(lab, **kw)
    assert torch.equal(a, b) and not torch.equal(a, pipe.sample(lab, **{**kw, "latent_blend": False}))


def test_cached_condition_embedding_gives_the_same_latents(pipe):
    """Embedding the condition once instead of every step changes nothing but the time."""
    lab, img, mask = _inputs()
    cond = pipe.make_condition(lab, img, mask, pipe.drawn_appearance(lab, 0))
    shape = (1, 4, 8, 8, 8)
    a = pipe.denoise(shape, cond, "rflow", 3, torch.Generator().manual_seed(0), cache_condition=True)
    b = pipe.denoise(shape, cond, "rflow", 3, torch.Generator().manual_seed(0), cache_condition=False)
    assert torch.equal(a, b)
    assert type(pipe.controlnet.controlnet_cond_embedding).__name__ != "_CachedEmbedding"  # restored afterwards
