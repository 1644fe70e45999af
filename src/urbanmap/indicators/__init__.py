"""Indicators phase: SDG indicator 11.3.1 (ratio of land consumption rate to population
growth rate) per municipality and for the region, from the change map, the validation
estimate and the census population (`sdg` stage)."""
