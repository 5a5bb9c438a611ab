"""Acceptance policies: turn discriminator scores into keep / discard, with a reason.

Three policies, chosen in config (``policy.kind``):

- ``threshold``: accept when P(real) >= ``threshold``.
- ``top_q``: keep the ``top_q`` fraction of cases with the highest scores
  (ties at the cut are kept, so slightly more may pass).
- ``calibrated``: accept when the score is at least the split-conformal
  ``alpha`` cut of held-out *real* tumors' scores (the floor(alpha (n + 1))-th
  smallest), i.e. reject what looks less real than the least-real ``alpha``
  fraction of real tumors, with the promise that at most ``alpha`` of new real
  tumors fail (default alpha 0.1, the price of the cut).

A case is judged by its worst tumor (the minimum score). Each function is
pure and returns :class:`Decision` objects that carry the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

POLICY_KINDS = ("threshold", "top_q", "calibrated")


@dataclass
class PolicyConfig:
    """Which policy and its parameter. ``kind``: threshold | top_q | calibrated."""

    kind: Literal["threshold", "top_q", "calibrated"] = "calibrated"
    threshold: float = 0.5
    top_q: float = 0.8
    alpha: float = 0.1


@dataclass(frozen=True)
class Cutoff:
    """The score a tumor or case must reach, and how it was set (words for a person)."""

    value: float
    how: str


@dataclass(frozen=True)
class Decision:
    """One keep / discard decision. ``score`` None means nothing to judge (no tumor)."""

    accepted: bool
    score: float | None
    cutoff: float
    reason: str


class PolicyError(ValueError):
    """A policy that cannot be applied (bad parameters, no calibration scores)."""


def cutoff_for(config: PolicyConfig, case_scores: Sequence[float],
               real_scores: Sequence[float] | None = None) -> Cutoff:
    """The acceptance cutoff the policy sets on this cohort.

    case_scores: each case's score (its worst tumor's P(real)); needed by top_q.
    real_scores: held-out real tumors' scores; needed by calibrated.
    """
    kind = config.kind
    if kind == "threshold":
        if not 0.0 <= config.threshold <= 1.0:
            raise PolicyError(f"policy.threshold must lie in [0, 1], got {config.threshold}")
        return Cutoff(float(config.threshold), f"fixed threshold {config.threshold:.3f}")
    if kind == "top_q":
        q = config.top_q
        if not 0.0 < q <= 1.0:
            raise PolicyError(f"policy.top_q must lie in (0, 1], got {q}")
        s = np.sort(np.asarray([x for x in case_scores if x is not None], dtype=np.float64))[::-1]
        if s.size == 0:
            return Cutoff(0.0, f"top {q:.0%} of 0 scored cases")
        k = max(1, math.floor(q * s.size + 1e-9))
        return Cutoff(float(s[k - 1]), f"top {q:.0%} of {s.size} scored cases ({k} kept; cut at rank {k})")
    if kind == "calibrated":
        a = config.alpha
        if not 0.0 <= a < 1.0:
            raise PolicyError(f"policy.alpha must lie in [0, 1), got {a}")
        if real_scores is None or len(real_scores) == 0:
            raise PolicyError("policy 'calibrated' needs held-out real tumors' scores "
                              "(calibration.json in the discriminator folder); none found")
        # the split-conformal cut (Vovk et al.; Angelopoulos & Bates 2021): the floor(alpha (n + 1))-th
        # smallest of n calibration scores, so a new real tumor from the same distribution falls below
        # it with probability at most alpha; with too few scores for that (alpha (n + 1) < 1) nothing
        # can be promised, so nothing is cut. np.quantile's interpolated cut over-rejects at small n.
        s = np.sort(np.asarray(real_scores, dtype=np.float64))
        k = math.floor(a * (s.size + 1) + 1e-9)
        if k < 1:
            return Cutoff(0.0, f"alpha {a:.2f} needs at least {math.ceil(1 / a) - 1 if a > 0 else 'any'} held-out "
                          f"real tumors' scores to cut anything, {s.size} given: nothing is cut")
        return Cutoff(float(s[k - 1]), f"conformal {a:.2f} cut: score {k} of {s.size} held-out real tumors' "
                      "scores, lowest first")
    raise PolicyError(f"unknown policy.kind {kind!r}; expected one of {', '.join(POLICY_KINDS)}")


def decide(score: float | None, cutoff: Cutoff, what: str = "case") -> Decision:
    """Accept when ``score >= cutoff.value``; the reason states both numbers."""
    if score is None:
        return Decision(True, None, cutoff.value, f"no tumor in {what}: nothing for the discriminator to judge")
    if score >= cutoff.value:
        return Decision(True, float(score), cutoff.value,
                        f"P(real) {score:.3f} >= cutoff {cutoff.value:.3f} ({cutoff.how})")
    return Decision(False, float(score), cutoff.value,
                    f"P(real) {score:.3f} < cutoff {cutoff.value:.3f} ({cutoff.how})")


def case_score(tumor_scores: Sequence[float]) -> float | None:
    """A case scores as its worst tumor (None when it has no tumor)."""
    return float(min(tumor_scores)) if len(tumor_scores) else None


def apply_policy(config: PolicyConfig, case_scores: Sequence[float | None],
                 real_scores: Sequence[float] | None = None) -> tuple[Cutoff, list[Decision]]:
    """Decide every case: (the cutoff used, one :class:`Decision` per case, in order)."""
    cut = cutoff_for(config, [s for s in case_scores if s is not None], real_scores)
    return cut, [decide(s, cut) for s in case_scores]
