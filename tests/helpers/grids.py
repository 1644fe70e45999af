"""The grid by brute force: the reference the fast grid stage is checked against."""

from __future__ import annotations

import numpy as np
import shapely

from urbanmap.census.grid import cell_polygons


def brute_force(region, cell_size):
    """Every lattice cell of the bounding box whose interior overlaps the region's."""
    x0, y0, x1, y1 = region.bounds
    cols = np.arange(np.floor(x0 / cell_size), np.ceil(x1 / cell_size)).astype(int)
    rows = np.arange(np.floor(y0 / cell_size), np.ceil(y1 / cell_size)).astype(int)
    cc, rr = (a.ravel() for a in np.meshgrid(cols, rows))
    boxes = cell_polygons(cc, rr, cell_size)
    hit = shapely.intersects(region, boxes) & ~shapely.touches(region, boxes)
    return set(zip(cc[hit].tolist(), rr[hit].tolist()))
