"""Mapping phase: the final model applied to every grid cell of a year's mosaic (`predict`
stage: a table, a COG and a PNG of p_urban and classes per year) and the urban change
between years.train's and years.target's maps (`change` stage)."""
