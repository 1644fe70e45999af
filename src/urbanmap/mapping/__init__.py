"""Mapping phase: the final model applied to every grid cell of a period's mosaic
(`predict` stage: a table, a COG and a PNG of p_urban, classes and low-quality cells per
period), every period's map per cell over the periods (`series` stage: trajectories, the
consistent series, the first urban period, changes between periods) and the urban change
between periods.census's and periods.target's maps (`change` stage)."""
