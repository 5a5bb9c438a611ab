"""Radiomic features of tumor crops (generative.quality.features) and the discriminator that uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generative.quality.discriminator import TumorDiscriminator
from generative.quality.features import FEATURE_NAMES, N_FEATURES, crop_features

S = 24
LO, HI = -175.0, 250.0


def _crop(tumor_hu: float = 20.0, organ_hu: float = 60.0, noise: float = 10.0, radius: float = 5.0,
          seed: int = 0, mask: np.ndarray | None = None) -> torch.Tensor:
    """(1, 2, S, S, S): an organ of ``organ_hu`` with Gaussian noise, a sphere tumor of ``tumor_hu``."""
    rng = np.random.default_rng(seed)
    g = np.indices((S, S, S)) - (S - 1) / 2
    m = (np.sqrt((g ** 2).sum(0)) <= radius) if mask is None else mask
    hu = np.where(m, tumor_hu, organ_hu) + rng.normal(0, noise, (S, S, S))
    x = np.stack([(np.clip(hu, LO, HI) - LO) / (HI - LO), m.astype(np.float32)])
    return torch.from_numpy(x[None].astype(np.float32))


def _f(x: torch.Tensor) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, crop_features(x, LO, HI)[0].tolist()))


def test_contrast_and_size_of_a_known_sphere():
    f = _f(_crop(tumor_hu=0.0, organ_hu=60.0, noise=5.0, radius=5.0))
    assert f["contrast"] == pytest.approx(-0.60, abs=0.03)  # units of 100 HU
    assert f["tumor_sd"] == pytest.approx(0.05, abs=0.015)
    assert f["low_fraction"] == pytest.approx(1.0, abs=0.02)  # 40 HU below the surroundings: (60 HU below): every voxel
    n = int(_crop(radius=5.0)[0, 1].sum())
    assert f["log_voxels"] == pytest.approx(np.log1p(n), rel=1e-5)
    assert 0.4 < f["box_fill"] < 0.65  # a sphere fills about pi/6 of its box
    assert f["far_fat"] == 0.0 and f["far_bright"] == 0.0
    assert abs(f["far_step"]) < 0.05 and abs(f["near_step"]) < 0.05  # one organ all around


def test_features_follow_the_contrast_phase():
    """The same tumor in a background 80 HU brighter (another phase) has the same relative features."""
    a = crop_features(_crop(tumor_hu=20.0, organ_hu=60.0), LO, HI)
    b = crop_features(_crop(tumor_hu=100.0, organ_hu=140.0), LO, HI)
    keep = [FEATURE_NAMES.index(k) for k in ("contrast", "tumor_sd", "hf_ratio", "rim", "near_step", "box_fill")]
    assert torch.allclose(a[0, keep], b[0, keep], atol=1e-3)


def test_broken_tumors_move_the_features_that_name_them():
    good = _f(_crop(noise=10.0))
    flat = _f(_crop(noise=0.0))
    x = _crop(noise=10.0)  # scanner noise around, a flat fill inside (an over-smoothed generator)
    m = x[:, 1:2] > 0.5
    x[:, :1] = torch.where(m, torch.full_like(x[:, :1], (20.0 - LO) / (HI - LO)), x[:, :1])
    smooth = _f(x)
    assert smooth["hf_ratio"] < good["hf_ratio"] - 2.0 and smooth["tumor_sd"] < 0.01
    assert flat["tumor_hf"] < 1e-4
    assert abs(good["hf_ratio"]) < 0.3  # the same noise inside and out
    noisy = _f(_crop(noise=60.0))
    assert noisy["tumor_sd"] > 3 * good["tumor_sd"]
    box = np.zeros((S, S, S), bool)
    box[8:16, 9:15, 7:17] = True
    assert _f(_crop(mask=box))["box_fill"] == pytest.approx(1.0)
    fat = _f(_crop(organ_hu=-100.0))
    assert fat["far_fat"] > 0.99
    seam = _crop(noise=10.0, radius=3.0)  # a patch 60 HU brighter, 7 voxels a side beyond the tumor's centre
    c = (S - 1) // 2
    seam[:, 0, c - 7:c + 9, c - 7:c + 9, c - 7:c + 9] += 60.0 / (HI - LO)
    assert _f(seam)["far_step"] > 0.3 and abs(_f(_crop(noise=10.0, radius=3.0))["far_step"]) < 0.05


def test_empty_mask_gives_zeros_and_batches_are_independent():
    x = torch.cat([_crop(seed=1), _crop(seed=2)])
    x[1, 1] = 0
    f = crop_features(x, LO, HI)
    assert f.shape == (2, N_FEATURES) and torch.isfinite(f).all()
    assert torch.equal(f[1], torch.zeros(N_FEATURES))
    assert torch.allclose(f[0], crop_features(x[:1], LO, HI)[0])


def test_discriminator_with_features_saves_its_scale_and_old_folders_load(tmp_path):
    torch.manual_seed(0)
    net = TumorDiscriminator(channels=[4, 8], features=True, hu_window=(LO, HI))
    x = torch.cat([_crop(seed=i, tumor_hu=20.0 + 10 * i) for i in range(4)])
    net.set_feature_stats(x)
    assert not torch.equal(net.feature_mean, torch.zeros(N_FEATURES))
    net.save_pretrained(tmp_path / "m")
    back = TumorDiscriminator.from_pretrained(tmp_path / "m")
    assert back.config["features"] and torch.equal(back.feature_std, net.feature_std)
    assert torch.allclose(back.predict_proba(x), net.eval().predict_proba(x))
    # the features reach the output: the same CNN input with another feature scale scores differently
    back.feature_mean += 1.0
    assert not torch.allclose(back.predict_proba(x), net.predict_proba(x))
    # a folder written before the features existed (no "features" in its kwargs) loads as a CNN only
    old = TumorDiscriminator(channels=[4, 8])
    old.config = {k: v for k, v in old.config.items() if k not in ("features", "feature_hidden", "hu_window")}
    old.save_pretrained(tmp_path / "old")
    o = TumorDiscriminator.from_pretrained(tmp_path / "old")
    assert o.feature_mlp is None and o.predict_proba(x).shape == (4,)
    # one saved with features before their names were stored computes the first list's features
    from generative.quality.features import FEATURE_NAMES_V1

    v1 = TumorDiscriminator(channels=[4, 8], features=True, feature_names=FEATURE_NAMES_V1)
    v1.config.pop("feature_names")
    v1.save_pretrained(tmp_path / "v1")
    back1 = TumorDiscriminator.from_pretrained(tmp_path / "v1")
    assert back1.config["feature_names"] == list(FEATURE_NAMES_V1) and back1.predict_proba(x).shape == (4,)
    with pytest.raises(ValueError, match="unknown crop feature"):
        crop_features(x, LO, HI, ["contrast", "nope"])


@pytest.mark.parametrize("r", [1, 2, 6])
def test_box_dilation_matches_scipy(r):
    from scipy import ndimage

    from generative.quality.features import _dilate, _erode

    m = np.random.default_rng(r).random((2, 1, 20, 18, 16)) > 0.97
    want = np.stack([ndimage.binary_dilation(v[0], np.ones((3, 3, 3)), iterations=r)[None] for v in m])
    got = _dilate(torch.from_numpy(m.astype(np.float32)), r).numpy() > 0.5
    assert np.array_equal(got, want)
    full = np.ones((1, 1, 9, 9, 9), np.float32)
    full[0, 0, 4, 4, 4] = 0  # eroding around one hole removes its 3x3x3 neighbourhood
    e = _erode(torch.from_numpy(full), 1).numpy()
    assert e.sum() == 9 ** 3 - 27


@pytest.mark.parametrize("share", [0.25, 0.4])
def test_draw_weights_give_real_half_and_hard_negatives_their_share(share):
    from generative.quality.train import sample_weights

    y = torch.tensor([1.0] * 10 + [0.0] * 30 + [0.0] * 60)
    hard = torch.tensor([False] * 40 + [True] * 60)
    w = sample_weights(y, hard, share)
    total = float(w.sum())
    assert float(w[:10].sum()) / total == pytest.approx(0.5)
    assert float(w[40:].sum()) / total == pytest.approx(share)
    assert float(w[10:40].sum()) / total == pytest.approx(0.5 - share)


def _with_box_seam(x: torch.Tensor, grow: int, step_hu: float) -> torch.Tensor:
    """``x`` with every body voxel inside the tumor's bounding box grown by ``grow`` voxels shifted by ``step_hu``."""
    out = x.clone()
    idx = (out[0, 1] > 0.5).nonzero()
    lo, hi = (idx.min(0).values - grow).clamp_min(0), idx.max(0).values + grow + 1
    sl = (0, 0, slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    out[sl] = out[sl] + step_hu / (HI - LO)
    return out


@pytest.mark.parametrize("grow", [2, 4])
def test_face_step_finds_a_pasted_box_and_ignores_an_organ_edge(grow):
    x = _crop(noise=8.0, radius=4.0)
    assert abs(_f(x)["face_step"]) < 0.05  # one organ all around: no step
    assert _f(_with_box_seam(x, grow, 60.0))["face_step"] == pytest.approx(0.60, abs=0.08)
    assert _f(_with_box_seam(x, grow, -50.0))["face_step"] == pytest.approx(-0.50, abs=0.08)
    # an organ boundary through the crop (fat on one side, 3 voxels from the tumor) crosses a single face
    g = np.indices((S, S, S))[0]
    edge = _crop(noise=8.0, radius=4.0)
    edge[0, 0][torch.from_numpy(g >= S // 2 + 7)] = (-100.0 - LO) / (HI - LO)
    assert abs(_f(edge)["face_step"]) < 0.1


def test_core_hf_reads_the_noise_of_a_tiny_tumor():
    """A tumor too small to have an 8-voxel core is read whole: its noise is not 0."""
    cube = np.zeros((S, S, S), bool)
    cube[11:14, 11:14, 11:14] = True  # a 3^3 tumor: its eroded core is one voxel
    f = _f(_crop(noise=10.0, mask=cube))
    assert f["tumor_hf"] == 0.0  # the sd of one voxel
    assert f["core_hf"] > 0.03
    big = _f(_crop(noise=10.0, radius=5.0))
    assert big["core_hf"] == pytest.approx(big["tumor_hf"], rel=1e-5)  # a real core: the same number


def test_discriminator_with_trees_scores_the_geometric_mean_and_round_trips(tmp_path):
    from cohort.errors import CohortError
    from generative.quality.discriminator import TREES_NAME
    from generative.quality.trees import BoostedTrees, TreeConfig

    torch.manual_seed(0)
    net = TumorDiscriminator(channels=[4, 8], features=True, hu_window=(LO, HI))
    x = torch.cat([_crop(seed=i, tumor_hu=10.0 * i, noise=4.0 + 4 * (i % 2)) for i in range(8)])
    net.set_feature_stats(x)
    y = np.array([1, 0] * 4, float)
    net.trees = BoostedTrees(TreeConfig(max_trees=20, min_leaf=1), list(FEATURE_NAMES)).fit(net.tree_features(x), y)
    p_cnn, p_tr = net.predict_parts(x)
    assert torch.allclose(net.predict_proba(x), (p_cnn * p_tr).sqrt())
    assert (p_tr[y > 0] > p_tr[y == 0].max()).all()  # the noise level separates the two kinds
    net.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / TREES_NAME).exists()
    back = TumorDiscriminator.from_pretrained(tmp_path / "m")
    assert torch.allclose(back.predict_proba(x), net.predict_proba(x), atol=1e-6)
    # saved again without trees: the stale file goes, the CNN scores alone
    back.trees = None
    back.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / TREES_NAME).exists()
    assert torch.allclose(TumorDiscriminator.from_pretrained(tmp_path / "m").predict_proba(x), p_cnn, atol=1e-6)
    (tmp_path / "m" / TREES_NAME).write_text('{"format": 1, "trees": [{"feature": [0], "threshold": [0.0], '
                                             '"left": [0], "right": [0], "value": [0.0]}]}')
    with pytest.raises(CohortError, match=r"feature_trees.json.*points outside itself"):
        TumorDiscriminator.from_pretrained(tmp_path / "m")
