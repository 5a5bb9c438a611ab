"""Tumor synthesis: one interface (:class:`Synthesizer`) for the CA (Pixel2Cancer), rule-based
(SyntheticTumors) and diffusion tumor makers, shared shape/placement utilities, a MONAI
transform for on-the-fly synthesis, and offline cohort synthesis.

    >>> from generative.tumors import CASynthesizer, TumorSpec
    >>> res = CASynthesizer()(ct_hu, label, spacing, TumorSpec("liver", steps=80), np.random.default_rng(0))
"""

from generative.tumors.base import SynthesisError, SynthesisResult, Synthesizer, TumorSpec
from generative.tumors.ca import CAConfig, CASynthesizer
from generative.tumors.offline import summarize_sizes, synthesize_cohort
from generative.tumors.placement import Placement, PlacementSampler, place_tumor, place_tumor_mask
from generative.tumors.rules import RulesConfig, RuleSynthesizer
from generative.tumors.shapes import SIZE_CLASSES_MM, ellipsoid_mask, sample_radii_mm, sample_size_class

__all__ = [
    "CAConfig", "CASynthesizer", "Placement", "PlacementSampler", "RuleSynthesizer", "RulesConfig", "SIZE_CLASSES_MM",
    "SynthesisError", "SynthesisResult", "Synthesizer", "TumorSpec", "ellipsoid_mask", "make_synthesizer",
    "place_tumor", "place_tumor_mask", "sample_radii_mm", "sample_size_class",
    "summarize_sizes", "synthesize_cohort",
]


def make_synthesizer(method: str, config=None) -> Synthesizer:
    """The registered synthesizer ``method`` with its config (a mapping, an instance or None);
    see :mod:`generative.registry`."""
    from generative.registry import build_synthesizer

    return build_synthesizer(method, config)
