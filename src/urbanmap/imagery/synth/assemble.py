"""The client's side of the tiled `synth`: parts (tiles.py) into the stage's files,
block by block, never holding a world-sized array.

- `assemble_scene`: a product's tile parts written by window into temporary GeoTIFFs
  (one per band file), then copied into Cloud-Optimized GeoTIFFs (GDAL's COG driver)
  named as USGS names them.
- `world_raster`: a world-level truth raster (scene CRS, 30 m) from the tiles' parts,
  as a temporary uncompressed tiled GeoTIFF.
- `lattice_blocks`: such world rasters sampled onto the region's pixel lattice by
  nearest neighbour (truth.to_lattice's rule, GDAL's warper reading the source by
  window), in blocks of whole cells whose layout does not depend on the tiles, so the
  outputs are the same bytes whatever compute.tile_size and executor.
- `LatticeWriter`: lattice blocks into a COG on the lattice.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from urbanmap.imagery.landsat import BANDS, QA_FILL, SR_FILL, band_filename
from urbanmap.imagery.synth.fields import Win
from urbanmap.imagery.synth.tiles import window_transform

#: Lattice cells per side of the client's truth blocks (fixed: outputs must not depend
#: on the tiles).
TRUTH_BLOCK_CELLS = 16
_TEMP = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "none",
         "interleave": "band", "BIGTIFF": "IF_SAFER"}


def _cog(src: Path, dst: Path, predictor: int, threads: int) -> None:
    """Copy a GeoTIFF into a COG: deflate, 256 px tiles, no overviews (band
    descriptions, nodata and tags kept)."""
    rasterio.shutil.copy(str(src), str(dst), driver="COG", COMPRESS="DEFLATE", PREDICTOR=str(predictor),
                         BLOCKSIZE=256, OVERVIEWS="NONE", NUM_THREADS=int(threads), BIGTIFF="IF_SAFER")


def assemble_scene(folder: Path, temp: Path, pid: str, parts, scene: Win, pixel: float, crs, threads: int) -> dict[str, Path]:
    """Write product `pid` (six SR bands and QA_PIXEL) into `folder` from its tile parts.

    Args:
        parts: [(path of a uint16 (7, h, w) .npy part, its Win)], covering `scene`.
        scene: the product's window (global pixel grid); temp: a folder for temporary files.
    Returns:
        band name (BANDS, and "qa_pixel") -> file path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = [*BANDS, "qa_pixel"]
    base = {**_TEMP, "count": 1, "dtype": "uint16", "width": scene.w, "height": scene.h, "crs": crs,
            "transform": window_transform(scene, pixel)}
    temps = [temp / f"{pid}.{name}.tif" for name in names]
    with contextlib.ExitStack() as stack:
        dsts = [stack.enter_context(rasterio.open(t, "w", **base, nodata=QA_FILL if n == "qa_pixel" else SR_FILL))
                for t, n in zip(temps, names)]
        for path, win in parts:
            data = np.load(path, mmap_mode="r")
            window = Window(win.c0 - scene.c0, win.r0 - scene.r0, win.w, win.h)
            for b, dst in enumerate(dsts):
                dst.write(np.asarray(data[b]), 1, window=window)
    files = {}
    for t, name in zip(temps, names):
        files[name] = folder / band_filename(pid, name)
        _cog(t, files[name], 2, threads)
        t.unlink()
    return files


def world_raster(path: Path, parts, world: Win, pixel: float, crs, dtype, count: int, nodata) -> Path:
    """A temporary GeoTIFF of the world from its tile parts [(npy path, Win)] ((h, w) or
    (count, h, w) arrays); pixels no part covers hold `nodata`."""
    profile = {**_TEMP, "count": count, "dtype": dtype, "width": world.w, "height": world.h, "crs": crs,
               "transform": window_transform(world, pixel), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        for part, win in parts:
            data = np.load(part)
            data = data if data.ndim == 3 else data[None]
            dst.write(data, window=Window(win.c0 - world.c0, win.r0 - world.r0, win.w, win.h))
    return path


def lattice_blocks(lattice, block_cells: int = TRUTH_BLOCK_CELLS):
    """Blocks of whole cells of the lattice: (i0, j0, ni, nj) in cell_means order
    (i from the north), north to south then west to east."""
    b = int(block_cells)
    for i0 in range(0, lattice.nrows, b):
        for j0 in range(0, lattice.ncols, b):
            yield i0, j0, min(b, lattice.nrows - i0), min(b, lattice.ncols - j0)


def warp_block(src, lattice, block, nodata) -> np.ndarray:
    """World raster `src` (an open dataset, (bands, rows, cols)) sampled onto one lattice
    block by nearest neighbour: (bands, ni * p, nj * p) of src's dtype."""
    i0, j0, ni, nj = block
    p = lattice.patch_size
    out = np.full((src.count, ni * p, nj * p), nodata, src.dtypes[0])
    transform = lattice.transform @ rasterio.Affine.translation(j0 * p, i0 * p)
    reproject(rasterio.band(src, list(range(1, src.count + 1))), out, dst_transform=transform, dst_crs=lattice.crs,
              resampling=Resampling.nearest, src_nodata=src.nodata, dst_nodata=nodata)
    return out


def block_cell_means(block: np.ndarray, p: int) -> np.ndarray:
    """Mean over each cell's p x p window of a (rows, cols) block: float64 (rows/p, cols/p)."""
    h, w = block.shape
    return block.reshape(h // p, p, w // p, p).mean(axis=(1, 3), dtype=np.float64)


class LatticeWriter:
    """A raster on the region's lattice written block by block (a temporary GeoTIFF),
    then copied into a COG (deflate, 256 px tiles) by `close_to`."""

    def __init__(self, temp: Path, lattice, dtype, count: int, nodata, descriptions, tags=None):
        self.temp = temp
        self.predictor = 3 if np.dtype(dtype).kind == "f" else 2
        self.ds = rasterio.open(temp, "w", **_TEMP, count=count, dtype=dtype, width=lattice.width, height=lattice.height,
                                crs=lattice.crs, transform=lattice.transform, nodata=nodata)
        for k, d in enumerate(descriptions or []):
            self.ds.set_band_description(k + 1, d)
        if tags:
            self.ds.update_tags(**tags)
        self.p = lattice.patch_size

    def write(self, data: np.ndarray, block) -> None:
        i0, j0, _, _ = block
        data = data if data.ndim == 3 else data[None]
        self.ds.write(data, window=Window(j0 * self.p, i0 * self.p, data.shape[2], data.shape[1]))

    def close_to(self, dst: Path, threads: int) -> None:
        self.ds.close()
        _cog(self.temp, dst, self.predictor, threads)
        self.temp.unlink()

    def discard(self) -> None:
        if not self.ds.closed:
            self.ds.close()
        self.temp.unlink(missing_ok=True)
