"""Shared by every phase: errors, configuration, output paths, file formats (GeoParquet
cells, atomic writes, COGs), the pixel lattice and its blocks, raster facts."""
