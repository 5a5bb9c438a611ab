"""The SDEdit draft: a rule-drawn tumor that measures back to the attributes it was drawn with."""

import numpy as np
import pytest
import torch

from cohort import labels as L
from cohort.appearance import measure_tumor
from generative.diffusion.draft import draft_tumor


def _organ_and_tumor(radius_vox: float = 7.0):
    shape = (40, 40, 40)
    g = np.indices(shape).astype(float) - 20
    r = np.sqrt((g ** 2).sum(0))
    organ = r <= 17
    tumor = r <= radius_vox
    rng = np.random.default_rng(0)
    ct = np.where(organ, 60.0, -100.0) + rng.normal(0, 5, shape)
    return ct.astype(np.float32), organ, tumor


@pytest.mark.parametrize("attrs", [
    {"contrast_hu": -60.0, "heterogeneity_hu": 15.0, "rim_hu": 0.0},
    {"contrast_hu": 30.0, "heterogeneity_hu": 25.0, "rim_hu": 40.0},
    {"contrast_hu": -20.0, "heterogeneity_hu": 30.0, "rim_hu": -15.0},
])
def test_draft_measures_back_to_its_attributes(attrs):
    ct, organ, tumor = _organ_and_tumor()
    sp = (1.5, 1.5, 1.5)
    out = draft_tumor(ct, tumor, organ & ~tumor, sp, attrs, np.random.default_rng(1))
    got = measure_tumor(out, tumor, organ & ~tumor, sp)
    assert got["contrast_hu"] == pytest.approx(attrs["contrast_hu"], abs=0.5)
    assert got["heterogeneity_hu"] == pytest.approx(attrs["heterogeneity_hu"], rel=0.05, abs=1.0)
    assert got["rim_hu"] == pytest.approx(attrs["rim_hu"], abs=1e-3)  # the ring is set after the texture
    assert np.array_equal(out[~tumor], ct[~tumor])  # no edge asked: only the tumor changes


@pytest.mark.parametrize("edge", [5.0, 12.0])
def test_draft_edge_is_softened_to_the_asked_step_outside_the_tumor(edge):
    ct, organ, tumor = _organ_and_tumor()
    sp = (1.5, 1.5, 1.5)
    attrs = {"contrast_hu": -60.0, "heterogeneity_hu": 10.0, "rim_hu": 0.0, "edge_hu_per_mm": edge}
    out = draft_tumor(ct, tumor, organ & ~tumor, sp, attrs, np.random.default_rng(1))
    got = measure_tumor(out, tumor, organ & ~tumor, sp)
    assert got["edge_hu_per_mm"] == pytest.approx(edge, rel=1e-3)
    assert got["contrast_hu"] == pytest.approx(-60.0, abs=0.5)  # the shell and the tumor keep their values
    assert np.array_equal(out[tumor], draft_tumor(ct, tumor, organ & ~tumor, sp, {**attrs, "edge_hu_per_mm": 0.0},
                                                  np.random.default_rng(1))[tumor])
    sharp = measure_tumor(draft_tumor(ct, tumor, organ & ~tumor, sp, {**attrs, "edge_hu_per_mm": 500.0},
                                      np.random.default_rng(1)), tumor, organ & ~tumor, sp)
    assert sharp["edge_hu_per_mm"] == pytest.approx(60.0 / 1.5, rel=0.2)  # a hard step is the most it gives


@pytest.mark.parametrize("rim", [-5.0, 0.0, 30.0])
def test_draft_rim_is_exact_on_small_irregular_tumors(rim):
    # two overlapping small spheres (a 9-12 mm lobulated tumor): the texture alone would move the ring-core
    # difference by several HU here; the draft sets it back
    ct, organ, _ = _organ_and_tumor()
    g = np.indices(ct.shape).astype(float)
    tumor = (np.sqrt(((g - np.array([20, 20, 20])[:, None, None, None]) ** 2).sum(0)) <= 3.2) | (
        np.sqrt(((g - np.array([22, 23, 20])[:, None, None, None]) ** 2).sum(0)) <= 2.6)
    sp = (1.5, 1.5, 1.5)
    for seed in range(4):
        out = draft_tumor(ct, tumor, organ & ~tumor, sp, {"contrast_hu": -30.0, "heterogeneity_hu": 25.0, "rim_hu": rim},
                          np.random.default_rng(seed), noise=True)
        got = measure_tumor(out, tumor, organ & ~tumor, sp)
        assert got["rim_hu"] == pytest.approx(rim, abs=1e-3) and got["contrast_hu"] == pytest.approx(-30.0, abs=1e-3)


def test_draft_rim_larger_than_spread_still_hits_the_rim_and_mean():
    ct, organ, tumor = _organ_and_tumor()
    sp = (1.5, 1.5, 1.5)
    out = draft_tumor(ct, tumor, organ & ~tumor, sp, {"contrast_hu": 10.0, "heterogeneity_hu": 5.0, "rim_hu": 60.0},
                      np.random.default_rng(1))
    got = measure_tumor(out, tumor, organ & ~tumor, sp)
    assert got["contrast_hu"] == pytest.approx(10.0, abs=0.5)
    assert got["rim_hu"] == pytest.approx(60.0, abs=1e-3)
    assert got["heterogeneity_hu"] > 20  # the rim's own spread: the asked 5 HU cannot be met, none is added


def test_draft_is_deterministic_does_not_modify_inputs_and_handles_nan():
    ct, organ, tumor = _organ_and_tumor(radius_vox=1.0)  # too thin for a core: the rim is skipped
    before = ct.copy()
    a = draft_tumor(ct, tumor, organ & ~tumor, (1, 1, 1), {"contrast_hu": -40, "rim_hu": float("nan")},
                    np.random.default_rng(3))
    b = draft_tumor(ct, tumor, organ & ~tumor, (1, 1, 1), {"contrast_hu": -40, "rim_hu": float("nan")},
                    np.random.default_rng(3))
    assert np.array_equal(a, b) and np.array_equal(ct, before) and a.dtype == np.float32
    assert measure_tumor(a, tumor, organ & ~tumor, (1, 1, 1))["contrast_hu"] == pytest.approx(-40, abs=1.0)


def test_draft_errors_name_the_problem():
    ct, organ, tumor = _organ_and_tumor()
    with pytest.raises(ValueError, match="empty"):
        draft_tumor(ct, np.zeros_like(tumor), organ, (1, 1, 1), {}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no organ voxel"):
        draft_tumor(ct, tumor, np.zeros_like(organ), (1, 1, 1), {}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="share a grid"):
        draft_tumor(ct, tumor[:-1], organ, (1, 1, 1), {}, np.random.default_rng(0))


# ---- the pipeline side: SDEdit from the draft -----------------------------------------------------------

@pytest.fixture(scope="module")
def pipe():
    from tests.generative.test_diffusion_appearance import _tiny_pipe

    return _tiny_pipe()


def _counted(p):
    calls = []
    real = p.unet.forward

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    p.unet.forward = spy
    return calls, real


def test_strength_one_is_the_plain_sampler_and_lower_runs_that_share_of_steps(pipe):
    from tests.generative.test_diffusion_pipeline import _inputs

    lab, img, mask = _inputs()
    app = pipe.drawn_appearance(lab, 0)
    draft = (img + 0.3 * torch.isin(lab, torch.tensor(L.LESION_LABELS)).float()).clamp(0, 1)
    kw = dict(image=img, inpaint_mask=mask, appearance=app, steps=4, seed=2)
    plain = pipe.sample(lab, **kw)
    assert torch.equal(pipe.sample(lab, draft=draft, draft_strength=1.0, **kw), plain)
    calls, real = _counted(pipe)
    try:
        half = pipe.sample(lab, draft=draft, draft_strength=0.5, **kw)
    finally:
        pipe.unet.forward = real
    assert len(calls) == 2  # the last half of the 4 steps
    assert torch.equal(half, pipe.sample(lab, draft=draft, draft_strength=0.5, **kw))  # deterministic
    assert not torch.allclose(half, plain)
    # close to 0, the output is the draft as the autoencoder reconstructs it: nearer to it than the plain sample
    recon = pipe.decode(pipe.encode(draft))
    low = pipe.sample(lab, draft=draft, draft_strength=0.05, **kw)
    assert (low - recon).abs().mean() < (plain - recon).abs().mean()
    # with the draft's autoencoder residual added back, the output at a low strength is the draft itself, nearly
    detail = pipe.sample(lab, draft=draft, draft_strength=0.05, draft_detail=True, **kw)
    assert (detail - draft).abs().mean() < 0.5 * (low - draft).abs().mean()
    assert torch.equal(pipe.sample(lab, draft=draft, draft_strength=1.0, draft_detail=True, **kw), plain)
    with pytest.raises(ValueError, match="does not match"):
        pipe.sample(lab, draft=draft[..., :-4], draft_strength=0.5, **kw)


def test_the_synthesizer_draws_a_draft_records_it_and_a_mask_only_model_refuses(pipe):
    from generative.diffusion.config import InpaintSettings
    from generative.diffusion.inpaint import DiffusionSynthesizer
    from generative.tumors.base import TumorSpec
    from tests.toys import toy_abdomen_case

    healthy = toy_abdomen_case("h", shape=(40, 36, 32), spacing=1.5, seed=5, tumor=False)
    settings = InpaintSettings(steps=4, roi_size=[32, 32, 32], margin_mm=1.5, appearance={"contrast_hu": -40.0},
                               draft_strength=0.5, draft_detail=True)
    synth = DiffusionSynthesizer(pipe, settings)
    res = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="small"), np.random.default_rng(0))
    assert res.info["tumors"][0]["draft_strength"] == 0.5 and res.info["tumors"][0]["draft_detail"] is True
    again = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="small"), np.random.default_rng(0))
    assert np.array_equal(again.ct, res.ct)
    plain = DiffusionSynthesizer(pipe, InpaintSettings(steps=4, roi_size=[32, 32, 32], margin_mm=1.5,
                                                       appearance={"contrast_hu": -40.0}))
    other = plain(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="small"), np.random.default_rng(0))
    assert "draft_strength" not in other.info["tumors"][0] and not np.array_equal(other.ct, res.ct)
    from cohort.config import config_dir, load_config
    from generative.diffusion.config import SampleSpec

    with pytest.raises(Exception, match="draft_strength"):
        load_config(SampleSpec, config_dir() / "generative" / "sample_phantom.yaml", ["inpaint.draft_strength=0"])


def test_a_mask_only_model_cannot_draw_a_draft():
    from generative.diffusion.config import InpaintSettings
    from generative.diffusion.inpaint import inpaint_tumor
    from tests.generative.test_diffusion_appearance import _tiny_pipe
    from tests.toys import toy_abdomen_case

    p = _tiny_pipe(["controlnet.appearance=[]"])
    healthy = toy_abdomen_case("h", shape=(40, 36, 32), spacing=1.5, seed=5, tumor=False)
    tumor = np.zeros(healthy.label.shape, bool)
    tumor[18:24, 16:22, 14:20] = True
    with pytest.raises(ValueError, match="appearance-conditioned"):
        inpaint_tumor(p, healthy.ct, healthy.label, healthy.spacing, tumor, 21, 0,
                      InpaintSettings(steps=2, roi_size=[32, 32, 32], draft_strength=0.5))


def test_draft_noise_takes_part_of_the_spread_from_the_scan():
    ct, organ, tumor = _organ_and_tumor()  # organ noise sd 5 HU (white)
    sp = (1.5, 1.5, 1.5)
    host = organ & ~tumor
    for het in (20.0, 3.0):  # above the scan's noise: topped up; below it: the noise is scaled down to fit
        out = draft_tumor(ct, tumor, host, sp, {"contrast_hu": -30.0, "heterogeneity_hu": het}, np.random.default_rng(2),
                          noise=True)
        got = measure_tumor(out, tumor, host, sp)
        assert got["heterogeneity_hu"] == pytest.approx(het, rel=0.05, abs=0.5)
        assert got["contrast_hu"] == pytest.approx(-30.0, abs=0.5)
    a = draft_tumor(ct, tumor, host, sp, {"heterogeneity_hu": 20.0}, np.random.default_rng(2), noise=True)
    b = draft_tumor(ct, tumor, host, sp, {"heterogeneity_hu": 20.0}, np.random.default_rng(2), noise=False)
    assert np.array_equal(a, draft_tumor(ct, tumor, host, sp, {"heterogeneity_hu": 20.0}, np.random.default_rng(2),
                                         noise=True))
    # with the scan's grain the tumor has more fine detail (neighbour differences) than smooth texture alone
    fine = lambda x: float(np.abs(np.diff(np.where(tumor, x, np.nan), axis=0))[~np.isnan(np.diff(np.where(tumor, x, np.nan), axis=0))].mean())  # noqa: E731
    assert fine(a) > fine(b)
