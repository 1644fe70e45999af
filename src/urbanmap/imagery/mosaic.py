"""The `mosaic` stage: an annual cloud-free geomedian of Landsat Collection 2 Level-2
scenes on the region's pixel lattice, written as a Cloud-Optimized GeoTIFF.

For every block of `mosaic.block_cells` x `mosaic.block_cells` cells:

1. the QA_PIXEL of each scene overlapping the block is read (only the window it needs;
   the files stay open while later blocks need them, so GDAL's block cache decodes a
   source tile once) and warped by nearest neighbour onto the lattice
   (warp.warp_groups, warp.gather);
2. each observation is masked from its QA_PIXEL: fill, and the flags listed in
   `mosaic.mask` (dilated cloud, cirrus, cloud, cloud shadow; snow optional), grown by
   `mosaic.buffer` pixels or metres (a square neighbourhood on the lattice); only the
   scenes with a clear pixel left in the block have their six bands read and warped,
   straight into the (rows, cols, band, observation) layout geomad takes; DN 0 in any
   band is fill too; the DN are scaled to surface reflectance (float32, NaN where
   masked; with no spread band the stack stays uint16 DN, 0 where masked, and geomad
   applies the scale);
3. geomad's kernels reduce the stack: the geometric median (`nangeomedian_pcm`), the
   spread bands asked for in `mosaic.spread` (smad, emad, bcmad) and, with
   `mosaic.count`, the number of clear observations.

Reading and masking of the next blocks run in a background thread while geomad (which
releases the GIL, `compute.threads` OpenMP threads) reduces the current one, and the
block before is written in a third. Blocks and their averaged overviews are written
into temporary GeoTIFFs, then copied into one COG (cog.BlockWriter). Memory is bounded
by the block size and `mosaic.gdal_cache_mb`, not by the region's size. Blocks are
grouped in tiles of `compute.tile_size` cells, one task per tile (build_tiled,
executor.run_tiles): in this process with compute=local, on a Dask cluster with
compute=dask; each task writes its blocks to a part that the client copies into the
COG writer, so both give the same bytes.

Output `<region_dir>/mosaic_<period>.tif` (EPSG of the grid, the PixelLattice's transform):
float32, bands `blue green red nir swir1 swir2` (surface reflectance, unitless, as
Collection 2 defines it: DN x 2.75e-5 - 0.2, not clipped) then any of `smad emad bcmad`
(geomad's spectral, Euclidean and Bray-Curtis median absolute deviations) and `count`
(clear observations, a whole number stored as float32), nodata NaN. A pixel with no
clear observation on any date is NaN in every band but `count` (0), and is counted in
the summary `<region_dir>/mosaic_<period>.json` (DVC metrics).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
from rasterio.warp import transform_bounds

from urbanmap.compute.executor import ComputeSettings, Executor, run_tiles
from urbanmap.compute.tiles import part_output, parts_folder
from urbanmap.core import cog, io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import Block, PixelLattice, patch_size
from urbanmap.core.periods import Period
from urbanmap.imagery import composite
from urbanmap.imagery.blocks import BlockSink, MosaicSettings, Result, build, plan
from urbanmap.imagery.geomedian import band_names
from urbanmap.imagery.scenes import Product, SceneSource


@dataclass(frozen=True)
class MosaicStageSettings:
    """What the `mosaic` stage reads from the config besides MosaicSettings (which needs
    the lattice's pixel size), checked; for `data.imagery.source: file` see
    composite.CompositeSettings.

    Attributes:
        period: the period mosaicked (period=, else periods.census).
        grid: the region's grid.parquet.
        pixel_size: data.pixel_size, metres (the lattice's is cell_size / patch_size).
        patch_size: data.patch_size (lattice pixels per cell side), or None: from the
            cell and pixel sizes.
        source: where the period's scenes are found (data.imagery).
        compute: the compute settings (mode, tile size).
        out: `<region_dir>/mosaic_<period>.tif`; summary: `<region_dir>/mosaic_<period>.json`.
    """

    period: Period
    grid: Path
    pixel_size: float
    patch_size: int | None
    source: SceneSource
    compute: ComputeSettings
    out: Path
    summary: Path
    timings: Path

    @classmethod
    def from_config(cls, cfg: Any) -> MosaicStageSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        period = paths.stage_period(cfg)
        patch = cfg.data.get("patch_size")
        return cls(
            period=period, grid=paths.grid(cfg), pixel_size=float(cfg.data.pixel_size),
            patch_size=int(patch) if patch else None, source=SceneSource.from_config(cfg, period),
            compute=ComputeSettings.from_config(cfg), out=paths.mosaic(cfg, period),
            summary=paths.mosaic_summary(cfg, period),
            timings=paths.timings_log(cfg),
        )


def read_lattice(grid: Path, pixel_size: float, patch: int | None) -> tuple[pd.DataFrame, PixelLattice]:
    """The grid's cells (col, row) and its pixel lattice (pixel_size, patch: see
    MosaicStageSettings)."""
    cells, cell_size, crs = io.read_cells(grid, "grid", columns=["col", "row"])
    size = patch_size(cell_size, pixel_size, patch)
    return cells, PixelLattice.from_cells(cells["col"], cells["row"], cell_size, size, crs)


def find_products(source: SceneSource, lattice: PixelLattice) -> tuple[list[Product], str]:
    """The scenes of the source's period over the lattice (see scenes), and where they were
    found (the summary's `source`)."""
    bbox = transform_bounds(lattice.crs, "EPSG:4326", *lattice.bounds, densify_pts=21)
    return source.find(bbox), source.where

# --- tiles: the unit of work of compute=local and compute=dask -------------------------------


class PartWriter:
    """build()'s sink for one tile: each block goes to `<folder>/<row_off>_<col_off>.npy`
    (float32 (bands, rows, cols)), so a task holds one block of output at a time."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    def write(self, block: np.ndarray, row_off: int, col_off: int) -> None:
        """Save one block (float32 (bands, rows, cols)) at lattice pixel (row_off, col_off)."""
        np.save(self.folder / f"{row_off}_{col_off}.npy", block)


@dataclass(frozen=True)
class TileJob:
    """One task: the blocks of a tile (scenes assigned) and the folder of its part."""

    tile_id: str
    blocks: list[Block]
    part: str


def tile_jobs(blocks: list[Block], lattice: PixelLattice, tile_size: int, folder: Path) -> list[TileJob]:
    """Group planned blocks by tile (tile_size cells, a multiple of the block side, from
    the lattice's north-west corner: see executor.tile_index)."""
    side = tile_size * lattice.patch_size
    groups: dict[tuple[int, int], list[Block]] = {}
    for block in blocks:
        groups.setdefault((block.row_off // side, block.col_off // side), []).append(block)
    return [TileJob(f"r{ti}c{tj}", members, str(folder / f"r{ti}c{tj}")) for (ti, tj), members in groups.items()]


#: What tile_cache_mb assumes of the source files: Collection 2 Level-2 COGs of 30 m
#: pixels in tiles of 256 x 256 uint16 values, 7 files (6 bands and QA_PIXEL) per scene.
_SOURCE_PIXEL_M, _SOURCE_TILE_PX, _SOURCE_FILES = 30.0, 256, 7


def tile_cache_mb(job: TileJob, lattice: PixelLattice, opts: MosaicSettings) -> int:
    """GDAL's block cache for one tile task, MB: two rows of source tiles across the
    tile's width for each of its scenes' files (blocks go west to east, then north to
    south, so a row of blocks shares a row of source tiles with the next), at most
    opts.gdal_cache_mb. Sized by the tile, not the region: a worker's memory then does
    not grow with the number of tiles it runs (GDAL keeps decoded tiles up to the cache
    size, and a cache sized for the whole region fills up over many small tasks)."""
    width_m = (max(b.col_off + b.width for b in job.blocks) - min(b.col_off for b in job.blocks)) * lattice.pixel_size
    across = math.ceil(width_m / (_SOURCE_PIXEL_M * _SOURCE_TILE_PX)) + 1
    n_scenes = len({i for b in job.blocks for i in b.scenes})
    need = 2 * across * _SOURCE_TILE_PX**2 * 2 * _SOURCE_FILES * n_scenes
    return max(min(math.ceil(need / 2**20), int(opts.gdal_cache_mb)), 16)


def build_tile(job: TileJob, products: list[Product], lattice: PixelLattice, opts: MosaicSettings) -> Result:
    """The task of one tile (runs on a worker): build its blocks into its part folder,
    renamed into place when complete; returns the tile's Result (small)."""
    with part_output(job.part) as tmp:
        return build(products, lattice, None, None, opts, PartWriter(tmp), progress=False, blocks=job.blocks,
                     cache_mb=tile_cache_mb(job, lattice, opts))


def merge_result(total: Result, part: Result) -> None:
    """Add a tile's Result to the region's (sums, minimum, per-scene sums)."""
    total.pixels += part.pixels
    total.pixels_no_clear += part.pixels_no_clear
    total.observations += part.observations
    total.stacked += part.stacked
    if part.min_count is not None:
        total.min_count = part.min_count if total.min_count is None else min(total.min_count, part.min_count)
    for pid, n in part.per_scene.items():
        total.per_scene[pid] = total.per_scene.get(pid, 0) + n


def build_tiled(settings: ComputeSettings, products: list[Product], lattice: PixelLattice, cols: npt.ArrayLike,
                rows: npt.ArrayLike, opts: MosaicSettings, writer: BlockSink, folder: str | os.PathLike[str],
                executor: Executor) -> Result:
    """The mosaic tile by tile on compute=dask (one Dask task per tile on `executor`, an
    open executor.Executor, released when the last tile is in; compute=local runs one
    build() over every block instead); each finished tile's blocks are copied into
    `writer` and its part deleted, so the client holds one block of pixels at a time.
    Same blocks, same values, same bytes as one untiled build()."""
    tile_size = settings.tile_size  # a multiple of opts.block_cells
    if settings.mode == "local":
        # In-process, tiles would only add work: each part's blocks are saved and read back,
        # and each tile closes its scenes, so GDAL decodes the source tiles along tile
        # borders again. One build() over all blocks, with one reader and its prefetch
        # thread, writes the same blocks (the same bytes) straight into `writer`.
        return build(products, lattice, cols, rows, opts, writer)
    jobs = tile_jobs(plan(products, lattice, cols, rows, opts), lattice, tile_size, Path(folder))
    task = functools.partial(build_tile, products=products, lattice=lattice, opts=opts)
    total = Result(per_scene={p.product_id: 0 for p in products})
    # Locally one tile at a time: build() already overlaps reading with geomad's threads.
    for k, part in run_tiles(settings, task, jobs, desc="mosaic", executor=executor):
        merge_result(total, part)
        for f in sorted(Path(jobs[k].part).glob("*.npy")):
            row_off, col_off = map(int, f.stem.split("_"))
            writer.write(np.load(f), row_off, col_off)
        shutil.rmtree(jobs[k].part)
    executor.release()  # a LocalCluster of the stage's own shuts down during the COG copy
    return total

# --- the stage ------------------------------------------------------------------------------


def write_mosaic(stage: MosaicStageSettings, opts: MosaicSettings, cells: pd.DataFrame, lattice: PixelLattice,
                 products: list[Product]) -> Result:
    """Build the mosaic (build_tiled) into temporary GeoTIFFs, then copy it into the COG
    stage.out (written atomically); returns what it measured."""
    out = stage.out
    out.parent.mkdir(parents=True, exist_ok=True)
    io.remove_stale_temporaries(out)  # a killed run's blocks file and parts, before this run's
    profile = {"width": lattice.width, "height": lattice.height, "count": len(band_names(opts.spread, opts.count)),
               "crs": lattice.crs, "transform": lattice.transform, "nodata": float("nan")}
    average = str(opts.cog.get("overview_resampling", "average")).lower() == "average"
    block_px = opts.block_cells * lattice.patch_size if average else None
    with rasterio.Env(GDAL_CACHEMAX=opts.gdal_cache_mb * 2**20), cog.BlockWriter(
        out.with_name(f".{out.stem}.blocks-{os.getpid()}"), profile, band_names(opts.spread, opts.count),
        int(opts.cog.get("blocksize", cog.DEFAULTS["blocksize"])), block_px,
    ) as writer, parts_folder(out) as folder, Executor(stage.compute, local_workers=1) as executor:
        result = build_tiled(stage.compute, products, lattice, cells["col"].to_numpy(), cells["row"].to_numpy(), opts,
                             writer, folder, executor)
        # The copy streams tiles: a small cache keeps its memory independent of the
        # region's size (a cache the size of the output would grow with it).
        with io.atomic_output(out) as tmp, rasterio.Env(GDAL_CACHEMAX=64 * 2**20):
            writer.to_cog(tmp, threads=opts.threads, **opts.cog)
    return result


def mosaic_summary(period: Period, where: str, products: list[Product], result: Result,
                   opts: MosaicSettings) -> dict[str, Any]:
    """The summary JSON (DVC metrics) of a run: scenes found and used, clear observations
    per pixel, pixels without any, the bands, clear pixels per scene. No timing: the same
    inputs give the same bytes (the run's seconds go to logs/timings.jsonl)."""
    used = {pid: n for pid, n in result.per_scene.items() if n > 0}
    return {
        "period": period.label,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "source": where,
        "scenes_found": len(products),
        "scenes_used": len(used),
        "observations": result.observations,
        "mean_clear_per_pixel": round(result.observations / max(result.pixels, 1), 3),
        "min_clear_per_pixel": result.min_count,
        "pixels": result.pixels,
        "pixels_no_clear": result.pixels_no_clear,
        "valid_fraction": round(1 - result.pixels_no_clear / max(result.pixels, 1), 6),
        "pixel_observations_stacked": result.stacked,
        "bands": band_names(opts.spread, opts.count),
        "clear_pixels_per_scene": result.per_scene,
    }


def run(cfg: Any) -> None:
    """The stage: scenes of `period` -> mosaic_<period>.tif (COG) and mosaic_<period>.json,
    block by block in-process (compute=local) or tile by tile on Dask (the same bytes)."""
    if str((cfg.data.get("imagery") or {}).get("source")) == "file":  # an existing composite (composite.py)
        return composite.run(cfg)

    start = time.perf_counter()
    stage = MosaicStageSettings.from_config(cfg)
    MosaicSettings.from_config(cfg, stage.pixel_size)  # the mosaic.* keys checked before any file is read
    cells, lattice = read_lattice(stage.grid, stage.pixel_size, stage.patch_size)
    opts = MosaicSettings.from_config(cfg, lattice.pixel_size)  # mosaic.buffer in m needs the lattice's pixel size
    products, where = find_products(stage.source, lattice)
    result = write_mosaic(stage, opts, cells, lattice, products)
    if result.pixels_no_clear >= result.pixels:
        stage.out.unlink(missing_ok=True)
        raise InputError(f"period {stage.period.label}: its {len(products)} scene(s) have no clear observation over "
                         f"the region ({where}); mosaic_{stage.period.label}.tif not written")
    summary = mosaic_summary(stage.period, where, products, result, opts)
    io.write_json(stage.summary, summary)
    seconds = time.perf_counter() - start
    io.log_timing(stage.timings, {"stage": "mosaic", "period": stage.period.label, "seconds": round(seconds, 2),
                                  "pixels": result.pixels})
    print(
        f"mosaic {stage.period}: {summary['scenes_used']} of {len(products)} scenes used, {summary['mean_clear_per_pixel']:.1f} "
        f"clear observations per pixel; {result.pixels_no_clear:,} of {result.pixels:,} pixels "
        f"({result.pixels_no_clear / max(result.pixels, 1):.3%}) with no clear observation (nodata), {seconds:.1f} s "
        f"-> {stage.out}"
    )
