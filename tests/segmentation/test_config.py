import pytest

from cohort.config import ConfigError
from segmentation.config import SegConfigError, default_config_path, load_seg_config


@pytest.mark.parametrize("name", ["default", "tiny", "demo"])
def test_shipped_configs_load(name):
    cfg = load_seg_config(default_config_path(name))
    assert cfg.network.name == "segresnet"
    assert cfg.sources and all(s.path for s in cfg.sources)


def test_default_follows_the_paper_recipe():
    cfg = load_seg_config(default_config_path("default"))
    assert cfg.data.spacing == [1.5, 1.5, 1.5]
    assert (cfg.data.hu_min, cfg.data.hu_max) == (-175.0, 250.0)
    assert cfg.data.patch_size == [96, 96, 96]
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size) == ("sgd", 0.01, 2)
    assert cfg.infer.overlap == 0.5 and cfg.infer.tta
    assert [s.weight for s in cfg.sources] == [1.0, 3.0]


def test_unknown_key_is_an_error_naming_it(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_seg_config(p)


def test_overrides_and_value_checks():
    cfg = load_seg_config(default_config_path("tiny"), ["train.lr=0.5", "network.name=dynunet"])
    assert cfg.train.lr == 0.5 and cfg.network.name == "dynunet"
    with pytest.raises(ConfigError, match=r"tiny.yaml: network.name: must be one of \['segresnet', 'dynunet', "
                                          r"'swinunetr'\], got 'unet9000'"):
        load_seg_config(default_config_path("tiny"), ["network.name=unet9000"])
    with pytest.raises(SegConfigError, match="same vocabulary label"):
        load_seg_config(default_config_path("tiny"), ["classes=[kidney, kidney_left]"])
    with pytest.raises(SegConfigError, match="unknown label"):
        load_seg_config(default_config_path("tiny"), ["classes=[livr]"])
    # ranges are checked when the file is read (cohort.config.bounded), before the cross-field checks
    with pytest.raises(ConfigError, match=r"tiny.yaml: onthefly.prob: must be >= 0 and <= 1, got 2.0"):
        load_seg_config(default_config_path("tiny"), ["onthefly.method=ca", "onthefly.prob=2.0"])


def test_mixed_weights_are_rejected(tmp_path):
    p = tmp_path / "mix.yaml"
    p.write_text("sources:\n  - {name: a, path: x, weight: 1}\n  - {name: b, path: y}\n")
    with pytest.raises(SegConfigError, match="every source a weight"):
        load_seg_config(p)


@pytest.mark.parametrize("override,match", [
    ("train.optimizer=adam", r"train.optimizer: must be one of \['sgd', 'adamw'\], got 'adam'"),
    ("train.schedule=step", r"train.schedule: must be one of \['poly', 'cosine', 'constant'\], got 'step'"),
    ("infer.mode=mean", r"infer.mode: must be one of \['gaussian', 'constant'\], got 'mean'"),
    ("sources=[{name: a, path: x, kind: fake}]", r"sources\[0\].kind: must be one of \['real', 'synthetic'\]"),
])
def test_choices_are_checked_by_the_loader(override, match):
    with pytest.raises(ConfigError, match=match):
        load_seg_config(default_config_path("tiny"), [override])


def test_choices_of_a_config_built_in_code_are_checked_by_validate():
    from segmentation.config import SourceConfig, validate

    cfg = load_seg_config(default_config_path("tiny"))
    cfg.sources = [SourceConfig(name="a", path="x", kind="fake")]
    with pytest.raises(SegConfigError, match=r"^cell: sources\[0\].kind: must be one of \['real', 'synthetic'\]"):
        validate(cfg, "cell")
