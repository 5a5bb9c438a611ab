"""Boosted trees on crop features (generative.quality.trees)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from generative.quality.metrics import auc
from generative.quality.trees import BoostedTrees, TreeConfig


def _data(n: int = 400, seed: int = 0, noise: float = 0.0):
    """Two features; class 1 when both are positive (an interaction one split cannot express), a noise column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = ((x[:, 0] > 0) & (x[:, 1] > 0)).astype(float)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    return x, y


def test_trees_learn_an_interaction_and_generalise():
    x, y = _data(seed=0)
    xt, yt = _data(seed=1)
    m = BoostedTrees(TreeConfig(max_trees=150, max_depth=2, min_leaf=4), ["a", "b", "noise"]).fit(x, y)
    p = m.predict_proba(xt)
    assert p.shape == (len(yt),) and ((p >= 0) & (p <= 1)).all()
    assert auc(p[yt > 0], p[yt == 0]) > 0.97
    assert ((p > 0.5) == (yt > 0)).mean() > 0.93
    imp = m.importance()
    assert set(imp) >= {"a", "b"} and imp.get("noise", 0) < min(imp["a"], imp["b"])


def test_deterministic_and_json_round_trip():
    x, y = _data(seed=2)
    a = BoostedTrees(TreeConfig(max_trees=40, seed=3)).fit(x, y)
    b = BoostedTrees(TreeConfig(max_trees=40, seed=3)).fit(x, y)
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    back = BoostedTrees.from_dict(json.loads(json.dumps(a.to_dict())))
    assert np.array_equal(back.predict_proba(x), a.predict_proba(x))
    assert back.config == a.config


def test_validation_rows_choose_the_number_of_trees():
    """On noisy labels more trees only overfit: the validation loss stops the model early."""
    x, y = _data(n=300, seed=4, noise=0.3)
    xv, yv = _data(n=300, seed=5, noise=0.3)
    m = BoostedTrees(TreeConfig(max_trees=400, learning_rate=0.3, max_depth=4, min_leaf=2, patience=20)).fit(
        x, y, x_val=xv, y_val=yv)
    assert m.log["best_trees"] == len(m.trees) < 400
    assert m.log["best_val_loss"] == min(m.log["val_loss"])


def test_sample_weights_move_the_decision():
    x = np.linspace(-1, 1, 200)[:, None]
    y = (np.random.default_rng(0).random(200) < 0.5).astype(float)  # labels carry no signal
    w = np.where(y > 0, 9.0, 1.0)  # the positives weigh 9x: P(1) everywhere near 0.9
    p = BoostedTrees(TreeConfig(max_trees=30)).fit(x, y, w).predict_proba(x)
    assert 0.8 < float(np.median(p)) < 0.97


@pytest.mark.parametrize("bad, match", [
    (lambda x, y: (np.where(np.arange(len(x))[:, None] == 3, np.nan, x), y), "NaN"),
    (lambda x, y: (x, np.zeros_like(y)), "both classes"),
    (lambda x, y: (x[:, 0], y), r"\(N, F\)"),
])
def test_bad_training_input_is_named(bad, match):
    x, y = _data(n=50)
    with pytest.raises(ValueError, match=match):
        BoostedTrees().fit(*bad(x, y))


def test_a_broken_file_is_refused():
    x, y = _data(n=100)
    d = BoostedTrees(TreeConfig(max_trees=3)).fit(x, y).to_dict()
    with pytest.raises(ValueError, match="format 1"):
        BoostedTrees.from_dict({"trees": []}, "m/feature_trees.json")
    bad = json.loads(json.dumps(d))
    bad["trees"][0]["left"][0] = 0  # a cycle: the root its own child
    with pytest.raises(ValueError, match="points outside itself"):
        BoostedTrees.from_dict(bad)
    bad = json.loads(json.dumps(d))
    bad["trees"][1]["value"] = bad["trees"][1]["value"][:-1]
    with pytest.raises(ValueError, match="different lengths"):
        BoostedTrees.from_dict(bad)
