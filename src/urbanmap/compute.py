"""Tiles of a region and the one executor that runs the heavy stages tile by tile.

**Tiles.** A region's pixel lattice (lattice.PixelLattice) is cut into square tiles of
`compute.tile_size` x `compute.tile_size` grid cells, counted from the lattice's
north-west corner (tile row 0 is the northernmost, tile column 0 the westernmost), so a
tile boundary is always a cell boundary and, in pixels, a multiple of patch_size. Only
tiles holding at least one grid cell are listed. The tile size is a whole number of
cells; when a stage also cuts tiles into blocks (the mosaic's `mosaic.block_cells`) it
is rounded up to a multiple of the block side, so a tile is a set of whole blocks and
the blocks are the same as in one untiled pass (`effective_tile_size`).

**Executor.** `run_tiles(cfg, fn, tiles)` calls `fn(tile)` once per tile and yields
`(tile, result)` as tiles finish:

* `compute=local`: in this process, on a thread pool of `compute.threads` threads (or
  fewer, when the stage's `fn` is itself multi-threaded);
* `compute=dask`: one Dask task per tile on a `distributed.Client`, connected to the
  scheduler at `compute.address` (`tcp://host:8786`) or to a `LocalCluster` started from
  `compute.n_workers`, `threads_per_worker` and `memory_limit` (process workers on
  127.0.0.1, closed afterwards).

Tasks must be pure and re-runnable: `fn` reads only its tile's inputs, writes its part
to a temporary file that it renames into place when complete (`part_output`), and
returns only small metadata. The caller assembles the parts, one at a time, into the
same output file as the local path. A task that raises is retried `compute.retries`
times; a task whose worker dies is re-run elsewhere by the Dask scheduler (its
`distributed.scheduler.allowed-failures`); a killed task's half-written temporary file
is never renamed and is removed with the parts folder. With a remote scheduler, the
inputs and the output's folder must be on a filesystem every worker sees at the same
path.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from urbanmap.errors import InputError

MODES = ("local", "dask")
#: Environment variable naming a file where each Executor appends one JSON line per task
#: (mode, desc, host, pid, start, end (Unix time, s), seconds, peak_rss_mb, rss_after_mb): what
#: benchmarks/bench_scaling.py and bench_startup.py read.
STATS_ENV = "URBANMAP_TASK_STATS"


# --- tiles ---------------------------------------------------------------------------------


def effective_tile_size(tile_size, multiple: int = 1) -> int:
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


def stage_tile_size(cfg) -> int:
    """The tile size every heavy stage uses: compute.tile_size rounded up to a multiple of
    mosaic.block_cells and predict.block_cells (so a tile is whole blocks of both), hence
    one tile index for the mosaic, the patches and the predictions."""
    sides = [int(v) for v in (_select(cfg, "mosaic.block_cells"), _select(cfg, "predict.block_cells"))
             if isinstance(v, int) and v >= 1]
    return effective_tile_size(cfg.compute.get("tile_size"), math.lcm(*sides) if sides else 1)


def _select(cfg, key: str):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=None)


def tile_index(lattice, cols, rows, tile_size: int):
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
    import pandas as pd

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


def tile_of_cells(lattice, cols, rows, tile_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ti, tj) int arrays: the tile of each cell (see tile_index)."""
    i = lattice.row0 + lattice.nrows - 1 - np.asarray(rows, np.int64)
    j = np.asarray(cols, np.int64) - lattice.col0
    return i // int(tile_size), j // int(tile_size)


def write_tile_index(path, tiles, crs) -> None:
    """Write a tile index as GeoParquet (one polygon per tile, in `crs`), atomically."""
    import geopandas as gpd
    import shapely

    from urbanmap.io import atomic_output

    geometry = shapely.box(tiles["xmin"], tiles["ymin"], tiles["xmax"], tiles["ymax"])
    frame = gpd.GeoDataFrame(tiles.reset_index(drop=True), geometry=geometry, crs=crs)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)


# --- parts ---------------------------------------------------------------------------------


@contextlib.contextmanager
def parts_folder(out) -> Iterator[Path]:
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
def part_output(path) -> Iterator[Path]:
    """A temporary folder that becomes the part folder `path` in one rename when the block
    succeeds, so a part exists completely or not at all. The temporary name is unique to
    the process and thread, so two runs of the same task (a retry, a worker thought dead)
    never write into the same files; whichever renames last leaves the same content."""
    import threading

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


# --- executors -----------------------------------------------------------------------------


def mode(cfg) -> str:
    """`compute.name`: local or dask (InputError otherwise)."""
    name = str(cfg.compute.get("name", "local"))
    if name not in MODES:
        raise InputError(f"compute.name: must be local or dask, got {name!r}")
    return name


def task_threads(cfg) -> int:
    """Threads one task may use: compute.threads (local) or compute.threads_per_worker."""
    key = "threads" if mode(cfg) == "local" else "threads_per_worker"
    value = cfg.compute.get(key)
    if value is None or int(value) < 1:
        raise InputError(f"compute.{key}: expected a whole number >= 1, got {value!r}")
    return int(value)


@functools.cache
def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or a no-op where there is none (another libc)."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def release_freed_memory() -> None:
    """Return the heap memory freed so far to the OS: glibc's (malloc_trim) and, when
    pyarrow is loaded, its memory pool's.

    After a large array is freed, glibc raises its mmap threshold, so the next arrays
    come from the heap, whose freed space stays in RSS and fragments: a worker that runs
    task after task then grows with the number of tasks it ran, i.e. with the region
    (measured, mosaic tiles: +15% for a region four times larger, before this), although
    each task holds one tile. A fixed threshold instead costs ~5 s of page faults per
    mosaic run. Called after every task (_measured) and every few blocks by the mosaic.
    """
    import sys

    _malloc_trim()()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _measured(fn: Callable, item):
    """Run `fn(item)`, then release the memory it freed; return (its result, where and
    how it ran). Runs on the worker."""
    import resource
    import socket

    began, start = time.time(), time.perf_counter()
    result = fn(item)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    release_freed_memory()  # a worker runs many tasks: what one freed must not stay in its RSS
    return result, {"host": socket.gethostname(), "pid": os.getpid(), "start": began, "end": began + seconds,
                    "seconds": seconds, "peak_rss_mb": peak_kb / 1024, "rss_after_mb": _rss_mb()}


def _rss_mb() -> float | None:
    """This process's resident memory now, MB (Linux /proc), or None elsewhere: what a
    task left behind, against peak_rss_mb, what it needed."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class Executor:
    """Runs tasks in-process (compute=local) or on a Dask cluster (compute=dask).

    Use as a context manager; `map` may be called several times (one cluster), until
    `release`. `stats`: one dict per finished task (desc, host, pid, start and end (Unix
    time, s), seconds, peak_rss_mb: the peak resident memory of the process that ran it so
    far, rss_after_mb: its resident memory after the task), also appended as JSON lines
    to the file named by $URBANMAP_TASK_STATS when the executor closes.
    """

    def __init__(self, cfg, local_workers: int | None = None):
        self.mode = mode(cfg)
        self.compute = cfg.compute
        self.local_workers = local_workers
        self.client = None
        self.cluster = None
        self.stats: list[dict] = []
        self._closing = None  # the thread shutting down the LocalCluster after release()

    def __enter__(self) -> "Executor":
        if self.mode == "dask":
            self._connect()
        return self

    def release(self) -> None:
        """The stage submits no more tasks: close the Dask client now and shut down the
        LocalCluster this executor started (if any) in a background thread, so that its
        worker processes exit (1 to 2 s with scikit-learn loaded) while the stage writes
        its outputs; leaving the context waits for it. A no-op with compute=local."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            import threading

            self._closing = threading.Thread(target=self.cluster.close, name="urbanmap-close-cluster")
            self.cluster = None
            self._closing.start()

    def __exit__(self, *exc) -> None:
        stats_file = os.environ.get(STATS_ENV)
        if stats_file and self.stats:
            import json

            with open(stats_file, "a", encoding="utf-8") as fh:
                for stat in self.stats:
                    fh.write(json.dumps({"mode": self.mode, **stat}) + "\n")
            self.stats = []
        self.release()
        if self._closing is not None:
            self._closing.join()
            self._closing = None

    def _connect(self) -> None:
        from distributed import Client, LocalCluster

        c = self.compute
        timeout = float(c.get("connect_timeout_s") or 10)
        address = c.get("address")
        if address:
            try:
                self.client = Client(str(address), timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise InputError(
                    f"compute.address: cannot reach the Dask scheduler at {address} within {timeout:g} s: "
                    f"{exc}".splitlines()[0]
                ) from exc
        else:
            n, t = int(c.get("n_workers") or 1), int(c.get("threads_per_worker") or 1)
            self.cluster = LocalCluster(
                n_workers=n, threads_per_worker=t, memory_limit=c.get("memory_limit") or "auto",
                processes=True, host="127.0.0.1", dashboard_address=None,
            )
            self.client = Client(self.cluster, timeout=timeout)
        import importlib.metadata

        # A stdlib function, so that the check itself reaches workers without urbanmap.
        try:
            versions = self.client.run(importlib.metadata.version, "urbanmap")
        except importlib.metadata.PackageNotFoundError as exc:
            self.__exit__()
            raise InputError("compute: a Dask worker has no urbanmap package; install this project "
                             "(pip install -e .) in every worker's environment") from exc
        mine = importlib.metadata.version("urbanmap")
        other = sorted({v for v in versions.values() if v != mine})
        if other:
            self.__exit__()
            raise InputError(f"compute: Dask workers run urbanmap {', '.join(other)}, this client {mine}")
        if not versions:
            self.__exit__()
            raise InputError(f"compute.address: the Dask scheduler at {address} has no workers")

    @property
    def workers(self) -> int:
        """Tasks that run at once."""
        if self.mode == "local":
            return self.local_workers or int(self.compute.get("threads") or 1)
        return sum(self.client.nthreads().values())

    def map(self, fn: Callable, items: Iterable, keys: Iterable[str], desc: str = "tiles") -> Iterator[tuple[int, object]]:
        """Run `fn(item)` for each item; yield (position of the item, result) as each
        finishes. `fn` must be picklable for Dask (a module-level function or a
        functools.partial of one) and `keys` unique names of the tasks."""
        from tqdm import tqdm

        if self.mode == "dask" and self.client is None:
            raise RuntimeError("Executor.map after release() or outside its context")
        items, keys = list(items), list(keys)
        task = functools.partial(_measured, fn)
        bar = tqdm(total=len(items), desc=desc, unit="tile", disable=None)
        try:
            if self.mode == "local":
                with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix=desc) as pool:
                    futures = {pool.submit(task, item): k for k, item in enumerate(items)}
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            result, stat = future.result()
                            self.stats.append({"desc": desc, **stat})
                            bar.update()
                            yield futures[future], result
                    finally:
                        for future in futures:
                            future.cancel()
            else:
                from distributed import as_completed

                token = f"{os.getpid()}-{time.time_ns()}"
                futures = [
                    self.client.submit(task, item, key=f"{desc}-{key}-{token}", retries=int(self.compute.get("retries") or 0))
                    for item, key in zip(items, keys)
                ]
                where = {f.key: k for k, f in enumerate(futures)}
                try:
                    for future, (result, stat) in as_completed(futures, with_results=True):
                        self.stats.append({"desc": desc, **stat})
                        bar.update()
                        yield where[future.key], result
                finally:
                    for future in futures:
                        future.cancel()
        finally:
            bar.close()


def run_tiles(cfg, fn: Callable, tiles, desc: str = "tiles", local_workers: int | None = None,
              executor: Executor | None = None) -> Iterator[tuple[int, object]]:
    """Run `fn(tile)` for each of `tiles` (a sequence of small picklable objects with a
    `tile_id`, or dicts with one) with compute=local or compute=dask; yield (position,
    result) as tiles finish. `local_workers` caps the local thread pool (a stage whose
    `fn` is itself multi-threaded passes 1); `executor` reuses an open Executor."""
    tiles = list(tiles)
    keys = [t["tile_id"] if isinstance(t, dict) else getattr(t, "tile_id", str(k)) for k, t in enumerate(tiles)]
    if executor is not None:
        yield from executor.map(fn, tiles, keys, desc)
        return
    with Executor(cfg, local_workers) as ex:
        yield from ex.map(fn, tiles, keys, desc)
