"""The `predict` stage tile by tile: one task per tile of `compute.tile_size` cells
(executor.stage_tile_size: whole blocks of `predict.block_cells`), in-process or on Dask (executor.py).

A task opens the mosaic, takes the model from its process's cache (`model`: loaded on
the process's first task, again only if the model's files change), and classifies its
tile's cells with classify.predict_cells (the same blocks as one untiled pass, since a
tile is a whole number of blocks); it returns only the tile's (k,) float32 p_urban
(4 bytes per cell), which the client places in the region's table. Same values on every
executor and tile size. With compute=dask the client never loads the model (nor imports
scikit-learn or torch): each worker loads it once, the workers in parallel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import ArrayLike

from urbanmap.compute.executor import ComputeSettings, Executor, run_tiles
from urbanmap.core.lattice import PixelLattice, cell_blocks, group_cells
from urbanmap.mapping.classify import predict_cells
from urbanmap.training import models


@dataclass(frozen=True)
class PredictJob:
    """One task: the positions (in the grid table) and lattice indices of a tile's cells.

    Attributes:
        tile_id: `r<block row>c<block column>` of the tile, counted from the north-west.
        index: (k,) positions of the tile's cells in the grid table.
        cols, rows: (k,) their lattice indices.
    """

    tile_id: str
    index: np.ndarray
    cols: np.ndarray
    rows: np.ndarray


def tile_threads(settings: ComputeSettings) -> int:
    """Threads of one predict task: 1 with compute=local, which runs compute.threads tiles
    at once as a Dask worker's threads do (measured, Extra Trees on the 4x region: 15.4 s
    with one tile at a time on two threads, against 10.7 s on two 1-thread workers:
    scikit-learn's threads wait on each other per tree batch), compute.threads_per_worker
    with compute=dask."""
    return 1 if settings.mode == "local" else settings.task_threads


def model(model_dir: str | os.PathLike[str], threads: int) -> models.PatchClassifier:
    """The fitted classifier of `model_dir` (models.load), loaded once per process and
    kept while its files are unchanged (a persistent Dask worker reloads a retrained
    model); `threads`: the threads one task may use (scikit-learn's n_jobs, torch's)."""
    folder = Path(model_dir)
    files = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()))
    return _load(str(folder.resolve()), int(threads), files)


@functools.lru_cache(maxsize=2)
def _load(model_dir: str, threads: int, files: tuple[tuple[str, int, int], ...]) -> models.PatchClassifier:
    """models.load, cached by folder, threads and the folder's (name, mtime, size) files."""
    clf, card = models.load(Path(model_dir))
    estimator: Any = getattr(clf, "estimator", None)
    if hasattr(estimator, "n_jobs"):  # scikit-learn: a task's threads (Dask workers would force 1, with a warning)
        estimator.n_jobs = threads
    if card.get("kind") == "torch":
        import torch

        torch.set_num_threads(threads)
    return clf


def predict_tile(job: PredictJob, mosaic: str, lattice: PixelLattice, indexes: Sequence[int], model_dir: str,
                 block_cells: int, threads: int) -> np.ndarray:
    """The task of one tile (runs on a worker): (k,) float32 p_urban of its cells, from the
    mosaic file `mosaic` on `lattice` and the model of `model_dir` (`threads` threads)."""
    clf = model(model_dir, threads)
    with rasterio.open(mosaic) as src:
        return predict_cells(clf, src, lattice, job.cols, job.rows, indexes, block_cells, progress=False)


def predict_tiled(settings: ComputeSettings, lattice: PixelLattice, mosaic: str | os.PathLike[str],
                  indexes: Sequence[int], model_dir: str | os.PathLike[str], cols: ArrayLike, rows: ArrayLike,
                  block_cells: int, executor: Executor | None = None) -> np.ndarray:
    """(n,) float32 p_urban of the cells `cols`, `rows` (lattice indices), tile by tile
    with executor.run_tiles (on `executor`, an open executor.Executor, if given).

    Args:
        settings: the compute settings (tile size, mode); lattice: the mosaic's lattice.
        mosaic: the mosaic file; indexes: 1-based band indexes of the model's bands.
        model_dir: the model's folder; block_cells: cells per block side within a tile.
    """
    cols, rows = np.asarray(cols), np.asarray(rows)
    size = settings.tile_size  # a multiple of predict.block_cells
    ti, tj = cell_blocks(lattice, cols, rows, size)
    groups = group_cells(lattice, cols, rows, size)
    jobs = [PredictJob(f"r{ti[g[0]]}c{tj[g[0]]}", g, cols[g], rows[g]) for g in groups]
    task = functools.partial(predict_tile, mosaic=str(mosaic), lattice=lattice, indexes=list(indexes),
                             model_dir=str(model_dir), block_cells=int(block_cells), threads=tile_threads(settings))
    p = np.full(len(cols), np.nan, np.float32)
    for k, values in run_tiles(settings, task, jobs, desc="predict", executor=executor):
        p[jobs[k].index] = values
    return p
