"""Synthetic Landsat Collection 2 Level-2 scenes for the embedded default.

There is no real imagery offline, so the default region pairs the real INEGI geography
with scenes generated from measured spectra, written exactly as USGS distributes
products (so the `mosaic` stage runs its real-data path on them):

- endmembers.py    measured spectra -> end-member tables (impervious, vegetation, ...)
- fields.py        smooth random fields (texture of land cover and clouds)
- landcover.py     the cloud-free truth: per-pixel composition, phenology, reflectance
- schedule.py      sensors by year, WRS-2 overpass dates, footprints, sun angles
- scenes.py        clouds, shadows, cirrus, SLC-off gaps, noise, QA_PIXEL, COG writing
- stac.py          the self-contained STAC catalog
- truth.py         truth on the region's pixel lattice and per grid cell
- settings.py      SynthSettings: the stage's config, checked once
- world.py         the scenes' 30 m pixel grid over the region (World)
- acquisitions.py  the year's scenes as the tasks need them (ScenePlan)
- tiles.py         the tasks, one per tile of the world
- assemble.py      the client: tiles' parts into products and the truth on the lattice
- stage.py         `run(cfg)`: the `synth` stage, in named steps
"""

from urbanmap.imagery.synth.stage import run

__all__ = ["run"]
