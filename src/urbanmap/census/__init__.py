"""Census phase: the region's grid of square cells (`grid` stage) and each cell's urban /
non-urban label (`labels` stage), from census polygons or a land-cover raster."""
