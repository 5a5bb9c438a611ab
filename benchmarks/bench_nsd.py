"""NSD speed: bounding-box crops vs the same computation on the full grid.

A 512x512x300 CT-sized label pair (0.78 x 0.78 x 1.5 mm) with a few liver
lesions: the ground truth has four, the prediction finds three of them
(slightly grown and shifted) and adds one false positive. Both NSD paths
compute identical numbers (checked); the ratio is the speed-up of cropping.
Also times :func:`evaluation.metrics.evaluate_case` on the full label maps
(every metric of one case).

    python benchmarks/bench_nsd.py            # prints a Markdown block for benchmarks/RESULTS.md
    python benchmarks/bench_nsd.py --shape 256 256 150
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage

from cohort import labels as L
from evaluation.metrics import MetricsConfig, evaluate_case
from evaluation.surface import normalized_surface_dice

SPACING = (0.78, 0.78, 1.5)


def make_case(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(gt, pred) uint8 label maps with a liver and a few liver lesions."""
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    gt = np.zeros(shape, np.uint8)
    # liver: a big ellipsoid on the patient's right (high x in RAS voxel order)
    c = np.array([0.68 * X, 0.5 * Y, 0.6 * Z])
    r = np.array([0.2 * X, 0.22 * Y, 0.22 * Z])
    sl = tuple(slice(int(ci - ri), int(ci + ri) + 1) for ci, ri in zip(c, r))
    g = np.ogrid[sl]
    liver = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(g, c, r)) <= 1
    gt[sl][liver] = L.NAME_TO_INDEX["liver"]
    pred = gt.copy()
    lesion = L.NAME_TO_INDEX["liver_lesion"]
    # (offset from the liver centre as a fraction of its radii, radius mm, found?, false positive?)
    lesions = [((-0.5, -0.4, 0.3), 6.0, False, False),   # a small one, missed
               ((0.4, -0.3, -0.4), 10.0, True, False),
               ((-0.3, 0.4, -0.2), 15.0, True, False),
               ((0.2, 0.3, 0.4), 25.0, True, False),
               ((0.5, -0.5, -0.1), 8.0, False, True)]   # predicted where there is none
    for offset, rad, found, false_positive in lesions:
        centre = c + np.array(offset) * r
        rv = rad / np.array(SPACING)
        box = tuple(slice(max(int(ci - ri) - 4, 0), min(int(ci + ri) + 5, n)) for ci, ri, n in zip(centre, rv, shape))
        gg = np.ogrid[box]
        ball = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(gg, centre, rv)) <= 1
        if not false_positive:
            gt[box][ball] = lesion
        if found:
            # a prediction one voxel too wide and shifted by up to two voxels
            grown = ndimage.binary_dilation(ball, iterations=1)
            pred[box][np.roll(grown, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))] = lesion
        elif false_positive:
            pred[box][ball] = lesion
    return gt, pred


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the fast paths (best time kept)")
    args = ap.parse_args()
    shape = tuple(args.shape)
    gt, pred = make_case(shape)
    lesion = L.NAME_TO_INDEX["liver_lesion"]
    g, p = gt == lesion, pred == lesion

    t_crop, nsd_crop = timed(lambda: normalized_surface_dice(g, p, SPACING, 2.0), args.repeat)
    t_full, nsd_full = timed(lambda: normalized_surface_dice(g, p, SPACING, 2.0, crop=False), 1)
    if not np.isclose(nsd_crop, nsd_full, rtol=0, atol=1e-12):
        raise SystemExit(f"cropped NSD {nsd_crop} != full-volume NSD {nsd_full}")
    t_case, res = timed(lambda: evaluate_case("bench", gt, pred, SPACING, MetricsConfig()), 1)
    row = next(r for r in res.rows if r.organ == "liver")

    cpus = os.cpu_count()
    print(f"## NSD at 2 mm: bounding-box crop vs full volume ({shape[0]}x{shape[1]}x{shape[2]})\n")
    from _report import machine_line

    print(f"Machine: {machine_line()}; {cpus} CPU cores, numpy {np.__version__} (float64, no autocast).\n")
    print("| path | time (s) | NSD |")
    print("|---|---|---|")
    print(f"| full volume (reference, no crop) | {t_full:.2f} | {nsd_full:.6f} |")
    print(f"| union bounding box (evaluation.surface) | {t_crop:.3f} | {nsd_crop:.6f} |")
    print(f"\nSpeed-up: **{t_full / t_crop:.0f}x** (same value to 1e-12). "
          f"Every metric of the case (`evaluate_case`: 6 lesion classes, DSC, NSD, lesion matching, diameters): "
          f"{t_case:.2f} s; liver DSC {row.dsc:.3f}, NSD {row.nsd:.3f}, "
          f"{row.n_detected}/{row.n_lesions} lesions detected, {row.n_false_positive_components} false positive.")


if __name__ == "__main__":
    main()
