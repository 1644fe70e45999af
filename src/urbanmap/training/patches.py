"""The `patches` stage: a balanced sample of labelled cells and their image patches.

For each sampled cell (label urban or non_urban; `excluded` cells are never sampled) the
stage cuts the cell's window of the census period's mosaic (`periods.census`): one
``patch_size x patch_size`` window per cell, ``patch_size = round(1,000 m / 30 m) = 33``.
1,000 m is 33.3 Landsat pixels; rather than carry a third of a pixel (and drift by one
pixel every three cells), the mosaic is written on the region's `PixelLattice`, whose
pixels are 1000/33 = 30.30 m, so every cell is exactly the 33 x 33 window
`lattice.cell_window(col, row)`: no resampling, no partial pixels (see lattice.py).

The sample is sampler.py's (``n = min(patches.n_per_class, cells of the rarer class)``
valid cells per class, cells with nodata replaced); the output,
``<region_dir>/patches.npz``, is in patchset.py's format, with
``<region_dir>/patches_summary.json`` (DVC metrics) beside it. The cells are cut tile by
tile on compute=local or compute=dask (executor.run_tiles), with the same bytes on both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from omegaconf import DictConfig

from urbanmap.compute.executor import ComputeSettings, Executor, run_tiles
from urbanmap.compute.tiles import part_output, parts_folder
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, cell_blocks, group_cells, patch_size
from urbanmap.training.patchset import PatchSet, check_mosaic, check_reflectance, read_patches, save_patches, valid_patches
from urbanmap.training.sampler import balanced_sample, selection

if TYPE_CHECKING:  # pandas only in annotations: a Dask worker cutting tiles never imports it
    import pandas as pd


@dataclass(frozen=True)
class PatchSettings:
    """What the patches stage reads from the config, checked.

    Attributes:
        labels: the region's labels.parquet (input).
        mosaic: the census period's mosaic_<period>.tif (input).
        out: patches.npz (output).
        summary: patches_summary.json (output, DVC metrics).
        year: the year the census period (periods.census) starts in.
        bands: patches.bands, the band names cut, in order (by mosaic band description).
        extra_bands: data.imagery.extra_bands: optional mosaic bands (e.g. smad) cut too
            when the mosaic has them.
        n_per_class: patches.n_per_class, cells wanted per class (>= 1).
        seed: the global seed (random order of the cells).
        pixel_size: data.pixel_size, metres (the source imagery's pixel).
        patch_size: data.patch_size, pixels per cell side, or None (cell / pixel size, rounded).
        compute: the compute settings (executor, tile size).
    """

    labels: Path
    mosaic: Path
    out: Path
    summary: Path
    year: int
    bands: tuple[str, ...]
    extra_bands: tuple[str, ...]
    n_per_class: int
    seed: int
    pixel_size: float
    patch_size: int | None
    compute: ComputeSettings

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PatchSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        census = paths.census_period(cfg)
        year = census.year
        bands = list(cfg.patches.bands)
        unknown = [b for b in bands if not isinstance(b, str) or not b]
        if not bands or unknown:
            raise InputError(f"patches.bands: expected a list of band names, got {bands}")
        n_per_class = cfg.patches.n_per_class
        if not isinstance(n_per_class, int) or n_per_class < 1:
            raise InputError(f"patches.n_per_class: expected a positive whole number, got {n_per_class!r}")
        extra = (cfg.data.get("imagery") or {}).get("extra_bands") or []
        explicit = cfg.data.get("patch_size")
        return cls(
            labels=paths.labels(cfg), mosaic=paths.mosaic(cfg, census), out=paths.patches(cfg),
            summary=paths.patches_summary(cfg), year=year, bands=tuple(bands), extra_bands=tuple(str(b) for b in extra),
            n_per_class=int(n_per_class), seed=int(cfg.seed), pixel_size=float(cfg.data.pixel_size),
            patch_size=int(explicit) if explicit else None, compute=ComputeSettings.from_config(cfg),
        )


# --- tiles: the unit of work of compute=local and compute=dask -------------------------------


@dataclass(frozen=True)
class TileCut:
    """One task: cells of one tile to cut and the folder of its part.

    Attributes:
        tile_id: the tile's name (r<row>c<col>-<part>), for progress and logs.
        index: (k,) positions of the cells in the labels table.
        cols, rows: (k,) lattice indices of the cells.
        part: the folder the task writes its patches.npy into.
    """

    tile_id: str
    index: np.ndarray
    cols: np.ndarray
    rows: np.ndarray
    part: str


def cut_tile(job: TileCut, path: str, lattice: PixelLattice, bands: list[str]) -> np.ndarray:
    """The task of one tile (runs on a worker): cut its cells' patches from the mosaic at
    `path` into `<part>/patches.npy` ((k, b, p, p) float32, renamed into place when
    complete); return which are valid ((k,) bool: no nodata)."""
    with rasterio.open(path) as src, part_output(job.part) as tmp:
        indexes = check_mosaic(src, lattice, str(path), bands)
        patches = read_patches(src, lattice, job.cols, job.rows, indexes)
        np.save(tmp / "patches.npy", patches)
        return valid_patches(patches, src.nodata)


class _TiledReader:
    """balanced_sample's `read`: each round's cells cut by one task per tile holding some
    of them, on `executor`; records which part (and row of it) holds each cell's patch."""

    def __init__(self, settings: ComputeSettings, executor: Executor, labels: pd.DataFrame, lattice: PixelLattice,
                 path: str | Path, bands: list[str], folder: Path):
        self.settings, self.executor, self.lattice, self.folder = settings, executor, lattice, folder
        self.cols, self.rows = labels["col"].to_numpy(), labels["row"].to_numpy()
        self.ti, self.tj = cell_blocks(lattice, self.cols, self.rows, settings.tile_size)
        self.task = functools.partial(cut_tile, path=str(path), lattice=lattice, bands=list(bands))
        self.part_of = np.full(len(labels), -1, np.int64)  # labels position -> part (in `parts`)
        self.row_in = np.zeros(len(labels), np.int64)  # -> row in that part
        self.parts: list[str] = []

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cut `batch` (positions in the labels); return (empty (k, 0, p, p) patches, (k,) valid)."""
        cols, rows, parts, p = self.cols, self.rows, self.parts, self.lattice.patch_size
        groups = group_cells(self.lattice, cols[batch], rows[batch], self.settings.tile_size)
        jobs = [TileCut(f"r{self.ti[batch[g[0]]]}c{self.tj[batch[g[0]]]}-{len(parts) + k}", batch[g], cols[batch[g]],
                        rows[batch[g]], str(self.folder / f"part{len(parts) + k}")) for k, g in enumerate(groups)]
        valid = np.zeros(len(batch), bool)
        for k, ok in run_tiles(self.settings, self.task, jobs, desc="patches", executor=self.executor):
            valid[groups[k]] = ok
            self.part_of[jobs[k].index] = len(parts) + k
            self.row_in[jobs[k].index] = np.arange(len(jobs[k].index))
        parts.extend(j.part for j in jobs)
        return np.empty((len(batch), 0, p, p), np.float32), valid

    def assemble(self, index: np.ndarray, n_bands: int) -> Path:
        """The kept patches of `index`, in its order, copied from the parts (one in memory
        at a time) into `<folder>/patches.npy` ((n, b, p, p) float32); returns that file."""
        p = self.lattice.patch_size
        npy = self.folder / "patches.npy"
        cube = np.lib.format.open_memmap(npy, "w+", np.float32, (len(index), n_bands, p, p))
        for k in np.unique(self.part_of[index]):  # one part in memory at a time
            at = np.flatnonzero(self.part_of[index] == k)
            cube[at] = np.load(Path(self.parts[k]) / "patches.npy", mmap_mode="r")[self.row_in[index[at]]]
        cube.flush()
        del cube
        return npy


def extract_tiled(settings: ComputeSettings, labels: pd.DataFrame, lattice: PixelLattice, path: str | Path,
                  bands: list[str], n_per_class: int, seed: int, year: int, out: str | Path) -> PatchSet:
    """sampler.extract(), tile by tile (executor.run_tiles: in-process or one Dask task per
    tile), written to `out` (save_patches) without holding the patches in memory.

    The sample is balanced_sample's, round for round: each round's cells are cut by one
    task per tile holding some of them, which returns their validity; the kept patches
    are then copied from the parts, in the sample's order, into a .npy streamed into the
    npz. Same cells, same order, same bytes on every executor and tile size. Returns the
    PatchSet without its pixels (patches of shape (n, 0, p, p)).
    """
    p = lattice.patch_size
    with Executor(settings) as ex, parts_folder(out) as folder:
        reader = _TiledReader(settings, ex, labels, lattice, path, bands, folder)
        index, _, dropped = balanced_sample(labels["label"].to_numpy(str), n_per_class, seed, reader)
        ex.release()  # every part is written: a LocalCluster shuts down while they are assembled
        npy = reader.assemble(index, len(bands))
        ps = selection(labels, index, np.empty((len(index), 0, p, p), np.float32), lattice, year, bands, dropped)
        save_patches(out, ps, patches_npy=npy)
    return ps


# --- the stage ------------------------------------------------------------------------------


def read_labels(settings: PatchSettings) -> tuple[pd.DataFrame, PixelLattice]:
    """The labelled cells (cell_id, label, col, row) and their pixel lattice; InputError
    naming the labels file when a class has no cell."""
    labels, cell_size, crs = io.read_cells(settings.labels, "labels", ["cell_id", "label"])
    size = patch_size(cell_size, settings.pixel_size, settings.patch_size)
    lattice = PixelLattice.from_cells(labels["col"], labels["row"], cell_size, size, crs)
    counts = labels["label"].value_counts()
    missing = [c for c in ("urban", "non_urban") if not counts.get(c, 0)]
    if missing:
        raise InputError(
            f"{settings.labels}: no cell labelled {' or '.join(missing)}; training needs urban and non_urban cells"
        )
    return labels, lattice


def mosaic_bands(settings: PatchSettings, lattice: PixelLattice) -> list[str]:
    """The bands to cut: patches.bands, then those of data.imagery.extra_bands that the
    mosaic has; InputError naming the mosaic file when it is missing, unreadable or off
    the lattice."""
    path = io.require_file(settings.mosaic, f"mosaic of {settings.year}")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read mosaic: {exc}".splitlines()[0]) from exc
    with src:
        # Optional extra mosaic bands (data.imagery.extra_bands, e.g. smad) that the mosaic has.
        out = list(settings.bands)
        out += [b for b in settings.extra_bands if b in src.descriptions and b not in out]
        check_reflectance(src, str(path), check_mosaic(src, lattice, str(path), out)[:len(settings.bands)])
    return out


def patches_summary(ps: PatchSet, labels: pd.DataFrame, lattice: PixelLattice, settings: PatchSettings) -> dict[str, Any]:
    """patches_summary.json: the sample's counts, capping, nodata drops, bands and pixels."""
    n = len(ps) // 2
    return {
        "year": settings.year,
        "patches": len(ps),
        "per_class": n,
        "n_per_class": settings.n_per_class,
        "capped": n < settings.n_per_class,
        "labelled_urban": int((labels["label"] == "urban").sum()),
        "labelled_non_urban": int((labels["label"] == "non_urban").sum()),
        "nodata_dropped": ps.nodata_dropped,
        "bands": list(ps.bands),
        "patch_size": lattice.patch_size,
        "pixel_size_m": lattice.pixel_size,
    }


def run(cfg: DictConfig) -> None:
    """The stage: labels.parquet + mosaic_<periods.census>.tif -> patches.npz, patches_summary.json,
    tile by tile on compute=local or compute=dask (the same bytes)."""
    settings = PatchSettings.from_config(cfg)
    labels, lattice = read_labels(settings)
    bands = mosaic_bands(settings, lattice)
    ps = extract_tiled(settings.compute, labels, lattice, settings.mosaic, bands, settings.n_per_class, settings.seed,
                       settings.year, settings.out)
    io.write_json(settings.summary, patches_summary(ps, labels, lattice, settings))
    n, size = len(ps) // 2, lattice.patch_size
    print(
        f"patches ({settings.year}): {n:,} urban + {n:,} non_urban cells of {size} x {size} px x {len(bands)} bands, "
        f"{ps.nodata_dropped:,} dropped for nodata -> {settings.out}"
    )
