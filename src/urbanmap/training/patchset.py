"""The patch-set format: sampled cells, their image patches, and how they are cut.

A patch is a cell's ``patch_size x patch_size`` window of a mosaic on the region's
`PixelLattice` (1,000 m cells of 33 x 33 pixels of 1000/33 = 30.30 m: no resampling, no
partial pixels; see core/lattice.py).

A patch set is written as ``<region_dir>/patches.npz`` (NumPy npz, uncompressed,
readable with ``numpy.load(path, allow_pickle=False)``), which holds:

=================  ==================  ==================================================
key                shape, dtype        meaning
=================  ==================  ==================================================
patches            (n, b, p, p) f4     reflectance (unitless 0..1), bands in `bands` order;
                                       row 0 is the cell's north edge, column 0 its west
label              (n,) u1             1 = urban, 0 = non_urban
cell_id            (n,) str            the grid's cell id
col, row           (n,) i8             the cell's lattice indices
x, y               (n,) f8             cell centre, metres in the grid's CRS
year               () i8               the imagery year
bands              (b,) str            band names (mosaic band descriptions)
crs                () str              the grid's CRS (WKT)
cell_size          () f8               cell side, metres
nodata_dropped     () i8               sampled cells dropped because of nodata
=================  ==================  ==================================================

Samples are stored in random order (both classes interleaved).

Besides the file format (`PatchSet`, `save_patches`, `load_patches`), this module holds
the reading of patches from a mosaic that the patches stage, the predict stage and the
validation chips share: `check_mosaic` (the file is on the lattice and has the bands),
`read_patches` (block-wise windowed reads) and `valid_patches` (no nodata).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from pyproj import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm import tqdm

from urbanmap.core import rasters
from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output, require_file
from urbanmap.core.lattice import PixelLattice, group_cells

#: Class names by label code (label 1 = urban), the order of every per-class array.
CLASSES = ("non_urban", "urban")

_KEYS = ("patches", "label", "cell_id", "col", "row", "x", "y", "year", "bands", "crs", "cell_size", "nodata_dropped")


@dataclass(frozen=True)
class PatchSet:
    """Patches of sampled cells and where they come from (see the module docstring).

    Attributes:
        patches: (n, b, p, p) float32 reflectance (unitless), row 0 north.
        label: (n,) uint8, 1 = urban, 0 = non_urban.
        cell_id: (n,) str, the grid's cell ids.
        col, row: (n,) int64 lattice indices of the cells.
        x, y: (n,) float64 cell centres, metres in the grid's CRS.
        year: the imagery year.
        bands: the b band names, in the order of the patches' band axis.
        crs: the grid's CRS (WKT or authority string).
        cell_size: cell side, metres.
        nodata_dropped: sampled cells dropped because their patch held nodata.
    """

    patches: np.ndarray
    label: np.ndarray
    cell_id: np.ndarray
    col: np.ndarray
    row: np.ndarray
    x: np.ndarray
    y: np.ndarray
    year: int
    bands: tuple[str, ...]
    crs: str
    cell_size: float
    nodata_dropped: int = 0

    def __len__(self) -> int:
        return len(self.label)

    @property
    def patch_size(self) -> int:
        """Pixels per patch side (p)."""
        return int(self.patches.shape[-1])

    def subset(self, index: np.ndarray) -> PatchSet:
        """The samples at `index` (int or bool array)."""
        return PatchSet(
            self.patches[index], self.label[index], self.cell_id[index], self.col[index],
            self.row[index], self.x[index], self.y[index], self.year, self.bands, self.crs,
            self.cell_size, self.nodata_dropped,
        )


def save_patches(path: str | os.PathLike[str], ps: PatchSet, patches_npy: str | os.PathLike[str] | None = None) -> None:
    """Write `ps` as npz, atomically: uncompressed, every entry dated 1980-01-01 (numpy's
    savez stamps the current time), so that the same patch set is the same bytes.

    `patches_npy`: a .npy file holding the patches, streamed into the archive in place of
    `ps.patches` (which is then ignored), so that they never need to be in memory.
    """
    arrays: dict[str, Any] = {  # arrays and NumPy scalars (0-d entries), as np.savez takes them
        "patches": np.ascontiguousarray(ps.patches, np.float32),
        "label": ps.label.astype(np.uint8),
        "cell_id": ps.cell_id.astype(str),
        "col": ps.col.astype(np.int64),
        "row": ps.row.astype(np.int64),
        "x": ps.x.astype(np.float64),
        "y": ps.y.astype(np.float64),
        "year": np.int64(ps.year),
        "bands": np.array(ps.bands, dtype=str),
        "crs": np.array(ps.crs),
        "cell_size": np.float64(ps.cell_size),
        "nodata_dropped": np.int64(ps.nodata_dropped),
    }
    # np.savez's layout (one stored .npy entry per key, zip64), with a fixed date.
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                if key == "patches" and patches_npy is not None:
                    with open(patches_npy, "rb") as src:
                        shutil.copyfileobj(src, fh, 16 * 2**20)
                else:
                    np.lib.format.write_array(fh, value, allow_pickle=False)


def load_patches(path: str | os.PathLike[str]) -> PatchSet:
    """Read a patches file; InputError naming the file if it is not one."""
    path = require_file(path, "patches file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise InputError(f"{path}: not a patches file (lacks {', '.join(missing)})")
            a = {k: npz[k] for k in _KEYS}
    except InputError:
        raise
    except Exception as exc:  # zipfile / numpy raise several types; the user needs the file name
        raise InputError(f"{path}: cannot read patches file: {exc}".splitlines()[0]) from exc
    n = len(a["label"])
    p = a["patches"]
    if p.ndim != 4 or p.shape[0] != n or p.shape[1] != len(a["bands"]) or p.shape[2] != p.shape[3]:
        raise InputError(f"{path}: patches of shape {p.shape} do not match {n} labels and {len(a['bands'])} bands")
    if not np.isin(a["label"], (0, 1)).all():
        raise InputError(f"{path}: labels must be 0 (non_urban) or 1 (urban)")
    return PatchSet(
        p.astype(np.float32, copy=False), a["label"].astype(np.uint8), a["cell_id"], a["col"], a["row"],
        a["x"], a["y"], int(a["year"]), tuple(str(b) for b in a["bands"]), str(a["crs"]),
        float(a["cell_size"]), int(a["nodata_dropped"]),
    )


def check_mosaic(src: Any, lattice: PixelLattice, name: str, bands: Sequence[str]) -> list[int]:
    """Check an open rasterio dataset is on `lattice` and has `bands`; return their
    1-based band indexes. InputError naming `name` otherwise. Reads metadata only, so a
    tile task may call it; a stage also calls check_reflectance once, at its entry."""
    if src.crs is None:
        raise InputError(f"{name}: mosaic has no CRS")
    crs = CRS.from_user_input(src.crs)
    if crs != lattice.crs:
        raise InputError(f"{name}: mosaic CRS {crs.to_string()} is not the grid's {lattice.crs.to_string()}")
    if not lattice.same_pixels(crs, src.transform, src.width, src.height):
        t, e = src.transform, lattice.transform
        raise InputError(
            f"{name}: mosaic pixel grid (origin {t.c:.1f}, {t.f:.1f}; pixel {t.a:.4f} m; "
            f"{src.width} x {src.height}) is not the grid's (origin {e.c:.1f}, {e.f:.1f}; "
            f"pixel {e.a:.4f} m; {lattice.width} x {lattice.height})"
        )
    descriptions = [d or "" for d in src.descriptions]
    missing = [b for b in bands if b not in descriptions]
    if missing:
        raise InputError(
            f"{name}: mosaic lacks band(s) {', '.join(missing)} (band descriptions: {', '.join(descriptions)})"
        )
    return [descriptions.index(b) + 1 for b in bands]


def check_reflectance(src: Any, name: str, indexes: Sequence[int]) -> None:
    """InputError unless the bands of the mosaic `name` look like surface reflectance
    (rasters.check_reflectance; guarded_read names a damaged file)."""
    hint = "the mosaic looks like unscaled digital numbers (Collection 2 Level-2: reflectance = DN x 0.0000275 - 0.2)"
    guarded_read(src, name, "its overview", functools.partial(rasters.check_reflectance, src, indexes, name, hint))


def guarded_read(src: Any, name: str, what: str, read: Callable[[], Any]) -> Any:
    """`read()` of an open raster, with a damaged file's read error as one InputError
    naming `name` and `what` was being read (GDAL reports a truncated file or a corrupt
    tile only when that tile is read)."""
    try:
        return read()
    except RasterioError as exc:
        cause = exc.__cause__ or exc  # rasterio's "Read failed" chains GDAL's own message
        reason = (str(cause).splitlines() or ["read failed"])[0].rstrip(".")
        raise InputError(f"{name}: cannot read {what}: {reason}; the file is damaged or truncated (run its stage again)") from None


def read_patches(src: Any, lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, indexes: Sequence[int],
                 block_cells: int | None = None) -> np.ndarray:
    """Cut the patches of cells from an open raster, in one pass of windowed reads.

    Cells are grouped in square blocks of `block_cells` x `block_cells` cells (by default
    about one internal tile of the file); each block that holds requested cells is read
    once as the window bounding them, and its patches are sliced out with NumPy. A dense
    sample therefore reads each tile about once, a sparse one reads little more than its
    cells, and memory stays bounded by one block.

    Args:
        src: an open rasterio dataset on `lattice` (see check_mosaic).
        cols, rows: (n,) lattice indices of the cells.
        indexes: 1-based band indexes to read (b of them).
    Returns:
        (n, b, p, p) float32 array in the order of `cols`; row 0 is north.
    """
    p = lattice.patch_size
    row_off, col_off = lattice.cell_offsets(cols, rows)
    ci, ri = col_off // p, row_off // p  # cell position in the raster, in cells (ri: 0 = north)
    if block_cells is None:
        block_cells = max(1, math.ceil(max(src.block_shapes[0]) / p))
    out = np.empty((len(ci), len(indexes), p, p), np.float32)
    if not len(ci):
        return out
    # One iteration per block of cells, not per cell: a read and a vectorised slice each.
    groups = group_cells(lattice, cols, rows, block_cells)
    for members in tqdm(groups, desc="patches", unit="block", disable=None, leave=False):
        r0, c0 = ri[members].min(), ci[members].min()
        nr, nc = ri[members].max() - r0 + 1, ci[members].max() - c0 + 1
        window = Window(int(c0 * p), int(r0 * p), int(nc * p), int(nr * p))
        data = guarded_read(src, str(src.name), f"the pixels at column {window.col_off}, row {window.row_off}",
                            functools.partial(src.read, list(indexes), window=window))
        cube = data.reshape(len(indexes), nr, p, nc, p)
        out[members] = cube[:, ri[members] - r0, :, ci[members] - c0, :]  # -> (k, b, p, p)
    return out


def valid_patches(patches: np.ndarray, nodata: float | None) -> np.ndarray:
    """(n,) bool: patches ((n, b, p, p)) without NaN or `nodata` values in any band."""
    flat = patches.reshape(len(patches), -1)
    ok: np.ndarray = np.isfinite(flat).all(axis=1)
    if nodata is not None and np.isfinite(nodata):
        ok &= ~(flat == nodata).any(axis=1)
    return ok
