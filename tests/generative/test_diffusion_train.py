"""The three training stages on a tiny config: finite losses, export, save/resume, kills."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from cohort.config import config_dir, load_config
from cohort.layouts import write_case
from generative.diffusion.config import GenerativeConfig
from generative.diffusion.pipeline import LatentDiffusionPipeline
from generative.diffusion.training import latest_checkpoint
from generative.train import train_stage
from tests.toys import toy_abdomen_case

TINY = config_dir() / "demo" / "generative_tiny.yaml"


def _cfg(cohort, **over) -> GenerativeConfig:
    sets = [f"data.cohort={cohort}", "train.num_threads=2"] + [f"{k.replace('__', '.')}={v}" for k, v in over.items()]
    return load_config(GenerativeConfig, TINY, sets)


def _summary(run_dir):
    return json.loads((run_dir / "train_summary.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy cohort and the three stages trained 3 steps each (shared by the tests here)."""
    root = tmp_path_factory.mktemp("gen")
    for i in range(2):
        write_case(toy_abdomen_case(f"toy_{i}", seed=i), root / "cohort")
    ae = train_stage("autoencoder", _cfg(root / "cohort"), root / "ae", progress=False)
    dm = train_stage("diffusion", _cfg(root / "cohort", init_from=ae), root / "dm", progress=False)
    cn = train_stage("controlnet", _cfg(root / "cohort", init_from=dm), root / "cn", progress=False)
    return root, ae, dm, cn


@pytest.mark.slow
def test_each_stage_trains_with_finite_loss_and_exports_a_loadable_model(trained):
    root, ae, dm, cn = trained
    for run in ("ae", "dm", "cn"):
        s = _summary(root / run)
        assert s["steps"] == 3 and len(s["history"]) == 3
        assert all(math.isfinite(v) for v in s["history"]), s
        assert (root / run / "config.yaml").exists() and any((root / run / "logs").rglob("events.out.tfevents*"))
    assert (ae / "autoencoder" / "model.safetensors").exists()
    assert {"l1", "kl", "perceptual", "adv_g", "adv_d"} <= set(_summary(root / "ae")["last"])  # adversarial after warm-up
    pipe = LatentDiffusionPipeline.from_pretrained(cn)
    assert pipe.controlnet is not None and pipe.spec.scale_factor > 0
    assert pipe.spec.condition_channels == 6 + 1 + 5 + 2  # organs + tumor + 5 appearance attributes + masked CT + mask
    # the training tumors' measured appearance travels with the model: what sampling draws from
    assert pipe.appearance_table and all(set(pipe.spec.appearance) <= set(r) for r in pipe.appearance_table)
    assert pipe.spec.scale_factor == LatentDiffusionPipeline.from_pretrained(dm).spec.scale_factor
    assert list((root / "dm" / "cache").glob("latents-*.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["autoencoder", "diffusion"])
def test_resume_continues_the_step_count_and_reproduces_the_next_losses(trained, tmp_path, stage):
    root, ae, _, _ = trained
    over = {"loss__perceptual": "none", "loss__adv_warmup_steps": 1, "train__save_every": 2}
    if stage == "diffusion":
        over["init_from"] = ae
    full = train_stage(stage, _cfg(root / "cohort", train__steps=4, **over), tmp_path / "full", progress=False)
    assert full.exists()
    train_stage(stage, _cfg(root / "cohort", train__steps=2, **over), tmp_path / "part", progress=False)
    # a kill during the next save leaves a half-written checkpoint: it must be ignored
    (tmp_path / "part" / "checkpoints" / "step_0000004.tmp").mkdir()
    assert latest_checkpoint(tmp_path / "part").name == "step_0000002"
    train_stage(stage, _cfg(root / "cohort", train__steps=4, **over), tmp_path / "part", resume=True, progress=False)
    a, b = _summary(tmp_path / "full"), _summary(tmp_path / "part")
    assert b["start_step"] == 2 and b["steps"] == 4
    np.testing.assert_allclose(b["history"], a["history"][2:], rtol=1e-5)
    key = "autoencoder" if stage == "autoencoder" else "unet"
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "full/model" / key / "model.safetensors")), load_file(str(tmp_path / "part/model" / key / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        train_stage("diffusion", _cfg(tmp_path), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="crop_size"):
        train_stage("autoencoder", _cfg(tmp_path, data__crop_size="[20,20,20]"), tmp_path / "x", progress=False)


def test_missing_lpips_weights_stop_before_training(tmp_path, monkeypatch):
    from generative.diffusion.perceptual import PerceptualWeightsMissing

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    write_case(toy_abdomen_case("t0", seed=0), tmp_path / "cohort")
    with pytest.raises(PerceptualWeightsMissing, match="perceptual: none"):
        train_stage("autoencoder", _cfg(tmp_path / "cohort", loss__perceptual="lpips"), tmp_path / "run", progress=False)
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.slow
def test_two_cpu_processes_train_the_controlnet(trained, tmp_path):
    """`python -m generative.train` under torchrun with 2 CPU processes (DDP over gloo): the steps
    run, a checkpoint is saved once, and the exported pipeline loads."""
    import subprocess

    from tests.conftest import cpu_processes_cmd

    root, _, dm, _ = trained
    cmd, env = cpu_processes_cmd(2, "generative.train", "--stage", "controlnet", "--config", str(TINY),
                                 "--run-dir", str(tmp_path / "cn2"), "--no-progress",
                                 "--set", f"data.cohort={root / 'cohort'}", "--set", f"init_from={dm}",
                                 "--set", "train.num_threads=1", "--set", "train.steps=2")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = _summary(tmp_path / "cn2")
    assert s["steps"] == 2 and s["num_processes"] == 2 and all(math.isfinite(v) for v in s["history"])
    assert latest_checkpoint(tmp_path / "cn2").name == "step_0000002"
    assert LatentDiffusionPipeline.from_pretrained(tmp_path / "cn2" / "model").controlnet is not None


def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    from cohort.errors import CohortError
    from cohort.runs import previous_run

    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000004.tmp").mkdir(parents=True)  # a half-written checkpoint is no run
    assert previous_run(run) == []
    (run / "checkpoints" / "step_0000002").mkdir()
    (run / "model" / "autoencoder").mkdir(parents=True)
    assert len(previous_run(run)) == 2
    with pytest.raises(CohortError, match="already holds a run") as e:
        train_stage("autoencoder", _cfg(tmp_path / "cohort"), run, progress=False)
    assert str(run) in str(e.value) and "resume" in str(e.value) and "overwrite" in str(e.value)
    assert not (run / "config.yaml").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="exclude each other"):
        train_stage("autoencoder", _cfg(tmp_path / "cohort"), run, resume=True, overwrite=True, progress=False)
