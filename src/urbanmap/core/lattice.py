"""The pixel lattice of a region: how grid cells map to fixed windows of raster pixels.

A cell of side ``cell_size`` metres is cut into ``patch_size`` x ``patch_size`` pixels,
``patch_size = round(cell_size / pixel_size)`` unless set explicitly: 1,000 m / 30 m =
33.3 gives 33, so mosaic pixels are 1000/33 = 30.30 m. The 1% change of pixel size
happens anyway when Landsat's 30 m UTM pixels are warped to the grid's CRS, and in
exchange every cell is exactly one 33 x 33 window of the mosaic, with no partial pixels
and no drift across the country. 300 m / 28.5 m = 10.53 rounds to 11 (27.27 m pixels,
4% finer than the source, rather than 10 pixels of 30 m, 5% coarser); an exact tie such
as 315 m / 30 m = 10.5 rounds up to 11 (half up, not Python's round-half-to-even), so a
tie always picks the finer lattice and never throws away resolution. The cell must be
at least two pixels wide (cell_size >= 2 x pixel_size), whatever patch_size says.

The region's raster covers the bounding box of its cells: its upper-left corner is the
upper-left corner of the north-westernmost cell, and raster row 0 is the north edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from numpy.typing import ArrayLike
from pyproj import CRS
from rasterio.windows import Window

from urbanmap.core.errors import InputError


def patch_size(cell_size: float, pixel_size: float, explicit: int | None = None) -> int:
    """Pixels per cell side: `explicit` if given, else cell_size / pixel_size rounded to
    the nearest whole number, ties up (see the module docstring)."""
    if pixel_size <= 0:
        raise InputError(f"data.pixel_size: must be positive, got {pixel_size:g}")
    size = int(explicit) if explicit else int(math.floor(cell_size / pixel_size + 0.5))
    if size < 2 or cell_size < 2 * pixel_size:
        raise InputError(
            f"data.cell_size {cell_size:g} m is smaller than two pixels of {pixel_size:g} m"
        )
    return size


@dataclass(frozen=True)
class PixelLattice:
    """Pixels of a region's raster, aligned to its cells.

    Attributes:
        crs: the grid's projected CRS.
        cell_size: cell side, metres.
        patch_size: pixels per cell side.
        col0, row0: lattice indices of the south-westernmost cell of the bounding box.
        ncols, nrows: bounding box size in cells.
    """

    crs: CRS
    cell_size: float
    patch_size: int
    col0: int
    row0: int
    ncols: int
    nrows: int

    @classmethod
    def from_cells(cls, cols: ArrayLike, rows: ArrayLike, cell_size: float, patch_size: int, crs: Any) -> PixelLattice:
        """The lattice of the bounding box of cells given by lattice indices."""
        cols, rows = np.asarray(cols), np.asarray(rows)
        if cols.size == 0:
            raise InputError("no cells: the pixel lattice is empty")
        return cls(
            CRS.from_user_input(crs), float(cell_size), int(patch_size),
            int(cols.min()), int(rows.min()),
            int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1),
        )

    @property
    def pixel_size(self) -> float:
        """Pixel side in metres (cell_size / patch_size)."""
        return self.cell_size / self.patch_size

    @property
    def width(self) -> int:
        """Raster width in pixels."""
        return self.ncols * self.patch_size

    @property
    def height(self) -> int:
        """Raster height in pixels."""
        return self.nrows * self.patch_size

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in metres of the grid's CRS."""
        s = self.cell_size
        return (self.col0 * s, self.row0 * s, (self.col0 + self.ncols) * s, (self.row0 + self.nrows) * s)

    @property
    def transform(self) -> Affine:
        """Affine transform of the region's raster (north up)."""
        xmin, _, _, ymax = self.bounds
        return Affine(self.pixel_size, 0.0, xmin, 0.0, -self.pixel_size, ymax)

    def cell_offsets(self, cols: ArrayLike, rows: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Raster (row_off, col_off) of the upper-left pixel of each cell; int arrays."""
        col_off = (np.asarray(cols) - self.col0) * self.patch_size
        row_off = (self.row0 + self.nrows - 1 - np.asarray(rows)) * self.patch_size
        return row_off.astype(np.int64), col_off.astype(np.int64)

    def cell_window(self, col: int, row: int) -> Window:
        """The patch_size x patch_size raster window of one cell."""
        row_off, col_off = self.cell_offsets(col, row)
        return Window(int(col_off), int(row_off), self.patch_size, self.patch_size)

    def same_pixels(self, crs: Any, transform: Affine, width: int, height: int) -> bool:
        """Whether a raster has exactly this lattice's pixels (CRS, transform, size)."""
        return (
            CRS.from_user_input(crs) == self.crs
            and transform.almost_equals(self.transform, precision=1e-6)
            and (width, height) == (self.width, self.height)
        )


# --- blocks of cells --------------------------------------------------------------------------------


@dataclass
class Block:
    """A window of the lattice: pixel offsets and size, which of its cells belong to the
    grid (bool (cell rows, cell cols)) and the indices of the scenes overlapping it."""

    row_off: int
    col_off: int
    height: int
    width: int
    cells: np.ndarray
    patch: int
    scenes: list[int] = field(default_factory=list)

    @property
    def in_cells(self) -> np.ndarray:
        """Bool (rows, cols): the block's pixels that belong to grid cells."""
        return np.repeat(np.repeat(self.cells, self.patch, axis=0), self.patch, axis=1)


def plan_blocks(lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, block_cells: int) -> list[Block]:
    """Blocks of `block_cells` x `block_cells` cells covering the lattice, north to south,
    west to east; blocks without any grid cell are left out (their pixels stay nodata)."""
    present = np.zeros((lattice.nrows, lattice.ncols), bool)
    i = lattice.row0 + lattice.nrows - 1 - np.asarray(rows)
    j = np.asarray(cols) - lattice.col0
    present[i, j] = True
    p, k = lattice.patch_size, int(block_cells)
    if k < 1:
        raise InputError(f"block_cells: must be at least 1, got {block_cells}")
    blocks = []
    for bi in range(0, lattice.nrows, k):
        for bj in range(0, lattice.ncols, k):
            cells = present[bi:bi + k, bj:bj + k]
            if cells.any():
                blocks.append(Block(bi * p, bj * p, cells.shape[0] * p, cells.shape[1] * p, cells.copy(), p))
    return blocks


def block_transform(lattice: PixelLattice, block: Block, halo: int = 0) -> Affine:
    """Affine transform of a block grown by `halo` pixels on every side."""
    return lattice.transform @ Affine.translation(block.col_off - halo, block.row_off - halo)


def block_bounds(lattice: PixelLattice, block: Block, halo: int = 0) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in the lattice's CRS of a block grown by `halo` pixels."""
    t = block_transform(lattice, block, halo)
    h, w = block.height + 2 * halo, block.width + 2 * halo
    return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)


# --- grouping cells into square blocks (reads, tasks) --------------------------------------


def cell_blocks(lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(bi, bj) int64 arrays (n,): the square block of `side` x `side` cells that holds each
    cell, counted from the lattice's north-west corner (bi: block row from the north, bj:
    block column from the west). A stage's tiles and blocks are both such blocks."""
    i = lattice.row0 + lattice.nrows - 1 - np.asarray(rows, np.int64)  # cell row from the north
    j = np.asarray(cols, np.int64) - lattice.col0
    return i // int(side), j // int(side)


def group_cells(lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, side: int) -> list[np.ndarray]:
    """Positions (into `cols`, `rows`) of the cells of each square block of `side` cells
    a side that holds any, blocks north to south then west to east, cells of a block in
    their given order."""
    bi, bj = cell_blocks(lattice, cols, rows, side)
    if not len(bi):
        return []
    block = bi * (int(bj.max()) + 1) + bj
    order = np.argsort(block, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(block[order])) + 1)
