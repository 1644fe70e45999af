"""The mosaic block by block: scenes read and masked for one block while geomad reduces
the one before, blocks written as they finish (see mosaic.py for the whole stage), and
the stage's processing options (MosaicSettings).
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import rasterio
from tqdm import tqdm

from urbanmap.compute.executor import ComputeSettings, release_freed_memory
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import Block, PixelLattice, block_bounds, block_transform, plan_blocks
from urbanmap.imagery import landsat, warp
from urbanmap.imagery.geomedian import (
    GM_BANDS,
    SPREAD_BANDS,
    composite,
    dn_fill,
    flag_bits,
    qa_clear,
    single_calibration,
    to_dn_stack,
    to_stack,
)
from urbanmap.imagery.scenes import Product


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def assign_scenes(blocks: list[Block], lattice: PixelLattice, footprints: Sequence[Sequence[float]], halo: int) -> None:
    """Set each block's `scenes`: the scenes whose footprint (bounds in the lattice CRS)
    overlaps the block grown by `halo` pixels."""
    for block in blocks:
        bounds = block_bounds(lattice, block, halo)
        block.scenes = [i for i, fp in enumerate(footprints) if _overlaps(fp, bounds)]


@dataclass(frozen=True)
class MosaicSettings:
    """Processing options: the `mosaic` config group, checked, plus the threads of a task.

    Attributes:
        bits: QA_PIXEL bits that make an observation unusable (mosaic.mask, flag_bits).
        buffer_px: lattice pixels around a flagged pixel masked too (mosaic.buffer in
            mosaic.buffer_unit, metres rounded up to whole pixels).
        spread: geomad spread bands after the six geomedian bands (mosaic.spread).
        count: whether the clear-observation count is the last band (mosaic.count).
        block_cells: grid cells per block side (mosaic.block_cells).
        threads: geomad's OpenMP threads and the COG copy's (compute.threads locally,
            compute.threads_per_worker on Dask).
        eps: geomedian convergence, reflectance units (mosaic.eps).
        max_iters: geomedian iteration cap (mosaic.max_iters).
        gdal_cache_mb: GDAL's block cache, MB (mosaic.gdal_cache_mb).
        cog: the output COG's options (mosaic.cog: compress, level, predictor, blocksize,
            overview_resampling).
    """

    bits: int
    buffer_px: int
    spread: tuple[str, ...]
    count: bool
    block_cells: int
    threads: int
    eps: float
    max_iters: int
    gdal_cache_mb: int
    cog: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: Any, pixel_size: float) -> MosaicSettings:
        """Read `cfg.mosaic` (and the compute settings) for a lattice of `pixel_size`
        metres; InputError naming the key that is wrong."""
        m = cfg.mosaic
        settings = ComputeSettings.from_config(cfg)
        unit = str(m.buffer_unit)
        if unit not in ("px", "m"):
            raise InputError(f"mosaic.buffer_unit: must be px or m, got {unit!r}")
        buffer = float(m.buffer)
        if buffer < 0:
            raise InputError(f"mosaic.buffer: must be >= 0, got {buffer:g}")
        buffer_px = int(math.ceil(buffer / pixel_size - 1e-9)) if unit == "m" else int(buffer)
        spread = tuple(m.spread or ())
        for name in spread:
            if name not in SPREAD_BANDS:
                raise InputError(f"mosaic.spread: unknown band {name!r} (choose from {', '.join(SPREAD_BANDS)})")
        for key in ("block_cells", "max_iters", "gdal_cache_mb"):
            if int(m[key]) < 1:
                raise InputError(f"mosaic.{key}: must be at least 1, got {m[key]}")
        if float(m.eps) <= 0:
            raise InputError(f"mosaic.eps: must be positive, got {m.eps}")
        return cls(
            flag_bits(m.mask), buffer_px, spread, bool(m.count), int(m.block_cells),
            settings.task_threads, float(m.eps), int(m.max_iters), int(m.gdal_cache_mb), dict(m.cog),
        )


class SceneReader:
    """Opens scenes when a block first needs them and closes them after the last block
    that does, so that open files (and their cached tiles) stay bounded. Used from one
    thread only (rasterio datasets are not thread-safe).

    Args:
        products: the scenes (a block's `scenes` index them).
        blocks: the planned blocks, in the order they are read.
    """

    def __init__(self, products: Sequence[Product], blocks: list[Block]):
        self.products = products
        self.last: dict[int, int] = {}
        for b, block in enumerate(blocks):
            for i in block.scenes:
                self.last[i] = b
        self.open: dict[int, list[Any]] = {}

    def get(self, i: int) -> list[Any]:
        """The open datasets of scene `i` (warp.open_files), opened on first use."""
        if i not in self.open:
            self.open[i] = warp.open_files(self.products[i])
        return self.open[i]

    def release(self, b: int) -> None:
        """Close the scenes that no block after block `b` needs."""
        for i in [i for i in self.open if self.last[i] <= b]:
            for ds in self.open.pop(i):
                ds.close()

    def close(self) -> None:
        """Close every scene still open."""
        for datasets in self.open.values():
            for ds in datasets:
                ds.close()
        self.open.clear()


#: Blocks the reader thread prepares ahead of geomad. Two, not one: a block's read time
#: varies (new scenes to open, a new row of source tiles to decode) while geomad's is
#: steady, and with one block ahead geomad waited for the reader 0.8 s per run on the
#: default region (0.2 s with two; one more stack in memory, ~30 MB).
PREFETCH = 2


class PreparedBlock(NamedTuple):
    """One block read, warped and masked (prepare_block), ready for geomad.

    Attributes:
        stack: (rows, cols, 6, obs) float32 surface reflectance, NaN where masked
            (geomedian.to_stack), or uint16 DN, 0 where masked (geomedian.to_dn_stack).
        calibration: (scale, offset) of a DN stack (reflectance = DN * scale + offset), or
            None for a reflectance stack.
        obs: indices (in the products) of the stack's observations.
        clear_px: clear pixels of each scene of the block in the block's cells.
    """

    stack: np.ndarray
    calibration: tuple[float, float] | None
    obs: list[int]
    clear_px: dict[int, int]


def read_block(b: int, block: Block, reader: SceneReader, lattice: PixelLattice, opts: MosaicSettings,
               scratch: warp.Scratch | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and warp the QA_PIXEL of block `b`'s scenes, then the bands of those with a
    clear pixel in it (runs in the reader thread; releases the scenes no later block needs).

    Returns:
        dn: uint16 (rows, cols, 6, n) DN of the n candidate scenes (warp.gather's layout).
        clear: bool (rows, cols, n): clear from QA_PIXEL (flags, buffer) and not DN fill.
        candidates: intp (n,) positions in block.scenes of the candidate scenes.
        used: intp (n,) clear pixels of each candidate in the block's cells.
    """
    halo = opts.buffer_px
    shape = (block.height + 2 * halo, block.width + 2 * halo)
    pairs = [(reader.products[i], reader.get(i)) for i in block.scenes]
    groups = warp.warp_groups(pairs, lattice.crs, block_transform(lattice, block, halo), shape)
    # QA first (with the halo the buffer needs); a scene with no clear pixel in the block
    # (from QA alone) has its bands neither read nor warped (2.7% of the scene x block
    # pairs of the benchmark's 2019 scenes).
    qa = warp.gather(pairs, groups, ["qa_pixel"], shape, scratch=scratch)[:, :, 0]
    clear = qa_clear(qa, opts.bits, opts.buffer_px, crop=halo)
    del qa
    candidates = np.flatnonzero(clear.any(axis=(0, 1)))
    dn = warp.gather(pairs, groups, landsat.BANDS, shape, which=candidates, crop=halo, scratch=scratch)
    reader.release(b)
    clear = clear[:, :, candidates]
    clear &= ~dn_fill(dn)
    in_cells = clear if block.cells.all() else clear & block.in_cells[:, :, None]
    used = np.count_nonzero(in_cells, axis=(0, 1))
    return dn, clear, candidates, used


def prepare_block(b: int, block: Block, reader: SceneReader, lattice: PixelLattice, opts: MosaicSettings,
                  scratch: warp.Scratch | None = None) -> PreparedBlock:
    """Read, warp and mask one block (runs in the reader thread): read_block, then the
    scenes with a clear pixel left, scaled into geomad's input.

    With a `scratch` (warp.Scratch), the arrays come from it, the stack from buffer
    "stack-<b % (PREFETCH + 1)>": valid until block b + PREFETCH + 1 is prepared (build()
    reduces block b while it prepares the next PREFETCH blocks).
    """
    chosen = block.scenes
    dn, clear, candidates, used = read_block(b, block, reader, lattice, opts, scratch)
    keep = np.flatnonzero(used > 0) if block.cells.all() else np.flatnonzero(clear.any(axis=(0, 1)))
    if len(keep) < len(candidates):
        dn, clear = dn[..., keep], clear[..., keep]
    obs = [chosen[k] for k in candidates[keep]]
    scale = np.array([reader.products[i].scale for i in obs], np.float32).reshape(len(obs), 6)
    offset = np.array([reader.products[i].offset for i in obs], np.float32).reshape(len(obs), 6)
    calibration = None if opts.spread else single_calibration(scale, offset)
    key = f"stack-{b % (PREFETCH + 1)}"
    if calibration is not None:
        x = to_dn_stack(dn, clear, warp.scratch_array(scratch, key, dn.shape, np.uint16))
    else:
        x = to_stack(dn, clear, scale, offset, warp.scratch_array(scratch, key, dn.shape, np.float32))
    clear_px = dict.fromkeys(chosen, 0)
    clear_px.update({chosen[k]: int(n) for k, n in zip(candidates, used)})
    return PreparedBlock(x, calibration, obs, clear_px)


@dataclass
class Result:
    """What a mosaic run measured (the summary JSON).

    Attributes:
        pixels: lattice pixels in the grid's cells.
        pixels_no_clear: of those, pixels with no clear observation (nodata).
        observations: clear observations summed over those pixels.
        min_count: the fewest clear observations of a pixel, None before any block.
        stacked: pixels x observations reduced by geomad (masked ones included).
        per_scene: product id -> its clear pixels in the grid's cells.
    """

    pixels: int = 0
    pixels_no_clear: int = 0
    observations: int = 0
    min_count: int | None = None
    stacked: int = 0
    per_scene: dict[str, int] = field(default_factory=dict)

    def add_block(self, counts: np.ndarray, clear_px: dict[int, int], products: Sequence[Product]) -> None:
        """Count one block: `counts`, clear observations (float32) of its pixels in the
        grid's cells; `clear_px`, clear pixels per scene (indices into `products`)."""
        self.pixels += counts.size
        self.pixels_no_clear += int(np.count_nonzero(counts == 0))
        self.observations += int(counts.sum())
        low = int(counts.min())
        self.min_count = low if self.min_count is None else min(self.min_count, low)
        for i, n in clear_px.items():
            self.per_scene[products[i].product_id] += n


class BlockSink(Protocol):
    """Where build() writes the blocks: a cog.BlockWriter, or a tile's part folder."""

    def write(self, block: np.ndarray, row_off: int, col_off: int) -> None:
        """Write float32 (bands, rows, cols) at (row_off, col_off) pixels of the lattice."""


def plan(products: Sequence[Product], lattice: PixelLattice, cols: npt.ArrayLike, rows: npt.ArrayLike,
         opts: MosaicSettings) -> list[Block]:
    """The blocks of the lattice, each with the scenes it needs (in grid order, so that
    each grid's scenes are warped together). Opens every scene once to check its files
    and find its footprint."""
    grids = []
    for p in products:
        datasets = warp.open_files(p)
        try:
            grids.append(warp.grid_of(datasets))
        finally:
            for ds in datasets:
                ds.close()
    by_grid = {g.key: g for g in grids}  # scenes of one path/row share a grid: one footprint each
    footprint = {key: warp.footprint(g, lattice.crs) for key, g in by_grid.items()}
    footprints = [footprint[g.key] for g in grids]
    blocks = plan_blocks(lattice, cols, rows, opts.block_cells)
    assign_scenes(blocks, lattice, footprints, opts.buffer_px)
    order = {i: (grids[i].key, i) for i in range(len(products))}
    for block in blocks:
        block.scenes.sort(key=order.__getitem__)
    return blocks


def build(products: Sequence[Product], lattice: PixelLattice, cols: npt.ArrayLike | None, rows: npt.ArrayLike | None,
          opts: MosaicSettings, writer: BlockSink, progress: bool = True, blocks: list[Block] | None = None,
          cache_mb: int | None = None) -> Result:
    """Compute the mosaic of `products` on `lattice` (cells given by `cols`, `rows`),
    block by block into `writer` (a cog.BlockWriter of band_names(opts...) bands, or any
    object with its `write`); `blocks`: already planned blocks (a tile's), else plan();
    `cache_mb`: GDAL's block cache (default opts.gdal_cache_mb)."""
    if blocks is None:
        if cols is None or rows is None:
            raise ValueError("build: the cells (cols, rows) are needed to plan the blocks")
        blocks = plan(products, lattice, cols, rows, opts)
    result = Result(per_scene={p.product_id: 0 for p in products})
    reader = SceneReader(products, blocks)
    scratch = warp.Scratch()  # the reader thread's arrays, reused from block to block
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mosaic-read")
    # Blocks are written (and their overviews pooled) in a thread of their own, so that
    # geomad starts on the next block at once; one block is written at a time, into
    # one of two reused output arrays (the other is being filled).
    write_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mosaic-write")
    writing: concurrent.futures.Future[None] | None = None
    outputs = warp.Scratch()
    n_bands = len(GM_BANDS) + len(opts.spread) + 1
    with rasterio.Env(GDAL_CACHEMAX=int(cache_mb or opts.gdal_cache_mb) * 2**20):
        try:
            pending = collections.deque(pool.submit(prepare_block, b, blocks[b], reader, lattice, opts, scratch)
                                        for b in range(min(PREFETCH, len(blocks))))
            for b, block in enumerate(tqdm(blocks, desc="mosaic", unit="block", disable=not progress)):
                x, calibration, _, clear_px = pending.popleft().result()
                if b + PREFETCH < len(blocks):
                    pending.append(pool.submit(prepare_block, b + PREFETCH, blocks[b + PREFETCH], reader, lattice, opts,
                                               scratch))
                scale, offset = calibration or (None, None)
                out = composite(x, opts.spread, True, opts.threads, opts.eps, opts.max_iters, scale, offset,
                                outputs.get(f"out-{b % 2}", (n_bands, block.height, block.width), np.float32))
                result.stacked += x.shape[0] * x.shape[1] * x.shape[3]
                n_clear = out[-1]
                if writing is not None:
                    writing.result()  # the block before: done, its array free
                writing = write_pool.submit(writer.write, out if opts.count else out[:-1], block.row_off, block.col_off)
                result.add_block(n_clear[block.in_cells], clear_px, products)
                del x, out
                if b % 8 == 7:  # every few blocks: each trim costs page faults later
                    release_freed_memory()
            if writing is not None:
                writing.result()
        finally:
            pool.submit(reader.close).result()
            pool.shutdown(cancel_futures=True)
            write_pool.shutdown(wait=True)
    return result
