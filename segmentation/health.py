"""Does a trained model segment its own training tumors?

A segmentation run can end with a lesion output that never wins the argmax anywhere, on the
test cases and on the tumors it was trained on alike: the phantom study's CA cells (issue 15)
ended with every one of the lesion channel's final 1x1x1-convolution weights negative. SegResNet's
last block is norm -> ReLU -> 1x1x1 conv, so its inputs are >= 0 and such a channel's logit can
only fall below its bias: the lesion probability stopped at about 0.31 everywhere (liver 0.96
DSC in the same model). Test metrics alone read that as "these synthetic tumors do not help";
it is a failed training, and a user has to be told which it is.

:func:`lesion_fit` measures, on patches centred on lesion voxels of the training cases, each
lesion class's recall at argmax and the highest probability it reaches. A class whose probability
stays below 0.5 on its own training tumors is reported as collapsed. The check costs a few dozen
patch forwards and runs at the end of every training (``summary.json["fit"]``, a warning) and on
finished runs (``tumorgen segment fit RUN``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cohort import labels as L

#: file written beside a run's summary by ``tumorgen segment fit`` and by the scaling study's cells
FIT_NAME = "train_fit.json"
#: a lesion class whose probability never reaches this on its own training tumors never wins the argmax
COLLAPSE_PROB = 0.5


def final_layer_signs(net: torch.nn.Module) -> list[int] | None:
    """Positive weights per output channel of the network's last convolution when it is 1x1x1
    (SegResNet, DynUNet), else None. With non-negative inputs (a ReLU before it), a channel with
    none has a logit bounded above by its bias."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    if not convs or tuple(convs[-1].kernel_size) != (1, 1, 1):
        return None
    w = convs[-1].weight.detach().float().reshape(convs[-1].out_channels, -1)
    return [int(v) for v in (w > 0).sum(1)]


def lesion_patches(cache: Sequence[Sequence[Any]], classes: Sequence[str], patch_size: Sequence[int],
                   patches: int = 24, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``patches`` (HU, channel label) patches centred on lesion voxels, drawn evenly over the
    training cases that hold a lesion class (deterministic per ``seed``)."""
    from segmentation.data import ClassMap, crop_patch

    cm = ClassMap(tuple(classes))
    lut = cm.lut()
    lesion_labels = [v for ch in cm.lesion_channels for v in L.organ_indices(cm.classes[ch - 1])]
    cases = [c for src in cache for c in src if any(v in c.by_label for v in lesion_labels)]
    if not cases or not lesion_labels:
        return []
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(cases))
    out = []
    for i in range(patches):
        c = cases[int(order[i % len(cases)])]
        cand = c.candidates([v for v in lesion_labels if v in c.by_label])
        if cand.size == 0:
            continue
        centre = np.unravel_index(int(cand[rng.integers(cand.size)]), c.label.shape)
        ct = crop_patch(c.ct_hu, centre, patch_size, pad_value=-1000).astype(np.float32)
        lab = lut[crop_patch(c.label, centre, patch_size, pad_value=0)]
        out.append((ct, lab))
    return out


@torch.no_grad()
def lesion_fit(net: torch.nn.Module, cache: Sequence[Sequence[Any]], classes: Sequence[str], data: Any,
               patches: int = 24, seed: int = 0, batch: int = 4) -> dict[str, Any]:
    """Per lesion class, on training patches centred on its voxels: ``recall`` (lesion voxels
    predicted as that class at argmax), ``max_prob`` and ``p99_prob`` (its probability inside
    lesion voxels), ``collapsed`` (``max_prob`` < :data:`COLLAPSE_PROB`); plus ``patches`` and
    ``final_layer_positive_weights``. ``data``: the run's data config (patch size, HU window)."""
    from segmentation.data import ClassMap, scale_hu

    cm = ClassMap(tuple(classes))
    items = lesion_patches(cache, classes, tuple(int(p) for p in data.patch_size), patches, seed)
    res: dict[str, Any] = {"patches": len(items), "final_layer_positive_weights": final_layer_signs(net),
                           "collapse_prob": COLLAPSE_PROB, "classes": {}}
    if not items:
        return res
    was_training = net.training
    net.eval()
    try:
        dev = next(net.parameters()).device
        probs, labels = [], []
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            x = torch.from_numpy(np.stack([scale_hu(ct, data) for ct, _ in chunk])[:, None]).to(dev)
            probs.append(torch.softmax(net(x).float(), 1).cpu().numpy())
            labels.append(np.stack([lab for _, lab in chunk]))
    finally:
        net.train(was_training)
    p, lab = np.concatenate(probs), np.concatenate(labels)
    pred = p.argmax(1)
    for ch in cm.lesion_channels:
        inside = lab == ch
        if not inside.any():
            continue
        pc = p[:, ch][inside]
        mx = float(pc.max())
        res["classes"][cm.classes[ch - 1]] = {
            "voxels": int(inside.sum()), "recall": round(float((pred[inside] == ch).mean()), 4),
            "max_prob": round(mx, 4), "p99_prob": round(float(np.percentile(pc, 99)), 4),
            "collapsed": bool(mx < COLLAPSE_PROB)}
    return res


def collapsed_classes(fit: dict[str, Any] | None) -> list[str]:
    """The lesion classes a :func:`lesion_fit` record calls collapsed ([] for None)."""
    if not fit:
        return []
    return [n for n, r in fit.get("classes", {}).items() if r.get("collapsed")]


def fit_message(fit: dict[str, Any], where: str) -> str | None:
    """A warning naming each collapsed class, what was measured and what to try; None when none."""
    bad = collapsed_classes(fit)
    if not bad:
        return None
    parts = [f"{n} (max probability {fit['classes'][n]['max_prob']:.2f}, recall {fit['classes'][n]['recall']:.2f})"
             for n in bad]
    signs = fit.get("final_layer_positive_weights")
    extra = f"; positive final-layer weights per output channel: {signs}" if signs is not None else ""
    return (f"{where}: the lesion output collapsed: {', '.join(parts)} on {fit['patches']} patches of its own "
            f"training tumors, so it never predicts that class{extra}. This is a failed training, not a property "
            "of the data: retrain (another train.seed, more train.max_steps, a lower train.lr or a wider "
            "network.init_filters) and check again with `tumorgen segment fit`.")


def fit_run(run_dir: str | Path, patches: int = 24, write: bool = True) -> dict[str, Any]:
    """:func:`lesion_fit` of a finished run folder (its ``config.yaml``, ``model/`` and training
    sources); written to ``run_dir/train_fit.json`` with ``write``."""
    from cohort.errors import CohortError
    from cohort.io import write_json
    from segmentation.config import load_seg_config
    from segmentation.data import build_cache
    from segmentation.engine import split_sources
    from segmentation.networks import load_model

    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "model").is_dir():
        raise CohortError(run, "not a finished segmentation run (needs config.yaml and model/)")
    cfg = load_seg_config(run / "config.yaml", [])
    model = load_model(run / "model")
    split = split_sources(cfg)
    # at most ``patches`` cases per source: the patches are drawn one per case in turn anyway
    cache = build_cache([refs[:patches] for refs in split.train], cfg.data, desc="caching training cases", show=False)
    fit = lesion_fit(model.net, cache, cfg.classes, cfg.data, patches=patches, seed=cfg.data.seed)
    if write:
        write_json(run / FIT_NAME, fit)
    return fit
