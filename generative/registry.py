"""The synthesizer registry: every tumor maker under one name, with its config class.

One explicit dict from name to :class:`SynthesizerEntry` (the synthesizer's factory, its
typed config dataclass, the tumor types it makes). Everything that names a tumor maker
reads it: ``tumorgen synthesize --method`` (its choices), the synthesis config loader
(``params`` are checked against the entry's config class), the scaling study's synthetic
sources, and on-the-fly synthesis in segmentation training (``onthefly.method``).

Adding a tumor maker is one module plus one YAML::

    @dataclass
    class BlobConfig:
        contrast_hu: float = -40.0

    class BlobSynthesizer:
        name = "blob"
        def __init__(self, config: BlobConfig): ...
        def __call__(self, ct_hu, label, spacing, spec, rng) -> SynthesisResult: ...

    register_synthesizer("blob", BlobConfig, BlobSynthesizer, organs=("liver",))

and ``configs/generative/synth_blob.yaml`` with ``method: blob`` and its ``params``.
The built-in makers ("ca", "rules", "diffusion") register themselves here on first use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cohort.config import ConfigError, from_dict, to_dict

#: the solid-organ tumor types (the organs the published CA / rule / diffusion recipes were built on)
SOLID_ORGANS: tuple[str, ...] = ("liver", "pancreas", "kidney")
#: all six tumor types of AbdomenAtlas 2.0 (issue 18: colon and esophagus grow from the wall)
ALL_ORGANS: tuple[str, ...] = (*SOLID_ORGANS, "colon", "esophagus", "uterus")


@dataclass(frozen=True)
class SynthesizerEntry:
    """name -> how to build it. ``factory(config)`` returns a
    :class:`generative.tumors.base.Synthesizer`; ``config_cls`` is its typed config (every
    field with a default); ``organs`` the tumor types it supports; ``needs_model``: the
    config must name a trained model folder."""

    name: str
    config_cls: type
    factory: Callable[[Any], Any]
    organs: tuple[str, ...] = SOLID_ORGANS
    needs_model: bool = False
    description: str = ""


_REGISTRY: dict[str, SynthesizerEntry] = {}
_BUILTINS_LOADED = False


def register_synthesizer(name: str, config_cls: type, factory: Callable[[Any], Any],
                         organs: tuple[str, ...] = SOLID_ORGANS, needs_model: bool = False, description: str = "",
                         replace: bool = False) -> SynthesizerEntry:
    """Add a tumor maker. ``replace=False`` refuses a name already taken."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"register_synthesizer({name!r}): config_cls must be a dataclass, got {config_cls!r}")
    _load_builtins()
    if name in _REGISTRY and not replace:
        raise ValueError(f"synthesizer {name!r} is already registered ({_REGISTRY[name].description})")
    e = SynthesizerEntry(name, config_cls, factory, tuple(organs), needs_model, description)
    _REGISTRY[name] = e
    return e


def unregister_synthesizer(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from generative.diffusion.config import DiffusionMakerConfig
    from generative.tumors.ca import CAConfig, CASynthesizer
    from generative.tumors.rules import RulesConfig, RuleSynthesizer

    # the diffusion maker places tumors like the rules (interior of solid organs, the wall band of
    # colon and esophagus) and conditions on the organs of its model; how well it draws a colon or
    # esophageal tumor depends on that model having been trained on them (controlnet.organs)
    for e in (
        SynthesizerEntry("ca", CAConfig, CASynthesizer, ALL_ORGANS, False,
                         "cellular automaton (Pixel2Cancer, Lai et al. MICCAI 2024; wall seeds in colon/esophagus)"),
        SynthesizerEntry("rules", RulesConfig, RuleSynthesizer, ALL_ORGANS, False,
                         "rule-based ellipsoids (SyntheticTumors, Hu et al. CVPR 2023; wall placement in "
                         "colon/esophagus)"),
        SynthesizerEntry("diffusion", DiffusionMakerConfig, _build_diffusion, ALL_ORGANS, True,
                         "ControlNet latent diffusion inpainting (this project's generator; wall placement in "
                         "colon/esophagus)"),
    ):
        _REGISTRY.setdefault(e.name, e)


def _build_diffusion(cfg: Any) -> Any:
    from generative.diffusion.inpaint import build_diffusion_synthesizer  # torch + MONAI: imported when used

    return build_diffusion_synthesizer(cfg)


def synthesizer_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_entry(name: str) -> SynthesizerEntry:
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown synthesizer {name!r}; registered: {synthesizer_names()}")
    return _REGISTRY[name]


def organ_type(organ: str) -> str:
    """The tumor type of an organ type or name ("kidney_left" -> "kidney", "colon" -> "colon")."""
    from cohort import labels as L

    if organ in L.ORGAN_TYPES:
        return organ
    lesion = L.ORGAN_TO_LESION.get(L.canonical_name(organ))
    return L.LESION_TO_ORGAN_TYPE.get(lesion, organ) if lesion else organ


def supports(name: str, organ: str) -> bool:
    """Whether the registered maker ``name`` makes tumors of ``organ`` (a type or organ name)."""
    return organ_type(organ) in get_entry(name).organs


def check_supported(name: str, organs, where: str = "") -> None:
    """Raise ValueError naming the maker, the organ and what it supports when ``name`` cannot
    make tumors in one of ``organs``."""
    e = get_entry(name)
    bad = sorted({o for o in organs if organ_type(o) not in e.organs})
    if bad:
        pre = f"{where}: " if where else ""
        raise ValueError(f"{pre}tumor maker {name!r} does not support tumors of {', '.join(map(repr, bad))}; "
                         f"it supports {', '.join(e.organs)}")


def make_config(name: str, params: dict[str, Any] | Any | None = None, where: str = "params") -> Any:
    """The typed config of ``name`` from a mapping (strict: unknown keys and wrong types are
    :class:`cohort.config.ConfigError` naming ``where``), an instance, or None (defaults)."""
    e = get_entry(name)
    if params is None:
        return e.config_cls()
    if isinstance(params, e.config_cls):
        return params
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: expected a mapping for {e.config_cls.__name__}, got {type(params).__name__}")
    return from_dict(e.config_cls, params, source=where)


def build_synthesizer(name: str, params: dict[str, Any] | Any | None = None, where: str = "params") -> Any:
    """The synthesizer ``name`` built from its config (mapping, instance or None)."""
    e = get_entry(name)
    cfg = make_config(name, params, where)
    if e.needs_model and not getattr(cfg, "model", ""):
        raise ConfigError(f"{where}: synthesizer {name!r} needs a trained model folder (set model: DIR)")
    return e.factory(cfg)


def resolve_onthefly(method: str, params: dict[str, Any], where: str = "onthefly.params") -> tuple[Any, Callable]:
    """(synthesizer, spec_for) for on-the-fly synthesis in training.

    ``params`` keys that are :class:`generative.tumors.base.TumorSpec` fields (size,
    diameter_mm, steps, count) shape every tumor; the rest configure the synthesizer.
    """
    from generative.tumors.base import TumorSpec

    spec_keys = {f.name for f in dataclasses.fields(TumorSpec)} - {"organ"}
    spec_kw = {k: v for k, v in params.items() if k in spec_keys}
    synth_kw = {k: v for k, v in params.items() if k not in spec_keys}
    synth = build_synthesizer(method, synth_kw, where)

    def spec_for(organ: str, rng) -> TumorSpec:
        check_supported(method, [organ], where)
        return TumorSpec(organ=organ, **spec_kw)

    return synth, spec_for


def describe() -> list[dict[str, Any]]:
    """One row per registered maker (name, tumor types, needs a model, description, defaults)."""
    _load_builtins()
    return [{"name": e.name, "organs": list(e.organs), "needs_model": e.needs_model, "description": e.description,
             "config": e.config_cls.__name__, "defaults": to_dict(e.config_cls())} for e in _REGISTRY.values()]
