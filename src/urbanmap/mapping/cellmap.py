"""Per-cell values as rasters with one pixel per grid cell: arrays, COGs and PNG maps.

The raster of a region's cells is its `PixelLattice` with ``patch_size = 1``: pixel
(r, c) is the cell of lattice indices ``(col0 + c, row0 + nrows - 1 - r)`` (row 0 is the
north edge), pixels are ``cell_size`` metres in the grid's CRS, and the raster covers
the bounding box of the cells. Pixels of the box that are not grid cells (outside an
irregular region) hold the nodata value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import ArrayLike, DTypeLike
from rasterio.io import MemoryFile

from urbanmap.core.cog import copy_to_cog
from urbanmap.core.lattice import PixelLattice


def cell_lattice(cols: ArrayLike, rows: ArrayLike, cell_size: float, crs: Any) -> PixelLattice:
    """The one-pixel-per-cell lattice of the bounding box of cells ((n,) lattice indices;
    `cell_size` metres in the projected `crs`)."""
    return PixelLattice.from_cells(cols, rows, cell_size, 1, crs)


def to_raster(lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, values: ArrayLike, fill: Any,
              dtype: DTypeLike) -> np.ndarray:
    """(nrows, ncols) array of `values` (n,) at the cells' pixels, `fill` elsewhere."""
    out = np.full((lattice.nrows, lattice.ncols), fill, dtype)
    r, c = lattice.cell_offsets(cols, rows)
    out[r, c] = values
    return out


def write_cog(path: str | os.PathLike[str], array: np.ndarray, lattice: PixelLattice, nodata: float | None,
              description: str, tags: dict[str, Any] | None = None, resampling: str = "average",
              colormap: dict[int, tuple[int, int, int, int]] | None = None) -> None:
    """Write a one-band (nrows, ncols) array on `lattice` as a COG at `path` (in place:
    callers wrap it in io.atomic_output).

    The band is built in GDAL's in-memory /vsimem/ filesystem and copied to a COG with
    cog.copy_to_cog (the project's creation options); `resampling` picks the overviews'
    method (`average` for p_urban, `mode` for classes).
    """
    profile = dict(driver="GTiff", width=lattice.ncols, height=lattice.nrows, count=1, dtype=array.dtype.name,
                   crs=lattice.crs.to_wkt(), transform=lattice.transform, nodata=nodata)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(array, 1)
            dst.set_band_description(1, description)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
            if colormap:
                dst.write_colormap(1, colormap)
                dst.colorinterp = [rasterio.enums.ColorInterp.palette]
        copy_to_cog(mem.name, Path(path), overview_resampling=resampling)


def extent_km(lattice: PixelLattice) -> list[float]:
    """[left, right, bottom, top] of the lattice in km of the grid's CRS (for imshow)."""
    xmin, ymin, xmax, ymax = lattice.bounds
    return [xmin / 1000, xmax / 1000, ymin / 1000, ymax / 1000]


def save_png(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save a matplotlib figure as PNG at `path` and close it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
