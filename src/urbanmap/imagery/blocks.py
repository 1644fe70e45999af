"""The mosaic block by block: scenes read and masked for one block while geomad reduces
the one before, blocks written as they finish (see mosaic.py for the whole stage).
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from tqdm import tqdm

from urbanmap.compute.executor import ComputeSettings, release_freed_memory
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import Block, block_bounds, block_transform, plan_blocks
from urbanmap.imagery import landsat, scenes
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


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])

def assign_scenes(blocks: list[Block], lattice, footprints: Sequence[tuple], halo: int) -> None:
    """Set each block's `scenes`: the scenes whose footprint (bounds in the lattice CRS)
    overlaps the block grown by `halo` pixels."""
    for block in blocks:
        bounds = block_bounds(lattice, block, halo)
        block.scenes = [i for i, fp in enumerate(footprints) if _overlaps(fp, bounds)]

@dataclass(frozen=True)
class MosaicSettings:
    """Processing options (the `mosaic` config section, plus compute.threads)."""

    bits: int
    buffer_px: int
    spread: tuple[str, ...]
    count: bool
    block_cells: int
    threads: int
    eps: float
    max_iters: int
    gdal_cache_mb: int
    cog: dict

    @classmethod
    def from_config(cls, cfg, pixel_size: float) -> MosaicSettings:
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
        return cls(
            flag_bits(m.mask), buffer_px, spread, bool(m.count), int(m.block_cells),
            settings.task_threads, float(m.eps), int(m.max_iters), int(m.gdal_cache_mb), dict(m.cog),
        )

class _Reader:
    """Opens scenes when a block first needs them and closes them after the last block
    that does, so that open files (and their cached tiles) stay bounded. Used from one
    thread only (rasterio datasets are not thread-safe)."""

    def __init__(self, products, blocks: list[Block]):
        self.products = products
        self.last = {}
        for b, block in enumerate(blocks):
            for i in block.scenes:
                self.last[i] = b
        self.open: dict[int, list] = {}

    def get(self, i: int) -> list:

        if i not in self.open:
            self.open[i] = scenes.open_files(self.products[i])
        return self.open[i]

    def release(self, b: int) -> None:
        for i in [i for i in self.open if self.last[i] <= b]:
            for ds in self.open.pop(i):
                ds.close()

    def close(self) -> None:
        for datasets in self.open.values():
            for ds in datasets:
                ds.close()
        self.open.clear()

#: Blocks the reader thread prepares ahead of geomad. Two, not one: a block's read time
#: varies (new scenes to open, a new row of source tiles to decode) while geomad's is
#: steady, and with one block ahead geomad waited for the reader 0.8 s per run on the
#: default region (0.2 s with two; one more stack in memory, ~30 MB).
PREFETCH = 2


def prepare_block(b: int, block: Block, reader: _Reader, lattice, opts: MosaicSettings, scratch=None):
    """Read, warp and mask one block (runs in the reader thread).

    Returns (stack (rows, cols, 6, obs): float32 reflectance (to_stack) or uint16 DN
    (to_dn_stack), (scale, offset) of a DN stack or None, scene indices of the obs, clear
    pixels of each scene in the block's cells). With a `scratch` (scenes.Scratch), the
    arrays come from it, the stack from buffer "stack-<b % (PREFETCH + 1)>": valid until
    block b + PREFETCH + 1 is prepared (build() reduces block b while it prepares the
    next PREFETCH blocks).
    """
    halo = opts.buffer_px
    shape = (block.height + 2 * halo, block.width + 2 * halo)
    chosen = block.scenes
    pairs = [(reader.products[i], reader.get(i)) for i in chosen]
    groups = scenes.warp_groups(pairs, lattice.crs, block_transform(lattice, block, halo), shape)
    # QA first (with the halo the buffer needs); a scene with no clear pixel in the block
    # (from QA alone) has its bands neither read nor warped (2.7% of the scene x block
    # pairs of the benchmark's 2019 scenes).
    qa = scenes.gather(pairs, groups, ["qa_pixel"], shape, scratch=scratch)[:, :, 0]
    clear = qa_clear(qa, opts.bits, opts.buffer_px, crop=halo)
    del qa
    candidates = np.flatnonzero(clear.any(axis=(0, 1)))
    dn = scenes.gather(pairs, groups, landsat.BANDS, shape, which=candidates, crop=halo, scratch=scratch)
    reader.release(b)
    clear = clear[:, :, candidates]
    clear &= ~dn_fill(dn)
    in_cells = clear if block.cells.all() else clear & block.in_cells[:, :, None]
    used = np.count_nonzero(in_cells, axis=(0, 1))
    keep = np.flatnonzero(used > 0) if block.cells.all() else np.flatnonzero(clear.any(axis=(0, 1)))
    if len(keep) < len(candidates):
        dn, clear = dn[..., keep], clear[..., keep]
    obs = [chosen[k] for k in candidates[keep]]
    scale = np.array([reader.products[i].scale for i in obs], np.float32).reshape(len(obs), 6)
    offset = np.array([reader.products[i].offset for i in obs], np.float32).reshape(len(obs), 6)
    calibration = None if opts.spread else single_calibration(scale, offset)
    key = f"stack-{b % (PREFETCH + 1)}"
    if calibration is not None:
        x = to_dn_stack(dn, clear, scenes.scratch_array(scratch, key, dn.shape, np.uint16))
    else:
        x = to_stack(dn, clear, scale, offset, scenes.scratch_array(scratch, key, dn.shape, np.float32))
    clear_px = dict.fromkeys(chosen, 0)
    clear_px.update({chosen[k]: int(n) for k, n in zip(candidates, used)})
    return x, calibration, obs, clear_px

@dataclass
class Result:
    """What a mosaic run measured (the summary JSON)."""

    pixels: int = 0
    pixels_no_clear: int = 0
    observations: int = 0
    min_count: int | None = None
    stacked: int = 0  # pixels x observations reduced by geomad (masked ones included)
    per_scene: dict = field(default_factory=dict)

def plan(products, lattice, cols, rows, opts: MosaicSettings) -> list[Block]:
    """The blocks of the lattice, each with the scenes it needs (in grid order, so that
    each grid's scenes are warped together). Opens every scene once to check its files
    and find its footprint."""
    grids = []
    for p in products:
        datasets = scenes.open_files(p)
        try:
            grids.append(scenes.grid_of(datasets))
        finally:
            for ds in datasets:
                ds.close()
    by_grid = {g.key: g for g in grids}  # scenes of one path/row share a grid: one footprint each
    footprint = {key: scenes.footprint(g, lattice.crs) for key, g in by_grid.items()}
    footprints = [footprint[g.key] for g in grids]
    blocks = plan_blocks(lattice, cols, rows, opts.block_cells)
    assign_scenes(blocks, lattice, footprints, opts.buffer_px)
    order = {i: (grids[i].key, i) for i in range(len(products))}
    for block in blocks:
        block.scenes.sort(key=order.__getitem__)
    return blocks

def build(products, lattice, cols, rows, opts: MosaicSettings, writer, progress: bool = True,
          blocks: list[Block] | None = None, cache_mb: int | None = None) -> Result:
    """Compute the mosaic of `products` on `lattice` (cells given by `cols`, `rows`),
    block by block into `writer` (a cog.BlockWriter of band_names(opts...) bands, or any
    object with its `write`); `blocks`: already planned blocks (a tile's), else plan();
    `cache_mb`: GDAL's block cache (default opts.gdal_cache_mb)."""
    if blocks is None:
        blocks = plan(products, lattice, cols, rows, opts)
    result = Result(per_scene={p.product_id: 0 for p in products})
    reader = _Reader(products, blocks)
    scratch = scenes.Scratch()  # the reader thread's arrays, reused from block to block
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mosaic-read")
    # Blocks are written (and their overviews pooled) in a thread of their own, so that
    # geomad starts on the next block at once; one block is written at a time, into
    # one of two reused output arrays (the other is being filled).
    write_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mosaic-write")
    writing = None
    outputs = scenes.Scratch()
    n_bands = len(GM_BANDS) + len(opts.spread) + 1
    with rasterio.Env(GDAL_CACHEMAX=int(cache_mb or opts.gdal_cache_mb) * 2**20):
        try:
            pending = collections.deque(pool.submit(prepare_block, b, blocks[b], reader, lattice, opts, scratch)
                                        for b in range(min(PREFETCH, len(blocks))))
            for b, block in enumerate(tqdm(blocks, desc="mosaic", unit="block", disable=not progress)):
                x, calibration, used_scenes, clear_px = pending.popleft().result()
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
                counts = n_clear[block.in_cells]
                result.pixels += counts.size
                result.pixels_no_clear += int(np.count_nonzero(counts == 0))
                result.observations += int(counts.sum())
                low = int(counts.min())
                result.min_count = low if result.min_count is None else min(result.min_count, low)
                for i, n in clear_px.items():
                    result.per_scene[products[i].product_id] += n
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

