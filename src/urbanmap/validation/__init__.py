"""Validation of the target period's map: a stratified random sample, its interpretation, estimates.

`urbanmap validate sample | interpret | estimate` (validate.py dispatches): sample.py draws
the sample and its chips (chips.py), interpret.py is the simulated interpreter of the
embedded default, estimate.py holds the Olofsson et al. (2014) stratified estimators and
the estimate step; settings.py reads the `validation` config once.
"""
