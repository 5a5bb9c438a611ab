"""Gradient-boosted decision trees on the radiomic crop features: the filter's second opinion.

The CNN of :mod:`generative.quality.discriminator` sees every voxel but learns from a few hundred
crops; its score for a real tumor unlike the training ones (a very large one, a tiny one) can be
low, and that long lower tail sets the calibrated cutoff, so known-bad tumors whose one tell is a
single number (no scanner noise, a step at a pasted box) slip through. A small boosted-tree
model on the features of :mod:`generative.quality.features` reads those numbers directly and
keeps its decisions axis-aligned and inspectable (which feature, which threshold).

Newton boosting of the logistic loss: each tree is fitted to the gradient and hessian of the
loss at the current logits, on features binned once into quantile bins (histogram splits), with
shrinkage, row subsampling, a minimum leaf weight and an L2 penalty on leaf values. The number of
trees is chosen by the validation loss when validation rows are given. Plain numpy; saved as JSON
(no pickle: a model folder never runs code when loaded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cohort.config import bounded


@dataclass
class TreeConfig:
    """The boosted trees of the quality filter (``feature_trees`` in filter.yaml)."""

    #: fit the trees after the CNN and score with both (the geometric mean of the two P(real))
    enabled: bool = True
    max_trees: int = bounded(300, ge=1)
    learning_rate: float = bounded(0.05, gt=0, le=1)
    max_depth: int = bounded(3, ge=1, le=8)
    #: minimum hessian per leaf, in rows of average hessian (about this many rows)
    min_leaf: float = bounded(8.0, gt=0)
    l2: float = bounded(1.0, ge=0)
    #: fraction of rows each tree sees
    subsample: float = bounded(0.8, gt=0, le=1)
    max_bins: int = bounded(64, ge=4, le=255)
    #: stop when the validation loss has not improved for this many trees
    patience: int = bounded(40, ge=1)
    seed: int = 0


@dataclass
class _Tree:
    """One tree as flat arrays; node 0 is the root, ``feature`` -1 marks a leaf."""

    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)  # go left when x <= threshold
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self, value: float) -> int:
        for a, v in ((self.feature, -1), (self.threshold, 0.0), (self.left, -1), (self.right, -1), (self.value, value)):
            a.append(v)
        return len(self.value) - 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        f, t = np.asarray(self.feature), np.asarray(self.threshold)
        lft, rgt, val = np.asarray(self.left), np.asarray(self.right), np.asarray(self.value)
        node = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        while True:
            inner = f[node] >= 0
            if not inner.any():
                return val[node]
            n = node[inner]
            go_left = x[rows[inner], f[n]] <= t[n]
            node[inner] = np.where(go_left, lft[n], rgt[n])


def _bin_edges(x: np.ndarray, max_bins: int) -> list[np.ndarray]:
    """Per feature, the sorted distinct split thresholds (midpoints between quantile values)."""
    edges = []
    for j in range(x.shape[1]):
        q = np.unique(np.quantile(x[:, j], np.linspace(0, 1, max_bins + 1)))
        edges.append((q[:-1] + q[1:]) / 2 if len(q) > 1 else np.zeros(0))
    return edges


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _logloss(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(_sigmoid(z), 1e-7, 1 - 1e-7)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


class BoostedTrees:
    """Binary classifier: ``fit(x, y)`` then ``predict_proba(x)`` = P(y = 1). x: (N, F) float."""

    def __init__(self, config: TreeConfig | None = None, feature_names: list[str] | tuple[str, ...] = ()):
        self.config = config or TreeConfig()
        self.feature_names = list(feature_names)
        self.base = 0.0
        self.trees: list[_Tree] = []
        self.log: dict[str, Any] = {}

    # ---------------------------------------------------------------- fitting
    def _grow(self, bins: np.ndarray, g: np.ndarray, h: np.ndarray, rows: np.ndarray, edges: list[np.ndarray],
              min_h: float) -> _Tree:
        c = self.config
        tree = _Tree()
        lam = c.l2

        def leaf_value(r: np.ndarray) -> float:
            return float(-g[r].sum() / (h[r].sum() + lam))

        def split(node: int, r: np.ndarray, depth: int) -> None:
            if depth >= c.max_depth or h[r].sum() < 2 * min_h:
                return
            G, H = g[r].sum(), h[r].sum()
            parent = G * G / (H + lam)
            best = (1e-9, -1, -1)  # gain, feature, bin
            for j, e in enumerate(edges):
                nb = len(e) + 1
                if nb < 2:
                    continue
                gl = np.cumsum(np.bincount(bins[r, j], weights=g[r], minlength=nb))[:-1]
                hl = np.cumsum(np.bincount(bins[r, j], weights=h[r], minlength=nb))[:-1]
                gr, hr = G - gl, H - hl
                ok = (hl >= min_h) & (hr >= min_h)
                if not ok.any():
                    continue
                gain = np.where(ok, gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent, -np.inf)
                b = int(np.argmax(gain))
                if gain[b] > best[0]:
                    best = (float(gain[b]), j, b)
            _, j, b = best
            if j < 0:
                return
            go_left = bins[r, j] <= b
            lr, rr = r[go_left], r[~go_left]
            tree.feature[node], tree.threshold[node] = j, float(edges[j][b])
            tree.left[node] = tree.add(leaf_value(lr))
            tree.right[node] = tree.add(leaf_value(rr))
            split(tree.left[node], lr, depth + 1)
            split(tree.right[node], rr, depth + 1)

        split(tree.add(leaf_value(rows)), rows, 0)
        return tree

    def fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, w_val: np.ndarray | None = None) -> BoostedTrees:
        """Fit on (N, F) ``x`` and 0/1 ``y`` with optional sample weights; with validation rows the number
        of trees is the one with the lowest validation loss (patience ``config.patience``)."""
        c = self.config
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
            raise ValueError(f"BoostedTrees.fit: x must be (N, F) with N = len(y) > 0, got {x.shape} and {y.shape}")
        if not np.isfinite(x).all():
            raise ValueError("BoostedTrees.fit: features contain NaN or infinity")
        if set(np.unique(y).tolist()) - {0.0, 1.0} or len(np.unique(y)) < 2:
            raise ValueError("BoostedTrees.fit: y must hold both classes, as 0 and 1")
        w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
        w = w / w.mean()
        edges = _bin_edges(x, c.max_bins)
        bins = np.stack([np.searchsorted(e, x[:, j], side="left") for j, e in enumerate(edges)], 1)
        p0 = float(np.clip((w * y).sum() / w.sum(), 1e-4, 1 - 1e-4))
        self.base = float(np.log(p0 / (1 - p0)))
        self.trees = []
        z = np.full(len(y), self.base)
        has_val = x_val is not None and y_val is not None and len(y_val) > 0
        if has_val:
            xv = np.asarray(x_val, np.float64)
            yv = np.asarray(y_val, np.float64)
            wv = np.ones(len(yv)) if w_val is None else np.asarray(w_val, np.float64)
            zv = np.full(len(yv), self.base)
            best_loss, best_n, curve = _logloss(zv, yv, wv), 0, []
        rng = np.random.default_rng(c.seed)
        for _ in range(c.max_trees):
            p = _sigmoid(z)
            g, h = w * (p - y), w * np.maximum(p * (1 - p), 1e-6)
            rows = np.arange(len(y))
            if c.subsample < 1:
                rows = np.sort(rng.choice(len(y), max(2, int(round(c.subsample * len(y)))), replace=False))
            tree = self._grow(bins, g, h, rows, edges, min_h=c.min_leaf * float(np.mean(h[rows])))
            tree.value = [v * c.learning_rate for v in tree.value]
            self.trees.append(tree)
            z = z + tree.predict(x)
            if has_val:
                zv = zv + tree.predict(xv)
                loss = _logloss(zv, yv, wv)
                curve.append(round(loss, 5))
                if loss < best_loss - 1e-6:
                    best_loss, best_n = loss, len(self.trees)
                elif len(self.trees) - best_n >= c.patience:
                    break
        if has_val:
            self.trees = self.trees[:max(best_n, 1)]
            self.log = {"val_loss": curve, "best_trees": len(self.trees), "best_val_loss": round(best_loss, 5)}
        else:
            self.log = {"best_trees": len(self.trees)}
        self.log["train_loss"] = round(_logloss(self.decision_function(x), y, w), 5)
        return self

    # ---------------------------------------------------------------- scoring
    def decision_function(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        z = np.full(len(x), self.base)
        for t in self.trees:
            z = z + t.predict(x)
        return z

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N,) P(y = 1)."""
        return _sigmoid(self.decision_function(x))

    def importance(self) -> dict[str, int]:
        """Splits per feature name (how often each feature is read), most used first."""
        counts: dict[str, int] = {}
        for t in self.trees:
            for f in t.feature:
                if f >= 0:
                    name = self.feature_names[f] if f < len(self.feature_names) else str(f)
                    counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    # ---------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "config": asdict(self.config), "feature_names": self.feature_names, "base": self.base,
                "trees": [asdict(t) for t in self.trees], "log": self.log}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "feature trees") -> BoostedTrees:
        if not isinstance(d, dict) or d.get("format") != 1 or not isinstance(d.get("trees"), list):
            raise ValueError(f"{where}: not a boosted-tree file of format 1")
        known = set(TreeConfig.__dataclass_fields__)
        out = cls(TreeConfig(**{k: v for k, v in (d.get("config") or {}).items() if k in known}),
                  d.get("feature_names") or [])
        out.base = float(d.get("base", 0.0))
        n_f = len(out.feature_names)
        for i, t in enumerate(d["trees"]):
            tree = _Tree(**{k: list(t[k]) for k in ("feature", "threshold", "left", "right", "value")})
            n = len(tree.value)
            if not (len(tree.feature) == len(tree.threshold) == len(tree.left) == len(tree.right) == n) or n == 0:
                raise ValueError(f"{where}: tree {i} has arrays of different lengths")
            for node, (f, lft, rgt) in enumerate(zip(tree.feature, tree.left, tree.right)):
                # children always come after their parent: no cycles, every walk ends at a leaf
                if f >= 0 and (not node < lft < n or not node < rgt < n or (n_f and f >= n_f)):
                    raise ValueError(f"{where}: tree {i} points outside itself (feature {f}, children {lft}, {rgt})")
            out.trees.append(tree)
        out.log = d.get("log") or {}
        return out
