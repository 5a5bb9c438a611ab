"""Tumor segmentation on real + synthetic cohorts (MONAI networks, accelerate).

Public API:

- :func:`segmentation.train.train_segmentation` ``(config, run_dir, resume=False, synthesizer=None,
  spec_for=None) -> Path`` (the model folder ``run_dir/model``); entry point
  ``accelerate launch -m segmentation.train --config configs/segmentation/<name>.yaml``.
- :func:`segmentation.predict.predict_cohort` ``(model_dir, input, out_dir, tta=False, save_prob=False)
  -> BatchReport``: ``<case id>.nii.gz`` per case on its original grid, canonical vocabulary.
- :func:`segmentation.export.export_nnunet` and :func:`segmentation.export.check_nnunet_dataset`.
- :class:`segmentation.config.SegConfig` (typed config), :func:`segmentation.config.load_seg_config`.
- :class:`segmentation.data.MixingSampler`, :class:`segmentation.data.PatchDataset`,
  :class:`segmentation.data.ClassMap`.

Imports only :mod:`cohort` (never the generators): on-the-fly synthesis takes a
synthesizer object from the caller.
"""
