"""Memory of the real-scale GPU configs, measured on CPU at reduced size and extrapolated (docs/WALKTHROUGH.md).

    nice -n 10 python benchmarks/measure_memory.py [--out memory.json]

Each configs/generative/gpu/{autoencoder,diffusion,controlnet}.yaml and configs/segmentation/gpu.yaml is run for
one optimizer step at batch 1 on two reduced crops (32^3 and 48^3 voxels; segmentation 64^3 and its full 96^3), everything else as shipped, each in a
fresh process on a toy cohort built in code (tests.toys). A run's memory is the process's peak RSS
(``resource.getrusage``) minus its peak RSS before training (imports, config, toy data). A straight line through
the two runs, memory = fixed + per_voxel x voxels, separates what does not grow with the crop (weights, gradients,
optimizer and EMA states, the discriminator) from what does (activations, which grow with voxels x batch), and is
extrapolated to the config's full crop and batch. fp32 on CPU: bf16 autocast on a GPU keeps most activations in half
the bytes, and a GPU's attention kernels need not hold the attention matrix; the numbers are estimates, not GPU
measurements. The autoencoder's adversarial warm-up is set to 0 so that the one step includes the discriminator.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CROPS = (32, 48)
#: segmentation activations are small: measured at 64^3 and the full 96^3 (at 32-48^3 the peak is the data's)
SEG_CROPS = (64, 96)
STAGES = ("autoencoder", "diffusion", "controlnet", "segmentation")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cohort(root: Path) -> Path:
    from cohort.layouts import write_case, write_manifest
    from tests.toys import toy_abdomen_case

    out = root / "cohort"
    if not out.exists():
        for i in range(2):
            write_case(toy_abdomen_case(f"toy_{i}", shape=(96, 96, 96), seed=i), out)
        write_manifest(out)
    return out


def child(stage: str, crop: int, root: Path) -> dict:
    """One optimizer step of ``stage`` at batch 1 and a ``crop``^3 crop; returns the RSS numbers (MB)."""
    sys.path.insert(0, str(ROOT))
    cohort = _cohort(root)
    size = f"[{crop},{crop},{crop}]"
    if stage == "segmentation":
        from segmentation.config import load_seg_config
        from segmentation.train import train_segmentation

        cfg = load_seg_config(ROOT / "configs" / "segmentation" / "gpu.yaml", [
            f"sources=[{{name: real, path: {cohort}}}]", f"data.patch_size={size}", "train.batch_size=1",
            "train.max_steps=1", "train.val_every=1000", "train.save_every=1000", "train.tracker=null",
            "data.num_workers=0", "data.val_fraction=0", "train.threads=2"])
        rss0 = _rss_mb()
        train_segmentation(cfg, root / f"seg_{crop}", show=False)
    else:
        from generative.train import train_stage

        prev = {"diffusion": "autoencoder", "controlnet": "diffusion"}.get(stage)
        sets = [f"data.cohort={cohort}", f"output_dir={root}", f"data.crop_size={size}", "data.crops_per_case=1",
                "train.steps=1", "train.batch_size=1", "train.save_every=1000", "train.cpu=true",
                "train.num_threads=2", "loss.perceptual=random", "loss.adv_warmup_steps=0"]
        if prev:
            sets.append(f"init_from={root / f'{prev}_32' / 'model'}")
        rss0 = _rss_mb()
        train_stage(stage, ROOT / "configs" / "generative" / "gpu" / f"{stage}.yaml", root / f"{stage}_{crop}",
                    overrides=sets, progress=False, overwrite=True)
    return {"stage": stage, "crop": crop, "rss_before_mb": round(rss0, 1), "peak_mb": round(_rss_mb(), 1)}


def full_size(stage: str) -> tuple[int, int]:
    """(voxels of one full crop, batch) of the shipped config."""
    import math

    from cohort.config import load_config

    if stage == "segmentation":
        from segmentation.config import load_seg_config

        cfg = load_seg_config(ROOT / "configs" / "segmentation" / "gpu.yaml")
        return math.prod(cfg.data.patch_size), cfg.train.batch_size
    from generative.diffusion.config import GenerativeConfig

    cfg = load_config(GenerativeConfig, ROOT / "configs" / "generative" / "gpu" / f"{stage}.yaml")
    return math.prod(cfg.data.crop_size), cfg.train.batch_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3, metavar=("STAGE", "CROP", "ROOT"), help=argparse.SUPPRESS)
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], int(args.child[1]), Path(args.child[2]))), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages:
            runs, crops = [], SEG_CROPS if stage == "segmentation" else CROPS
            for crop in crops:
                r = subprocess.run([sys.executable, __file__, "--child", stage, str(crop), tmp], capture_output=True,
                                   text=True, cwd=ROOT)
                line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
                if r.returncode or line is None:
                    print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
                    return 1
                runs.append(json.loads(line[7:]))
                print(runs[-1], flush=True)
            (v1, m1), (v2, m2) = ((c ** 3, r["peak_mb"] - r["rss_before_mb"]) for c, r in zip(crops, runs))
            per_voxel = (m2 - m1) / (v2 - v1)
            fixed = m1 - per_voxel * v1
            voxels, batch = full_size(stage)
            results[stage] = {"runs": runs, "fixed_mb": round(fixed, 1), "per_voxel_kb": round(per_voxel * 1024, 3),
                              "full_voxels": voxels, "batch": batch,
                              "extrapolated_gb": round((fixed + per_voxel * voxels * batch) / 1024, 1)}
            print(stage, results[stage], flush=True)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
