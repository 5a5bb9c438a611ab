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


def write_lying_header(path: Path, problem: str, shape=(20, 18, 16), affine=None) -> Path:
    """A NIfTI whose header lies about its data, written byte by byte (nibabel refuses to save one).

    ``problem``: "zero_spacing" (axis 1 has zero spacing in the affine and pixdim),
    "zero_pixdim" (pixdim[2] is zero and there is no sform: nibabel would quietly use 1 mm),
    or "huge_shape" (claims 4000^3 int16 over the few bytes of a ``shape`` payload; nibabel
    would allocate 128 GB). ``.nii.gz`` paths are gzipped.
    """
    import gzip

    import nibabel as nib

    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else np.asarray(affine, np.float64)
    img = nib.Nifti1Image(np.zeros(shape, np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr = img.header.copy()
    hdr["vox_offset"] = 352
    if problem == "zero_spacing":
        hdr["pixdim"][2] = 0.0
        srow = hdr["srow_y"].copy()
        srow[1] = 0.0
        hdr["srow_y"] = srow
    elif problem == "zero_pixdim":
        hdr["pixdim"][2] = 0.0
        hdr["sform_code"] = 0
    elif problem == "huge_shape":
        hdr.set_data_shape((4000, 4000, 4000))
    else:
        raise ValueError(problem)
    raw = hdr.binaryblock + b"\0" * (352 - len(hdr.binaryblock)) + np.zeros(shape, np.int16).tobytes(order="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


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
