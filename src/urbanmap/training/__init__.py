"""Training: the patch sample of labelled cells, models, cross-validation and evaluation.

Stages `patches` (patches.py: the balanced sample of labelled cells and their mosaic
patches, in the format of patchset.py), `train` (train.py: cross-validation over the
patches, then the final model of the `models` zoo) and `evaluate` (evaluate.py: the
pilot's per-class table, plots, report, MLflow runs through tracking.py).
"""
