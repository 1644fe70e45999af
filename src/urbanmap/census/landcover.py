"""Labels from a categorical land-cover raster (`data.landcover`) instead of census polygons.

A land-cover map (ESA WorldCover, a national map, a cadastre rasterised...) in any CRS
and resolution, and the list of its codes that count as urban, give each grid cell:

- `urban_area`: m² of the cell covered by urban-coded pixels;
- `landcover_area`: m² of the cell covered by any valid (not nodata) pixel;
- `urban_fraction`: urban_area / landcover_area; NaN (hence `excluded`) where the map
  covers less than `min_valid` of the cell;
- `label` by the same rule as census labels (labels.urban_fraction thresholds).

How the area is measured (why not exact polygon clipping): the urban indicator (1 for an
urban code, 0 otherwise, 0 on nodata) and the valid indicator are warped by GDAL's
area-weighted `average` resampling onto a fine lattice of `k` x `k` sub-pixels per cell,
then summed per cell with a NumPy reshape. GDAL weighs each map pixel by the share of it
that falls in a sub-pixel; what remains is GDAL's approximation of a sub-pixel's footprint
in the map's CRS, whose error shrinks with the sub-pixel. k = cell_size / subpixel_m,
by default cell_size / (the map's pixel size in the grid's CRS), at most MAX_SUBPIXELS
= 10. Measured against exact clipping of every map pixel's polygon (tests/test_byo.py,
a lon/lat map of 9 m pixels, 300 m UTM cells), the largest error per cell is 0.02% of
the cell's area at k = 34, 0.09% at k = 10 and 0.39-0.55% at k = 1 (warping straight
onto the cells); k = 10 is 2-4 times faster than k = 34, so it is the cap. Exact
clipping, or one rasterio.mask per cell (benchmarks/bench_byo_labels.py), is orders of
magnitude slower. The work goes block by block, so memory does not grow with the region.
Population is not available from a land-cover map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import rasterio
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from tqdm import tqdm

from urbanmap.census.rules import LABELS, apply_rule
from urbanmap.core import io, paths, rasters
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, block_transform, plan_blocks

#: Side of a block, in sub-pixels and in map pixels (bounds memory: a block's map window
#: as uint8 and its sub-pixels as float32, 2 bands each).
BLOCK_PX = 2048
#: Largest number of sub-pixels per cell side by default (see the module docstring).
MAX_SUBPIXELS = 10


def indicators(codes: np.ndarray, urban_codes: Sequence, nodata) -> tuple[np.ndarray, np.ndarray]:
    """(urban, valid) bool arrays of the shape of `codes` (a land-cover array).

    A lookup table is used for integer maps of up to 16 bits (one gather per pixel);
    other maps use np.isin.
    """
    valid = np.ones(codes.shape, bool) if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)) else codes != nodata
    if codes.dtype.kind == "f":
        valid &= ~np.isnan(codes)
    if codes.dtype.kind in "ui" and codes.dtype.itemsize <= 2:
        info = np.iinfo(codes.dtype)
        unsigned = np.dtype(f"u{codes.dtype.itemsize}")
        wanted = np.array([c for c in urban_codes if info.min <= c <= info.max], codes.dtype)
        lut = np.zeros(2 ** (8 * codes.dtype.itemsize), bool)
        lut[wanted.view(unsigned)] = True
        urban = lut[np.ascontiguousarray(codes).view(unsigned)]
    else:
        urban = np.isin(codes, np.asarray(urban_codes))
    return urban & valid, valid

def landcover_areas(
    src, cols, rows, cell_size: float, crs, urban_codes: Sequence, band: int = 1, nodata=None,
    subpixel_m: float | None = None, threads: int = 1, progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Urban and valid land-cover area of each cell.

    Args:
        src: open rasterio dataset of the land-cover map (any CRS and resolution).
        cols, rows: (n,) int lattice indices of the cells (grid.py).
        cell_size: cell side, metres of the grid's projected CRS `crs`.
        urban_codes: map values that count as urban.
        band: 1-based band of the map; nodata: value to ignore (None: the file's).
        subpixel_m: sub-pixel side in metres (None: the map's pixel size in `crs`, but
            at most MAX_SUBPIXELS sub-pixels per cell side).
    Returns:
        (urban_area (n,) float64 m², landcover_area (n,) float64 m², k sub-pixels per
        cell side).
    """
    crs = CRS.from_user_input(crs)
    cols, rows = np.asarray(cols, np.int64), np.asarray(rows, np.int64)
    if subpixel_m:
        k = max(1, int(math.ceil(cell_size / float(subpixel_m) - 1e-9)))
    else:
        k = min(MAX_SUBPIXELS, max(1, int(math.ceil(cell_size / rasters.source_pixel_m(src, crs) - 1e-9))))
    nodata = src.nodata if nodata is None else nodata
    lattice = PixelLattice.from_cells(cols, rows, cell_size, k, crs)
    index = np.full((lattice.nrows, lattice.ncols), -1, np.int64)
    ri = lattice.row0 + lattice.nrows - 1 - rows  # 0 = northernmost row of cells
    ci = cols - lattice.col0
    index[ri, ci] = np.arange(len(cols))
    urban_area = np.zeros(len(cols))
    valid_area = np.zeros(len(cols))
    sub_area = (cell_size / k) ** 2
    full = Window(0, 0, src.width, src.height)
    # Blocks of at most BLOCK_PX sub-pixels and about BLOCK_PX map pixels a side.
    map_px_per_cell = cell_size / rasters.source_pixel_m(src, crs)
    blocks = plan_blocks(lattice, cols, rows, max(1, min(BLOCK_PX // k, int(BLOCK_PX / map_px_per_cell))))
    for block in tqdm(blocks, desc="labels (land cover)", unit="block", disable=None if progress else True, leave=False):
        dst_transform = block_transform(lattice, block)
        x0, y1 = dst_transform.c, dst_transform.f
        bounds = (x0, y1 - block.height * lattice.pixel_size, x0 + block.width * lattice.pixel_size, y1)
        sb = transform_bounds(crs, src.crs, *bounds, densify_pts=21)
        try:
            w = from_bounds(*sb, transform=src.transform)
            c0, r0 = math.floor(w.col_off) - 2, math.floor(w.row_off) - 2  # 2 pixels of margin
            c1, r1 = math.ceil(w.col_off + w.width) + 2, math.ceil(w.row_off + w.height) + 2
            win = Window(c0, r0, c1 - c0, r1 - r0).intersection(full)
        except rasterio.errors.WindowError:
            continue  # the block lies outside the map
        codes = src.read(band, window=win)
        urban, valid = indicators(codes, urban_codes, nodata)
        if not valid.any():
            continue
        source = np.stack([urban, valid]).view(np.uint8)  # GDAL averages in float32 (the destination's type)
        dst = np.zeros((2, block.height, block.width), np.float32)
        reproject(
            source=source, destination=dst, src_transform=src.window_transform(win), src_crs=src.crs,
            dst_transform=dst_transform, dst_crs=crs, resampling=Resampling.average, num_threads=max(1, int(threads)),
        )
        nr, nc = block.cells.shape
        sums = dst.reshape(2, nr, k, nc, k).sum(axis=(2, 4), dtype=np.float64) * sub_area
        cell_idx = index[block.row_off // k: block.row_off // k + nr, block.col_off // k: block.col_off // k + nc]
        here = cell_idx >= 0
        urban_area[cell_idx[here]] = sums[0][here]
        valid_area[cell_idx[here]] = sums[1][here]
    return urban_area, valid_area, k

def codes_present(src, band: int = 1, nodata=None, max_px: int = 1024) -> list:
    """The distinct values of a decimated read of the map (for error messages)."""
    f = max(1, max(src.width, src.height) // max_px)
    sample = src.read(band, out_shape=(max(1, src.height // f), max(1, src.width // f)), resampling=Resampling.nearest)
    values = np.unique(sample)
    nodata = src.nodata if nodata is None else nodata
    return [v.item() for v in values if nodata is None or v != nodata][:20]

def run(cfg) -> dict:
    """Stage `labels` for `data.landcover`: grid + land-cover map -> labels.parquet,
    label_summary.json (the same files and label rule as census labels)."""
    lc = cfg.data.landcover
    rule = cfg.labels.rule
    if rule != "urban_fraction":
        raise InputError(f"labels.rule: {rule!r} needs census population; labels from data.landcover use urban_fraction")
    codes = list(lc.get("urban_codes") or [])
    if not codes:
        raise InputError("data.landcover.urban_codes: list the land-cover codes that count as urban")
    min_valid = float(lc.get("min_valid", 0.5))
    thresholds = cfg.labels.urban_fraction
    cells, cell_size, crs = io.read_cells(paths.grid(cfg), "grid", columns=["cell_id"])
    if cells.empty:
        raise InputError(f"{paths.grid(cfg)}: the grid has no cells")
    path = io.require_file(lc.path, "land-cover raster (data.landcover.path)")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read land-cover raster: {exc}".splitlines()[0]) from exc
    with src:
        if src.crs is None:
            raise InputError(f"{path}: the land-cover raster has no CRS")
        band = int(lc.get("band", 1) or 1)
        if not 1 <= band <= src.count:
            raise InputError(f"data.landcover.band: {band} is not a band of {path} (1..{src.count})")
        nodata = lc.get("nodata")
        threads = int(cfg.compute.get("threads", 1) or 1)
        urban, valid, k = landcover_areas(
            src, cells["col"], cells["row"], cell_size, crs, codes, band, nodata, lc.get("subpixel_m"), threads
        )
        if valid.sum() == 0:
            raise InputError(f"{path}: the land-cover raster has no data over the grid")
        if urban.sum() == 0:
            found = codes_present(src, band, nodata)
            raise InputError(
                f"{path}: none of the urban codes {codes} is present over the grid (codes found: {found})"
            )
    cell_area = cell_size**2
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(valid >= min_valid * cell_area, np.minimum(urban / valid, 1.0), np.nan)
    table = pd.DataFrame({
        "cell_id": cells["cell_id"], "col": cells["col"], "row": cells["row"],
        "urban_area": urban, "landcover_area": valid, "urban_fraction": fraction,
    })
    table["label"] = apply_rule(fraction, float(thresholds.urban_min), float(thresholds.non_urban_max))
    io.write_cells(paths.labels(cfg), table, cell_size, crs)
    counts = {name: int((table["label"] == name).sum()) for name in LABELS}
    summary = {
        "cells": int(len(table)),
        "rule": rule,
        **{f"{name}_cells": counts[name] for name in LABELS},
        "urban_area_km2": float(urban.sum() / 1e6),
        "landcover": {
            "path": str(path),
            "urban_codes": codes,
            "subpixels_per_cell_side": k,
            "cells_without_enough_data": int(np.isnan(fraction).sum()),
        },
    }
    io.write_json(paths.label_summary(cfg), summary)
    print(
        f"labels ({rule}, land cover): {len(table):,} cells: "
        + ", ".join(f"{name} {counts[name]:,}" for name in LABELS)
        + f"; {k} x {k} sub-pixels per cell, {summary['landcover']['cells_without_enough_data']:,} cells with "
        f"< {min_valid:.0%} map coverage -> {paths.labels(cfg)}"
    )
    return summary
