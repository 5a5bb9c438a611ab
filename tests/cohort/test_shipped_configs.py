"""Every shipped YAML loads with its dataclass and holds values only: no key repeats a code default.

The keys checked are those the loader merges onto the defaults: top-level keys, the keys of
dataclass sections (recursively), and a synthesis config's ``params`` (merged onto the maker's
config class, :func:`generative.registry.make_config`). Such a key "repeats the default" when
the file without it resolves to the same config (:func:`cohort.config.to_dict`, ``params``
through the maker's config class), so a dict- or list-valued key counts only when its whole
value is the default. Records (the items of a list, an optional section such as
``phantom:``) replace a default whole and are written out in full: their fields are not checked.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cohort.config import config_dir, load_config, read_yaml_mapping, to_dict

ROOT = config_dir()


def _generative(path: Path) -> Any:
    from generative.diffusion.config import GenerativeConfig

    return load_config(GenerativeConfig, path)


def _sample(path: Path) -> Any:
    from generative.diffusion.config import SampleSpec

    return load_config(SampleSpec, path)


def _synthesis(path: Path) -> Any:
    from generative.tumors.config import SynthesisConfig

    return load_config(SynthesisConfig, path)


def _filter(path: Path) -> Any:
    from generative.quality.config import FilterConfig

    return load_config(FilterConfig, path)


def _segmentation(path: Path) -> Any:
    from segmentation.config import load_seg_config

    return load_seg_config(path)


def _metrics(path: Path) -> Any:
    from evaluation.metrics import load_metrics_config

    return load_metrics_config(path)


def _scaling(path: Path) -> Any:
    from evaluation.scaling import load_scaling_config

    return load_scaling_config(path)


def _demo(path: Path) -> Any:
    from tumorgen.demo import DemoConfig

    return load_config(DemoConfig, path)


#: shipped YAML (glob relative to configs/) -> its loader; the first matching pattern wins
LOADERS: list[tuple[str, Callable[[Path], Any]]] = [
    ("generative/autoencoder.yaml", _generative),
    ("generative/diffusion.yaml", _generative),
    ("generative/controlnet.yaml", _generative),
    ("generative/phantom.yaml", _generative),
    ("demo/generative_*.yaml", _generative),
    ("generative/gpu/*.yaml", _generative),
    ("*/sample*.yaml", _sample),
    ("generative/synth_*.yaml", _synthesis),
    ("*/filter*.yaml", _filter),
    ("segmentation/*.yaml", _segmentation),
    ("evaluation/metrics.yaml", _metrics),
    ("evaluation/scaling*.yaml", _scaling),
    ("evaluation/study*.yaml", _scaling),
    ("demo/demo.yaml", _demo),
    ("demo/smoke.yaml", _demo),
]

#: shipped YAML that no dataclass reads, and why
NOT_DATACLASS_CONFIGS = {
    "demo/phantom_sites.yaml": "extra scanner sites, read by cohort.phantom.sites.load_sites",
    "accelerate/*.yaml": "accelerate's own launch config",
}

#: (file, dotted key) kept although it equals the default, each with the reason it stays
ALLOWED_DEFAULTS: dict[tuple[str, str], str] = {
    ("generative/autoencoder.yaml", "stage"): "autoencoder, diffusion and controlnet.yaml each name their stage; "
                                              "autoencoder merely happens to be the default",
    ("generative/synth_ca.yaml", "method"): "every synth_<name>.yaml names its method (docs/ARCHITECTURE.md, "
                                            "'to add a tumor maker'); ca merely happens to be the default",
}


def shipped_files() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.yaml"))


def loader_for(rel: str) -> Callable[[Path], Any] | None:
    return next((fn for pat, fn in LOADERS if fnmatch.fnmatch(rel, pat)), None)


def dataclass_configs() -> list[str]:
    return [f for f in shipped_files() if loader_for(f) is not None]


def resolved(cfg: Any) -> Any:
    """The config as plain data, a synthesis config's ``params`` through the maker's config class."""
    from generative.tumors.config import SynthesisConfig

    data = to_dict(cfg)
    if isinstance(cfg, SynthesisConfig):
        data["params"] = to_dict(cfg.synthesizer_config())
    return data


def _merged_keys(cls: type, node: dict, path: tuple = ()) -> Iterator[tuple]:
    """The keys of ``node`` that merge onto ``cls``'s defaults, as paths, parents first."""
    from generative.registry import get_entry
    from generative.tumors.config import SynthesisConfig

    hints = typing.get_type_hints(cls)
    for k, v in node.items():
        yield (*path, k)
        if not isinstance(v, dict):
            continue
        if dataclasses.is_dataclass(hints.get(k)):
            yield from _merged_keys(hints[k], v, (*path, k))
        elif cls is SynthesisConfig and k == "params":
            maker = get_entry(node.get("method", SynthesisConfig.method)).config_cls
            yield from _merged_keys(maker, v, (*path, k))


def _without(data: Any, path: tuple) -> Any:
    if len(path) == 1:
        return {k: v for k, v in data.items() if k != path[0]}
    return {k: (_without(v, path[1:]) if k == path[0] else v) for k, v in data.items()}


def repeated_defaults(path: Path, load: Callable[[Path], Any], scratch: Path) -> list[str]:
    """Dotted keys of the YAML at ``path`` whose removal leaves the resolved config unchanged.
    A key whose whole value is the default is listed once (its children are not)."""
    data = read_yaml_mapping(path)
    cfg = load(path)
    want = resolved(cfg)
    found: list[tuple] = []
    for key in _merged_keys(type(cfg), data):
        if any(key[:len(f)] == f for f in found):
            continue
        scratch.write_text(yaml.safe_dump(_without(data, key), sort_keys=False))
        try:
            same = resolved(load(scratch)) == want
        except (ValueError, TypeError):  # without it the file does not load: the key is needed
            same = False
        if same:
            found.append(key)
    return [".".join(k) for k in found]


def shipped_repeats(rel: str, tmp_path: Path) -> list[str]:
    load = loader_for(rel)
    assert load is not None, rel
    return repeated_defaults(ROOT / rel, load, tmp_path / Path(rel).name)


def test_every_shipped_yaml_is_checked_or_named_as_not_a_dataclass_config():
    files = shipped_files()
    assert len(files) > 20
    unknown = [f for f in files if loader_for(f) is None
               and not any(fnmatch.fnmatch(f, pat) for pat in NOT_DATACLASS_CONFIGS)]
    assert not unknown, f"add these to LOADERS (or NOT_DATACLASS_CONFIGS with a reason): {unknown}"


@pytest.mark.parametrize("rel", dataclass_configs())
def test_shipped_yaml_holds_no_default(rel, tmp_path):
    extra = [k for k in shipped_repeats(rel, tmp_path) if (rel, k) not in ALLOWED_DEFAULTS]
    assert not extra, f"configs/{rel} repeats the code default of {extra}: leave these keys out"


def test_allowed_defaults_are_still_defaults(tmp_path):
    stale = [(rel, key) for rel, key in ALLOWED_DEFAULTS if key not in shipped_repeats(rel, tmp_path)]
    assert not stale, f"no longer a repeated default (drop them from ALLOWED_DEFAULTS): {stale}"


def test_the_checker_finds_repeated_defaults_and_leaves_values_alone(tmp_path):
    """A section's key equal to its default is found; a dict value is compared whole (its
    "tiny" equal to the default's is still part of a value); a list equal to the default is
    found; maker params are compared through the maker's config class."""
    from generative.diffusion.config import SampleSpec

    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 0\ntumors_max: 2\nsize_mix: {tiny: 0.25, small: 0.75}\n"
                    "inpaint: {steps: 30, sampler: ddim}\n")
    assert repeated_defaults(spec, lambda p: load_config(SampleSpec, p), tmp_path / "s.yaml") == [
        "seed", "inpaint.steps"]
    synth = tmp_path / "synth.yaml"
    synth.write_text("method: ca\nspecs: [{organ: liver}]\nparams: {compat: false, min_steps: 6}\n")
    assert repeated_defaults(synth, _synthesis, tmp_path / "s.yaml") == ["method", "specs", "params.compat"]


def _choice_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, tuple, bool]]:
    """(dotted key, choices, is a list) of every Literal field of ``cls``'s sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if typing.get_origin(tp) is typing.Literal:
            yield key, typing.get_args(tp), False
        elif typing.get_origin(item) is typing.Literal:
            yield key, typing.get_args(item), True
        elif dataclasses.is_dataclass(tp):
            yield from _choice_fields(tp, key + ".")


def _config_classes() -> list[tuple[type, Callable[[list[str]], Any]]]:
    from evaluation.metrics import MetricsConfig
    from generative.diffusion.config import GenerativeConfig, SampleSpec
    from generative.quality.config import FilterConfig
    from segmentation.config import SegConfig, load_seg_config

    plain = [GenerativeConfig, SampleSpec, FilterConfig, MetricsConfig]
    return [*((c, lambda ov, c=c: load_config(c, None, ov)) for c in plain),
            (SegConfig, lambda ov: load_seg_config(None, ov))]


def test_every_choice_field_is_refused_by_the_loader_naming_key_and_choices():
    import re

    from cohort.config import ConfigError

    seen = []
    for cls, load in _config_classes():
        for key, choices, is_list in _choice_fields(cls):
            seen.append(key)
            override = f"{key}=[bogus]" if is_list else f"{key}=bogus"
            where = f"{key}[0]" if is_list else key
            with pytest.raises(ConfigError, match=re.escape(f"{where}: must be one of {list(choices)}, got 'bogus'")):
                load([override])
    # the hand-written checks these replaced (and the cohort.hardware choices) are all covered
    for key in ("stage", "scheduler.kind", "scheduler.prediction_type", "scheduler.sample_method", "loss.perceptual",
                "loss.perceptual_net", "inpaint.sampler", "train.hard_negatives", "audit.probes", "filters",
                "policy.kind", "model.norm", "network.name", "train.optimizer", "train.schedule", "infer.mode",
                "train.mixed_precision", "train.memory_format", "overlap_rule", "diameter_rule"):
        assert key in seen, key
