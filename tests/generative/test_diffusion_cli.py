"""`tumorgen train`, `tumorgen generator eval` and the `python -m generative.train` entry point."""

import json

import numpy as np

from cohort.config import config_dir
from cohort.layouts import write_case
from generative.diffusion.evaluate import frechet_distance
from tests.toys import toy_abdomen_case
from tumorgen.cli import main

TINY = str(config_dir() / "demo" / "generative_tiny.yaml")


def test_tumorgen_train_and_generator_eval(tmp_path, capsys):
    for i in range(2):
        write_case(toy_abdomen_case(f"t{i}", seed=i), tmp_path / "real")
    code = main(["train", "--stage", "autoencoder", "--config", TINY, "--run-dir", str(tmp_path / "ae"), "--quiet",
                 "--set", f"data.cohort={tmp_path / 'real'}", "--set", "train.steps=2", "--set", "loss.perceptual=none"])
    assert code == 0 and (tmp_path / "ae" / "model" / "autoencoder" / "model.safetensors").exists()
    for i in range(2):  # a stand-in "synthetic" cohort: brighter tumors than the real ones
        c = toy_abdomen_case(f"s{i}", seed=10 + i)
        c.ct[c.label == 27] += 60
        write_case(c, tmp_path / "syn")
    code = main(["generator", "eval", "--model", str(tmp_path / "ae" / "model"), "--real", str(tmp_path / "real"),
                 "--synthetic", str(tmp_path / "syn"), "--out", str(tmp_path / "eval"), "--recon-crops", "2"])
    assert code == 0
    rep = json.loads((tmp_path / "eval" / "generator_eval.json").read_text())
    assert rep["real"]["n_tumors"] == 2 and rep["synthetic"]["n_tumors"] == 2
    assert abs(rep["real"]["mean_hu"] - 15) < 5 and abs(rep["synthetic"]["mean_hu"] - 75) < 5
    assert np.isfinite(rep["recon_psnr"]) and 0 <= rep["recon_ssim"] <= 1 and rep["frechet_distance"] >= 0
    assert "Frechet" in capsys.readouterr().out


def test_train_reports_missing_lpips_weights_with_exit_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    write_case(toy_abdomen_case("t0", seed=0), tmp_path / "real")
    code = main(["train", "--stage", "autoencoder", "--config", TINY, "--run-dir", str(tmp_path / "ae"), "--quiet",
                 "--set", f"data.cohort={tmp_path / 'real'}", "--set", "loss.perceptual=lpips"])
    assert code == 2
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and "perceptual: none" in err


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1.0) > frechet_distance(a, a + 0.1) > 0


def _block_case(case_id: str, seed: int, visible: bool = True):
    """A 48^3 block of liver (60 HU, noise 12 HU) with one 4-6 voxel lesion (15 HU) at a random place."""
    from cohort.case import Case

    rng = np.random.default_rng(seed)
    shape = (48, 48, 48)
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float32)
    c, r = rng.uniform(14, 34, 3), rng.uniform(4, 6)
    tumor = (((g - c[:, None, None, None]) ** 2).sum(0) <= r * r)
    label = np.full(shape, 5, np.uint8)
    label[tumor] = 27
    ct = np.full(shape, 60.0, np.float32)
    if visible:
        ct[tumor] = 15.0
    ct += rng.normal(0, 12, shape).astype(np.float32)
    return Case(case_id, ct, label, np.diag([1.5, 1.5, 1.5, 1.0]), {"kind": "real"})


def test_heldout_real_tumors_set_the_scale_and_invisible_tumors_score_as_healthy(tmp_path):
    """A 'synthetic' tumor with no contrast (label only) must read as less tumor-like than held-out
    real tumors: lower tumor rate, larger Frechet distance than held-out real vs real."""
    from generative.diffusion.evaluate import evaluate_generator

    for i in range(8):
        write_case(_block_case(f"r{i}", i), tmp_path / "real")
    for i in range(4):
        write_case(_block_case(f"h{i}", 50 + i), tmp_path / "held")
        write_case(_block_case(f"s{i}", 80 + i, visible=False), tmp_path / "syn")
    rep = evaluate_generator(None, tmp_path / "real", tmp_path / "syn", tmp_path / "eval", heldout=tmp_path / "held")
    assert rep.heldout.n_tumors == 4 and rep.synthetic.n_tumors == 4
    assert rep.tumor_rate_heldout >= 0.75 and rep.tumor_rate_synthetic <= 0.25
    assert rep.frechet_distance > rep.frechet_distance_heldout >= 0
    assert abs(rep.synthetic.rim_contrast_hu) < 10 < abs(rep.heldout.rim_contrast_hu)
    md = (tmp_path / "eval" / "generator_eval.md").read_text()
    assert "real held out" in md and "tumor rate" in md
    png = (tmp_path / "eval" / "tumor_montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_refuses_a_run_folder_holding_a_run_unless_resume_or_overwrite(tmp_path, capsys):
    from generative.train import main as train_main

    write_case(toy_abdomen_case("t0", seed=0), tmp_path / "real")
    run = tmp_path / "ae"
    sets = ["--set", f"data.cohort={tmp_path / 'real'}", "--set", "train.steps=2", "--set", "loss.perceptual=none"]
    args = ["train", "--stage", "autoencoder", "--config", TINY, "--run-dir", str(run), "--quiet", *sets]
    assert main(args) == 0
    weights = (run / "model" / "autoencoder" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(run) in lines[0] and "--resume" in lines[0] and "--overwrite" in lines[0], lines
    assert (run / "model" / "autoencoder" / "model.safetensors").read_bytes() == weights
    # `python -m generative.train` (and `accelerate launch -m generative.train`) refuses the same way
    assert train_main(["--stage", "autoencoder", "--config", TINY, "--run-dir", str(run), "--no-progress", *sets]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # a finished run: nothing retrained
    assert json.loads((run / "train_summary.json").read_text())["start_step"] == 2
    assert main([*args, "--overwrite", "--set", "train.steps=1"]) == 0
    s = json.loads((run / "train_summary.json").read_text())
    assert s["start_step"] == 0 and s["steps"] == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000001"]
