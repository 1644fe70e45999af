"""Facts about a raster file measured in the grid's CRS: its footprint and pixel size,
and opening one with errors that name it. Shared by the census (land-cover labels, the
grid of an existing composite) and imagery (composites) phases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
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


def check_reflectance(src: Any, indexes: Sequence[int], where: str, hint: str, scale: np.ndarray | None = None,
                      offset: np.ndarray | None = None, nodata: float | None = None) -> float:
    """Median of the bands on one decimated read (at most about 512 px a side, from the
    file's overviews when it has them), times `scale` plus `offset` when given; InputError
    naming `where` when every pixel is nodata or the median cannot be a surface
    reflectance (-0.2..1.5), ending with `hint` (what to fix). Returns the median.

    A mosaic of unscaled digital numbers (Collection 2: 7,273 to 43,636 for reflectance 0
    to 1) or of reflectance x 10,000 would otherwise pass and map no urban cell.
    """
    factor = max(1, max(src.width, src.height) // 512)
    shape = (len(indexes), max(1, src.height // factor), max(1, src.width // factor))
    sample = src.read(list(indexes), out_shape=shape, resampling=Resampling.nearest).astype(np.float64)
    if nodata is not None:
        sample[sample == nodata] = np.nan
    if scale is not None and offset is not None:
        sample = sample * scale[:, None, None] + offset[:, None, None]
    if not np.isfinite(sample).any():
        raise InputError(f"{where}: no valid pixel in the mosaic (every pixel is nodata)")
    median = float(np.nanmedian(sample))
    if not -0.2 <= median <= 1.5:
        raise InputError(f"{where}: median band value {median:.4g} is not a surface reflectance (0..1); {hint}")
    return median
