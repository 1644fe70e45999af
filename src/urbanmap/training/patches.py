"""The `patches` stage: a balanced sample of labelled cells and their image patches.

For each sampled cell (label urban or non_urban; `excluded` cells are never sampled) the
stage cuts the cell's window of the training year's mosaic (`years.train`): one
``patch_size x patch_size`` window per cell, ``patch_size = round(1,000 m / 30 m) = 33``.
1,000 m is 33.3 Landsat pixels; rather than carry a third of a pixel (and drift by one
pixel every three cells), the mosaic is written on the region's `PixelLattice`, whose
pixels are 1000/33 = 30.30 m, so every cell is exactly the 33 x 33 window
`lattice.cell_window(col, row)`: no resampling, no partial pixels (see lattice.py).

Sampling is balanced: ``n = min(patches.n_per_class, cells of the rarer class)`` cells
of each class, drawn at random from the seed (a warning says when the cap applies).
Cells whose patch holds nodata (NaN or the file's nodata value, in any band) are dropped,
counted, and replaced by the next cells of the same random order, so both classes keep
``n`` patches unless the region runs out of valid cells (then both shrink to the smaller
count, again with a warning).

The output, ``<region_dir>/patches.npz`` (NumPy npz, uncompressed, readable with
``numpy.load(path, allow_pickle=False)``), holds:

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
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.windows import Window
from tqdm import tqdm

from urbanmap.compute.executor import ComputeSettings, Executor, run_tiles
from urbanmap.compute.tiles import part_output, parts_folder
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.io import atomic_output, require_file
from urbanmap.core.lattice import PixelLattice, cell_blocks, group_cells, patch_size

if TYPE_CHECKING:  # pandas only in annotations: a Dask worker cutting tiles never imports it
    import pandas as pd

log = logging.getLogger(__name__)

#: Class names by label code (label 1 = urban), the order of every per-class array.
CLASSES = ("non_urban", "urban")

_KEYS = ("patches", "label", "cell_id", "col", "row", "x", "y", "year", "bands", "crs", "cell_size", "nodata_dropped")


@dataclass(frozen=True)
class PatchSet:
    """Patches of sampled cells and where they come from (see the module docstring)."""

    patches: np.ndarray  # (n, b, p, p) float32 reflectance
    label: np.ndarray  # (n,) uint8, 1 = urban
    cell_id: np.ndarray  # (n,) str
    col: np.ndarray  # (n,) int64
    row: np.ndarray  # (n,) int64
    x: np.ndarray  # (n,) float64, cell centre, metres (grid CRS)
    y: np.ndarray  # (n,) float64
    year: int
    bands: tuple[str, ...]
    crs: str
    cell_size: float
    nodata_dropped: int = 0

    def __len__(self) -> int:
        return len(self.label)

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[-1])

    def subset(self, index: np.ndarray) -> PatchSet:
        """The samples at `index` (int or bool array)."""
        return PatchSet(
            self.patches[index], self.label[index], self.cell_id[index], self.col[index],
            self.row[index], self.x[index], self.y[index], self.year, self.bands, self.crs,
            self.cell_size, self.nodata_dropped,
        )

def save_patches(path, ps: PatchSet, patches_npy=None) -> None:
    """Write `ps` as npz, atomically: uncompressed, every entry dated 1980-01-01 (numpy's
    savez stamps the current time), so that the same patch set is the same bytes.

    `patches_npy`: a .npy file holding the patches, streamed into the archive in place of
    `ps.patches` (which is then ignored), so that they never need to be in memory.
    """
    arrays = {
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

def load_patches(path) -> PatchSet:
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

def check_mosaic(src, lattice: PixelLattice, name: str, bands) -> list[int]:
    """Check an open rasterio dataset is on `lattice` and has `bands`; return their
    1-based band indexes. InputError naming `name` otherwise."""
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

def read_patches(src, lattice: PixelLattice, cols, rows, indexes, block_cells: int | None = None) -> np.ndarray:
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
        data = src.read(list(indexes), window=Window(int(c0 * p), int(r0 * p), int(nc * p), int(nr * p)))
        cube = data.reshape(len(indexes), nr, p, nc, p)
        out[members] = cube[:, ri[members] - r0, :, ci[members] - c0, :]  # -> (k, b, p, p)
    return out

def valid_patches(patches: np.ndarray, nodata: float | None) -> np.ndarray:
    """(n,) bool: patches without NaN or `nodata` values in any band."""
    flat = patches.reshape(len(patches), -1)
    ok = np.isfinite(flat).all(axis=1)
    if nodata is not None and np.isfinite(nodata):
        ok &= ~(flat == nodata).any(axis=1)
    return ok

def balanced_sample(label: np.ndarray, n_per_class: int, seed: int, read, context: str = "patches") -> tuple[np.ndarray, np.ndarray, int]:
    """Draw `n` valid cells of each class at random, replacing cells whose patch is invalid.

    Each class's cells are put in a random order; the sample is the first `n` cells of
    each order whose patch is valid (no nodata), and `nodata_dropped` counts the invalid
    ones before them. Cells are cut in rounds: the first round cuts `n` of each class;
    each later round cuts the remaining shortfall scaled up by the share of invalid
    patches seen so far, so that a region with much nodata (a mosaic that scenes do not
    cover whole) needs two or three rounds, not one per replacement of a replacement:
    every round is a pass of tasks over the tiles. Cells cut beyond a class's n-th valid
    one are left out, so the sample does not depend on the rounds.

    Args:
        label: (m,) str array of labelled cells: "urban", "non_urban" (others ignored).
        n_per_class: wanted cells per class.
        seed: seed of the random order.
        read: function (k,) int index array -> ((k, b, p, p) patches, (k,) bool valid).
    Returns:
        (index (2n,) into `label`, patches (2n, b, p, p), nodata_dropped), in random order.
    """
    rng = np.random.default_rng(seed)
    queues = [rng.permutation(np.flatnonzero(label == c)) for c in CLASSES]
    available = [len(q) for q in queues]
    if min(available) == 0:
        missing = " or ".join(c for c, a in zip(CLASSES, available) if not a)
        raise InputError(f"{context}: no cell labelled {missing}; training needs urban and non_urban cells")
    n = min(int(n_per_class), *available)
    if n < n_per_class:
        log.warning(
            f"{context}: patches.n_per_class={n_per_class} capped to {n}: the region has "
            f"{available[1]:,} urban and {available[0]:,} non_urban labelled cells"
        )
    kept_idx: list[list[np.ndarray]] = [[], []]
    kept_patches: list[list[np.ndarray]] = [[], []]
    have, pos, dropped = [0, 0], [0, 0], 0
    while True:
        # The shortfall, times the cells cut per valid patch so far and 1.25, so that one
        # more round usually completes the class.
        want = [math.ceil((n - have[c]) * 1.25 * pos[c] / max(have[c], 1)) if pos[c] else n for c in (0, 1)]
        take = [q[pos[c] : pos[c] + want[c]] if have[c] < n else q[:0] for c, q in enumerate(queues)]
        if not sum(len(t) for t in take):
            break
        batch = np.concatenate(take)
        patches, ok = read(batch)
        cls = np.repeat([0, 1], [len(t) for t in take])
        for c in (0, 1):
            at = np.flatnonzero(cls == c)
            valid = at[ok[at]][: n - have[c]]
            # The cells this class used: up to its n-th valid one, or all it cut.
            used = int(np.searchsorted(at, valid[-1])) + 1 if len(valid) and have[c] + len(valid) == n else len(at)
            dropped += used - len(valid)
            kept_idx[c].append(batch[valid])
            kept_patches[c].append(patches[valid])
            have[c] += len(valid)
            pos[c] += used
    n_valid = min(have)
    if n_valid < n:
        log.warning(
            f"{context}: only {have[1]:,} urban and {have[0]:,} non_urban cells have a patch "
            f"without nodata; taking {n_valid:,} of each"
        )
    if n_valid == 0:
        raise InputError(f"{context}: no valid patch for one class ({dropped:,} patches with nodata)")
    index = np.concatenate([np.concatenate(kept_idx[c])[:n_valid] for c in (0, 1)])
    patches = np.concatenate([np.concatenate(kept_patches[c])[:n_valid] for c in (0, 1)])
    shuffle = rng.permutation(len(index))
    return index[shuffle], patches[shuffle], dropped

def extract(
    labels: pd.DataFrame, lattice: PixelLattice, src, bands, n_per_class: int, seed: int, year: int, name: str = "mosaic"
) -> PatchSet:
    """The balanced PatchSet of a region from its labels and an open mosaic.

    Args:
        labels: one row per grid cell with `col`, `row`, `cell_id`, `label`.
        lattice: the region's pixel lattice (all grid cells).
        src: open rasterio dataset of the mosaic (checked against `lattice`).
        bands: band names to cut, in order.
    """
    indexes = check_mosaic(src, lattice, name, bands)
    cols, rows = labels["col"].to_numpy(), labels["row"].to_numpy()
    nodata = src.nodata

    def read(index):
        patches = read_patches(src, lattice, cols[index], rows[index], indexes)
        return patches, valid_patches(patches, nodata)

    index, patches, dropped = balanced_sample(labels["label"].to_numpy(str), n_per_class, seed, read)
    return selection(labels, index, patches, lattice, year, bands, dropped)

def selection(labels: pd.DataFrame, index: np.ndarray, patches: np.ndarray, lattice, year: int, bands, dropped: int) -> PatchSet:
    """The PatchSet of the sampled rows `index` of `labels` (cell_id, col, row, label) and
    their (k, b, p, p) patches; x, y are the cells' centres in the lattice CRS (m)."""
    sel = labels.iloc[index]
    cols, rows, s = sel["col"].to_numpy(), sel["row"].to_numpy(), lattice.cell_size
    return PatchSet(
        patches=patches,
        label=(sel["label"].to_numpy(str) == "urban").astype(np.uint8),
        cell_id=sel["cell_id"].to_numpy(str),
        col=cols.astype(np.int64),
        row=rows.astype(np.int64),
        x=(cols + 0.5) * s,
        y=(rows + 0.5) * s,
        year=int(year),
        bands=tuple(bands),
        crs=lattice.crs.to_string(),
        cell_size=s,
        nodata_dropped=dropped,
    )

# --- tiles: the unit of work of compute=local and compute=dask -------------------------------


@dataclass(frozen=True)
class TileCut:
    """One task: cells of one tile to cut (their positions in the labels table, lattice
    indices) and the folder of its part."""

    tile_id: str
    index: np.ndarray
    cols: np.ndarray
    rows: np.ndarray
    part: str

def cut_tile(job: TileCut, path: str, lattice: PixelLattice, bands) -> np.ndarray:
    """The task of one tile (runs on a worker): cut its cells' patches from the mosaic at
    `path` into `<part>/patches.npy` ((k, b, p, p) float32, renamed into place when
    complete); return which are valid ((k,) bool: no nodata)."""
    with rasterio.open(path) as src, part_output(job.part) as tmp:
        indexes = check_mosaic(src, lattice, str(path), bands)
        patches = read_patches(src, lattice, job.cols, job.rows, indexes)
        np.save(tmp / "patches.npy", patches)
        return valid_patches(patches, src.nodata)

def extract_tiled(settings: ComputeSettings, labels: pd.DataFrame, lattice: PixelLattice, path, bands, n_per_class: int, seed: int,
                  year: int, out) -> PatchSet:
    """extract(), tile by tile (executor.run_tiles: in-process or one Dask task per tile),
    written to `out` (save_patches) without holding the patches in memory.

    The sample is balanced_sample's, round for round: each round's cells are cut by one
    task per tile holding some of them, which returns their validity; the kept patches
    are then copied from the parts, in the sample's order, into a .npy streamed into the
    npz. Same cells, same order, same bytes on every executor and tile size. Returns the
    PatchSet without its pixels (patches of shape (n, 0, p, p)).
    """
    cols, rows = labels["col"].to_numpy(), labels["row"].to_numpy()
    size = settings.tile_size
    ti, tj = cell_blocks(lattice, cols, rows, size)
    p = lattice.patch_size
    task = functools.partial(cut_tile, path=str(path), lattice=lattice, bands=list(bands))
    part_of = np.full(len(labels), -1, np.int64)  # labels position -> part (in `parts`)
    row_in = np.zeros(len(labels), np.int64)  # -> row in that part
    parts: list[str] = []
    with Executor(settings) as ex, parts_folder(out) as folder:

        def read(batch):
            groups = group_cells(lattice, cols[batch], rows[batch], size)
            jobs = [TileCut(f"r{ti[batch[g[0]]]}c{tj[batch[g[0]]]}-{len(parts) + k}", batch[g], cols[batch[g]],
                            rows[batch[g]], str(folder / f"part{len(parts) + k}")) for k, g in enumerate(groups)]
            valid = np.zeros(len(batch), bool)
            for k, ok in run_tiles(settings, task, jobs, desc="patches", executor=ex):
                valid[groups[k]] = ok
                part_of[jobs[k].index] = len(parts) + k
                row_in[jobs[k].index] = np.arange(len(jobs[k].index))
            parts.extend(j.part for j in jobs)
            return np.empty((len(batch), 0, p, p), np.float32), valid

        index, _, dropped = balanced_sample(labels["label"].to_numpy(str), n_per_class, seed, read)
        ex.release()  # every part is written: a LocalCluster shuts down while they are assembled
        npy = folder / "patches.npy"
        cube = np.lib.format.open_memmap(npy, "w+", np.float32, (len(index), len(bands), p, p))
        for k in np.unique(part_of[index]):  # one part in memory at a time
            at = np.flatnonzero(part_of[index] == k)
            cube[at] = np.load(Path(parts[k]) / "patches.npy", mmap_mode="r")[row_in[index[at]]]
        cube.flush()
        del cube
        ps = selection(labels, index, np.empty((len(index), 0, p, p), np.float32), lattice, year, bands, dropped)
        save_patches(out, ps, patches_npy=npy)
    return ps

def run(cfg) -> None:
    """The stage: labels.parquet + mosaic_<years.train>.tif -> patches.npz, patches_summary.json,
    tile by tile on compute=local or compute=dask (the same bytes)."""
    labels, cell_size, crs = io.read_cells(paths.labels(cfg), "labels", ["cell_id", "label"])
    size = patch_size(cell_size, cfg.data.pixel_size, cfg.data.patch_size)
    lattice = PixelLattice.from_cells(labels["col"], labels["row"], cell_size, size, crs)
    year = paths.train_year(cfg)
    bands = list(cfg.patches.bands)
    unknown = [b for b in bands if not isinstance(b, str) or not b]
    if not bands or unknown:
        raise InputError(f"patches.bands: expected a list of band names, got {bands}")
    n_per_class = cfg.patches.n_per_class
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise InputError(f"patches.n_per_class: expected a positive whole number, got {n_per_class!r}")
    counts = labels["label"].value_counts()
    missing = [c for c in ("urban", "non_urban") if not counts.get(c, 0)]
    if missing:
        raise InputError(
            f"{paths.labels(cfg)}: no cell labelled {' or '.join(missing)}; training needs urban and non_urban cells"
        )
    path = io.require_file(paths.mosaic(cfg, year), f"mosaic of {year}")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read mosaic: {exc}".splitlines()[0]) from exc
    with src:
        # Optional extra mosaic bands (data.imagery.extra_bands, e.g. smad) that the mosaic has.
        extra = (cfg.data.get("imagery") or {}).get("extra_bands") or []
        bands += [b for b in extra if b in src.descriptions and b not in bands]
        check_mosaic(src, lattice, str(path), bands)
    ps = extract_tiled(ComputeSettings.from_config(cfg), labels, lattice, path, bands, n_per_class, int(cfg.seed), year, paths.patches(cfg))
    n = len(ps) // 2
    summary = {
        "year": year,
        "patches": len(ps),
        "per_class": n,
        "n_per_class": int(cfg.patches.n_per_class),
        "capped": n < int(cfg.patches.n_per_class),
        "labelled_urban": int((labels["label"] == "urban").sum()),
        "labelled_non_urban": int((labels["label"] == "non_urban").sum()),
        "nodata_dropped": ps.nodata_dropped,
        "bands": list(ps.bands),
        "patch_size": size,
        "pixel_size_m": lattice.pixel_size,
    }
    io.write_json(paths.patches_summary(cfg), summary)
    print(
        f"patches ({year}): {n:,} urban + {n:,} non_urban cells of {size} x {size} px x {len(bands)} bands, "
        f"{ps.nodata_dropped:,} dropped for nodata -> {paths.patches(cfg)}"
    )
