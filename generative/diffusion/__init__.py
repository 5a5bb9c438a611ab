"""ControlNet-conditioned 3D latent diffusion: models (MONAI core), schedulers (MONAI + diffusers),
the pipeline (training_step / sample), tumor inpainting, cohort sampling and generator metrics.

Entry points: :func:`generative.train.train_stage` (training, also ``accelerate launch -m
generative.train``), :func:`generative.diffusion.sample.sample_cohort`,
:class:`generative.diffusion.inpaint.DiffusionSynthesizer` (Synthesizer "diffusion"),
:func:`generative.diffusion.evaluate.evaluate_generator`.
"""
