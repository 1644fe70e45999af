"""Facts about a raster file measured in the grid's CRS: its footprint and pixel size,
and opening one with errors that name it. Shared by the census (land-cover labels, the
grid of an existing composite) and imagery (composites) phases."""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from rasterio.io import DatasetReader

from urbanmap.core import io
from urbanmap.core.errors import InputError


def footprint(src: DatasetReader, crs: Any) -> shapely.Polygon:
    """The raster's extent as a polygon in `crs` (edges densified, so a reprojected
    rectangle keeps its curved sides)."""
    if src.crs is None:
        raise InputError(f"{src.name}: the raster has no CRS")
    box = shapely.segmentize(shapely.box(*src.bounds), max_segment_length=max(src.width, src.height) * abs(src.transform.a) / 64)
    to_grid = Transformer.from_crs(CRS.from_user_input(src.crs), CRS.from_user_input(crs), always_xy=True)
    return shapely.transform(box, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))


def source_pixel_m(src: DatasetReader, crs: Any) -> float:
    """The file's pixel side measured in `crs` metres at the raster's centre."""
    to_grid = Transformer.from_crs(CRS.from_user_input(src.crs), CRS.from_user_input(crs), always_xy=True)
    t = src.transform
    cx, cy = t.c + t.a * src.width / 2 + t.b * src.height / 2, t.f + t.d * src.width / 2 + t.e * src.height / 2
    x, y = to_grid.transform([cx, cx + t.a, cx], [cy, cy, cy + t.e])
    return float(np.sqrt(abs((x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0]))))


def open_raster(path: str, what: str) -> DatasetReader:
    """Open a raster that must have a CRS; InputError naming it (as `what`) if it is
    missing, unreadable or without a CRS."""
    io.require_file(path, what)
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc}".splitlines()[0]) from exc
    if src.crs is None:
        src.close()
        raise InputError(f"{path}: the {what} has no CRS")
    return src
