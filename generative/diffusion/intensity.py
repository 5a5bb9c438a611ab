"""How CT HU map to the [0, 1] images an autoencoder reads: one :class:`Intensity` travels with the model.

Every autoencoder carries its mapping (``config.json``'s ``intensity``) and a pipeline records it in
``pipeline.json``, so data is prepared, and generated images turned back into HU, with the window
the autoencoder was trained on:

* ``WINDOW_ABDOMEN`` = [-175, 250] HU, the paper's window and what this project's own autoencoders
  are trained with (:data:`cohort.preprocess.HU_WINDOW`); folders written before the field existed
  read as this one.
* ``WINDOW_MAISI`` = [-1000, 1000] HU, what MAISI's pretrained CT autoencoder expects (its CT
  transform: ``ScaleIntensityRanged(a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cohort.preprocess import HU_WINDOW, scale_hu, unscale_hu

KINDS = ("window",)


@dataclass(frozen=True)
class Intensity:
    """A clipped linear window: ``hu_min`` -> 0, ``hu_max`` -> 1."""

    kind: str = "window"
    hu_min: float = HU_WINDOW[0]
    hu_max: float = HU_WINDOW[1]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"intensity kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not float(self.hu_min) < float(self.hu_max):
            raise ValueError(f"intensity window needs hu_min < hu_max, got [{self.hu_min}, {self.hu_max}]")
        object.__setattr__(self, "hu_min", float(self.hu_min))
        object.__setattr__(self, "hu_max", float(self.hu_max))

    def scale(self, ct_hu: np.ndarray) -> np.ndarray:
        """HU -> [0, 1] float32, clipped to the window."""
        return scale_hu(ct_hu, self.hu_min, self.hu_max)

    def unscale(self, x: np.ndarray) -> np.ndarray:
        """[0, 1] -> HU float32 (the inverse of :meth:`scale` inside the window)."""
        return unscale_hu(x, self.hu_min, self.hu_max)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any] | None) -> Intensity:
        """``None`` or ``{}``: the default window (what folders without the field were trained on).
        Unknown keys and bad values raise ValueError."""
        if d is None:
            return Intensity()
        if isinstance(d, Intensity):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"intensity must be a mapping like {Intensity().as_dict()}, got {d!r}")
        if bad := sorted(set(d) - {"kind", "hu_min", "hu_max"}):
            raise ValueError(f"intensity: unknown key(s) {bad} (known: kind, hu_min, hu_max)")
        return Intensity(**d)

    def describe(self) -> str:
        return f"{self.kind} [{self.hu_min:g}, {self.hu_max:g}] HU -> [0, 1]"


WINDOW_ABDOMEN = Intensity()
WINDOW_MAISI = Intensity("window", -1000.0, 1000.0)
