"""Shared fixtures: tiny volumes built in code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

DATA = Path(__file__).parent / "data"
TS_COHORT = DATA / "totalsegmentator"


def tiny_case(case_id: str = "c0", shape=(20, 18, 16), spacing=(2.0, 2.0, 3.0), seed: int = 0, lesion: bool = True):
    """A small synthetic abdomen: liver block with an optional lesion, a kidney, noise."""
    from cohort.case import Case

    rng = np.random.default_rng(seed)
    ct = rng.normal(-100, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[10:18, 4:14, 3:13] = 5  # liver (patient's right: high x)
    ct[label == 5] = rng.normal(120, 10, int((label == 5).sum()))
    label[2:7, 5:10, 4:10] = 3  # kidney_left (low x)
    ct[label == 3] = 160
    if lesion:
        label[12:15, 7:10, 6:9] = 27
        ct[label == 27] = 60
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 20.0)
    return Case(case_id, ct, label, affine, {"kind": "real"})


@pytest.fixture
def make_case():
    return tiny_case


def cpu_processes_cmd(n: int, module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """Command and environment that start ``python -m module args`` as ``n`` CPU processes with
    torchrun (gloo); accelerate reads RANK/WORLD_SIZE from it. ``accelerate launch --cpu
    --num_processes N`` starts a single process on one machine (its multi-CPU mode needs mpirun),
    so it cannot test sharding."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", module, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    return cmd, env
