"""Comparison: which model configuration is better, and by how much.

`urbanmap compare` (compare.py) reads the out-of-fold predictions of earlier `train`
runs (runs.py: result folders, DVC experiments, MLflow runs) and reports intervals,
paired tests with the right variance and a ranking (stats.py, analysis.py).
"""
