import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segmentation.config import SegConfigError
from segmentation.networks import build_network, load_model, network_kwargs
from segmentation.train import main as train_main
from segmentation.train import train_segmentation
from tests.segmentation.helpers import tiny_config
from tests.segmentation.test_data import FakeSynth


def _mixed(cohorts, **kw):
    return tiny_config([{"name": "real", "path": str(cohorts["real"]), "weight": 1.0},
                        {"name": "synthetic", "path": str(cohorts["synthetic"]), "kind": "synthetic", "weight": 3.0}],
                       **kw)


def test_three_steps_finite_loss_and_a_self_describing_run(cohorts, tmp_path):
    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}])
    model_dir = train_segmentation(cfg, tmp_path / "run", show=False)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    assert summary["val_cases"] and set(summary["val"]) >= {"dice/liver", "dice/mean"}
    assert not set(summary["val_cases"]) & set(summary["train_cases"]["real"])  # held out
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "step_0000003").is_dir()
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "segmentation.json"}
    m = load_model(model_dir)
    assert m.classes == ["liver", "liver_lesion", "kidney"] and m.data.patch_size == [16, 16, 16]
    x = torch.rand(1, 1, 16, 16, 16)
    assert m.net(x).shape == (1, 4, 16, 16, 16)


def test_resume_continues_the_same_run(cohorts, tmp_path):
    straight = _mixed(cohorts, train={"max_steps": 5, "save_every": 5, "val_every": 100, "schedule": "constant"})
    train_segmentation(straight, tmp_path / "a", show=False)
    first = _mixed(cohorts, train={"max_steps": 3, "save_every": 3, "val_every": 100, "schedule": "constant"})
    train_segmentation(first, tmp_path / "b", show=False)
    train_segmentation(straight, tmp_path / "b", resume=True, show=False)
    a = json.loads((tmp_path / "a" / "source_counts.json").read_text())
    b = json.loads((tmp_path / "b" / "source_counts.json").read_text())
    assert b["total_patches"] == 10 == a["total_patches"]
    # the resumed run drew exactly what the uninterrupted run drew
    assert {k: v["patches"] for k, v in a["sources"].items()} == {k: v["patches"] for k, v in b["sources"].items()}
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert sb["steps"] == 5 and sb["steps_this_session"] == 2
    wa = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4


def test_real_synthetic_one_to_three_records_counts(cohorts, tmp_path):
    cfg = _mixed(cohorts, train={"max_steps": 20, "batch_size": 4, "val_every": 100, "save_every": 100},
                 data={"augment": False})
    train_segmentation(cfg, tmp_path / "run", show=False)
    counts = json.loads((tmp_path / "run" / "source_counts.json").read_text())
    src = counts["sources"]
    assert counts["total_patches"] == 80
    assert src["real"]["patches"] + src["synthetic"]["patches"] == 80
    assert src["synthetic"]["expected_fraction"] == 0.75
    assert 0.55 <= src["synthetic"]["fraction"] <= 0.95  # 80 draws of p = 0.75
    assert src["real"]["cases"] == 3 and src["synthetic"]["cases"] == 3  # one real case held out for validation


def test_onthefly_synthesis_is_recorded(cohorts, tmp_path):
    cfg = tiny_config([{"name": "healthy", "path": str(cohorts["healthy"])}],
                      onthefly={"method": "fake", "prob": 1.0, "organs": ["liver"]},
                      train={"max_steps": 2, "val_every": 100}, data={"val_fraction": 0.0})
    with pytest.raises(SegConfigError, match="synthesizer"):
        train_segmentation(cfg, tmp_path / "no", show=False)
    synth = FakeSynth()
    train_segmentation(cfg, tmp_path / "run", synthesizer=synth, show=False)
    src = json.loads((tmp_path / "run" / "source_counts.json").read_text())["sources"]["healthy"]
    assert src["patches"] == 4 and src["onthefly_tumors"] == 4 == len(synth.calls)


def test_module_entry_point_runs(cohorts, tmp_path):
    from segmentation.config import default_config_path

    rc = train_main(["--config", str(default_config_path("tiny")), "--run-dir", str(tmp_path / "cli"),
                     "--set", f"sources=[{{name: real, path: {cohorts['real']}}}]", "--set", "train.max_steps=1"])
    assert rc == 0 and (tmp_path / "cli" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("name", ["dynunet", "swinunetr"])
def test_other_monai_networks_build(name):
    cfg = tiny_config([{"name": "r", "path": "x"}], network={"name": name, "init_filters": 8})
    n = 64 if name == "swinunetr" else 32  # SwinUNETR's bottleneck is input / 32 and must exceed one voxel
    kw = network_kwargs(cfg.network, 4, [n] * 3)
    net = build_network(name, kw).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, n, n, n)).shape == (1, 4, n, n, n)
    json.dumps(kw)  # the constructor arguments go into config.json


@pytest.mark.slow
def test_overfits_one_phantom_case(tmp_path):
    """On one case, a tiny SegResNet reaches tumor Dice > 0.5 within 60 AdamW steps."""
    from cohort.layouts import write_case
    from segmentation.predict import dice_per_class, predict_cohort
    from tests.segmentation.helpers import make_case

    case = make_case("one", 42)
    write_case(case, tmp_path / "one")
    cfg = tiny_config([{"name": "one", "path": str(tmp_path / "one")}],
                      data={"augment": False, "val_fraction": 0.0, "pos_fraction": 0.8, "lesion_fraction": 0.6},
                      train={"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0, "max_steps": 60,
                             "schedule": "constant", "save_every": 60, "val_every": 1000, "batch_size": 2})
    train_segmentation(cfg, tmp_path / "run", show=False)
    predict_cohort(tmp_path / "run", tmp_path / "one", tmp_path / "pred", show=False)
    from cohort.io import read_label

    pred, _ = read_label(tmp_path / "pred" / "one.nii.gz")
    d = dice_per_class(pred.astype(np.uint8), case.label, 33)
    assert d[27] > 0.5, f"liver lesion Dice {d[27]:.3f}"  # stated bound: 0.5 after 60 steps
    assert d[5] > 0.8, f"liver Dice {d[5]:.3f}"


@pytest.mark.slow
def test_two_cpu_processes_train_and_count_every_process_draws(cohorts, tmp_path):
    """`python -m segmentation.train` under torchrun with 2 CPU processes: each process draws its own
    batches, the per-source counts add up both processes' patches, the model is exported once."""
    import subprocess

    from segmentation.config import default_config_path
    from tests.conftest import cpu_processes_cmd

    cmd, env = cpu_processes_cmd(2, "segmentation.train", "--config", str(default_config_path("tiny")),
                                 "--run-dir", str(tmp_path / "run"), "--set",
                                 f"sources=[{{name: real, path: {cohorts['real']}}}]", "--set", "train.max_steps=3")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = json.loads((tmp_path / "run" / "source_counts.json").read_text())
    assert counts["total_patches"] == 3 * 2 * 2  # steps x batch x processes
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["num_processes"] == 2 and np.isfinite(summary["final_loss"])
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_dataloader_workers_run_the_synthesis_and_draw_the_same_patches(cohorts, tmp_path):
    """data.num_workers > 0 (synthesis overlapping the step): the same patches are drawn per
    source as in the main process, and every on-the-fly tumor is counted."""
    runs = {}
    for workers in (0, 2):
        cfg = tiny_config([{"name": "healthy", "path": str(cohorts["healthy"])}],
                          onthefly={"method": "fake", "prob": 1.0, "organs": ["liver"]},
                          train={"max_steps": 3, "val_every": 100}, data={"val_fraction": 0.0, "num_workers": workers})
        train_segmentation(cfg, tmp_path / f"w{workers}", synthesizer=FakeSynth(), show=False)
        runs[workers] = json.loads((tmp_path / f"w{workers}" / "source_counts.json").read_text())["sources"]["healthy"]
    assert runs[2]["patches"] == runs[0]["patches"] == 6
    assert runs[2]["onthefly_tumors"] == runs[0]["onthefly_tumors"] == 6


def test_a_run_folder_holding_a_run_is_refused_unless_resume_or_overwrite(cohorts, tmp_path):
    from cohort.errors import CohortError

    cfg = tiny_config([{"name": "real", "path": str(cohorts["real"])}])
    run = tmp_path / "run"
    train_segmentation(cfg, run, show=False)
    weights = (run / "model" / "model.safetensors").read_bytes()
    with pytest.raises(CohortError, match="already holds a run") as e:
        train_segmentation(cfg, run, show=False)
    assert str(run) in str(e.value) and "resume" in str(e.value) and "overwrite" in str(e.value)
    assert (run / "model" / "model.safetensors").read_bytes() == weights
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000003"]
    with pytest.raises(ValueError, match="exclude each other"):
        train_segmentation(cfg, run, resume=True, overwrite=True, show=False)
    # the scaling study and the demo call with resume=True: a finished run is kept and re-exported
    train_segmentation(cfg, run, resume=True, show=False)
    assert json.loads((run / "summary.json").read_text())["steps_this_session"] == 0
    # overwrite: the earlier run's checkpoints go, training starts from step 0
    short = tiny_config([{"name": "real", "path": str(cohorts["real"])}], train={"max_steps": 2, "save_every": 2})
    train_segmentation(short, run, overwrite=True, show=False)
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 2 and s["steps_this_session"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000002"]
