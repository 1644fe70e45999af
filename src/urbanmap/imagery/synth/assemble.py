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
- `truth_sources`, `truth_writers`, `lattice_truth`: the truth's world rasters onto the
  lattice, block by block, into its COGs and per-cell means (LatticeTruth).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from urbanmap.core.lattice import PixelLattice
from urbanmap.imagery.landsat import BANDS, QA_FILL, SR_FILL, band_filename
from urbanmap.imagery.synth import landcover
from urbanmap.imagery.synth.fields import Win
from urbanmap.imagery.synth.tiles import window_transform
from urbanmap.imagery.synth.world import World

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


def assemble_scene(folder: Path, temp: Path, pid: str, parts: Sequence[tuple[Path, Win]], scene: Win, pixel: float, crs: Any,
                   threads: int) -> dict[str, Path]:
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


def world_raster(path: Path, parts: Sequence[tuple[Path, Win]], world: Win, pixel: float, crs: Any, dtype: str, count: int,
                 nodata: float | None) -> Path:
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


def lattice_blocks(lattice: PixelLattice, block_cells: int = TRUTH_BLOCK_CELLS) -> Iterator[tuple[int, int, int, int]]:
    """Blocks of whole cells of the lattice: (i0, j0, ni, nj) in cell_means order
    (i from the north), north to south then west to east."""
    b = int(block_cells)
    for i0 in range(0, lattice.nrows, b):
        for j0 in range(0, lattice.ncols, b):
            yield i0, j0, min(b, lattice.nrows - i0), min(b, lattice.ncols - j0)


def warp_block(src: Any, lattice: PixelLattice, block: tuple[int, int, int, int], nodata: float | None) -> np.ndarray:
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

    def __init__(self, temp: Path, lattice: PixelLattice, dtype: str, count: int, nodata: float | None,
                 descriptions: Sequence[str] | None, tags: dict[str, Any] | None = None):
        self.temp = temp
        self.predictor = 3 if np.dtype(dtype).kind == "f" else 2
        self.ds = rasterio.open(temp, "w", **_TEMP, count=count, dtype=dtype, width=lattice.width, height=lattice.height,
                                crs=lattice.crs, transform=lattice.transform, nodata=nodata)
        for k, d in enumerate(descriptions or []):
            self.ds.set_band_description(k + 1, d)
        if tags:
            self.ds.update_tags(**tags)
        self.p = lattice.patch_size

    def write(self, data: np.ndarray, block: tuple[int, int, int, int]) -> None:
        """Write one lattice block (lattice_blocks' (i0, j0, ni, nj)): data (rows, cols) or
        (bands, rows, cols)."""
        i0, j0, _, _ = block
        data = data if data.ndim == 3 else data[None]
        self.ds.write(data, window=Window(j0 * self.p, i0 * self.p, data.shape[2], data.shape[1]))

    def close_to(self, dst: Path, threads: int) -> None:
        """Close the temporary GeoTIFF and copy it into the COG `dst` (then delete it)."""
        self.ds.close()
        _cog(self.temp, dst, self.predictor, threads)
        self.temp.unlink()

    def discard(self) -> None:
        """Close and delete the temporary GeoTIFF without writing a COG."""
        if not self.ds.closed:
            self.ds.close()
        self.temp.unlink(missing_ok=True)


def truth_sources(world: World, tiles: list[dict[str, Any]], folder: Path) -> dict[str, tuple[Path, float]]:
    """The world truth rasters assembled from the tiles' parts: name -> (temporary
    GeoTIFF, nodata)."""
    def world_file(name: str, dtype: str, count: int, nodata: float) -> Path:
        parts = [(folder / t["tile_id"] / f"{name}.npy", t["win"]) for t in tiles]
        return world_raster(folder / f"{name}.tif", parts, world.win, world.transform.a, world.crs, dtype, count, nodata)

    nan = float("nan")
    return {"classes": (world_file("classes", "uint8", 1, 0), 0),
            "impervious": (world_file("impervious", "float32", 1, nan), nan),
            "reflectance": (world_file("reflectance", "float32", len(BANDS), nan), nan),
            "clear": (world_file("clear", "uint8", 1, 0), 0)}


def truth_writers(folder: Path, lattice: PixelLattice) -> dict[str, LatticeWriter]:
    """The truth rasters on the lattice, written block by block (LatticeWriter)."""
    nan = float("nan")
    definition = "per-pixel median over the year's acquisition dates of the noise-free, cloud-free surface reflectance"
    return {
        "reflectance": LatticeWriter(folder / "lat_refl.tif", lattice, "float32", len(BANDS), nan, list(BANDS),
                                     {"definition": definition}),
        "classes": LatticeWriter(folder / "lat_classes.tif", lattice, "uint8", 1, 0, ["land_cover"],
                                 {str(k): v for k, v in landcover.CLASS_NAMES.items()}),
        "clear": LatticeWriter(folder / "lat_clear.tif", lattice, "uint8", 1, None, ["clear_observations"]),
    }


@dataclass
class LatticeTruth:
    """The truth's per-cell means and the region's histograms (lattice_truth).

    Attributes:
        fractions: class code -> share of each cell's lattice pixels of that class.
        impervious: mean impervious fraction of each cell's lattice pixels.
        clear_hist, class_hist: int64 (256,) counts of the region's lattice pixels by
            clear observations and by class.
    All per-cell arrays are float64 (nrows, ncols) in truth.cell_means order.
    """

    fractions: dict[int, np.ndarray]
    impervious: np.ndarray
    clear_hist: np.ndarray
    class_hist: np.ndarray


def lattice_truth(sources: dict[str, tuple[Path, float]], writers: dict[str, LatticeWriter],
                  lattice: PixelLattice, in_grid: np.ndarray) -> LatticeTruth:
    """The world truth rasters sampled onto the lattice block by block (lattice_blocks),
    each block written to `writers` and summed per cell; `in_grid`: the grid's cells."""
    p = lattice.patch_size
    out = LatticeTruth({code: np.zeros((lattice.nrows, lattice.ncols)) for code in landcover.CLASS_NAMES},
                       np.zeros((lattice.nrows, lattice.ncols)), np.zeros(256, np.int64), np.zeros(256, np.int64))
    with contextlib.ExitStack() as stack:
        srcs = {name: stack.enter_context(rasterio.open(path)) for name, (path, _) in sources.items()}
        for block in lattice_blocks(lattice):
            i0, j0, ni, nj = block
            got = {name: warp_block(srcs[name], lattice, block, nodata) for name, (_, nodata) in sources.items()}
            for name, writer in writers.items():
                writer.write(got[name], block)
            classes, clear = got["classes"][0], got["clear"][0]
            for code in out.fractions:
                out.fractions[code][i0:i0 + ni, j0:j0 + nj] = block_cell_means(classes == code, p)
            out.impervious[i0:i0 + ni, j0:j0 + nj] = block_cell_means(got["impervious"][0], p)
            region_px = np.repeat(np.repeat(in_grid[i0:i0 + ni, j0:j0 + nj], p, 0), p, 1)
            out.clear_hist += np.bincount(clear[region_px], minlength=256)
            out.class_hist += np.bincount(classes[region_px], minlength=256)
    return out
