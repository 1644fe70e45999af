"""Tiles of a region: square groups of grid cells, the unit of work of the heavy stages.

A region's pixel lattice (lattice.PixelLattice) is cut into square tiles of
`compute.tile_size` x `compute.tile_size` grid cells, counted from the lattice's
north-west corner (tile row 0 is the northernmost, tile column 0 the westernmost), so a
tile boundary is always a cell boundary and, in pixels, a multiple of patch_size. Only
tiles holding at least one grid cell are listed. The tile size is a whole number of
cells; when a stage also cuts tiles into blocks (the mosaic's `mosaic.block_cells`) it
is rounded up to a multiple of the block side, so a tile is a set of whole blocks and
the blocks are the same as in one untiled pass (`effective_tile_size`; executor.ComputeSettings.tile_size
is that size for every heavy stage).

Tasks write their parts into a folder beside the output (`parts_folder`), each part
atomically (`part_output`).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numpy.typing import ArrayLike

from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output
from urbanmap.core.lattice import PixelLattice

# --- tiles ---------------------------------------------------------------------------------


def effective_tile_size(tile_size: Any, multiple: int = 1) -> int:
    """`tile_size` (cells) as a positive whole number, rounded up to a multiple of
    `multiple` (the blocks a stage cuts tiles into). InputError if it is not a whole
    number of cells."""
    try:
        value = float(tile_size)
    except (TypeError, ValueError):
        raise InputError(f"compute.tile_size: expected a whole number of cells, got {tile_size!r}") from None
    if value < 1 or value != int(value):
        raise InputError(f"compute.tile_size: expected a whole number of cells >= 1, got {tile_size!r}")
    m = max(int(multiple), 1)
    return int(math.ceil(int(value) / m) * m)


def tile_index(lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, tile_size: int) -> pd.DataFrame:
    """The tiles of a region that hold grid cells.

    Args:
        lattice: the region's PixelLattice.
        cols, rows: (n,) lattice indices of the grid's cells.
        tile_size: cells per tile side (whole number, see effective_tile_size).
    Returns:
        DataFrame, one row per tile, north to south then west to east: `tile_id`
        ("r<ti>c<tj>"), `ti`, `tj` (tile row from the north, column from the west),
        `col_min`, `col_max`, `row_min`, `row_max` (inclusive lattice indices of the cells
        the tile spans, clipped to the region's bounding box), `n_cells` (grid cells in
        it), `row_off`, `col_off`, `height`, `width` (its window of the region's raster,
        pixels), `xmin`, `ymin`, `xmax`, `ymax` (metres, the grid's CRS).
    """
    t = int(tile_size)
    i = lattice.row0 + lattice.nrows - 1 - np.asarray(rows, np.int64)  # cell row from the north
    j = np.asarray(cols, np.int64) - lattice.col0
    nti, ntj = -(-lattice.nrows // t), -(-lattice.ncols // t)
    counts = np.bincount((i // t) * ntj + j // t, minlength=nti * ntj)
    flat = np.flatnonzero(counts)
    ti, tj = flat // ntj, flat % ntj
    i0, j0 = ti * t, tj * t
    i1, j1 = np.minimum(i0 + t, lattice.nrows), np.minimum(j0 + t, lattice.ncols)  # exclusive
    p, s = lattice.patch_size, lattice.cell_size
    col_min, col_max = lattice.col0 + j0, lattice.col0 + j1 - 1
    row_max, row_min = lattice.row0 + lattice.nrows - 1 - i0, lattice.row0 + lattice.nrows - i1
    return pd.DataFrame({
        "tile_id": [f"r{a}c{b}" for a, b in zip(ti, tj)],
        "ti": ti, "tj": tj,
        "col_min": col_min, "col_max": col_max, "row_min": row_min, "row_max": row_max,
        "n_cells": counts[flat],
        "row_off": i0 * p, "col_off": j0 * p, "height": (i1 - i0) * p, "width": (j1 - j0) * p,
        "xmin": col_min * s, "ymin": row_min * s, "xmax": (col_max + 1) * s, "ymax": (row_max + 1) * s,
    })


def write_tile_index(path: str | os.PathLike[str], tiles: pd.DataFrame, crs: Any) -> None:
    """Write a tile index as GeoParquet (one polygon per tile, in `crs`), atomically."""
    geometry = shapely.box(tiles["xmin"], tiles["ymin"], tiles["xmax"], tiles["ymax"])
    frame = gpd.GeoDataFrame(tiles.reset_index(drop=True), geometry=geometry, crs=crs)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)


# --- parts ---------------------------------------------------------------------------------


@contextlib.contextmanager
def parts_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A folder beside the output `out` where tasks write their parts; removed afterwards
    (parts of killed tasks included)."""
    out = Path(out)
    folder = out.with_name(f".{out.name}.parts-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def part_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder that becomes the part folder `path` in one rename when the block
    succeeds, so a part exists completely or not at all. The temporary name is unique to
    the process and thread, so two runs of the same task (a retry, a worker thought dead)
    never write into the same files; whichever renames last leaves the same content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():  # a finished earlier run of the same task: same content
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


