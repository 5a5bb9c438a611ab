"""``generative.pipeline``: the ControlNet latent diffusion pipeline (see :mod:`generative.diffusion.pipeline`)."""

from generative.diffusion.pipeline import LatentDiffusionPipeline, PipelineSpec

__all__ = ["LatentDiffusionPipeline", "PipelineSpec"]
