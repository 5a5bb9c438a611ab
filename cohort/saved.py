"""One saved-model format for every network of the product (diffusion autoencoder / UNet /
ControlNet, segmentation networks, the quality filter's discriminator).

A saved model is a folder: ``config.json`` and ``model.safetensors`` (the weights, float tensors,
contiguous, written atomically). ``config.json`` is::

    {"format": 1, "model_type": "<autoencoder|unet|controlnet|segmentation|discriminator>",
     "kwargs": {<constructor arguments>}, ...<the model type's own keys>}

so ``from_pretrained(dir)`` rebuilds any of them without a training YAML (the diffusers
convention). Folders written before this format still load: :func:`read_config` converts the two
older schemas (segmentation's ``{"name", "kwargs"}`` and the discriminator's ``{"model", "class"}``)
and names the file when it cannot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cohort.errors import CohortError
from cohort.io import atomic_path, write_json

FORMAT = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_folder(directory: str | Path, model_type: str, kwargs: dict[str, Any], state_dict: dict[str, Any],
                **extra: Any) -> Path:
    """Write ``config.json`` (format, model_type, kwargs, extra keys) and ``model.safetensors``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    write_json(directory / CONFIG_NAME, {"format": FORMAT, "model_type": model_type, "kwargs": kwargs, **extra})
    return directory


def _convert_legacy(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    if "model_type" in cfg and "kwargs" in cfg:  # the diffusion networks' schema: already this one
        return {"format": FORMAT, **cfg}
    if "name" in cfg and "kwargs" in cfg:  # segmentation networks before the one format
        return {"format": FORMAT, "model_type": "segmentation", "network": cfg["name"], "kwargs": cfg["kwargs"]}
    if "model" in cfg and isinstance(cfg["model"], dict):  # the discriminator before the one format
        rest = {k: v for k, v in cfg.items() if k not in ("model", "class")}
        return {"format": FORMAT, "model_type": "tumor_discriminator", "kwargs": cfg["model"], **rest}
    raise CohortError(path, "not a saved model of this product (no model_type/kwargs); re-export it with the "
                            "command that trained it, or rebuild the network and save it with save_pretrained")


def read_config(directory: str | Path, model_type: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The folder's ``config.json`` in the current schema; errors name the file. ``model_type``:
    the type(s) expected (a folder holding another model type is an error saying which it holds)."""
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise CohortError(path, f"missing: a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CohortError(path, f"invalid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CohortError(path, "config.json must hold a JSON object")
    fmt = raw.get("format", 0)
    if isinstance(fmt, int) and fmt > FORMAT:
        raise CohortError(path, f"written by a newer version (format {fmt}; this one reads up to {FORMAT}): upgrade")
    cfg = _convert_legacy(raw, path)
    wanted = (model_type,) if isinstance(model_type, str) else model_type
    if wanted and cfg["model_type"] not in wanted:
        raise CohortError(path, f"holds a {cfg['model_type']!r}, expected {' or '.join(map(repr, wanted))}")
    return cfg


def load_weights(directory: str | Path, device: str = "cpu") -> dict[str, Any]:
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.exists():
        raise CohortError(path, f"missing: a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    return load_file(str(path), device=str(device))
