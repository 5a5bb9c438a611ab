"""benchmarks/gpu_check.py: the dry run lists every CUDA path; --device cpu --tiny runs them all."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_dry_run_lists_every_path():
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("ca", "autoencoder", "diffusion", "controlnet", "sample_roi", "sample_volume", "segmentation_train",
                 "segmentation_predict", "filter_score"):
        assert f". {name}:" in r.stdout, name
    assert "128^3" in r.stdout and "256x256x128" in r.stdout and "512x512x300" in r.stdout and "96^3" in r.stdout


@pytest.mark.slow
def test_tiny_cpu_run_passes_every_check(tmp_path):
    out = tmp_path / "gc.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out),
                        "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads(out.read_text())
    assert [row["check"] for row in res["rows"]] == ["ca", "autoencoder", "diffusion", "controlnet", "sample_roi",
                                                     "sample_volume", "segmentation_train", "segmentation_predict",
                                                     "filter_score"]
    assert all(row["ok"] for row in res["rows"])
    roi = next(row for row in res["rows"] if row["check"] == "sample_roi")
    assert roi["ratio_vs_monai_ddpm1000"] > 1
    assert "| sample_volume |" in res["table_md"] and "CPU" in res["device_name"]
