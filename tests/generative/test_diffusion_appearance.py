"""Appearance conditioning: attributes reach the network, sampling draws them per seed from the
model's stored training tumors, user-asked values win, and provenance records asked and measured."""

import numpy as np
import pytest
import torch

from cohort import labels as L
from cohort.appearance import CONDITION_ATTRIBUTES
from cohort.config import config_dir, load_config
from generative.diffusion.config import GenerativeConfig, InpaintSettings
from generative.diffusion.inpaint import DiffusionSynthesizer
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.diffusion.training import build_pipeline
from generative.tumors.base import TumorSpec
from tests.generative.test_diffusion_pipeline import _inputs  # the same toy label map, image and mask
from tests.toys import toy_abdomen_case

torch.set_num_threads(2)

TABLE = [{"case_id": f"r{i}", "organ": "liver", "size_class": "early", "contrast_hu": c, "heterogeneity_hu": 15.0,
          "rim_hu": rim, "necrotic_fraction": 0.0, "edge_hu_per_mm": 20.0}
         for i, (c, rim) in enumerate([(-60.0, 0.0), (30.0, 0.0), (-10.0, 40.0)])]


def _tiny_pipe(sets=()):
    torch.manual_seed(0)
    cfg = load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml", list(sets))
    p = build_pipeline(cfg, scale_factor=1.0)
    # trained networks' zero-initialised convolutions (ControlNet's, the UNet's output) are no longer
    # zero: without this the condition cannot reach the output at all and nothing below could be told apart
    with torch.no_grad():
        for prm in [*p.controlnet.parameters(), *p.unet.parameters()]:
            if prm.dim() > 1 and not prm.abs().sum():
                prm.copy_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    p.appearance_table = list(TABLE)
    return p


@pytest.fixture(scope="module")
def pipe():
    return _tiny_pipe()


def test_the_default_controlnet_is_conditioned_on_every_attribute(pipe):
    assert pipe.spec.appearance == list(CONDITION_ATTRIBUTES)
    lab, img, mask = _inputs()
    cond = pipe.make_condition(lab, img, mask, pipe.drawn_appearance(lab, 0))
    assert cond.shape[1] == pipe.spec.condition_channels == len(pipe.spec.condition_organs) + 1 + 5 + 2
    with pytest.raises(ValueError, match="conditioned on appearance"):
        pipe.make_condition(lab, img, mask)


def test_different_attributes_give_different_outputs_and_equal_ones_equal(pipe):
    lab, img, mask = _inputs()
    tumor = torch.isin(lab, torch.tensor(L.LESION_LABELS)).float()
    assert tumor.sum() > 0

    def run(contrast):
        app = torch.zeros(1, 5, *lab.shape[2:])
        app[:, 0] = contrast / 100.0
        return pipe.sample(lab, image=img, inpaint_mask=mask, appearance=app * tumor, steps=2, seed=4)

    a, b, c = run(-60.0), run(40.0), run(-60.0)
    assert torch.equal(a, c) and not torch.allclose(a, b)


def test_unasked_sampling_draws_attributes_deterministically_per_seed(pipe):
    lab, _, _ = _inputs()
    drawn = [pipe.drawn_appearance(lab, s) for s in range(8)]
    assert all(torch.equal(d, pipe.drawn_appearance(lab, s)) for s, d in enumerate(drawn))
    inside = torch.isin(lab, torch.tensor(L.LESION_LABELS))[0, 0]
    contrasts = {round(float(d[0, 0][inside][0]) * 100, 3) for d in drawn}
    assert contrasts <= {-60.0, 30.0, -10.0} and len(contrasts) >= 2  # from the table, and not always the same row


def test_provenance_records_asked_drawn_and_measured(pipe):
    healthy = toy_abdomen_case("h", shape=(40, 36, 32), spacing=1.5, seed=5, tumor=False)
    settings = InpaintSettings(steps=2, roi_size=[32, 32, 32], margin_mm=1.5, appearance={"contrast_hu": -40.0})
    synth = DiffusionSynthesizer(pipe, settings)
    res = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="small"), np.random.default_rng(0))
    app = res.records[0]["appearance"]
    assert app["asked"] == {"contrast_hu": -40.0} and app["requested"]["contrast_hu"] == -40.0
    assert app["drawn_from"] in ("organ and size class", "organ") and app["row"] in {r["case_id"] for r in TABLE}
    assert set(app["measured"]) == set(CONDITION_ATTRIBUTES) and np.isfinite(app["measured"]["contrast_hu"])
    again = synth(healthy.ct, healthy.label, healthy.spacing, TumorSpec(organ="liver", size="small"), np.random.default_rng(0))
    assert np.array_equal(again.ct, res.ct) and again.records[0]["appearance"] == app


def test_the_table_travels_with_the_model_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    again = LatentDiffusionPipeline.from_pretrained(tmp_path / "m")
    assert again.appearance_table == TABLE and again.spec.appearance == pipe.spec.appearance
    (tmp_path / "m" / "appearance.json").unlink()
    with pytest.raises(Exception, match="appearance.json"):
        LatentDiffusionPipeline.from_pretrained(tmp_path / "m")


def test_unknown_attribute_names_are_refused():
    with pytest.raises(ValueError, match="unknown attribute"):
        InpaintSettings(appearance={"brightness": 3.0})
    with pytest.raises(ValueError, match="controlnet.appearance"):
        load_config(GenerativeConfig, config_dir() / "demo" / "generative_tiny.yaml", ["controlnet.appearance=[glow]"]).check()


def _row(contrast, mean, size_class="early", t="hypo", **kw):
    return {"contrast_hu": contrast, "heterogeneity_hu": 15.0, "rim_hu": 0.0, "necrotic_fraction": 0.0,
            "edge_hu_per_mm": 20.0, "diameter_mm": 15.0, "mean_hu": mean, "size_class": size_class, "type": t, **kw}


def test_appearance_comparison_reports_spread_ks_early_contrast_types_and_control_error():
    from generative.diffusion.evaluate import appearance_comparison

    held = [_row(-40.0 + 10 * i, 60.0 + 10 * i, true_type="hypo") for i in range(6)]
    real = [_row(-40.0 + 10 * i, 60.0 + 10 * i) for i in range(6)]
    syn = [_row(-20.0, 80.0 + 5 * i, t="hyper" if i % 2 else "hypo", asked={"contrast_hu": -30.0}) for i in range(6)]
    a = appearance_comparison(real, held, syn)
    assert a["attributes"]["contrast_hu"]["ks_real_vs_heldout"] == 0.0  # identical sets
    assert a["attributes"]["contrast_hu"]["ks_synthetic_vs_heldout"] > 0.3
    assert a["spread_ratio"] == pytest.approx(np.std([80.0 + 5 * i for i in range(6)]) / np.std([60.0 + 10 * i for i in range(6)]))
    assert a["early_contrast_ratio"] == pytest.approx(20.0 / np.mean([abs(-40.0 + 10 * i) for i in range(6)]))
    assert a["early_contrast_ratio_real"] == pytest.approx(1.0)  # identical real sets
    lo, hi = a["early_contrast_ratio_ci"]  # the synthetic set is constant: all the spread is the held-out set's
    assert lo < a["early_contrast_ratio"] < hi and hi - lo > 0.2
    assert a["types"]["synthetic"] == {"hyper": 3, "hypo": 3}
    assert a["control_error"]["contrast_hu"] == {"n": 6, "mean_abs_error": pytest.approx(10.0)}
    assert a["type_rule_agreement"] == {"n": 6, "agree": 1.0}


@pytest.fixture(scope="module")
def guided_pipe():
    """The tiny pipeline trained with appearance dropout: one more condition channel, guidance allowed."""
    return _tiny_pipe(["controlnet.appearance_dropout=0.2"])


def test_appearance_dropout_adds_a_known_channel_that_the_null_condition_clears(guided_pipe):
    p = guided_pipe
    assert p.spec.guidable and p.spec.condition_channels == len(p.spec.condition_organs) + 1 + 5 + 1 + 2
    lab, img, mask = _inputs()
    app = p.drawn_appearance(lab, 0)
    k0 = len(p.spec.condition_organs) + 1  # first appearance channel
    cond = p.make_condition(lab, img, mask, app)
    null = p.make_condition(lab, img, mask, app, appearance_known=torch.zeros(1))
    tumor = torch.isin(lab, torch.tensor(L.LESION_LABELS)).float()
    assert torch.equal(cond[:, k0 + 5:k0 + 6], tumor) and not null[:, k0:k0 + 6].any()
    assert torch.equal(cond[:, :k0], null[:, :k0]) and torch.equal(cond[:, k0 + 6:], null[:, k0 + 6:])  # masks, image


def test_guidance_one_is_the_plain_sample_and_other_scales_move_it(guided_pipe, pipe):
    lab, img, mask = _inputs()
    app = guided_pipe.drawn_appearance(lab, 0)

    def run(g):
        return guided_pipe.sample(lab, image=img, inpaint_mask=mask, appearance=app, steps=2, seed=3,
                                  appearance_guidance=g)

    plain, one, strong, strong2 = run(1.0), run(1.0), run(3.0), run(3.0)
    assert torch.equal(plain, one) and torch.equal(strong, strong2)  # deterministic per seed
    assert not torch.allclose(plain, strong)
    # guidance 0 is the null condition alone: the attributes no longer matter
    other = app.clone()
    other[:, 0] = -app[:, 0] + 0.5
    g0 = guided_pipe.sample(lab, image=img, inpaint_mask=mask, appearance=app, steps=2, seed=3, appearance_guidance=0.0)
    g0b = guided_pipe.sample(lab, image=img, inpaint_mask=mask, appearance=other, steps=2, seed=3,
                             appearance_guidance=0.0)
    assert torch.allclose(g0, g0b, atol=1e-6)
    with pytest.raises(ValueError, match="appearance_dropout"):
        pipe.sample(lab, image=img, inpaint_mask=mask, appearance=app[:, :5], steps=2, appearance_guidance=2.0)


def test_training_drops_the_attributes_of_a_share_of_samples(guided_pipe):
    lab, img, _ = _inputs()
    seen = []
    real = guided_pipe.make_condition

    def spy(*a, **kw):
        seen.append(kw.get("appearance_known"))
        return real(*a, **kw)

    guided_pipe.make_condition = spy
    try:
        batch = {"latent": torch.randn(8, 4, *[s // guided_pipe.autoencoder.downsample for s in lab.shape[2:]]),
                 "label": lab.expand(8, -1, -1, -1, -1), "image": img.expand(8, -1, -1, -1, -1)}
        out = guided_pipe.training_step(batch, torch.Generator().manual_seed(0))
    finally:
        del guided_pipe.make_condition
    assert torch.isfinite(out["loss"])
    known = seen[0]
    assert known.shape == (8,) and set(known.tolist()) <= {0.0, 1.0}
    again = []
    guided_pipe.make_condition = lambda *a, **kw: (again.append(kw.get("appearance_known")), real(*a, **kw))[1]
    try:
        guided_pipe.training_step(batch, torch.Generator().manual_seed(0))
    finally:
        del guided_pipe.make_condition
    assert torch.equal(again[0], known)  # drawn from the step's generator: reproducible
