from dataclasses import dataclass, field

import pytest

from cohort.config import ConfigError, load_config, save_config


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
