"""Inference: sliding window (overlap 0.5, Gaussian blending), optional flip TTA, written back
on each case's original grid in the canonical vocabulary.

``predict_cohort(model_dir, input, out_dir)`` writes ``<case id>.nii.gz`` per
case (uint8 vocabulary label map, original shape and affine) and, with
``save_prob``, ``<case id>_tumor_prob.nii.gz`` (float32, probability that a
voxel is any lesion class, for sensitivity/AUC sweeps).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cohort.case import Case
from cohort.errors import BatchReport, CohortError
from cohort.progress import StepProgress
from segmentation.data import ClassMap
from segmentation.networks import SegModel, load_model, resolve_model_dir

#: flip axes of the test-time augmentation: identity plus the 7 mirrorings (nnU-Net's mirroring TTA)
TTA_FLIPS: tuple[tuple[int, ...], ...] = tuple(
    c for r in range(4) for c in itertools.combinations((2, 3, 4), r))


@torch.no_grad()
def sliding_window_probs(net: torch.nn.Module, image: torch.Tensor, roi_size: tuple[int, ...], *, overlap: float = 0.5,
                         mode: str = "gaussian", sw_batch_size: int = 2, tta: bool = False,
                         autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Softmax probabilities of a whole volume.

    image: (1, 1, X, Y, Z) float32 in [0, 1]. Returns (C, X, Y, Z) float32.
    With ``tta`` the probabilities are averaged over the 8 flip combinations.
    """
    from monai.inferers import sliding_window_inference

    device = next(net.parameters()).device
    image = image.to(device)
    flips = TTA_FLIPS if tta else ((),)
    total = None
    for axes in flips:
        x = torch.flip(image, axes) if axes else image
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = sliding_window_inference(x, roi_size, sw_batch_size, net, overlap=overlap, mode=mode)
        p = torch.softmax(logits.float(), dim=1)
        p = torch.flip(p, axes) if axes else p
        total = p if total is None else total + p
    return (total / len(flips))[0].float().cpu()


def dice_per_class(pred: np.ndarray, target: np.ndarray, num_channels: int) -> dict[int, float]:
    """Dice per channel 1..C-1 of two channel-index maps; NaN where both are empty."""
    out = {}
    for c in range(1, num_channels):
        p, t = pred == c, target == c
        denom = int(p.sum()) + int(t.sum())
        out[c] = float("nan") if denom == 0 else 2.0 * int((p & t).sum()) / denom
    return out


@dataclass
class CasePrediction:
    """label: uint8 vocabulary (original grid); tumor_prob: float32 (original grid) or None."""

    case_id: str
    label: np.ndarray
    affine: np.ndarray
    tumor_prob: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def drop_small_lesions(label: np.ndarray, spacing, min_mm3: float) -> tuple[np.ndarray, int]:
    """Give lesion components smaller than ``min_mm3`` (26-connected, per lesion class) back to the
    most common non-lesion label around them (their 1-voxel shell). Returns (new label map, number
    of components removed); the input is not modified."""
    import cc3d
    from scipy import ndimage

    from cohort import labels as L

    out = label.copy()
    if min_mm3 <= 0:
        return out, 0
    voxel_mm3 = float(np.prod(np.asarray(spacing, np.float64)))
    removed = 0
    for lesion in np.intersect1d(np.unique(label), L.LESION_LABELS):
        comps = cc3d.connected_components(label == lesion, connectivity=26)
        sizes = np.bincount(comps.ravel())
        boxes = ndimage.find_objects(comps)
        for c in np.flatnonzero(sizes[1:] * voxel_mm3 < min_mm3) + 1:
            # work inside the component's box grown by one voxel, not on the whole volume
            box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in boxes[c - 1])
            comp = comps[box] == c
            shell = ndimage.binary_dilation(comp, structure=np.ones((3, 3, 3), bool)) & ~comp
            sub = out[box]
            around = sub[shell]
            around = around[~np.isin(around, L.LESION_LABELS)]
            sub[comp] = np.bincount(around).argmax() if around.size else 0
            removed += 1
    return out, removed


def predict_case(model: SegModel, case: Case, tta: bool = False, save_prob: bool = False,
                 min_lesion_mm3: float | None = None) -> CasePrediction:
    """Segment one case (any orientation/spacing) and restore the result onto its original grid.
    ``min_lesion_mm3`` (default: the model's ``infer.min_lesion_mm3``): see :func:`drop_small_lesions`."""
    from cohort import preprocess as P

    t0 = time.perf_counter()
    cm = ClassMap(tuple(model.classes))
    pre = P.preprocess(case, tuple(model.data.spacing))
    ct = pre.case.ct
    image = torch.from_numpy(P.scale_hu(ct, model.data.hu_min, model.data.hu_max))[None, None]
    probs = sliding_window_probs(model.net, image, tuple(model.data.patch_size), overlap=model.infer.overlap,
                                 mode=model.infer.mode, sw_batch_size=model.infer.sw_batch_size, tta=tta)
    channels = probs.argmax(0).numpy().astype(np.uint8)
    vocab = cm.to_vocabulary(channels, ct, pre.case.affine)
    label = P.restore(vocab, pre.record, order=0).astype(np.uint8)
    min_mm3 = model.infer.min_lesion_mm3 if min_lesion_mm3 is None else min_lesion_mm3
    label, _ = drop_small_lesions(label, case.spacing, min_mm3)
    prob = None
    if save_prob:
        lesion = cm.lesion_channels
        tp = probs[lesion].sum(0).numpy() if lesion else np.zeros(channels.shape, np.float32)
        prob = np.clip(P.restore(tp.astype(np.float32), pre.record, order=1), 0.0, 1.0).astype(np.float32)
    return CasePrediction(case.case_id, label, np.asarray(case.affine), prob, time.perf_counter() - t0)


def predict_cohort(model_dir: str | Path, input: str | Path, out_dir: str | Path, tta: bool = False,
                   save_prob: bool = False, overwrite: bool = True, device: str = "cpu",
                   show: bool = True, min_lesion_mm3: float | None = None) -> BatchReport:
    """Segment every case of a cohort (any layout) or a single NIfTI file.

    model_dir: a model folder or a training run folder (uses its ``model/``).
    Writes ``out_dir/<case id>.nii.gz`` (and ``<case id>_tumor_prob.nii.gz``
    with ``save_prob``). Bad cases are recorded in the report, not fatal.
    With ``overwrite`` False, cases whose output exists are skipped.
    """
    from cohort.io import clean_stale_temps, write_json, write_volume
    from cohort.layouts import open_cohort

    model = load_model(resolve_model_dir(model_dir), device=device)
    cohort = open_cohort(input)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a run killed mid-write leaves temporaries that `tumorgen evaluate` would list beside the predictions
    clean_stale_temps(out)
    report = BatchReport()
    for cid, why in cohort.problems.items():
        report.fail(cid, why)
    timings: dict[str, float] = {}
    with StepProgress(f"predicting {Path(input).name}", len(cohort.refs), enabled=show, unit="case",
                      transient=True) as prog:
        for ref in cohort.refs:
            target = out / f"{ref.case_id}.nii.gz"
            if target.exists() and not overwrite:
                report.skipped.append(ref.case_id)
                prog.advance()
                continue
            try:
                case = ref.load()
                res = predict_case(model, case, tta=tta, save_prob=save_prob, min_lesion_mm3=min_lesion_mm3)
                write_volume(target, res.label, res.affine, dtype=np.uint8)
                if res.tumor_prob is not None:
                    write_volume(out / f"{ref.case_id}_tumor_prob.nii.gz", res.tumor_prob, res.affine, dtype=np.float32)
                timings[ref.case_id] = round(res.seconds, 3)
                report.done.append(ref.case_id)
            except (CohortError, ValueError, RuntimeError) as e:
                report.fail(ref.case_id, e)
            prog.advance(info=ref.case_id)
    write_json(out / "predict_report.json", {"model": str(model_dir), "input": str(input), "tta": tta,
                                             "min_lesion_mm3": (model.infer.min_lesion_mm3 if min_lesion_mm3 is None
                                                                else min_lesion_mm3),
                                             "classes": model.classes, "seconds": timings,
                                             "done": report.done, "skipped": report.skipped, "failed": report.failed})
    return report


def build_segmentor(run: str | Path, device: str = "cpu"):
    """A callable ``(ct HU (X, Y, Z), spacing (mm)) -> lesion probability map`` from a
    segmentation run (or model) folder: the FreeTumor gate of the quality filter."""
    from segmentation.networks import load_model, resolve_model_dir

    model = load_model(resolve_model_dir(Path(run)), device=device)

    def segment(ct_hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        case = Case("freetumor_gate", ct_hu, np.zeros(ct_hu.shape, np.uint8), np.diag([*spacing, 1.0]), {})
        return predict_case(model, case, save_prob=True).tumor_prob

    return segment
