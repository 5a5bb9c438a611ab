"""`tumorgen env`: what a bug report needs to say about the machine and the install."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path
from typing import Any

#: the distributions whose versions decide behaviour
PACKAGES = ("tumorgen", "torch", "monai", "diffusers", "accelerate", "numpy", "scipy", "nibabel", "lpips",
            "torchvision", "safetensors")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, devices, CPU capability, the precision ``auto`` picks, offline weight paths."""
    import torch

    from cohort.hardware import hardware_summary, resolve_precision
    from generative.diffusion.perceptual import BACKBONE_FILES, default_backbone_path

    hw = hardware_summary()
    gpu_auto = []
    for g in hw["gpus"]:
        p = resolve_precision("auto", f"cuda:{g['index']}")
        gpu_auto.append({"index": g["index"], "name": g["name"], "precision": p.label, "reason": p.reason})
    cpu_auto = resolve_precision("auto", "cpu")
    weights = {f"lpips_{net}": {"path": str(default_backbone_path(net)), "file": f,
                                "exists": default_backbone_path(net).exists()}
               for net, f in BACKBONE_FILES.items()}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {k: _version(k) for k in PACKAGES},
        "torch_build": {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
                        "mkldnn": bool(torch.backends.mkldnn.is_available())},
        "cpu": {"model": hw["cpu_model"], "cores": hw["cpu_count"], "capability": hw["cpu_capability"],
                "features": hw["cpu_features"], "bf16_native": hw["cpu_bf16_native"], "kind": hw["cpu_kind"],
                "torch_threads": hw["torch_threads"], "auto_precision": cpu_auto.label,
                "auto_reason": cpu_auto.reason},
        "cuda": {"available": hw["cuda_available"], "devices": hw["gpus"], "auto_precision": gpu_auto},
        "env_vars": hw["env"],
        "offline_weights": {
            "torch_home": os.environ.get("TORCH_HOME", str(Path.home() / ".cache" / "torch")),
            "note": "nothing is downloaded: LPIPS backbones are read from these paths or from "
                    "loss.perceptual_weights; without them use loss.perceptual: random or none",
            "files": weights,
        },
    }


def format_text(env: dict[str, Any]) -> str:
    c, g = env["cpu"], env["cuda"]
    lines = [f"python      {env['python']} on {env['platform']}",
             "versions    " + ", ".join(f"{k} {v or 'not installed'}" for k, v in env["versions"].items()),
             f"torch build cuda {env['torch_build']['cuda'] or 'none'}, mkldnn {env['torch_build']['mkldnn']}",
             f"cpu         {c['model']} ({c['cores']} cores, torch threads {c['torch_threads']})",
             f"            capability {c['capability']}; bf16 {'native' if c['bf16_native'] else 'emulated (slow)'}; "
             "features " + ", ".join(k for k, v in c["features"].items() if v),
             f"precision   auto on CPU -> {c['auto_precision']} ({c['auto_reason']})"]
    if g["available"]:
        for d, a in zip(g["devices"], g["auto_precision"]):
            lines.append(f"gpu {d['index']}       {d['name']}, {d['memory_gib']} GiB, compute {d['capability']}; "
                         f"auto -> {a['precision']}")
    else:
        lines.append("gpu         none visible (CUDA not available)")
    if env["env_vars"]:
        lines.append("env         " + ", ".join(f"{k}={v}" for k, v in env["env_vars"].items()))
    w = env["offline_weights"]
    lines.append(f"weights     {w['note']}")
    for name, f in w["files"].items():
        lines.append(f"            {name}: {f['path']} ({'found' if f['exists'] else 'missing'})")
    return "\n".join(lines)
