"""The one executor that runs the heavy stages tile by tile (tiles.py cuts the tiles).

A stage reads `ComputeSettings.from_config(cfg)` once, at its entry (the `compute`
config group, checked, and the tile size every heavy stage shares), and passes it down.
`run_tiles(settings, fn, tiles)` calls `fn(tile)` once per tile and yields
`(position, result)` as tiles finish:

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
import ctypes
import ctypes.util
import functools
import importlib.metadata
import json
import math
import os
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from urbanmap.compute.tiles import effective_tile_size
from urbanmap.core.errors import InputError

MODES = ("local", "dask")
#: Environment variable naming a file where each Executor appends one JSON line per task
#: (mode, desc, host, pid, start, end (Unix time, s), seconds, peak_rss_mb, rss_after_mb): what
#: benchmarks/bench_scaling.py and bench_startup.py read.
STATS_ENV = "URBANMAP_TASK_STATS"


# --- executors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ComputeSettings:
    """Where and how the heavy stages run: the `compute` config group, checked.

    Attributes:
        mode: "local" (threads in this process) or "dask".
        threads: local thread pool size (compute.threads).
        threads_per_worker, n_workers, memory_limit: a LocalCluster's shape (compute=dask
            without an address).
        address: a running Dask scheduler (`tcp://host:8786`), or None.
        connect_timeout_s: seconds to wait for the scheduler.
        retries: times a failing task is re-run.
        tile_size: cells per tile side, the same for every heavy stage: compute.tile_size
            rounded up to a multiple of mosaic.block_cells and predict.block_cells (so a
            tile is whole blocks of both, and one tile index serves the mosaic, the
            patches and the predictions).
    """

    mode: str = "local"
    threads: int = 1
    threads_per_worker: int = 1
    n_workers: int = 1
    memory_limit: str | float | int = "auto"
    address: str | None = None
    connect_timeout_s: float = 10.0
    retries: int = 0
    tile_size: int = 32

    @property
    def task_threads(self) -> int:
        """Threads one task may use: `threads` (local) or `threads_per_worker` (Dask)."""
        return self.threads if self.mode == "local" else self.threads_per_worker

    @classmethod
    def from_config(cls, cfg: Any) -> ComputeSettings:
        """Read `cfg.compute` (and the block sides of `cfg.mosaic`, `cfg.predict`);
        InputError naming the key that is wrong."""
        c = cfg.compute
        name = str(c.get("name", "local"))
        if name not in MODES:
            raise InputError(f"compute.name: must be local or dask, got {name!r}")
        sides = [v for v in (_select(cfg, "mosaic.block_cells"), _select(cfg, "predict.block_cells"))
                 if isinstance(v, int) and v >= 1]
        return cls(
            mode=name,
            threads=_whole(c, "threads", required=name == "local"),
            threads_per_worker=_whole(c, "threads_per_worker", required=name == "dask"),
            n_workers=_whole(c, "n_workers"),
            memory_limit=c.get("memory_limit") or "auto",
            address=str(c.get("address")) if c.get("address") else None,
            connect_timeout_s=float(c.get("connect_timeout_s") or 10),
            retries=int(c.get("retries") or 0),
            tile_size=effective_tile_size(c.get("tile_size"), math.lcm(*sides) if sides else 1),
        )


def _whole(section: Any, key: str, required: bool = False) -> int:
    """`compute.<key>` as a whole number >= 1 (1 when unset and not `required`)."""
    value = section.get(key)
    if value is None and not required:
        return 1
    if value is None or isinstance(value, bool) or int(value) < 1:
        raise InputError(f"compute.{key}: expected a whole number >= 1, got {value!r}")
    return int(value)


def _select(cfg: Any, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


@functools.cache
def _malloc_trim() -> Callable[[], object]:
    """Glibc's malloc_trim(0), or a no-op where there is none (another libc)."""
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
    _malloc_trim()()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _measured(fn: Callable[[Any], Any], item: Any) -> tuple[Any, dict[str, Any]]:
    """Run `fn(item)`, then release the memory it freed; return (its result, where and
    how it ran). Runs on the worker; an InputError it raises reaches the client as one."""
    began, start = time.time(), time.perf_counter()
    message: str | None = None
    try:
        result = fn(item)
    except InputError as exc:
        message = str(exc)
    if message is not None:
        # Raised afresh, outside the handler, so without cause or context: Dask pickles
        # a task's exception with both (tblib), and GDAL's errors (rasterio's CPLE_*) do
        # not unpickle, so the client would get a bare Exception holding the repr and the
        # command line would print a traceback. The message is all the user sees.
        raise InputError(message)
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

    def __init__(self, settings: ComputeSettings, local_workers: int | None = None):
        self.settings = settings
        self.mode = settings.mode
        self.local_workers = local_workers
        self.client: Any = None  # distributed.Client with compute=dask
        self.cluster: Any = None  # the distributed.LocalCluster this executor started, if any
        self.stats: list[dict[str, Any]] = []
        self._closing: threading.Thread | None = None  # the thread shutting down the LocalCluster after release()

    def __enter__(self) -> Executor:
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
            self._closing = threading.Thread(target=self.cluster.close, name="urbanmap-close-cluster")
            self.cluster = None
            self._closing.start()

    def __exit__(self, *exc: object) -> None:
        stats_file = os.environ.get(STATS_ENV)
        if stats_file and self.stats:
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

        c = self.settings
        timeout = c.connect_timeout_s
        address = c.address
        if address:
            try:
                self.client = Client(str(address), timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise InputError(
                    f"compute.address: cannot reach the Dask scheduler at {address} within {timeout:g} s: "
                    f"{exc}".splitlines()[0]
                ) from exc
        else:
            self.cluster = LocalCluster(
                n_workers=c.n_workers, threads_per_worker=c.threads_per_worker, memory_limit=c.memory_limit,
                processes=True, host="127.0.0.1", dashboard_address=None,
            )
            self.client = Client(self.cluster, timeout=timeout)

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
            return self.local_workers or self.settings.threads
        return sum(self.client.nthreads().values())

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], keys: Iterable[str],
            desc: str = "tiles") -> Iterator[tuple[int, Any]]:
        """Run `fn(item)` for each item; yield (position of the item, result) as each
        finishes. `fn` must be picklable for Dask (a module-level function or a
        functools.partial of one) and `keys` unique names of the tasks."""
        if self.mode == "dask" and self.client is None:
            raise RuntimeError("Executor.map after release() or outside its context")
        items, keys = list(items), list(keys)
        task = functools.partial(_measured, fn)
        run = self._local if self.mode == "local" else self._dask
        with tqdm(total=len(items), desc=desc, unit="tile", disable=None) as bar:
            for k, result, stat in run(task, items, keys, desc):
                self.stats.append({"desc": desc, **stat})
                bar.update()
                yield k, result

    def _local(self, task: Callable[[Any], Any], items: list[Any], keys: list[str],
               desc: str) -> Iterator[tuple[int, Any, dict[str, Any]]]:
        """(position, result, stat) of each item as it finishes on a thread pool."""
        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix=desc) as pool:
            pending = {pool.submit(task, item): k for k, item in enumerate(items)}
            try:
                for future in concurrent.futures.as_completed(pending):
                    result, stat = future.result()
                    yield pending[future], result, stat
            finally:
                for future in pending:
                    future.cancel()

    def _dask(self, task: Callable[[Any], Any], items: list[Any], keys: list[str],
              desc: str) -> Iterator[tuple[int, Any, dict[str, Any]]]:
        """(position, result, stat) of each item as its Dask task finishes."""
        from distributed import as_completed

        token = f"{os.getpid()}-{time.time_ns()}"
        submitted = [self.client.submit(task, item, key=f"{desc}-{key}-{token}", retries=self.settings.retries)
                     for item, key in zip(items, keys)]
        where = {f.key: k for k, f in enumerate(submitted)}
        try:
            for future, (result, stat) in as_completed(submitted, with_results=True):
                yield where[future.key], result, stat
        finally:
            for future in submitted:
                future.cancel()


def run_tiles(settings: ComputeSettings, fn: Callable[[Any], Any], tiles: Iterable[Any], desc: str = "tiles",
              local_workers: int | None = None, executor: Executor | None = None) -> Iterator[tuple[int, Any]]:
    """Run `fn(tile)` for each of `tiles` (a sequence of small picklable objects with a
    `tile_id`, or dicts with one) with settings.mode local or dask; yield (position,
    result) as tiles finish. `local_workers` caps the local thread pool (a stage whose
    `fn` is itself multi-threaded passes 1); `executor` reuses an open Executor."""
    tiles = list(tiles)
    keys = [t["tile_id"] if isinstance(t, dict) else getattr(t, "tile_id", str(k)) for k, t in enumerate(tiles)]
    if executor is not None:
        yield from executor.map(fn, tiles, keys, desc)
        return
    with Executor(settings, local_workers) as ex:
        yield from ex.map(fn, tiles, keys, desc)
