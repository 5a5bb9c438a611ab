"""Typed configs: one dataclass per section, YAML holds values only.

``load_config(Cls, path, overrides)`` builds ``Cls`` from a YAML file; unknown
keys and wrong types are errors that name the key and the file; ``--set a.b=v``
overrides are parsed as YAML scalars (``a.lr=1e-3``, ``a.flag=true``,
``a.sizes=[1,2]``). ``save_config`` writes the resolved config into a run folder.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cohort.io import write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that does not match its dataclass. The message names the key and source."""


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and floats: only true/false are booleans, so ``no``,
    ``yes``, ``on`` and ``off`` stay the text they are (``mixed_precision: no`` is the string
    "no"), and ``1e-3`` is a number (YAML 1.1 wants ``1.0e-3``)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text with YAML 1.2 booleans (see :class:`_Yaml12Loader`)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {' | '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        seq = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if (origin is tuple or tp is tuple) else seq
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A numeric config field with a range, checked at load time: ``steps: int = bounded(1000, ge=1)``.
    A value outside the range is a :class:`ConfigError` naming the key and the range."""
    return dataclasses.field(default=default, metadata={"range": {"ge": ge, "gt": gt, "le": le, "lt": lt}})


def _check_range(value: Any, rng: dict, where: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    ops = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for key, bound in rng.items():
        if bound is None:
            continue
        ok, sym = ops[key]
        if not ok(value, bound):
            wanted = " and ".join(f"{ops[k][1]} {b:g}" for k, b in rng.items() if b is not None)
            raise ConfigError(f"{where}: must be {wanted}, got {value!r}")


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown key(s) {unknown} for {cls.__name__}; "
                          f"known: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    for k, v in kwargs.items():
        if "range" in fields[k].metadata:
            _check_range(v, fields[k].metadata["range"], f"{where}.{k}" if where else k)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def check_choices(cfg: Any, where: str = "") -> None:
    """Check the ``Literal`` fields of a config built or changed in code (the loader checks the
    ones it reads), recursing into sections and lists; ConfigError "<key>: must be one of [...]"."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_choice(getattr(cfg, f.name), hints[f.name], f"{where}.{f.name}" if where else f.name)


def _check_choice(value: Any, tp: Any, where: str) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        check_choices(value, where)
    elif origin in (typing.Union, types.UnionType) and value is not None:
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            _check_choice(value, options[0], where)
    elif origin in (list, tuple, Sequence) and isinstance(value, (list, tuple)) and args:
        fixed = origin is tuple and args[-1] is not Ellipsis
        for i, v in enumerate(value):
            _check_choice(v, args[i] if fixed and i < len(args) else args[0], f"{where}[{i}]")


def _set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    return key.strip(), yaml_load(raw) if raw.strip() else ""


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def from_dict(cls: type[T], data: dict | None, overrides: Sequence[str] = (), source: str = "<dict>") -> T:
    data = dict(data or {})
    # merge overrides onto the defaults-plus-file values
    merged = to_dict(cls()) if _has_all_defaults(cls) else {}
    _merge_sections(cls, merged, data)
    for ov in overrides:
        key, value = parse_override(ov)
        _set_path(merged, key, value)
    try:
        return _build(cls, merged, "")
    except ConfigError as e:  # one line: "<file>: <key>: <problem>"
        raise ConfigError(f"{source}: {e}") from None


def _merge_sections(cls: type, dst: dict, src: dict) -> None:
    """Merge file values onto defaults: dataclass sections merge key by key; every other value,
    dict-valued fields included (a size mix, a label map), is replaced whole, so a default key
    the file leaves out does not survive into the config."""
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    for k, v in src.items():
        tp = hints.get(k)
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and tp is not None and dataclasses.is_dataclass(tp):
            _merge_sections(tp, dst[k], v)
        else:
            dst[k] = v


def _has_all_defaults(cls: type) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from YAML at ``path`` (or defaults when None) plus ``--set`` overrides."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        data = read_yaml_mapping(path)
        source = str(path)
    return from_dict(cls, data, overrides, source)


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: {what} does not exist")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config (every value, defaults included) atomically."""
    return write_text(path, dump_config(cfg))


def config_dir() -> Path:
    """The configs shipped with the package (``configs/``)."""
    import configs

    return Path(configs.__file__).parent
