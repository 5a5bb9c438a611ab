"""Run folders of the training loops (generator stages, segmentation, ...): one checkpoint scheme
and one rule for reruns.

Checkpoints: ``<run>/checkpoints/step_NNNNNNN`` written by accelerate's ``save_state`` into
``step_NNNNNNN.tmp`` (plus an optional ``state.json`` of the loop's own counters) and renamed into
place when complete, so a kill never leaves a half checkpoint that looks finished; the newest
``keep`` are kept. Folders written by the earlier segmentation scheme (in place, complete when their
``state.json`` exists) still load.

Reruns: a run folder that holds an earlier run (a complete checkpoint or an exported model) is
refused unless the caller resumes it or asks to overwrite it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cohort.errors import CohortError
from cohort.io import read_json, write_json

CKPT_RE = re.compile(r"^step_(\d+)$")
STATE_NAME = "state.json"
#: the state file of segmentation checkpoints written before the one scheme (still read)
LEGACY_STATE_NAMES = ("training_state.json",)


def _state_file(ckpt: Path) -> Path | None:
    for name in (STATE_NAME, *LEGACY_STATE_NAMES):
        if (ckpt / name).exists():
            return ckpt / name
    return None


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _complete(p: Path, need_state: bool) -> bool:
    return p.is_dir() and CKPT_RE.match(p.name) is not None and (not need_state or _state_file(p) is not None)


def latest_checkpoint(run_dir: str | Path, need_state: bool = False) -> Path | None:
    """The newest complete ``checkpoints/step_N`` (``.tmp`` folders are never complete;
    ``need_state``: the loop writes a ``state.json`` and a checkpoint without one is incomplete)."""
    found = [(int(CKPT_RE.match(p.name).group(1)), p) for p in checkpoint_dir(run_dir).glob("step_*")  # type: ignore[union-attr]
             if _complete(p, need_state)]
    return max(found)[1] if found else None


def save_checkpoint(accelerator, run_dir: str | Path, step: int, keep: int, state: dict[str, Any] | None = None) -> Path:
    """``accelerator.save_state`` (+ ``state`` as state.json) into ``step_N.tmp``, then rename; keeps
    the newest ``keep`` (0 keeps all). Every process calls it (save_state synchronises)."""
    d = checkpoint_dir(run_dir)
    final, tmp = d / f"step_{step:07d}", d / f"step_{step:07d}.tmp"
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if state is not None:
            write_json(tmp / STATE_NAME, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        old = sorted((int(m.group(1)), p) for p in d.glob("step_*") if (m := CKPT_RE.match(p.name)))
        for _, p in old[:-keep] if keep > 0 else []:
            shutil.rmtree(p, ignore_errors=True)
        for p in d.glob("step_*.tmp"):  # what killed runs left
            if p != tmp:
                shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint_state(ckpt: str | Path) -> dict[str, Any]:
    p = _state_file(Path(ckpt))
    if p is None:
        raise CohortError(Path(ckpt) / STATE_NAME, "checkpoint has no state file (incomplete); delete it to resume "
                                                    "from the one before")
    return read_json(p)


def previous_run(run_dir: str | Path) -> list[str]:
    """What in ``run_dir`` is an earlier run's work: its complete checkpoints and its exported model."""
    run_dir = Path(run_dir)
    ckpts = [p for p in checkpoint_dir(run_dir).glob("step_*") if _complete(p, need_state=False)]
    found = [f"{len(ckpts)} checkpoint(s) in checkpoints/"] if ckpts else []
    model = run_dir / "model"
    if model.is_dir() and any(model.iterdir()):
        found.append("an exported model/")
    return found


def check_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse to train from scratch over an earlier run unless asked (CohortError naming the
    folder); returns what ``overwrite`` will replace (empty otherwise)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run or replace it")
    held = previous_run(run_dir)
    if held and not resume and not overwrite:
        raise CohortError(run_dir, f"already holds a run ({', '.join(held)}); rerun with --resume to continue it or "
                                   "--overwrite to delete it and start over (resume=True / overwrite=True in Python)")
    return held if overwrite else []


def clear_run(run_dir: str | Path, outputs: Sequence[str]) -> None:
    """Delete an earlier run's ``outputs`` (names inside ``run_dir``) before training over it."""
    for name in outputs:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def add_rerun_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume`` / ``--overwrite`` (exclusive) for a training command's run folder."""
    rerun = parser.add_mutually_exclusive_group()  # a folder that already holds a run: continue it or replace it
    rerun.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    rerun.add_argument("--overwrite", action="store_true",
                       help="delete the run folder's earlier checkpoints, model and logs, then train from scratch "
                            "(a folder holding a run is refused without --resume or --overwrite)")
