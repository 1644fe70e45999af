"""The `predict` stage: the final model applied to every grid cell of a year's mosaic.

``urbanmap predict year=<YYYY>`` (dvc.yaml runs it for years.train and years.target, so
the change stage compares two maps made the same way) reads

- ``grid.parquet``: every cell of the region, `excluded` ones too;
- ``mosaic_<year>.tif``: the year's mosaic on the region's `PixelLattice`;
- ``model/``: the final model of `train` (models.load: Extra Trees or a torch network),

and cuts each cell's ``patch_size x patch_size`` window exactly as the `patches` stage
does (patches.read_patches), block by block: the cells are grouped in square blocks of
``predict.block_cells`` cells a side, each block is one windowed read of the mosaic,
its patches are classified, and only the (n,) probabilities are kept, so memory is
bounded by one block whatever the region's size. A cell whose patch holds nodata (NaN or
the file's nodata value, in any band) is not classified: p_urban NaN, class ``nodata``.

Outputs under ``<region_dir>/``:

- ``predictions_<year>.parquet``: GeoParquet (io.write_cells), one row per grid cell:
  cell_id, col, row, p_urban (float32, 0..1 or NaN), class (urban if p_urban >=
  ``predict.threshold``, non_urban below, nodata);
- ``p_urban_<year>.tif``: a COG of p_urban with one pixel per cell (cellmap.py), nodata
  NaN, in the grid's CRS;
- ``predictions_<year>.png``: a map of p_urban and of the classes;
- ``predictions_<year>.json``: cells per class, seconds, cells/s, model, threshold.

The units of work (classify.py: `predict_cells`, `predict_block`, `classify`) are run
tile by tile by predict_tiles.py.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pandas as pd
import rasterio

from urbanmap.compute.executor import ComputeSettings, Executor
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.mapping import cellmap, predict_tiles
from urbanmap.mapping.cellmap import extent_km, pyplot, save_png
from urbanmap.mapping.classify import CLASSES, check_model, classes
from urbanmap.training import models
from urbanmap.training.patches import check_mosaic


def _map(path, lattice: PixelLattice, p_grid: np.ndarray, cls_grid: np.ndarray, title: str, threshold: float) -> None:
    """PNG: p_urban (colour bar) and the classes (legend), side by side."""
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
    for ax in axes:
        ax.set_xlabel("easting (km)")
        ax.set_ylabel("northing (km)")
    fig.suptitle(title)
    save_png(fig, path)

def run(cfg) -> None:
    """The stage: grid.parquet + mosaic_<year>.tif + model/ -> predictions_<year>.parquet,
    p_urban_<year>.tif, predictions_<year>.png, predictions_<year>.json."""
    year = paths.stage_year(cfg)
    settings = ComputeSettings.from_config(cfg)
    threshold, block_cells = cfg.predict.threshold, cfg.predict.block_cells
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise InputError(f"predict.threshold: expected a number between 0 and 1, got {threshold!r}")
    if isinstance(block_cells, bool) or not isinstance(block_cells, int) or block_cells < 1:
        raise InputError(f"predict.block_cells: expected a positive whole number, got {block_cells!r}")
    grid, cell_size, crs = io.read_cells(paths.grid(cfg), "grid", ["cell_id"])
    size = patch_size(cell_size, cfg.data.pixel_size, cfg.data.patch_size)
    lattice = PixelLattice.from_cells(grid["col"], grid["row"], cell_size, size, crs)
    mosaic_path = io.require_file(paths.mosaic(cfg, year), f"mosaic of {year}")
    model_dir = paths.model_dir(cfg)
    card = models.read_card(model_dir)
    card_name = str(model_dir / models.CARD)
    try:
        src = rasterio.open(mosaic_path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{mosaic_path}: cannot read mosaic: {exc}".splitlines()[0]) from exc
    with src:
        check_model(card, card_name, src, cell_size, str(mosaic_path))
        indexes = check_mosaic(src, lattice, str(mosaic_path), card["bands"])
        if settings.mode == "local":  # loaded here (errors before any tile), once: the tasks reuse it
            predict_tiles.model(model_dir, predict_tiles.tile_threads(settings))
    # Tile by tile, in-process or on Dask (compute=): predict_tiles.py. The executor is
    # released once the tiles are in, so a LocalCluster shuts down while the outputs are written.
    start = time.perf_counter()
    with Executor(settings) as executor:
        p = predict_tiles.predict_tiled(settings, lattice, mosaic_path, indexes, model_dir, grid["col"].to_numpy(),
                                        grid["row"].to_numpy(), block_cells, executor)
        seconds = time.perf_counter() - start
        executor.release()
        _write(cfg, year, grid, p, card, float(threshold), int(block_cells), seconds, cell_size, crs)

def _write(cfg, year, grid, p, card, threshold: float, block_cells: int, seconds: float, cell_size, crs) -> None:
    """The stage's four outputs from the grid table and its (n,) p_urban."""
    cls = classes(p, float(threshold))
    table = pd.DataFrame({"cell_id": grid["cell_id"].to_numpy(str), "col": grid["col"].to_numpy(np.int64),
                          "row": grid["row"].to_numpy(np.int64), "p_urban": p, "class": cls})
    counts = {c: int((cls == c).sum()) for c in CLASSES}
    model_name = str(card.get("name", card.get("kind", "model")))
    summary = {
        "year": year,
        "model": model_name,
        "model_year": card.get("year"),
        "threshold": float(threshold),
        "cells": len(table),
        "cells_per_class": counts,
        "urban_km2": counts["urban"] * cell_size**2 / 1e6,
        "mean_p_urban": float(np.nanmean(p)) if counts["nodata"] < len(p) else None,
        "block_cells": int(block_cells),
        "seconds": round(seconds, 3),
        "cells_per_second": round(len(table) / seconds, 1) if seconds > 0 else None,
    }
    raster = cellmap.cell_lattice(table["col"], table["row"], cell_size, crs)
    p_grid = cellmap.to_raster(raster, table["col"], table["row"], p, np.nan, np.float32)
    cls_grid = cellmap.to_raster(raster, table["col"], table["row"], cls, "", object)
    title = f"{cfg.data.name} {year}: {model_name} (trained on {card.get('year')}), {len(table):,} cells"
    # All four files are written to temporary paths first and renamed together at the end,
    # so a failure in any leaves none of them half-written.
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(io.atomic_output(f(cfg, year))) for k, f in (
            ("json", paths.predictions_summary), ("png", paths.predictions_map),
            ("tif", paths.p_urban_cog), ("parquet", paths.predictions))}
        io.write_cells(tmp["parquet"], table, cell_size, crs)
        cellmap.write_cog(tmp["tif"], p_grid, raster, float("nan"), "p_urban",
                          {"year": year, "model": model_name, "threshold": float(threshold)})
        _map(tmp["png"], raster, p_grid, cls_grid, title, float(threshold))
        io.write_json(tmp["json"], summary)
    print(
        f"predict ({year}, {model_name}): {len(table):,} cells, {counts['urban']:,} urban, "
        f"{counts['non_urban']:,} non_urban, {counts['nodata']:,} nodata in {seconds:.1f} s "
        f"({summary['cells_per_second']} cells/s) -> {paths.predictions(cfg, year)}"
    )
