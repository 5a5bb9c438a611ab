"""Typed config of offline tumor synthesis (``tumorgen synthesize``); YAML in configs/generative/synth_*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from generative.tumors.base import TumorSpec
from generative.tumors.ca import CAConfig
from generative.tumors.rules import RulesConfig


@dataclass
class SynthesisConfig:
    """method: "ca" | "rules"; specs: one drawn per output case among those whose organ the
    source case has; seed: cohort seed (each output case's generator derives from
    (seed, source case id, k)); n_per_case: outputs per healthy case; limit: at most this many
    source cases (0 = all)."""

    method: str = "ca"
    seed: int = 0
    n_per_case: int = 1
    limit: int = 0
    specs: list[TumorSpec] = field(default_factory=lambda: [TumorSpec("liver")])
    ca: CAConfig = field(default_factory=CAConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)

    def __post_init__(self) -> None:
        if self.method not in ("ca", "rules"):
            raise ValueError(f"method must be 'ca' or 'rules', got {self.method!r}")
        if self.n_per_case < 1:
            raise ValueError(f"n_per_case must be >= 1, got {self.n_per_case}")
        if not self.specs:
            raise ValueError("specs must hold at least one tumor spec")

    def synthesizer_config(self):
        return self.ca if self.method == "ca" else self.rules
