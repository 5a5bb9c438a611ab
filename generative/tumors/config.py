"""Typed config of offline tumor synthesis (``tumorgen synthesize``); YAML in configs/generative/synth_*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cohort.config import bounded
from generative.tumors.base import TumorSpec


@dataclass
class SynthesisConfig:
    """method: a registered synthesizer (:mod:`generative.registry`: "ca", "rules",
    "diffusion", ...); params: its config (checked against the synthesizer's config class,
    keys left out keep their defaults); specs: one drawn per output case among those whose
    organ the source case has; seed: cohort seed (each output case's generator derives from
    (seed, source case id, k)); n_per_case: outputs per healthy case; limit: at most this many
    source cases (0 = all)."""

    method: str = "ca"
    seed: int = 0
    n_per_case: int = bounded(1, ge=1)
    limit: int = bounded(0, ge=0)
    specs: list[TumorSpec] = field(default_factory=lambda: [TumorSpec("liver")])
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from generative.registry import check_supported, get_entry, make_config

        get_entry(self.method)  # ValueError listing the registered names
        if self.n_per_case < 1:
            raise ValueError(f"n_per_case must be >= 1, got {self.n_per_case}")
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")
        if not self.specs:
            raise ValueError("specs must hold at least one tumor spec")
        check_supported(self.method, [s.organ for s in self.specs], "specs")
        make_config(self.method, self.params, "params")  # unknown keys / wrong types name the key

    def synthesizer_config(self) -> Any:
        from generative.registry import make_config

        return make_config(self.method, self.params, "params")
