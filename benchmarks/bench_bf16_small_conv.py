"""CPU bf16 3D convolutions on tiny feature maps: how often the weight gradient comes out NaN.

    python benchmarks/bench_bf16_small_conv.py [--calls 100]

Why: on an AVX512-BF16 CPU (torch 2.14.1) the tiny study test's generator NaN'd at its second step in bf16:
one UNet convolution, on a 2x2x2 feature map, returned a NaN weight gradient from finite inputs. This
counts, per feature-map side and channel count, the calls (kernel 3, padding 1, batch 2, random input,
a fresh layer each call) whose weight gradient under bf16 autocast is not finite, with fp32 on the same
inputs as the reference. cohort.hardware.CPU_BF16_MIN_SIDE and guard_small_feature_maps act on it. On
a CPU without native bf16 the numbers describe the emulated path (the product trains in fp32 there anyway).
Writes benchmarks/results/cpu_bf16_conv_nan.json and the "bf16_small_conv" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT_JSON = ROOT / "benchmarks" / "results" / "cpu_bf16_conv_nan.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- bf16_small_conv:begin -->", "<!-- bf16_small_conv:end -->"
SIDES = ((1, 1, 1), (2, 2, 2), (2, 4, 4), (3, 3, 3), (4, 4, 4), (8, 8, 8))
CHANNELS = ((16, 16), (32, 32), (64, 32))


def nan_calls(cin: int, cout: int, side: tuple[int, ...], calls: int, dtype) -> int:
    bad = 0
    for _ in range(calls):
        conv = torch.nn.Conv3d(cin, cout, 3, padding=1)
        x = torch.randn(2, cin, *side)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            y = conv(x)
        y.float().sum().backward()
        bad += not bool(torch.isfinite(conv.weight.grad).all())
    return bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100)
    args = p.parse_args()
    from benchmarks._report import machine_line, write_section
    from cohort.io import write_json

    torch.manual_seed(0)
    rows = []
    for cin, cout in CHANNELS:
        for side in SIDES:
            rows.append({"channels": [cin, cout], "side": list(side), "calls": args.calls,
                         "nan_bf16": nan_calls(cin, cout, side, args.calls, torch.bfloat16),
                         "nan_fp32": nan_calls(cin, cout, side, args.calls, None)})
            print(rows[-1], flush=True)
    res = {"machine": machine_line(), "torch": torch.__version__, "rows": rows}
    write_json(OUT_JSON, res)
    lines = [BEGIN, "## CPU bf16: NaN weight gradients of 3D convolutions on tiny feature maps", "",
             f"`python benchmarks/bench_bf16_small_conv.py --calls {args.calls}`: calls (a fresh Conv3d, kernel 3, "
             "padding 1, batch 2, random input) whose weight gradient is not finite, under bf16 autocast and in fp32. "
             f"{res['machine']}.", "",
             "| channels in -> out | " + " | ".join("x".join(map(str, s)) for s in SIDES) + " |",
             "|---|" + "---|" * len(SIDES)]
    for cin, cout in CHANNELS:
        cells = [r for r in rows if r["channels"] == [cin, cout]]
        lines.append(f"| {cin} -> {cout} | " + " | ".join(f"{r['nan_bf16']} / {r['nan_fp32']}" for r in cells) + " |")
    hit = [r for r in rows if r["nan_bf16"]]
    shown = (f"NaN in {min(r['nan_bf16'] for r in hit)}-{max(r['nan_bf16'] for r in hit)} of {args.calls} bf16 calls "
             f"on the sides {sorted({'x'.join(map(str, r['side'])) for r in hit})}, none on the others"
             if hit else "no NaN in any bf16 call")
    fp32 = sum(r["nan_fp32"] for r in rows)
    lines += ["", f"Each cell: NaN calls in bf16 / in fp32. What it shows: {shown}; fp32 gave {fp32} NaN calls. "
              "Generator training on a CPU with native bf16 therefore uses fp32 when a trained network's smallest "
              "feature map has a side of 2 voxels, and refuses an explicit bf16 there "
              "(`cohort.hardware.guard_small_feature_maps`); sampling does no backward pass and is unaffected.", END]
    write_section(RESULTS_MD, BEGIN, END, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
