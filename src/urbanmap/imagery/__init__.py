"""The imagery phase: an annual cloud-free composite of each year on the region's pixel
lattice.

- `mosaic` (mosaic.py): the geomedian of the year's Landsat Collection 2 Level-2 scenes
  (found by scenes.py, read and warped block by block by warp.py and blocks.py, reduced
  by geomad through geomedian.py), or an existing composite aligned to the lattice
  (composite.py, `data.imagery.source: file`);
- `synth` (synth/): synthetic scenes, their STAC catalog and the truth for the embedded
  default, written as USGS distributes Collection 2 (landsat.py's conventions).
"""
