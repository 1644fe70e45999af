"""The synthetic scenes' world: their 30 m pixel grid (scene CRS) over the region plus a
margin. Every scene file is a window of it, and so is every tile of the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from urbanmap.imagery.synth.fields import Win


@dataclass(frozen=True)
class World:
    """The scenes' pixel grid over the region: north-up, `pixel` metres, in `crs`.

    Pixel corners sit at odd multiples of half a pixel (centres on multiples of 30 m),
    as in USGS's products.
    """

    crs: CRS
    transform: Affine
    height: int
    width: int

    @classmethod
    def around(cls, bounds: Sequence[float], bounds_crs: Any, crs: CRS, margin: float, pixel: float) -> World:
        """The grid covering `bounds` (xmin, ymin, xmax, ymax in `bounds_crs`) plus
        `margin` metres, in `crs`."""
        left, bottom, right, top = bounds
        xmin, ymin, xmax, ymax = Transformer.from_crs(bounds_crs, crs, always_xy=True).transform_bounds(
            left, bottom, right, top, densify_pts=21
        )
        half = pixel / 2
        x0 = np.floor((xmin - margin - half) / pixel) * pixel + half
        y1 = np.ceil((ymax + margin - half) / pixel) * pixel + half
        x1 = np.ceil((xmax + margin - half) / pixel) * pixel + half
        y0 = np.floor((ymin - margin - half) / pixel) * pixel + half
        return cls(crs, Affine(pixel, 0, x0, 0, -pixel, y1), int(round((y1 - y0) / pixel)), int(round((x1 - x0) / pixel)))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the world, metres in `crs`."""
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)

    def window(self, geom: shapely.Geometry) -> tuple[slice, slice] | None:
        """Rows and columns of the world pixels meeting `geom`'s bounding box, or None."""
        clipped = shapely.intersection(geom, shapely.box(*self.bounds))
        if clipped.is_empty or clipped.area == 0:
            return None
        t = self.transform
        xmin, ymin, xmax, ymax = clipped.bounds
        c0, c1 = int(np.floor((xmin - t.c) / t.a)), int(np.ceil((xmax - t.c) / t.a))
        r0, r1 = int(np.floor((t.f - ymax) / -t.e)), int(np.ceil((t.f - ymin) / -t.e))
        return slice(max(r0, 0), min(r1, self.height)), slice(max(c0, 0), min(c1, self.width))

    @property
    def win(self) -> Win:
        """The world as a window of the global pixel grid (fields.Win: pixel (r, c) has
        its centre at x = c * pixel, y = -r * pixel)."""
        t = self.transform
        return Win(int(round(-(t.f + t.e / 2) / t.a)), int(round((t.c + t.a / 2) / t.a)), self.height, self.width)

    def to_win(self, rows: slice, cols: slice) -> Win:
        """World rows and columns as a window of the global pixel grid."""
        w = self.win
        return Win(w.r0 + rows.start, w.c0 + cols.start, rows.stop - rows.start, cols.stop - cols.start)


def lonlat(geom: shapely.Geometry, crs: CRS) -> shapely.Geometry:
    """`geom` (in `crs`) in lon/lat (EPSG:4326), edges densified every 1 km first."""
    to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
    dense = shapely.segmentize(geom, 1000.0)
    return shapely.transform(dense, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))


def raster_bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a north-up raster of `shape` (rows, cols)."""
    return (transform.c, transform.f + shape[0] * transform.e, transform.c + shape[1] * transform.a, transform.f)
