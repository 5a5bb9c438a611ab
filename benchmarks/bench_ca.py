"""Benchmark: seconds and peak memory per synthesized tumor, CA (Pixel2Cancer, 150 steps) and
rule-based (SyntheticTumors), on a phantom liver (~1.4 L) at 1 mm and 1.5 mm; plus the CA
growth against a straightforward per-voxel NumPy reading of the same rules, as a ratio
measured in one process.

    /tmp/venvB/bin/python benchmarks/bench_ca.py                 # CPU, appends to benchmarks/RESULTS.md
    /tmp/venvB/bin/python benchmarks/bench_ca.py --device cuda   # the same on a GPU
    /tmp/venvB/bin/python benchmarks/bench_ca.py --quick         # smaller liver, fewer steps (a smoke run)

Each measurement runs in a fresh worker process so that its peak resident memory (sampled every
2 ms, minus the RSS after imports and loading the case) is its own; CUDA peaks come from
torch.cuda.max_memory_allocated. Wall and CPU seconds are both reported because the CPU may
be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- the NumPy reading

def numpy_grow(level: np.ndarray, seeds: np.ndarray, steps: int, probs, rng: np.random.Generator,
               max_try: int = 3) -> np.ndarray:
    """The CA growth rules of :func:`generative.tumors.ca.grow`, read straightforwardly: every
    step, loop over the tumor voxels one by one (as the CUDA kernel's threads do), reading the
    previous state and accumulating increments and pressures; synchronous like the torch version.
    Returns the state (X, Y, Z) int16 (organ 0, tumor 1..10, boundary >= 100)."""
    from generative.tumors.ca import _NEIGHBOURS, BOUNDARY, MAX_PRESSURE, OUT_OF_RANGE, SEED_STATE, THRESHOLD, WALL

    shape = tuple(s + 2 for s in level.shape)
    lv = np.full(shape, 4, np.int8)
    lv[1:-1, 1:-1, 1:-1] = level
    lv = lv.ravel()
    state = np.where(lv == OUT_OF_RANGE, BOUNDARY, 0).astype(np.int16)
    state[lv == 4] = WALL
    off = _NEIGHBOURS @ np.array([shape[1] * shape[2], shape[2], 1])
    ptab = np.array(list(probs) + [0.0, 0.0])
    for p in np.asarray(seeds).reshape(-1, 3) + 1:
        state[np.ravel_multi_index(tuple(p), shape)] = SEED_STATE
    for _ in range(steps):
        prev = state.copy()
        cells = np.flatnonzero((prev >= 1) & (prev <= THRESHOLD))
        inc = np.zeros(state.size, np.int16)
        press = {}
        for i in cells:
            v = prev[i]
            if v < THRESHOLD:
                inc[i] += 1
            if v < SEED_STATE:
                continue
            for _t in range(max_try):
                j = i + off[rng.integers(26)]
                tv = prev[j]
                if BOUNDARY <= tv < WALL:
                    if v >= THRESHOLD:
                        press[j] = press.get(j, 0) + 1
                    continue
                if 0 <= tv < THRESHOLD and rng.random() < ptab[lv[j]]:
                    inc[j] += 1
                    break
        grown = inc > 0
        state[grown] = np.minimum(prev[grown] + inc[grown], THRESHOLD)
        for j, n in press.items():
            p = int(prev[j]) - BOUNDARY
            if n >= MAX_PRESSURE + 2 - p:
                state[j], lv[j] = 1, 0
            else:
                state[j] = BOUNDARY + min(p + n, MAX_PRESSURE)
    return state.reshape(shape)[1:-1, 1:-1, 1:-1]


# ----------------------------------------------------------------------------- workers

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's resident set every few ms in a thread; ``peak_mb`` is the
    largest value seen (ru_maxrss would include the imports' transient peak)."""

    def __init__(self, every_s: float = 0.002):
        import threading

        self.every_s, self.peak_mb, self._stop = every_s, _rss_mb(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _rss_mb())
            time.sleep(self.every_s)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return max(self.peak_mb, _rss_mb())


def worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from generative.tumors import CAConfig, CASynthesizer, RuleSynthesizer, TumorSpec
    from generative.tumors.ca import grow, quantize_density

    data = np.load(args.case)
    ct, label, spacing = data["ct"], data["label"], tuple(float(s) for s in data["spacing"])
    rss0 = _rss_mb()
    sampler = PeakRSS()
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out: dict = {"what": args.worker, "spacing": spacing[0], "device": args.device, "shape": list(ct.shape)}
    if args.worker in ("ca", "rules"):
        synth = (CASynthesizer(CAConfig(device=args.device)) if args.worker == "ca" else RuleSynthesizer())
        runs = []
        specs = ([TumorSpec("liver", steps=args.steps, count=1)] if args.worker == "ca"
                 else [TumorSpec("liver", size=s, count=1) for s in ("small", "medium", "large")])
        if cuda:  # warm-up: CUDA context and kernels
            synth(ct, label, spacing, TumorSpec("liver", steps=5, count=1), np.random.default_rng(99))
        for k in range(args.repeats):
            for spec in specs:
                t0, c0 = time.perf_counter(), time.process_time()
                res = synth(ct, label, spacing, spec, np.random.default_rng(k))
                if cuda:
                    torch.cuda.synchronize()
                runs.append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                             "spec": spec.size or spec.steps, "voxels": sum(r["voxels"] for r in res.records),
                             "diameter_mm": max(r["max_axial_diameter_mm"] for r in res.records),
                             "necrosis": res.info.get("necrosis")})
        out["runs"] = runs
    elif args.worker == "ratio":
        organ = label == 5
        lo = [int(np.flatnonzero(organ.any(axis=tuple(a for a in range(3) if a != ax)))[0]) for ax in range(3)]
        hi = [int(np.flatnonzero(organ.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 1 for ax in range(3)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        level = quantize_density(ct[box], organ[box], (100.0, 160.0))
        cand = np.argwhere(level < 3)
        seeds = cand[np.random.default_rng(0).integers(len(cand), size=1)]
        cfg = CAConfig(device=args.device)
        t0, c0 = time.perf_counter(), time.process_time()
        g = grow(level, seeds, args.numpy_steps, np.random.default_rng(1), cfg, necrosis=False)
        if cuda:
            torch.cuda.synchronize()
        t_torch, c_torch = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        s_np = numpy_grow(level, seeds, args.numpy_steps, cfg.invasion_prob, np.random.default_rng(1))
        t_np, c_np = time.perf_counter() - t0, time.process_time() - c0
        tum = lambda s: int(((s >= 1) & (s <= 10)).sum())  # noqa: E731
        out.update(steps=args.numpy_steps, roi=list(level.shape), torch_wall_s=t_torch, torch_cpu_s=c_torch,
                   numpy_wall_s=t_np, numpy_cpu_s=c_np, torch_voxels=tum(g.state), numpy_voxels=tum(s_np),
                   ratio_wall=t_np / t_torch, ratio_cpu=c_np / max(c_torch, 1e-9))
    out["peak_rss_mb"] = sampler.stop() - rss0
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ----------------------------------------------------------------------------- driver

def prepare(tmp: Path, spacing: float, scale: float) -> Path:
    from cohort.phantom import make_phantom

    case = make_phantom("A", seed=0, spacing=spacing, scale=scale)
    path = tmp / f"liver_{spacing:g}mm.npz"
    np.savez(path, ct=case.ct, label=case.label, spacing=np.array(case.spacing))
    return path


def run_worker(case: Path, what: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", what, "--case", str(case), "--device", a.device,
           "--steps", str(a.steps), "--numpy-steps", str(a.numpy_steps), "--repeats", str(a.repeats),
           "--threads", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"worker {what} on {case} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def med(xs):
    return float(np.median(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--numpy-steps", type=int, default=150, help="steps for the torch-vs-NumPy growth ratio")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--scale", type=float, default=2.2, help="phantom scale (2.2: a ~1.4 L liver)")
    ap.add_argument("--spacings", default="1.0,1.5")
    ap.add_argument("--quick", action="store_true", help="scale 1.2, 40 steps, 1 repeat")
    ap.add_argument("--no-ratio", action="store_true")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true", help="print only")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--case", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    if a.quick:
        a.scale, a.steps, a.numpy_steps, a.repeats = 1.2, 40, 40, 1
    import torch

    rows, ratios = [], []
    with tempfile.TemporaryDirectory(prefix="bench_ca_") as tmp:
        for sp in [float(s) for s in a.spacings.split(",")]:
            case = prepare(Path(tmp), sp, a.scale)
            d = np.load(case)
            liver_ml = float((d["label"] == 5).sum() * np.prod(d["spacing"]) / 1000)
            for what in ("ca", "rules"):
                r = run_worker(case, what, a)
                r["liver_ml"] = liver_ml
                rows.append(r)
                print(json.dumps(r), flush=True)
            if not a.no_ratio:
                r = run_worker(case, "ratio", a)
                ratios.append(r)
                print(json.dumps(r), flush=True)

    from _report import machine_line

    dev = machine_line() + ("" if a.device == "cuda" else "; CA growth pinned to CAConfig.cpu_threads=1 (fp32)")
    lines = ["\n## CA and rule-based tumor synthesis (generative.tumors)\n",
             f"`python benchmarks/bench_ca.py{' --device cuda' if a.device == 'cuda' else ''}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Machine: {dev}; torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}. "
             f"Phantom liver (cohort.phantom site A, scale {a.scale}); CA {a.steps} steps, one seed (satellites as "
             f"the reference), {a.repeats} repeats, median. Rules: one small, medium and large tumor each. "
             "Peak memory: resident-set growth of a fresh worker over the run (CUDA: max allocated).\n",
             "| spacing | liver mL | grid | method | s/tumor wall | s/tumor CPU | tumor voxels | diameter mm | "
             "peak MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        runs = r["runs"]
        mem = f"{r['peak_rss_mb']:.0f}" + (f" (CUDA {r['cuda_peak_mb']:.0f})" if "cuda_peak_mb" in r else "")
        lines.append(f"| {r['spacing']:g} mm | {r['liver_ml']:.0f} | {'x'.join(map(str, r['shape']))} | "
                     f"{r['what']}{' ' + a.device if r['what'] == 'ca' else ''} | {med([x['wall_s'] for x in runs]):.2f} | "
                     f"{med([x['cpu_s'] for x in runs]):.2f} | {med([x['voxels'] for x in runs]):.0f} | "
                     f"{med([x['diameter_mm'] for x in runs]):.1f} | {mem} |")
    if ratios:
        lines += ["", "CA growth only (no rendering), torch vs the per-voxel NumPy reading, same seed, same process:", "",
                  "| spacing | organ box | steps | torch s (wall/CPU) | NumPy s (wall/CPU) | speed-up wall | speed-up CPU |"
                  " tumor voxels torch / NumPy |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in ratios:
            lines.append(f"| {r['spacing']:g} mm | {'x'.join(map(str, r['roi']))} | {r['steps']} | "
                         f"{r['torch_wall_s']:.2f} / {r['torch_cpu_s']:.2f} | {r['numpy_wall_s']:.1f} / {r['numpy_cpu_s']:.1f} | "
                         f"{r['ratio_wall']:.0f}x | {r['ratio_cpu']:.0f}x | {r['torch_voxels']} / {r['numpy_voxels']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_append:
        if not a.results.exists():
            a.results.write_text("# Benchmark results\n\nEach benchmark script appends its own section; numbers name the "
                                 "machine they were measured on.\n")
        with a.results.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
