"""The `grid` stage: square cells aligned to multiples of the cell size, covering a region.

Cells live on a lattice in a projected CRS (metres): the cell with lattice indices
(col, row) spans ``[col * s, (col + 1) * s) x [row * s, (row + 1) * s)`` for cell size
``s``. Its id encodes the position of its lower-left corner, so the same cell has the same
id in every region and run: ``E2786N0812`` is the 1 km cell whose corner is at
E 2,786 km, N 812 km. Cell sizes that are not whole kilometres use metres with eight
digits (``E00512300N04412100``); negative coordinates use W / S.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import rasterio.features
import shapely
from affine import Affine
from numpy.typing import ArrayLike
from omegaconf import DictConfig, ListConfig
from pyproj import CRS
from pyproj.exceptions import CRSError
from scipy import ndimage

from urbanmap.core import io, paths, rasters
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import patch_size

#: Digits of each coordinate in a cell id: kilometres for whole-kilometre cells, else metres.
ID_DIGITS_KM, ID_DIGITS_M = 4, 8


def cell_ids(cols: ArrayLike, rows: ArrayLike, cell_size: float) -> pd.Series:
    """Stable ids of cells from their lattice indices (see module docstring).

    Args:
        cols, rows: int arrays of shape (n,), lattice indices of the lower-left corners.
        cell_size: cell side in metres.
    Returns:
        Series of n str ids (Arrow-backed).
    """
    x = np.asarray(cols, dtype=np.int64) * int(cell_size)
    y = np.asarray(rows, dtype=np.int64) * int(cell_size)
    if int(cell_size) % 1000 == 0:
        x, y, digits = x // 1000, y // 1000, ID_DIGITS_KM
    else:
        digits = ID_DIGITS_M
    if len(x) and max(np.abs(x).max(), np.abs(y).max()) >= 10**digits:
        raise InputError(f"cell coordinates exceed the {digits} digits of a cell id; is the grid CRS right?")
    # Fixed-width ASCII built digit by digit with NumPy: formatting two million ids
    # with Python or Arrow string kernels costs 5-8 times more.
    n, width = len(x), 2 * digits + 2
    text = np.empty((n, width), np.uint8)
    for start, value, pos, neg in ((0, x, "E", "W"), (digits + 1, y, "N", "S")):
        text[:, start] = np.where(value < 0, ord(neg), ord(pos))
        value = np.abs(value)
        for k in range(digits):
            text[:, start + digits - k] = 48 + (value // 10**k) % 10
    ids = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(text)])
    return pd.Series(ids.cast(pa.binary()).cast(pa.string()), dtype=pd.ArrowDtype(pa.string()))


def parse_cell_ids(ids: Sequence[str] | pd.Series, cell_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `cell_ids`: lattice indices (cols, rows), two (n,) int64 arrays, of n
    ids for this cell size (metres)."""
    parts = pd.Series(ids, dtype="string").str.extract(r"^([EW])(\d+)([NS])(\d+)$")
    if parts.isna().any().any():
        bad = pd.Series(ids)[parts.isna().any(axis=1).to_numpy()].iloc[0]
        raise InputError(f"cell id {bad!r} is not of the form E<digits>N<digits>")
    unit = 1000 if int(cell_size) % 1000 == 0 else 1
    x = parts[1].astype(np.int64).to_numpy() * np.where(parts[0] == "W", -1, 1) * unit
    y = parts[3].astype(np.int64).to_numpy() * np.where(parts[2] == "S", -1, 1) * unit
    return x // int(cell_size), y // int(cell_size)


def cell_polygons(cols: ArrayLike, rows: ArrayLike, cell_size: float) -> np.ndarray:
    """Shapely polygons of shape (n,) for cells given by (n,) lattice indices, in the
    grid's CRS (metres; `cell_size` is the side in metres)."""
    x0 = np.asarray(cols, dtype=np.float64) * cell_size
    y0 = np.asarray(rows, dtype=np.float64) * cell_size
    return shapely.box(x0, y0, x0 + cell_size, y0 + cell_size)


def check_projected(crs: CRS, where: str) -> None:
    """Refuse a geographic (degrees) CRS: cells must be squares in metres."""
    if not crs.is_projected:
        raise InputError(f"{where}: the grid CRS {crs.to_string()} is not projected; cells need metres")
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    if unit not in ("metre", "meter", "m"):
        raise InputError(f"{where}: the grid CRS {crs.to_string()} has units of {unit}, not metres")


def build_grid(region: shapely.Geometry, cell_size: float) -> pd.DataFrame:
    """Cells of the lattice whose interior overlaps `region`'s interior.

    Cells that only touch the region along an edge or at a corner are left out. The
    region is rasterised on the lattice (cells touched, found by GDAL), and only cells
    near the region's outline, where rasterisation may err, are tested exactly with
    shapely; no Python loop runs over cells.

    Args:
        region: (Multi)Polygon in the grid's projected CRS, metres.
        cell_size: cell side in metres.
    Returns:
        DataFrame with one row per cell, sorted north to south then west to east:
        `cell_id` (str), `col`, `row` (int32 lattice indices of the lower-left corner).
    """
    if region.is_empty:
        raise InputError("the region is empty")
    xmin, ymin, xmax, ymax = region.bounds
    col0, row0 = int(np.floor(xmin / cell_size)), int(np.floor(ymin / cell_size))
    col1, row1 = int(np.ceil(xmax / cell_size)), int(np.ceil(ymax / cell_size))
    shape = (max(row1 - row0, 1), max(col1 - col0, 1))
    # Raster row 0 is the northernmost lattice row (row1 - 1).
    transform = Affine(cell_size, 0, col0 * cell_size, 0, -cell_size, row1 * cell_size)
    touched = rasterio.features.rasterize(
        [region], out_shape=shape, transform=transform, all_touched=True, dtype="uint8"
    ).astype(bool)
    outline = rasterio.features.rasterize(
        [region.boundary], out_shape=shape, transform=transform, all_touched=True, dtype="uint8"
    ).astype(bool)
    # One cell of margin around the outline absorbs GDAL's edge decisions.
    outline = ndimage.binary_dilation(outline, iterations=1)
    keep = touched & ~outline
    r, c = np.nonzero(outline)
    boxes = cell_polygons(col0 + c, row1 - 1 - r, cell_size)
    shapely.prepare(region)
    overlaps = shapely.intersects(region, boxes) & ~shapely.touches(region, boxes)
    keep[r[overlaps], c[overlaps]] = True
    r, c = np.nonzero(keep)
    cols = (col0 + c).astype(np.int32)
    rows = (row1 - 1 - r).astype(np.int32)
    return pd.DataFrame({"cell_id": cell_ids(cols, rows, cell_size), "col": cols, "row": rows})


def region_geometry(
    boundary: gpd.GeoDataFrame | None, window: Sequence[float] | None, crs: CRS, boundary_path: str
) -> shapely.Geometry:
    """The region in the grid CRS: the boundary's union, clipped to the window if any.

    Args:
        boundary: GeoDataFrame of the boundary (any CRS), or None to use the window alone.
        window: [xmin, ymin, xmax, ymax] in `crs` metres, or None.
        crs: the grid's projected CRS.
        boundary_path: the boundary's file, for error messages.
    Returns:
        (Multi)Polygon in `crs`, metres.
    """
    window_box = shapely.box(*window) if window is not None else None
    if boundary is None:
        if window_box is None:
            raise InputError("data.boundary and data.window are both null: nothing defines the region")
        return window_box
    shape = shapely.union_all(shapely.make_valid(boundary.to_crs(crs).geometry.values))
    if shape.is_empty:
        raise InputError(f"{boundary_path}: the boundary has no geometry")
    if window_box is not None:
        shape = shapely.intersection(shape, window_box)
        if shape.is_empty or shape.area == 0:
            raise InputError(
                f"{boundary_path}: the window {list(window or [])} does not overlap the boundary"
            )
    return shape


def mosaic_region(
    boundary: gpd.GeoDataFrame | None, window: Sequence[float] | None, crs: CRS, boundary_path: str,
    mosaic_file: str | None,
) -> shapely.Geometry:
    """The region, given that the imagery may be one existing file (data.imagery.source:
    file, see imagery.composite).

    With no mosaic file: `region_geometry`. With one: with no boundary and no window, the
    file's extent; otherwise boundary ∩ window, which must overlap the file's extent.

    Args:
        boundary, window, crs, boundary_path: as for `region_geometry`.
        mosaic_file: the mosaic file of periods.census (`GridSettings.mosaic_file`), or None.
    Returns:
        (Multi)Polygon in `crs`, metres.
    """
    if mosaic_file is None:
        return region_geometry(boundary, window, crs, boundary_path)
    with rasters.open_raster(mosaic_file, "mosaic file (data.imagery.file)") as src:
        extent = rasters.footprint(src, crs)
    if boundary is None and window is None:
        return extent
    region = region_geometry(boundary, window, crs, boundary_path)
    if shapely.intersection(region, extent).area <= 0:
        where = boundary_path if boundary is not None else f"data.window {list(window or [])}"
        raise InputError(f"{mosaic_file}: the mosaic file does not overlap the region ({where})")
    return region


def read_window(value: Any) -> tuple[float, ...] | None:
    """data.window as (xmin, ymin, xmax, ymax), or None; InputError unless it is four
    numbers with xmin < xmax and ymin < ymax (a window given as xmin, xmax, ymin, ymax
    would otherwise select a different, usually huge, region)."""
    if value is None:
        return None
    items = list(value) if isinstance(value, Sequence | ListConfig) and not isinstance(value, str) else None
    if items is None or len(items) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        raise InputError(f"data.window: expected four numbers [xmin, ymin, xmax, ymax] in data.crs units, got {value}")
    xmin, ymin, xmax, ymax = (float(v) for v in items)
    if not (xmin < xmax and ymin < ymax):
        raise InputError(
            f"data.window: expected [xmin, ymin, xmax, ymax] with xmin < xmax and ymin < ymax, got {items} "
            f"(width {xmax - xmin:g}, height {ymax - ymin:g})"
        )
    return (xmin, ymin, xmax, ymax)


@dataclass(frozen=True)
class GridSettings:
    """What the `grid` stage reads from the config, checked.

    Attributes:
        crs: the grid's projected CRS (data.crs), in metres.
        cell_size: cell side, metres (data.cell_size), > 0 and at least two pixels of
            data.pixel_size.
        boundary: the boundary's vector file, any CRS (data.boundary), or None.
        window: [xmin, ymin, xmax, ymax] in `crs` metres (data.window), or None.
        mosaic_file: the existing mosaic file of periods.census (data.imagery.file, its
            placeholders filled in) when data.imagery.source is file, else None.
        out: where grid.parquet goes (`<out_dir>/<data.name>/grid.parquet`).
    """

    crs: CRS
    cell_size: float
    boundary: str | None
    window: tuple[float, ...] | None
    mosaic_file: str | None
    out: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> GridSettings:
        """Read the `data` section; InputError naming the config key that is wrong."""
        try:
            crs = CRS.from_user_input(cfg.data.crs)
        except CRSError as exc:
            raise InputError(f"data.crs: {cfg.data.crs!r} is not a CRS: {exc}".splitlines()[0]) from None
        check_projected(crs, "data.crs")
        cell_size = float(cfg.data.cell_size)
        if cell_size <= 0:
            raise InputError(f"data.cell_size: must be positive, got {cell_size}")
        # Refuse a cell smaller than two pixels now, not in a later stage.
        patch_size(cell_size, float(cfg.data.pixel_size), cfg.data.get("patch_size"))
        im = cfg.data.get("imagery")
        mosaic_file = None
        if im is not None and str(im.get("source")) == "file" and im.get("file"):
            mosaic_file = paths.fill_path(im.file, cfg, paths.census_period(cfg))
        return cls(
            crs=crs,
            cell_size=cell_size,
            boundary=str(cfg.data.boundary) if cfg.data.boundary else None,
            window=read_window(cfg.data.window),
            mosaic_file=mosaic_file,
            out=paths.grid(cfg),
        )


def run(cfg: DictConfig) -> None:
    """Stage: read the boundary, build the grid, write `<out_dir>/<region>/grid.parquet`.

    The region is data.boundary ∩ data.window; when both are null and the imagery is one
    file (data.imagery.source: file), the extent of that file (for periods.census).
    """
    settings = GridSettings.from_config(cfg)
    boundary = io.read_vector(settings.boundary, "boundary") if settings.boundary else None
    region = mosaic_region(boundary, settings.window, settings.crs, str(settings.boundary), settings.mosaic_file)
    cells = build_grid(region, settings.cell_size)
    io.write_cells(settings.out, cells, settings.cell_size, settings.crs)
    print(f"grid: {len(cells):,} cells of {settings.cell_size:g} m in {settings.crs.to_string()} -> {settings.out}")
