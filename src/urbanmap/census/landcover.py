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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from numpy.typing import ArrayLike
from omegaconf import DictConfig
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from tqdm import tqdm

from urbanmap.census.rules import LABELS, RuleThresholds, apply_rule, label_counts
from urbanmap.core import io, paths, rasters
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import Block, PixelLattice, block_transform, plan_blocks

#: Side of a block, in sub-pixels and in map pixels (bounds memory: a block's map window
#: as uint8 and its sub-pixels as float32, 2 bands each).
BLOCK_PX = 2048
#: Largest number of sub-pixels per cell side by default (see the module docstring).
MAX_SUBPIXELS = 10
#: The label rule of land-cover labels (labels.rule must name it): the urban fraction.
RULE = "urban_fraction"


@dataclass(frozen=True)
class LandcoverSettings:
    """What the `labels` stage reads from the config when data.landcover is set, checked.

    Attributes:
        path: the land-cover raster (data.landcover.path), any CRS and resolution.
        urban_codes: the map values that count as urban (data.landcover.urban_codes).
        band: the map's band, 1-based (data.landcover.band).
        nodata: the map value to ignore (data.landcover.nodata), or None: the file's.
        min_valid: share 0..1 of a cell's area the map must cover for an urban fraction
            (data.landcover.min_valid); cells below get NaN (label `excluded`).
        subpixel_m: side in metres of the sub-pixels the map is averaged over
            (data.landcover.subpixel_m), or None: the map's pixel, at most MAX_SUBPIXELS a cell side.
        threads: GDAL's warp threads (compute.threads).
        thresholds: the urban_fraction rule's thresholds (labels.urban_fraction), fractions 0..1.
        grid: the region's grid.parquet, read.
        labels_out, summary_out: where labels.parquet and label_summary.json go.
    """

    path: str
    urban_codes: tuple[Any, ...]
    band: int
    nodata: float | None
    min_valid: float
    subpixel_m: float | None
    threads: int
    thresholds: RuleThresholds
    grid: Path
    labels_out: Path
    summary_out: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> LandcoverSettings:
        """Read `data.landcover`, `labels` and compute.threads; InputError naming the config
        key that is wrong."""
        lc = cfg.data.landcover
        rule = cfg.labels.rule
        if rule != RULE:
            raise InputError(f"labels.rule: {rule!r} needs census population; labels from data.landcover use urban_fraction")
        codes = tuple(lc.get("urban_codes") or [])
        if not codes:
            raise InputError("data.landcover.urban_codes: list the land-cover codes that count as urban")
        subpixel_m = lc.get("subpixel_m")
        return cls(
            path=str(lc.path),
            urban_codes=codes,
            band=int(lc.get("band", 1) or 1),
            nodata=lc.get("nodata"),
            min_valid=float(lc.get("min_valid", 0.5)),
            subpixel_m=float(subpixel_m) if subpixel_m else None,
            threads=int(cfg.compute.get("threads", 1) or 1),
            thresholds=RuleThresholds.from_config(cfg.labels.urban_fraction, "labels.urban_fraction"),
            grid=paths.grid(cfg),
            labels_out=paths.labels(cfg),
            summary_out=paths.label_summary(cfg),
        )


def indicators(codes: np.ndarray, urban_codes: Sequence[Any], nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
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


def subpixels_per_cell(src: DatasetReader, crs: CRS, cell_size: float, subpixel_m: float | None) -> int:
    """k, the sub-pixels per cell side: cell_size / subpixel_m rounded up, or by default
    cell_size / (the map's pixel size in `crs`, metres) rounded up, at most MAX_SUBPIXELS."""
    if subpixel_m:
        return max(1, int(math.ceil(cell_size / float(subpixel_m) - 1e-9)))
    return min(MAX_SUBPIXELS, max(1, int(math.ceil(cell_size / rasters.source_pixel_m(src, crs) - 1e-9))))


def map_window(src: DatasetReader, crs: CRS, lattice: PixelLattice, block: Block) -> tuple[Affine, Window | None]:
    """The block's transform on the sub-pixel `lattice`, and the window of the map that
    covers it with 2 map pixels of margin (None when the block lies outside the map)."""
    dst_transform = block_transform(lattice, block)
    x0, y1 = dst_transform.c, dst_transform.f
    bounds = (x0, y1 - block.height * lattice.pixel_size, x0 + block.width * lattice.pixel_size, y1)
    sb = transform_bounds(crs, src.crs, *bounds, densify_pts=21)
    try:
        w = from_bounds(*sb, transform=src.transform)
        c0, r0 = math.floor(w.col_off) - 2, math.floor(w.row_off) - 2  # 2 pixels of margin
        c1, r1 = math.ceil(w.col_off + w.width) + 2, math.ceil(w.row_off + w.height) + 2
        return dst_transform, Window(c0, r0, c1 - c0, r1 - r0).intersection(Window(0, 0, src.width, src.height))
    except rasterio.errors.WindowError:
        return dst_transform, None


def block_areas(
    src: DatasetReader, win: Window, band: int, urban_codes: Sequence[Any], nodata: float | None, crs: CRS,
    dst_transform: Affine, block: Block, k: int, sub_area: float, threads: int,
) -> np.ndarray | None:
    """Urban and valid area, m², of each cell of a block: float64 (2, cell rows, cell
    cols); None when the map window `win` holds no valid pixel.

    The urban and valid indicators of the map pixels in `win` are warped by GDAL's
    area-weighted average onto the block's k x k sub-pixels per cell (in `crs`), then
    summed per cell (`sub_area`: a sub-pixel's area, m²).
    """
    codes = src.read(band, window=win)
    urban, valid = indicators(codes, urban_codes, nodata)
    if not valid.any():
        return None
    source = np.stack([urban, valid]).view(np.uint8)  # GDAL averages in float32 (the destination's type)
    dst = np.zeros((2, block.height, block.width), np.float32)
    reproject(
        source=source, destination=dst, src_transform=src.window_transform(win), src_crs=src.crs,
        dst_transform=dst_transform, dst_crs=crs, resampling=Resampling.average, num_threads=max(1, int(threads)),
    )
    nr, nc = block.cells.shape
    return dst.reshape(2, nr, k, nc, k).sum(axis=(2, 4), dtype=np.float64) * sub_area


def landcover_areas(
    src: DatasetReader, cols: ArrayLike, rows: ArrayLike, cell_size: float, crs: Any, urban_codes: Sequence[Any],
    band: int = 1, nodata: float | None = None, subpixel_m: float | None = None, threads: int = 1,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Urban and valid land-cover area of each cell, block by block (`block_areas`).

    Args:
        src: open rasterio dataset of the land-cover map (any CRS and resolution).
        cols, rows: (n,) int lattice indices of the cells (grid.py).
        cell_size: cell side, metres of the grid's projected CRS `crs`.
        urban_codes: map values that count as urban.
        band: 1-based band of the map; nodata: value to ignore (None: the file's).
        subpixel_m: sub-pixel side in metres (None: the map's pixel size in `crs`, but
            at most MAX_SUBPIXELS sub-pixels per cell side).
        threads: GDAL's warp threads; progress: show a progress bar.
    Returns:
        (urban_area (n,) float64 m², landcover_area (n,) float64 m², k sub-pixels per
        cell side).
    """
    crs = CRS.from_user_input(crs)
    cols, rows = np.asarray(cols, np.int64), np.asarray(rows, np.int64)
    k = subpixels_per_cell(src, crs, cell_size, subpixel_m)
    nodata = src.nodata if nodata is None else nodata
    lattice = PixelLattice.from_cells(cols, rows, cell_size, k, crs)
    index = np.full((lattice.nrows, lattice.ncols), -1, np.int64)
    ri = lattice.row0 + lattice.nrows - 1 - rows  # 0 = northernmost row of cells
    ci = cols - lattice.col0
    index[ri, ci] = np.arange(len(cols))
    urban_area = np.zeros(len(cols))
    valid_area = np.zeros(len(cols))
    sub_area = (cell_size / k) ** 2
    # Blocks of at most BLOCK_PX sub-pixels and about BLOCK_PX map pixels a side.
    map_px_per_cell = cell_size / rasters.source_pixel_m(src, crs)
    blocks = plan_blocks(lattice, cols, rows, max(1, min(BLOCK_PX // k, int(BLOCK_PX / map_px_per_cell))))
    for block in tqdm(blocks, desc="labels (land cover)", unit="block", disable=None if progress else True, leave=False):
        dst_transform, win = map_window(src, crs, lattice, block)
        if win is None:
            continue  # the block lies outside the map
        sums = block_areas(src, win, band, urban_codes, nodata, crs, dst_transform, block, k, sub_area, threads)
        if sums is None:
            continue
        nr, nc = block.cells.shape
        cell_idx = index[block.row_off // k: block.row_off // k + nr, block.col_off // k: block.col_off // k + nc]
        here = cell_idx >= 0
        urban_area[cell_idx[here]] = sums[0][here]
        valid_area[cell_idx[here]] = sums[1][here]
    return urban_area, valid_area, k


def codes_present(src: DatasetReader, band: int = 1, nodata: float | None = None, max_px: int = 1024) -> list[Any]:
    """The distinct values (at most 20) of a decimated read of the map (for error messages)."""
    f = max(1, max(src.width, src.height) // max_px)
    sample = src.read(band, out_shape=(max(1, src.height // f), max(1, src.width // f)), resampling=Resampling.nearest)
    values = np.unique(sample)
    nodata = src.nodata if nodata is None else nodata
    return [v.item() for v in values if nodata is None or v != nodata][:20]


def measure_landcover(
    path: Path, cells: pd.DataFrame, cell_size: float, crs: CRS, settings: LandcoverSettings
) -> tuple[np.ndarray, np.ndarray, int]:
    """Open the land-cover raster at `path` and measure the cells' urban and valid areas
    (`landcover_areas`); InputError when the raster or its band is unusable, or it has no
    data or no urban code over the grid."""
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read land-cover raster: {exc}".splitlines()[0]) from exc
    codes = list(settings.urban_codes)
    with src:
        if src.crs is None:
            raise InputError(f"{path}: the land-cover raster has no CRS")
        if not 1 <= settings.band <= src.count:
            raise InputError(f"data.landcover.band: {settings.band} is not a band of {path} (1..{src.count})")
        urban, valid, k = landcover_areas(
            src, cells["col"], cells["row"], cell_size, crs, codes, settings.band, settings.nodata,
            settings.subpixel_m, settings.threads,
        )
        if valid.sum() == 0:
            raise InputError(f"{path}: the land-cover raster has no data over the grid")
        if urban.sum() == 0:
            found = codes_present(src, settings.band, settings.nodata)
            raise InputError(
                f"{path}: none of the urban codes {codes} is present over the grid (codes found: {found})"
            )
    return urban, valid, k


def urban_fraction(urban: np.ndarray, valid: np.ndarray, cell_area: float, min_valid: float) -> np.ndarray:
    """(n,) urban / valid area, at most 1; NaN where the valid area is under min_valid x
    cell_area (m²)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid >= min_valid * cell_area, np.minimum(urban / valid, 1.0), np.nan)


def label_landcover(settings: LandcoverSettings) -> dict[str, Any]:
    """The stage's work for land-cover labels: grid + map -> labels.parquet,
    label_summary.json; returns the summary."""
    cells, cell_size, crs = io.read_cells(settings.grid, "grid", columns=["cell_id"])
    if cells.empty:
        raise InputError(f"{settings.grid}: the grid has no cells")
    path = io.require_file(settings.path, "land-cover raster (data.landcover.path)")
    urban, valid, k = measure_landcover(path, cells, cell_size, crs, settings)
    fraction = urban_fraction(urban, valid, cell_size**2, settings.min_valid)
    table = pd.DataFrame({
        "cell_id": cells["cell_id"], "col": cells["col"], "row": cells["row"],
        "urban_area": urban, "landcover_area": valid, "urban_fraction": fraction,
    })
    table["label"] = apply_rule(fraction, settings.thresholds.urban_min, settings.thresholds.non_urban_max)
    io.write_cells(settings.labels_out, table, cell_size, crs)
    counts = label_counts(table["label"])
    short = int(np.isnan(fraction).sum())
    summary = {
        "cells": int(len(table)),
        "rule": RULE,
        **{f"{name}_cells": counts[name] for name in LABELS},
        "urban_area_km2": float(urban.sum() / 1e6),
        "landcover": {
            "path": str(path),
            "urban_codes": list(settings.urban_codes),
            "subpixels_per_cell_side": k,
            "cells_without_enough_data": short,
        },
    }
    io.write_json(settings.summary_out, summary)
    print(
        f"labels ({RULE}, land cover): {len(table):,} cells: "
        + ", ".join(f"{name} {counts[name]:,}" for name in LABELS)
        + f"; {k} x {k} sub-pixels per cell, {short:,} cells with "
        f"< {settings.min_valid:.0%} map coverage -> {settings.labels_out}"
    )
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Stage `labels` for `data.landcover` (labels.run hands over here): grid + land-cover
    map -> labels.parquet, label_summary.json (the same files and label rule as census
    labels); returns the summary."""
    return label_landcover(LandcoverSettings.from_config(cfg))
