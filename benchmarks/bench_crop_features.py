"""Speed of the filter's radiomic crop features: box dilation by cumulative-sum window counts vs max-pooling.

    python benchmarks/bench_crop_features.py [--batch 16] [--size 24] [--repeats 10]

Both paths run in this process on the same crops: the reference dilates with one cubic ``max_pool3d``
kernel of side 2r+1 (the first version of ``generative.quality.features``), ours with three 1D
cumulative-sum window counts. The features must agree exactly; the script prints the median time per
call of ``crop_features`` and the ratio, with the machine line (CPU capability, threads, precision fp32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def maxpool_dilate(m, r: int):
    import torch.nn.functional as F

    return F.max_pool3d(m, 2 * r + 1, stride=1, padding=r) if r > 0 else m


def _time(fn, x, repeats: int) -> float:
    fn(x)  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    import torch
    from _report import machine_line

    import generative.quality.features as fq

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, 2, a.size, a.size, a.size, generator=g)
    x[:, 1] = (torch.rand(a.batch, a.size, a.size, a.size, generator=g) > 0.97).float()
    ours_fn = fq._dilate
    ours = _time(fq.crop_features, x, a.repeats)
    f_ours = fq.crop_features(x)
    fq._dilate = maxpool_dilate
    try:
        ref = _time(fq.crop_features, x, a.repeats)
        f_ref = fq.crop_features(x)
    finally:
        fq._dilate = ours_fn
    same = bool(torch.equal(f_ours, f_ref))
    print(machine_line())
    print(f"crop_features, {a.batch} crops of {a.size}^3, median of {a.repeats}: max-pool reference {ref:.4f} s, "
          f"cumulative sums {ours:.4f} s, ratio {ref / ours:.1f}x; features identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
