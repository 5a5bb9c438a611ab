"""Phantom seconds per case (basic vs full anatomy) and a montage of the six tumor types.

Times ``make_phantom`` at 1.5 mm (96 x 96 x 64 voxels) for the same seeds with the basic anatomy
(liver, pancreas, kidney tumors: phantom version 1) and the full one (plus haustral colon,
esophagus, uterus; colon/esophagus/uterus tumors), interleaved so machine load hits both alike,
and reports the ratio. Then it draws ``benchmarks/six_tumor_types.png``: one row per AbdomenAtlas
2.0 tumor type, the phantom's own tumor beside the rules (SyntheticTumors) and CA (Pixel2Cancer)
tumors inserted into the healthy scan of the same patient, each on the axial slice through the
tumor's centre, with the measured sizes. Writes ``benchmarks/results/phantom_types.json`` and
its section of RESULTS.md.

    python benchmarks/bench_phantom_types.py [--n 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

TYPES = ("liver", "pancreas", "kidney", "colon", "esophagus", "uterus")
DIAMETER_MM = {"liver": 22.0, "pancreas": 14.0, "kidney": 15.0, "colon": 16.0, "esophagus": 10.0, "uterus": 15.0}
KIND = {"colon": "annular", "esophagus": "focal"}
BEGIN, END = "<!-- bench_phantom_types:begin -->", "<!-- bench_phantom_types:end -->"


def time_cases(n: int) -> dict:
    from cohort.phantom import make_phantom

    make_phantom("A", 0, "random", spacing=1.5)  # imports and caches out of the timing
    basic, full = [], []
    for s in range(n):
        t0 = time.perf_counter()
        make_phantom("A", s, "random", spacing=1.5)
        basic.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        make_phantom("A", s, "random", spacing=1.5, organs=TYPES)
        full.append(time.perf_counter() - t0)
    b, f = float(np.median(basic)), float(np.median(full))
    return {"n": n, "basic_s_per_case": round(b, 3), "full_s_per_case": round(f, 3), "ratio": round(f / b, 3)}


def _slice(ct, label, lesion, z):
    return np.clip(ct[:, :, z].T, -200, 250), (label[:, :, z] == lesion).T


def montage(out_png: Path, diffusion_model: str | None = None) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cohort import labels as L
    from cohort.phantom import TumorRequest, make_pair
    from generative.tumors import CASynthesizer, RuleSynthesizer, TumorSpec

    rows, sizes = [], []
    makers = {"rules": RuleSynthesizer(), "ca": CASynthesizer()}
    if diffusion_model:  # the registry's diffusion maker with a trained pipeline folder
        from generative.diffusion.config import DiffusionMakerConfig
        from generative.registry import build_synthesizer

        makers["diffusion"] = build_synthesizer("diffusion", DiffusionMakerConfig(
            model=diffusion_model, device="cpu", steps=10, roi_size=[48, 48, 48]))
    for i, organ in enumerate(TYPES):
        req = TumorRequest(organ, DIAMETER_MM[organ], kind=KIND.get(organ))
        pair = make_pair("A", 10 + i, [req], spacing=1.5, sex="F", anatomy="full")
        lesion = L.lesion_index_for(organ)
        t = pair.tumor.meta["tumors"][0]
        row = [("phantom" + (f" ({t['kind']})" if t.get("kind") else ""), pair.tumor.ct, pair.tumor.label,
                t["max_axial_diameter_mm"], t["centroid_vox"])]
        sizes.append({"type": organ, "maker": "phantom", "kind": t.get("kind"), "requested_mm": req.diameter_mm,
                      "max_axial_diameter_mm": t["max_axial_diameter_mm"], "volume_ml": t["volume_ml"]})
        h = pair.healthy
        for name, synth in makers.items():
            res = synth(h.ct, h.label, h.spacing, TumorSpec(organ, size="small", count=1), np.random.default_rng(i))
            r = max(res.records, key=lambda x: x["voxels"])
            row.append((name, res.ct, res.label, r["max_axial_diameter_mm"], r["centroid_vox"]))
            sizes.append({"type": organ, "maker": name, "kind": None, "requested_mm": None,
                          "max_axial_diameter_mm": r["max_axial_diameter_mm"], "volume_ml": r["volume_ml"]})
        rows.append((organ, lesion, row))
    fig, axes = plt.subplots(len(rows), 1 + len(makers), figsize=(3.2 * (1 + len(makers)), 3.2 * len(rows)))
    for (organ, lesion, row), ax_row in zip(rows, axes):
        for (name, ct, lab, diam, cen), ax in zip(row, ax_row):
            img, m = _slice(ct, lab, lesion, int(round(cen[2])))
            cx, cy = int(round(cen[0])), int(round(cen[1]))
            half = 22
            sl = (slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half))
            ax.imshow(img[sl], cmap="gray", origin="lower", vmin=-200, vmax=250)
            ax.contour(m[sl].astype(float), levels=[0.5], colors="r", linewidths=0.8, origin="lower")
            ax.set_title(f"{organ} | {name} | {diam:.1f} mm", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6, help="cases per anatomy for the timing")
    ap.add_argument("--no-results-md", action="store_true", help="do not touch RESULTS.md")
    ap.add_argument("--diffusion-model", default=None,
                    help="a controlnet model folder: add the diffusion maker's column (benchmarks/bench_generator.py "
                         "trains one on liver-tumor phantoms)")
    a = ap.parse_args()
    timing = time_cases(a.n)
    print(f"seconds per case at 1.5 mm: basic {timing['basic_s_per_case']} s, full {timing['full_s_per_case']} s "
          f"(x{timing['ratio']})")
    png = HERE / "six_tumor_types.png"
    sizes = montage(png, a.diffusion_model)
    for s in sizes:
        print(f"{s['type']:10s} {s['maker']:8s} {str(s['kind'] or ''):9s} {s['max_axial_diameter_mm']:6.1f} mm "
              f"{s['volume_ml']:.3f} ml")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "phantom_types.json").write_text(json.dumps({"timing": timing, "sizes": sizes}, indent=2))
    if not a.no_results_md:
        from _report import machine_line, write_section

        lines = [BEGIN, "## Phantom anatomy: basic vs full (six tumor types)", "",
                 f"`python benchmarks/bench_phantom_types.py --n {a.n}"
                 + (" --diffusion-model DIR" if a.diffusion_model else "") + f"`; {machine_line()}", "",
                 f"Seconds per case at 1.5 mm (96 x 96 x 64, median of {a.n}, interleaved): basic "
                 f"{timing['basic_s_per_case']} s, full {timing['full_s_per_case']} s, ratio {timing['ratio']}.", "",
                 "| type | maker | kind | max axial diameter (mm) | volume (ml) |", "|---|---|---|---|---|"]
        lines += [f"| {s['type']} | {s['maker']} | {s['kind'] or ''} | {s['max_axial_diameter_mm']:.1f} | "
                  f"{s['volume_ml']:.3f} |" for s in sizes]
        lines += ["", "Montage: `benchmarks/six_tumor_types.png`.", END]
        write_section(HERE / "RESULTS.md", BEGIN, END, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
