"""Zones of the census's urban localities where the image and the census part ways,
computed once by the client from the polygons (scene CRS, metres):

- `young_fringe`: the locality polygons are of one vintage (INEGI's: 2015-2017); in an
  earlier year, the land the city took since then, at the edge of the urban area, was
  not built yet (`unbuilt_share`: the city's land growing at a constant rate);
- `sprawl_zone`: the band just outside the urban area, where built-up land spills over
  the polygons (landcover.Sprawl builds part of it).

Both come from the union of the urban polygons (`urban_area`), so the shared edges of
neighbouring localities (a metropolis is many of them) are neither fringe nor outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

#: Metres by which the union is closed (buffered out, then in): the slivers between
#: neighbouring polygons, which digitising leaves, are not edges of the urban area.
CLOSE_M = 30.0


def unbuilt_share(year: int, vintage: int | None, growth_rate: float) -> float:
    """Share of the polygons' urban area not yet built in `year`: the area grows at
    `growth_rate` (continuous, per year) up to the polygons' `vintage`, so a year t
    years earlier saw ``exp(-growth_rate * t)`` of it. 0 from the vintage on, or
    without one."""
    if vintage is None or year >= vintage or growth_rate <= 0:
        return 0.0
    return float(1.0 - np.exp(-float(growth_rate) * (int(vintage) - int(year))))


def urban_area(polygons: Sequence[shapely.Geometry] | np.ndarray) -> np.ndarray:
    """The connected parts of the union of `polygons`, closed by CLOSE_M (object array)."""
    polygons = np.asarray(polygons, dtype=object)
    if len(polygons) == 0:
        return np.empty(0, dtype=object)
    union = shapely.buffer(shapely.union_all(shapely.buffer(polygons, CLOSE_M)), -CLOSE_M)
    return np.asarray(shapely.get_parts(union), dtype=object)


def young_fringe(parts: np.ndarray, share: float) -> np.ndarray:
    """The ring inside the edge of each part of the urban area holding about `share` of
    its area (object array of polygons; empty for a share of 0).

    The ring's width d makes it exact for a disc: d = 2 (A / P) (1 - sqrt(1 - share)),
    A and P the part's area and perimeter (holes included); for thin rings (most
    shapes) its area is then about share x A whatever the shape.
    """
    if share <= 0 or len(parts) == 0:
        return np.empty(0, dtype=object)
    area, perimeter = shapely.area(parts), shapely.length(parts)
    width = 2.0 * area / np.maximum(perimeter, 1e-9) * (1.0 - np.sqrt(1.0 - min(float(share), 1.0)))
    rings = shapely.difference(parts, shapely.buffer(parts, -width))
    return _pieces(rings)


def sprawl_zone(parts: np.ndarray, width_m: float) -> np.ndarray:
    """The band of `width_m` metres around the urban area, outside it (object array of
    polygons; empty for a width of 0)."""
    if width_m <= 0 or len(parts) == 0:
        return np.empty(0, dtype=object)
    union = shapely.union_all(parts)
    return _pieces(np.asarray([shapely.difference(shapely.buffer(union, float(width_m)), union)], dtype=object))


def _pieces(geoms: np.ndarray) -> np.ndarray:
    """The non-empty polygons of `geoms`, one per row (so that a task reads only the
    pieces near its tile: tiles.write_polygons)."""
    parts = shapely.get_parts(geoms)
    parts = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
    return np.asarray(parts[~shapely.is_empty(parts)], dtype=object)
