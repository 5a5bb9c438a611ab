"""The one patch-synthesis path: a caller's synthesizer puts a tumor into a CT patch.

Training (:class:`segmentation.data.PatchDataset`) and the MONAI transform for MONAI pipelines
(:class:`generative.tumors.transform.RandTumorSynthesisd`) both call :func:`synthesize_patch`, so
the call, the fallback to the healthy patch and the checks on what comes back are the same
everywhere. Deciding *whether* a sample gets a tumor (probability, which organ, is it healthy)
stays with each caller: those are their draws.

The synthesizer is duck-typed (segmentation never imports the generators): any object called as
``synthesizer(ct_hu, label, spacing, spec, rng)`` that returns something with ``.ct`` (HU) and
``.label`` (vocabulary) on the patch's grid and, optionally, ``.records`` (one dict a tumor), as
every :class:`generative.tumors.base.Synthesizer` does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Synthesis:
    """What on-the-fly synthesis did on one draw (for bookkeeping and the benchmark).

    applied: a tumor was added; organ: the spec's organ; seconds: wall time of the synthesizer
    call; records: the synthesizer's records (empty when nothing was added).
    """

    applied: bool = False
    organ: str | None = None
    seconds: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)


def _organ_of(spec: Any) -> str | None:
    return spec if isinstance(spec, str) else getattr(spec, "organ", None)


def synthesize_patch(synthesizer: Any, ct_hu: np.ndarray, label: np.ndarray, spacing: Sequence[float], spec: Any,
                     rng: np.random.Generator,
                     skip: type[BaseException] | tuple[type[BaseException], ...] = ValueError,
                     ) -> tuple[np.ndarray, np.ndarray, Synthesis]:
    """Add a synthetic tumor to one patch: ``(ct, label, what happened)``.

    ct_hu: float32 (X, Y, Z) HU; label: uint8 (X, Y, Z) vocabulary indices; spacing: mm per
    axis; spec: what the synthesizer takes (a ``TumorSpec`` or an organ name); rng: the draw's
    generator, consumed by the synthesizer only.

    When the synthesizer raises ``skip`` (an organ too small in this patch for the method: a
    ``SynthesisError``, which is a ``ValueError``), the patch comes back unchanged (the very
    arrays given) with ``applied`` false: training goes on with the healthy patch. Otherwise the
    new ct (float32 HU) and label (uint8) come back; a result on another grid is a ValueError.
    """
    t0 = time.perf_counter()
    organ = _organ_of(spec)
    try:
        res = synthesizer(ct_hu, label, spacing, spec, rng)
    except skip:
        return ct_hu, label, Synthesis(False, organ, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    new_ct, new_lab = np.asarray(res.ct, np.float32), np.asarray(res.label, np.uint8)
    if new_ct.shape != ct_hu.shape or new_lab.shape != label.shape:
        raise ValueError(f"synthesizer returned shapes {new_ct.shape}/{new_lab.shape} for a {ct_hu.shape} patch")
    return new_ct, new_lab, Synthesis(True, organ, seconds, getattr(res, "records", None) or [])
