"""The adversarial quality filter: score every synthetic tumor, discard poor ones, audit the decision.

Public API:

- :func:`train_discriminator` (``generative.quality.train``): real vs synthetic tumor crops -> model folder.
- :func:`score_cohort`, :func:`apply_filter` (``generative.quality.apply``): scores, filtered manifest.
- :func:`audit` (``generative.quality.audit``): HTML report with PNG figures and a JSON summary.
- Filters: :class:`FreeTumorGate`, :class:`HUCheck`, policies in ``generative.quality.policies``.

``train_discriminator`` is imported lazily so that ``python -m generative.quality.train``
(and ``accelerate launch -m``) does not import its own module twice.
"""

from __future__ import annotations

from typing import Any

from generative.quality.apply import CaseScore, apply_filter, decide_cases, read_scores, score_cohort
from generative.quality.audit import audit
from generative.quality.config import FilterConfig
from generative.quality.discriminator import TumorDiscriminator
from generative.quality.filters import FreeTumorGate, HUCheck
from generative.quality.metrics import auc
from generative.quality.policies import PolicyConfig, apply_policy

__all__ = [
    "CaseScore", "FilterConfig", "FreeTumorGate", "HUCheck", "PolicyConfig", "TumorDiscriminator", "apply_filter",
    "apply_policy", "audit", "auc", "decide_cases", "read_scores", "score_cohort", "train_discriminator",
]


def __getattr__(name: str) -> Any:
    if name == "train_discriminator":
        from generative.quality.train import train_discriminator

        return train_discriminator
    raise AttributeError(f"module 'generative.quality' has no attribute {name!r}")
