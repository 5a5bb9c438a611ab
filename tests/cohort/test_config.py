from dataclasses import dataclass, field
from typing import Literal

import pytest

from cohort.config import ConfigError, bounded, check_choices, load_config, save_config


@dataclass
class Optim:
    name: str = "sgd"
    lr: float = 0.01


@dataclass
class Run:
    optim: Optim = field(default_factory=Optim)
    mix: dict[str, float] = field(default_factory=lambda: {"tiny": 0.5, "large": 0.5})
    steps: int = 10
    patch: tuple[int, int, int] = (96, 96, 96)
    organs: list[str] = field(default_factory=lambda: ["liver"])
    note: str | None = None


def test_yaml_overrides_and_resolved_copy(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 0.1\nsteps: 5\n")
    cfg = load_config(Run, p, ["optim.name=adamw", "patch=[64,64,32]", "note=hi"])
    assert cfg.optim == Optim("adamw", 0.1) and cfg.steps == 5 and cfg.patch == (64, 64, 32) and cfg.note == "hi"
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Run, tmp_path / "run" / "config.yaml") == cfg


@pytest.mark.parametrize("text,match", [
    ("stepz: 3\n", r"unknown key\(s\) \['stepz'\]"),
    ("optim:\n  momentum: 0.9\n", r"optim: unknown key\(s\) \['momentum'\]"),
    ("steps: ten\n", r"steps: expected an integer, got 'ten'"),
    ("optim:\n  lr: fast\n", r"optim.lr: expected a number"),
    ("patch: [1, 2]\n", r"patch: expected 3 items"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_bad_configs_name_the_key_and_file(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(Run, p)
    assert "bad.yaml" in str(e.value)


def test_bad_override():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(Run, None, ["steps"])
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        load_config(Run, None, ["steps=1.5"])


def test_dict_fields_are_replaced_not_merged(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("mix: {tiny: 0.2, small: 0.8}\noptim:\n  lr: 0.5\n")
    cfg = load_config(Run, p)
    assert cfg.mix == {"tiny": 0.2, "small": 0.8}  # the default's "large" must not survive
    assert cfg.optim == Optim("sgd", 0.5)  # sections still merge with their defaults
    assert load_config(Run, p, ["mix.large=0.1"]).mix == {"tiny": 0.2, "small": 0.8, "large": 0.1}


@dataclass
class Prec:
    mixed_precision: str = "auto"
    lr: float = 0.1
    flag: bool = False


@pytest.mark.parametrize("word", ["no", "yes", "on", "off"])
def test_yaml_words_stay_strings_in_files_and_set(tmp_path, word):
    p = tmp_path / "c.yaml"
    p.write_text(f"mixed_precision: {word}\n")
    assert load_config(Prec, p).mixed_precision == word
    assert load_config(Prec, None, [f"mixed_precision={word}"]).mixed_precision == word


def test_yaml_exponent_floats_and_true_booleans(tmp_path):
    cfg = load_config(Prec, None, ["lr=1e-3", "flag=true"])
    assert cfg.lr == 1e-3 and cfg.flag is True
    with pytest.raises(ConfigError, match="flag: expected true/false, got 'yes'"):
        load_config(Prec, None, ["flag=yes"])


@dataclass
class Ranged:
    steps: int = bounded(10, ge=1)
    prob: float = bounded(0.5, ge=0, le=1)


@pytest.mark.parametrize("override,match", [("steps=-5", "steps: must be >= 1, got -5"),
                                            ("prob=1.5", "prob: must be >= 0 and <= 1, got 1.5")])
def test_ranges_are_checked_at_load_time_naming_file_and_key(tmp_path, override, match):
    p = tmp_path / "r.yaml"
    p.write_text("steps: 3\n")
    with pytest.raises(ConfigError, match=f"^{p}: {match}$"):
        load_config(Ranged, p, [override])
    assert load_config(Ranged, p).steps == 3


def test_shipped_training_configs_refuse_negative_steps():
    from cohort.config import config_dir
    from generative.diffusion.config import GenerativeConfig
    from segmentation.config import load_seg_config

    with pytest.raises(ConfigError, match="train.steps: must be >= 1, got -5"):
        load_config(GenerativeConfig, config_dir() / "demo" / "generative_demo.yaml", ["train.steps=-5"])
    with pytest.raises(ConfigError, match="train.max_steps: must be >= 1"):
        load_seg_config(None, ["train.max_steps=0"])


@dataclass
class Choice:
    kind: Literal["a", "b"] = "a"
    kinds: list[Literal["x", "y"]] = field(default_factory=list)
    maybe: Literal["p", "q"] | None = None


@dataclass
class Choices:
    inner: Choice = field(default_factory=Choice)
    items: list[Choice] = field(default_factory=list)


@pytest.mark.parametrize("override,match", [
    ("inner.kind=c", r"inner.kind: must be one of \['a', 'b'\], got 'c'"),
    ("inner.kinds=[x, z]", r"inner.kinds\[1\]: must be one of \['x', 'y'\], got 'z'"),
    ("items=[{kind: b}, {kind: d}]", r"items\[1\].kind: must be one of \['a', 'b'\], got 'd'"),
])
def test_literal_choices_are_checked_at_load_time(override, match):
    with pytest.raises(ConfigError, match=f"^<defaults>: {match}$"):
        load_config(Choices, None, [override])
    assert load_config(Choices, None, ["inner.kinds=[y]", "inner.maybe=q"]).inner == Choice("a", ["y"], "q")


def test_check_choices_covers_configs_built_in_code():
    check_choices(Choices(Choice("b", ["x"], "p"), [Choice()]))
    for cfg, match in [(Choices(Choice(kind="c")), r"^inner.kind: must be one of \['a', 'b'\], got 'c'$"),
                       (Choices(items=[Choice(), Choice(kinds=["z"])]), r"^items\[1\].kinds\[0\]: must be one of"),
                       (Choices(Choice(maybe="r")), r"^inner.maybe: must be one of \['p', 'q'\]")]:
        with pytest.raises(ConfigError, match=match):
            check_choices(cfg)
