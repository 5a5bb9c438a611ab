"""The adversarial quality filter: score every synthetic tumor, discard poor ones, audit the decision.

Public API:

- :func:`train_discriminator` (``generative.quality.train``): real tumor crops vs several named synthetic
  cohorts and known-bad probe hard negatives -> model folder, with the held-out AUC (95 % bootstrap CIs
  per size class, organ, generator) and the calibration check in ``calibration.json``.
- :func:`score_cohort`, :func:`apply_filter` (``generative.quality.apply``): scores, filtered manifest.
- :func:`audit` (``generative.quality.audit``): HTML report with PNG figures and a JSON summary.
- Filters: :class:`FreeTumorGate` (votes only with a validated segmentor, :class:`GateValidation`),
  :class:`HUCheck` (relative to the scan's own organ HU by default), policies in ``generative.quality.policies``.
- Metrics: :func:`auc`, :func:`auc_ci`, :func:`wilson_ci`, :func:`alpha_check` (``generative.quality.metrics``).

``train_discriminator`` is imported lazily so that ``python -m generative.quality.train``
(and ``accelerate launch -m``) does not import its own module twice.
"""

from __future__ import annotations

from typing import Any

from generative.quality.apply import CaseScore, apply_filter, decide_cases, read_scores, score_cohort
from generative.quality.audit import audit
from generative.quality.config import FilterConfig
from generative.quality.discriminator import TumorDiscriminator
from generative.quality.filters import FreeTumorGate, GateValidation, HUCheck
from generative.quality.metrics import alpha_check, auc, auc_ci, wilson_ci
from generative.quality.policies import PolicyConfig, apply_policy

__all__ = [
    "CaseScore", "FilterConfig", "FreeTumorGate", "GateValidation", "HUCheck", "PolicyConfig", "TumorDiscriminator",
    "alpha_check", "apply_filter", "apply_policy", "audit", "auc", "auc_ci", "decide_cases", "read_scores",
    "score_cohort", "train_discriminator", "wilson_ci",
]


def __getattr__(name: str) -> Any:
    if name == "train_discriminator":
        from generative.quality.train import train_discriminator

        return train_discriminator
    raise AttributeError(f"module 'generative.quality' has no attribute {name!r}")
