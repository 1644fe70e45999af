"""The `predict` stage: the final model applied to every grid cell of a period's mosaic.

``urbanmap predict period=<label>`` (dvc.yaml runs it for every period of periods.list,
so the series and change stages compare maps made the same way) reads

- ``grid.parquet``: every cell of the region, `excluded` ones too;
- ``mosaic_<period>.tif``: the period's mosaic on the region's `PixelLattice`;
- ``model/``: the final model of `train` (models.load: Extra Trees or a torch network),

and cuts each cell's ``patch_size x patch_size`` window exactly as the `patches` stage
does (patchset.read_patches), block by block: the cells are grouped in square blocks of
``predict.block_cells`` cells a side, each block is one windowed read of the mosaic,
its patches are classified, and only the (n,) probabilities are kept, so memory is
bounded by one block whatever the region's size. A cell whose patch holds nodata (NaN or
the file's nodata value, in any band) is not classified: p_urban NaN, class ``nodata``.

Per-period quality: a semester or a quarter has fewer clear observations than a year.
The mosaic's ``count`` band (clear observations per pixel) gives each cell's ``clear``,
the median over its pixels; a cell with ``clear < predict.min_clear`` is classified all
the same but flagged ``low_quality``: hatched on the map, counted apart in the summary
(its cells and urban km²), and left to the later stages to exclude or flag. A mosaic
without a count band (an existing composite) has ``clear`` NaN and flags nothing.

Outputs under ``<region_dir>/``:

- ``predictions/<period>.parquet``: GeoParquet (io.write_cells), one row per grid cell:
  cell_id, col, row, p_urban (float32, 0..1 or NaN), class (urban if p_urban >=
  ``predict.threshold``, non_urban below, nodata), clear (float32), low_quality (bool);
- ``predictions/<period>.tif``: a COG of p_urban with one pixel per cell (cellmap.py), nodata
  NaN, in the grid's CRS;
- ``predictions/<period>.png``: a map of p_urban and of the classes;
- ``predictions/<period>.json``: cells per class, low-quality cells, model, threshold (seconds and cells/s go to
  ``logs/timings.jsonl``, which DVC does not track).

The units of work (classify.py: `predict_cells`, `predict_block`, `classify`) are run
tile by tile by predict_tiles.py.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from omegaconf import DictConfig
from pyproj import CRS
from rasterio.windows import Window

from urbanmap.compute.executor import ComputeSettings, Executor
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, group_cells, patch_size
from urbanmap.core.periods import Period
from urbanmap.mapping import cellmap, predict_tiles
from urbanmap.mapping.cellmap import extent_km, pyplot, save_png
from urbanmap.mapping.classify import CLASSES, check_model, classes
from urbanmap.training import models
from urbanmap.training.patchset import check_mosaic, check_reflectance


@dataclass(frozen=True)
class PredictSettings:
    """What the `predict` stage reads from the config, checked.

    Attributes:
        period: the period mapped (period=, or periods.census).
        threshold: p_urban at or above which a cell is urban, 0 < threshold < 1
            (predict.threshold).
        block_cells: cells per side of a block read and classified at once (predict.block_cells).
        min_clear: cells with fewer clear observations per pixel (median) are low_quality
            (predict.min_clear, >= 0).
        compute: where and how the tiles run (the `compute` group).
        region: the region's name (data.name), for the map's title.
        pixel_size: the mosaic's nominal pixel size, metres (data.pixel_size).
        patch_size: pixels per cell side (data.patch_size), or None: cell_size / pixel_size rounded.
        grid, mosaic, model_dir: the inputs: grid.parquet, mosaic_<period>.tif and model/.
        predictions, p_urban_cog, map_png, summary: the outputs: predictions/<period>.parquet,
            .tif (p_urban), .png and .json.
    """

    period: Period
    threshold: float
    block_cells: int
    min_clear: float
    compute: ComputeSettings
    region: str
    pixel_size: float
    patch_size: int | None
    grid: Path
    mosaic: Path
    model_dir: Path
    predictions: Path
    p_urban_cog: Path
    map_png: Path
    summary: Path
    timings: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PredictSettings:
        """Read `predict`, `compute`, period= and the data section; InputError naming the
        config key that is wrong."""
        period = paths.stage_period(cfg)
        compute = ComputeSettings.from_config(cfg)
        threshold, block_cells = cfg.predict.threshold, cfg.predict.block_cells
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise InputError(f"predict.threshold: expected a number between 0 and 1, got {threshold!r}")
        if isinstance(block_cells, bool) or not isinstance(block_cells, int) or block_cells < 1:
            raise InputError(f"predict.block_cells: expected a positive whole number, got {block_cells!r}")
        min_clear = cfg.predict.get("min_clear", 0)
        if isinstance(min_clear, bool) or not isinstance(min_clear, (int, float)) or min_clear < 0:
            raise InputError(f"predict.min_clear: expected a number >= 0, got {min_clear!r}")
        return cls(
            period=period, threshold=float(threshold), block_cells=int(block_cells), min_clear=float(min_clear),
            compute=compute,
            region=str(cfg.data.name), pixel_size=float(cfg.data.pixel_size), patch_size=cfg.data.patch_size,
            grid=paths.grid(cfg), mosaic=paths.mosaic(cfg, period), model_dir=paths.model_dir(cfg),
            predictions=paths.predictions(cfg, period), p_urban_cog=paths.p_urban_cog(cfg, period),
            map_png=paths.predictions_map(cfg, period), summary=paths.predictions_summary(cfg, period),
            timings=paths.timings_log(cfg),
        )


def _map(path: Path, lattice: PixelLattice, p_grid: np.ndarray, cls_grid: np.ndarray, title: str, threshold: float,
         low_grid: np.ndarray | None = None) -> None:
    """PNG: p_urban (colour bar) and the classes (legend), side by side; low-quality
    cells (low_grid, bool) hatched on both.

    Args:
        lattice: the one-pixel-per-cell lattice (cellmap.cell_lattice) of the grids.
        p_grid: (nrows, ncols) float32 p_urban, NaN off the grid and on nodata cells.
        cls_grid: (nrows, ncols) object classes, "" off the grid.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = pyplot()
    extent = extent_km(lattice)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), constrained_layout=True)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="#d9d9d9")
    im = axes[0].imshow(np.ma.masked_invalid(p_grid), cmap=cmap, vmin=0, vmax=1, extent=extent, interpolation="nearest")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="p_urban (grey: nodata)")
    axes[0].set_title("probability of urban")
    colours = {"non_urban": "#cfe8b4", "urban": "#c0392b", "nodata": "#9e9e9e"}
    codes = np.select([cls_grid == "non_urban", cls_grid == "urban", cls_grid == "nodata"], [0, 1, 2], 3)
    axes[1].imshow(np.ma.masked_equal(codes, 3), cmap=ListedColormap(list(colours.values())), vmin=-0.5, vmax=2.5,
                   extent=extent, interpolation="nearest")
    counts = {c: int((cls_grid == c).sum()) for c in colours}
    axes[1].legend(handles=[Patch(color=v, label=f"{k} ({counts[k]:,} cells)") for k, v in colours.items()],
                   loc="lower left", fontsize=8, framealpha=0.9)
    axes[1].set_title(f"class (urban: p_urban >= {threshold:g})")
    if low_grid is not None and low_grid.any():
        for ax in axes:
            ax.contourf(np.where(low_grid, 1.0, 0.0), levels=[0.5, 1.5], colors="none", hatches=["////"],
                        extent=extent, origin="upper")
        axes[1].legend(handles=[Patch(color=v, label=f"{k} ({counts[k]:,} cells)") for k, v in colours.items()]
                       + [Patch(facecolor="none", hatch="////", label=f"low_quality ({int(low_grid.sum()):,} cells)")],
                       loc="lower left", fontsize=8, framealpha=0.9)
    for ax in axes:
        ax.set_xlabel("easting (km)")
        ax.set_ylabel("northing (km)")
    fig.suptitle(title)
    save_png(fig, path)


def check_inputs(settings: PredictSettings, card: dict[str, Any], mosaic_path: Path, cell_size: float,
                 lattice: PixelLattice) -> list[int]:
    """Open the mosaic and check it against the model card and the lattice (InputError
    otherwise); with compute=local, load the model now, once (errors before any tile; the
    tasks reuse it). Returns the 1-based band indexes of the model's bands in the mosaic."""
    card_name = str(settings.model_dir / models.CARD)
    try:
        src = rasterio.open(mosaic_path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{mosaic_path}: cannot read mosaic: {exc}".splitlines()[0]) from exc
    with src:
        check_model(card, card_name, src, cell_size, str(mosaic_path))
        indexes = check_mosaic(src, lattice, str(mosaic_path), card["bands"])
        check_reflectance(src, str(mosaic_path), indexes)
        if settings.compute.mode == "local":
            predict_tiles.model(settings.model_dir, predict_tiles.tile_threads(settings.compute))
    return list(indexes)


def predict_period(settings: PredictSettings) -> None:
    """The stage's work: grid.parquet + mosaic_<period>.tif + model/ -> the four outputs."""
    grid, cell_size, crs = io.read_cells(settings.grid, "grid", ["cell_id"])
    size = patch_size(cell_size, settings.pixel_size, settings.patch_size)
    lattice = PixelLattice.from_cells(grid["col"], grid["row"], cell_size, size, crs)
    mosaic_path = io.require_file(settings.mosaic, f"mosaic of period {settings.period}")
    card = models.read_card(settings.model_dir)
    indexes = check_inputs(settings, card, mosaic_path, cell_size, lattice)
    # Tile by tile, in-process or on Dask (compute=): predict_tiles.py. The executor is
    # released once the tiles are in, so a LocalCluster shuts down while the outputs are written.
    start = time.perf_counter()
    with Executor(settings.compute) as executor:
        p = predict_tiles.predict_tiled(settings.compute, lattice, mosaic_path, indexes, settings.model_dir,
                                        grid["col"].to_numpy(), grid["row"].to_numpy(), settings.block_cells, executor)
        seconds = time.perf_counter() - start
        executor.release()
    clear = clear_counts(mosaic_path, lattice, grid["col"].to_numpy(), grid["row"].to_numpy(), settings.block_cells)
    write_predictions(settings, grid, p, card, seconds, cell_size, crs, clear)


def clear_counts(mosaic: Path, lattice: PixelLattice, cols: np.ndarray, rows: np.ndarray, block_cells: int) -> np.ndarray:
    """(n,) float32 median clear observations per pixel of each cell, from the mosaic's
    `count` band (NaN for every cell when the mosaic has none), read one block of
    `block_cells` cells a side at a time (memory bounded whatever the region's size)."""
    out = np.full(len(cols), np.nan, np.float32)
    with rasterio.open(mosaic) as src:
        names = [str(d or "").lower() for d in src.descriptions]
        if "count" not in names:
            return out
        band, p = names.index("count") + 1, lattice.patch_size
        row_off, col_off = lattice.cell_offsets(cols, rows)
        for idx in group_cells(lattice, cols, rows, block_cells):
            r0, c0 = int(row_off[idx].min()), int(col_off[idx].min())
            h, w = int(row_off[idx].max()) - r0 + p, int(col_off[idx].max()) - c0 + p
            win = src.read(band, window=Window(c0, r0, w, h)).astype(np.float32)
            per_cell = np.median(win.reshape(h // p, p, w // p, p), axis=(1, 3))
            out[idx] = per_cell[(row_off[idx] - r0) // p, (col_off[idx] - c0) // p]
    return out


def prediction_table(grid: pd.DataFrame, p: np.ndarray, threshold: float, clear: np.ndarray | None = None,
                     min_clear: float = 0.0) -> pd.DataFrame:
    """The predictions table: the grid's cells (cell_id, col, row) with their (n,) float32
    p_urban, class (classify.classes at `threshold`), clear observations per pixel (NaN
    when unknown) and low_quality (clear < min_clear)."""
    clear = np.full(len(p), np.nan, np.float32) if clear is None else np.asarray(clear, np.float32)
    return pd.DataFrame({"cell_id": grid["cell_id"].to_numpy(str), "col": grid["col"].to_numpy(np.int64),
                         "row": grid["row"].to_numpy(np.int64), "p_urban": p, "class": classes(p, threshold),
                         "clear": clear, "low_quality": ~np.isnan(clear) & (clear < min_clear)})


def prediction_summary(settings: PredictSettings, table: pd.DataFrame, card: dict[str, Any],
                       cell_size: float) -> dict[str, Any]:
    """predictions/<period>.json: cells per class, urban km², mean p_urban, model. No timing:
    the same inputs give the same bytes (seconds and cells/s go to logs/timings.jsonl)."""
    p = table["p_urban"].to_numpy()
    counts = {c: int((table["class"] == c).sum()) for c in CLASSES}
    low = table["low_quality"].to_numpy(bool)
    clear = table["clear"].to_numpy()
    return {
        "period": settings.period.label,
        "start": settings.period.start.isoformat(),
        "end": settings.period.end.isoformat(),
        "model": str(card.get("name", card.get("kind", "model"))),
        "model_year": card.get("year"),
        "threshold": settings.threshold,
        "cells": len(table),
        "cells_per_class": counts,
        "urban_km2": counts["urban"] * cell_size**2 / 1e6,
        "mean_p_urban": float(np.nanmean(p)) if counts["nodata"] < len(p) else None,
        "min_clear": settings.min_clear,
        "median_clear": float(np.nanmedian(clear)) if not np.isnan(clear).all() else None,
        "low_quality_cells": int(low.sum()),
        "low_quality_urban_km2": int((low & (table["class"] == "urban").to_numpy()).sum()) * cell_size**2 / 1e6,
        "block_cells": settings.block_cells,
    }


def write_predictions(settings: PredictSettings, grid: pd.DataFrame, p: np.ndarray, card: dict[str, Any],
                      seconds: float, cell_size: float, crs: CRS, clear: np.ndarray | None = None) -> None:
    """The stage's four outputs from the grid table, its (n,) float32 p_urban and clear
    observations per pixel (None: unknown)."""
    table = prediction_table(grid, p, settings.threshold, clear, settings.min_clear)
    cls = table["class"].to_numpy()
    summary = prediction_summary(settings, table, card, cell_size)
    rate = round(len(table) / seconds, 1) if seconds > 0 else None
    counts, model_name, year = summary["cells_per_class"], summary["model"], settings.period.label
    raster = cellmap.cell_lattice(table["col"], table["row"], cell_size, crs)
    p_grid = cellmap.to_raster(raster, table["col"], table["row"], p, np.nan, np.float32)
    cls_grid = cellmap.to_raster(raster, table["col"], table["row"], cls, "", object)
    low_grid = cellmap.to_raster(raster, table["col"], table["row"], table["low_quality"].to_numpy(bool), False, bool)
    title = f"{settings.region} {year}: {model_name} (trained on {card.get('year')}), {len(table):,} cells"
    # All four files are written to temporary paths first and renamed together at the end,
    # so a failure in any leaves none of them half-written.
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(io.atomic_output(f)) for k, f in (
            ("json", settings.summary), ("png", settings.map_png),
            ("tif", settings.p_urban_cog), ("parquet", settings.predictions))}
        io.write_cells(tmp["parquet"], table, cell_size, crs)
        cellmap.write_cog(tmp["tif"], p_grid, raster, float("nan"), "p_urban",
                          {"period": year, "model": model_name, "threshold": settings.threshold})
        _map(tmp["png"], raster, p_grid, cls_grid, title, settings.threshold, low_grid)
        io.write_json(tmp["json"], summary)
    io.log_timing(settings.timings, {"stage": "predict", "period": year, "seconds": round(seconds, 3),
                                     "cells": len(table), "cells_per_second": rate})
    print(
        f"predict ({year}, {model_name}): {len(table):,} cells, {counts['urban']:,} urban, "
        f"{counts['non_urban']:,} non_urban, {counts['nodata']:,} nodata, {summary['low_quality_cells']:,} low_quality "
        f"(clear < {settings.min_clear:g}) in {seconds:.1f} s "
        f"({rate} cells/s) -> {settings.predictions}"
    )


def run(cfg: DictConfig) -> None:
    """The stage: grid.parquet + mosaic_<period>.tif + model/ -> predictions/<period>.parquet,
    .tif (p_urban), .png, .json."""
    predict_period(PredictSettings.from_config(cfg))
