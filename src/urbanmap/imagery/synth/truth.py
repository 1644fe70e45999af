"""The generator's truth on the region's pixel lattice and per grid cell.

World rasters (the scenes' UTM grid) are sampled onto the lattice (the grid's CRS,
cell_size / patch_size pixels) by nearest neighbour, so each lattice pixel carries the
class and reflectance of the one world pixel under its centre (the stage does it block
by block: assemble.py). Per cell, fractions are means over the cell's patch_size x
patch_size window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from urbanmap.core.lattice import PixelLattice
from urbanmap.imagery.synth.landcover import CLASS_NAMES, URBAN


def to_lattice(world: np.ndarray, world_transform: Any, world_crs: Any, lattice: PixelLattice, nodata: float | None) -> np.ndarray:
    """Sample a world raster ((rows, cols) or (bands, rows, cols)) onto the lattice by
    nearest neighbour (GDAL). Returns the lattice array, same dtype and band count."""
    shape = (lattice.height, lattice.width) if world.ndim == 2 else (world.shape[0], lattice.height, lattice.width)
    out = np.full(shape, nodata, world.dtype)
    reproject(
        world, out, src_transform=world_transform, src_crs=world_crs, dst_transform=lattice.transform,
        dst_crs=lattice.crs, resampling=Resampling.nearest, src_nodata=None, dst_nodata=nodata,
    )
    return out


def cell_means(raster: np.ndarray, lattice: PixelLattice) -> np.ndarray:
    """Mean of a lattice raster (rows, cols) over each cell's window.

    Returns float64 (nrows, ncols) in lattice cell order: [i, j] is the cell with
    col = col0 + j and row = row0 + nrows - 1 - i (row 0 is the north edge).
    """
    p = lattice.patch_size
    return raster.reshape(lattice.nrows, p, lattice.ncols, p).mean(axis=(1, 3), dtype=np.float64)


def cell_index(lattice: PixelLattice, cols: npt.ArrayLike, rows: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) positions in `cell_means` arrays of cells given by lattice indices."""
    return (lattice.row0 + lattice.nrows - 1 - np.asarray(rows)).astype(np.int64), (np.asarray(cols) - lattice.col0).astype(np.int64)


def cell_table(cells: pd.DataFrame, lattice: PixelLattice, fractions: dict[int, np.ndarray], impervious: np.ndarray,
               urban_min: float, base_urban: np.ndarray | None = None) -> pd.DataFrame:
    """Per-cell truth from per-cell means (arrays (nrows, ncols) in cell_means order).

    Args:
        cells: the grid (cell_id, col, row).
        fractions: class code (landcover codes) -> share of the cell's lattice pixels of
            that class.
        impervious: mean impervious fraction of the cell's lattice pixels.
        urban_min: a cell is "urban" when its urban fraction is at least this.
        base_urban: the census year's urban fraction, for a later year: adds `new_urban`.
    Returns:
        cell_id, col, row, urban_fraction (share of urban pixels), impervious_fraction
        (mean), <class>_fraction for the other classes, true_class ("urban" /
        "non_urban") and, with base_urban, new_urban (bool: urban now, not then).
    """
    i, j = cell_index(lattice, cells["col"], cells["row"])
    out = cells[["cell_id", "col", "row"]].copy()
    out["urban_fraction"] = fractions[URBAN][i, j]
    out["impervious_fraction"] = impervious[i, j]
    for code, name in CLASS_NAMES.items():
        if code != URBAN:
            out[f"{name}_fraction"] = fractions[code][i, j]
    urban = out["urban_fraction"].to_numpy() >= urban_min
    out["true_class"] = np.where(urban, "urban", "non_urban")
    if base_urban is not None:
        out["new_urban"] = urban & ~(base_urban[i, j] >= urban_min)
    return out


def fringe_growth(urban_cells: np.ndarray, in_grid: np.ndarray, water: np.ndarray, priority: np.ndarray,
                  share: float, min_neighbours: int) -> np.ndarray:
    """Cells that become urban: non-urban cells of the grid with at least
    `min_neighbours` urban cells among their 8 neighbours and less than half water, the
    share `share` of them with the lowest `priority` (uniform 0..1, drawn once from the
    seed, so a later year's growth contains an earlier one's).

    All arrays are (nrows, ncols) in cell_means order. Returns bool (nrows, ncols).
    """
    kernel = np.ones((3, 3), np.int32)
    kernel[1, 1] = 0
    neighbours = ndimage.convolve(urban_cells.astype(np.int32), kernel, mode="constant")
    fringe = in_grid & ~urban_cells & (neighbours >= min_neighbours) & (water < 0.5)
    return fringe & (priority < share)
