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

Units of work for parallel runs: `predict_cells` (an open mosaic and any set of cells,
e.g. a tile, in; their p_urban out, block by block; predict_tiles.py runs one per tile),
`predict_block` (one windowed read) and `classify`, the pure core (patches -> p_urban).
"""

from __future__ import annotations

import time

import numpy as np

from urbanmap.errors import InputError
from urbanmap.lattice import PixelLattice
from urbanmap.patches import read_patches, valid_patches

#: Map classes; p_urban NaN is `nodata`.
CLASSES = ("urban", "non_urban", "nodata")


def classify(clf, patches: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """p_urban of patches; NaN for patches holding nodata.

    Args:
        clf: a fitted PatchClassifier (models.load).
        patches: (k, b, p, p) float32 reflectance, bands in the model's order.
        nodata: the mosaic's nodata value besides NaN, or None.
    Returns:
        (k,) float32 probability of urban, NaN where a patch holds nodata.
    """
    ok = valid_patches(patches, nodata)
    p = np.full(len(patches), np.nan, np.float32)
    if ok.any():
        p[ok] = clf.predict_proba(patches[ok] if not ok.all() else patches)
    return p


def predict_block(clf, src, lattice: PixelLattice, cols, rows, indexes) -> np.ndarray:
    """p_urban of a block of cells: one windowed read of the mosaic (the window bounding
    the cells), their patches cut as the `patches` stage cuts them, then `classify`.

    Args:
        src: an open rasterio dataset on `lattice` (patches.check_mosaic).
        cols, rows: (k,) lattice indices of the cells (any set; memory ~ their bounding box).
        indexes: 1-based band indexes of the model's bands, in its order.
    Returns:
        (k,) float32 p_urban, NaN for cells whose patch holds nodata.
    """
    whole = lattice.ncols + lattice.nrows  # one block larger than the region: a single read
    patches = read_patches(src, lattice, cols, rows, indexes, block_cells=whole)
    return classify(clf, patches, src.nodata)


def blocks(lattice: PixelLattice, cols, rows, block_cells: int) -> list[np.ndarray]:
    """Indexes (into cols/rows) of the cells of each square block of `block_cells` cells a
    side, blocks in raster order (north-west first)."""
    row_off, col_off = lattice.cell_offsets(cols, rows)
    ri, ci = row_off // lattice.patch_size, col_off // lattice.patch_size
    per_row = lattice.ncols // block_cells + 1
    block = (ri // block_cells) * per_row + ci // block_cells
    order = np.argsort(block, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block[order]) != 0]) if len(order) else np.zeros(0, int)
    return np.split(order, starts[1:]) if len(order) else []


def predict_cells(clf, src, lattice: PixelLattice, cols, rows, indexes, block_cells: int,
                  progress: bool = True) -> np.ndarray:
    """p_urban (n,) float32 of cells (lattice indices), block by block with a progress bar."""
    from tqdm import tqdm

    cols, rows = np.asarray(cols), np.asarray(rows)
    p = np.full(len(cols), np.nan, np.float32)
    groups = blocks(lattice, cols, rows, block_cells)
    for members in tqdm(groups, desc="predict", unit="block", disable=not progress or None):
        p[members] = predict_block(clf, src, lattice, cols[members], rows[members], indexes)
    return p


def classes(p_urban: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) str class of each p_urban: urban (>= threshold), non_urban, nodata (NaN)."""
    return np.where(np.isnan(p_urban), "nodata", np.where(p_urban >= threshold, "urban", "non_urban"))


def check_model(card: dict, card_name: str, src, cell_size: float, mosaic_name: str) -> None:
    """InputError unless the model was trained on the mosaic's bands and pixel size.

    Compares the model card (`bands`, `patch_size`, `cell_size`) with the mosaic's band
    descriptions and its pixels per cell (cell_size / the mosaic's pixel width).
    """
    bands = list(card.get("bands") or [])
    have = [d or "" for d in src.descriptions]
    missing = [b for b in bands if b not in have]
    if not bands or missing:
        raise InputError(
            f"{card_name}: model trained on bands {', '.join(bands) or '(none)'}; {mosaic_name} has bands "
            f"{', '.join(have)} (missing: {', '.join(missing) or 'all'})"
        )
    pixel = abs(src.transform.a)
    mosaic_patch = cell_size / pixel
    trained = int(card.get("patch_size", 0))
    if float(card.get("cell_size", cell_size)) != float(cell_size) or abs(mosaic_patch - trained) > 1e-6:
        raise InputError(
            f"{card_name}: model trained on {trained} x {trained} px patches of "
            f"{float(card.get('cell_size', 0)):g} m cells; {mosaic_name} has {pixel:.4f} m pixels, "
            f"{mosaic_patch:.4g} px per {cell_size:g} m cell"
        )


def _map(path, lattice: PixelLattice, p_grid: np.ndarray, cls_grid: np.ndarray, title: str, threshold: float) -> None:
    """PNG: p_urban (colour bar) and the classes (legend), side by side."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from urbanmap.cellmap import extent_km, pyplot, save_png

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
    import rasterio

    from urbanmap import compute, io, models, paths, predict_tiles
    from urbanmap.lattice import patch_size
    from urbanmap.patches import check_mosaic

    year = paths.stage_year(cfg)
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
        if compute.mode(cfg) == "local":  # loaded here (errors before any tile), once: the tasks reuse it
            predict_tiles.model(model_dir, predict_tiles.tile_threads(cfg))
    # Tile by tile, in-process or on Dask (compute=): predict_tiles.py. The executor is
    # released once the tiles are in, so a LocalCluster shuts down while the outputs are written.
    start = time.perf_counter()
    with compute.Executor(cfg) as executor:
        p = predict_tiles.predict_tiled(cfg, lattice, mosaic_path, indexes, model_dir, grid["col"].to_numpy(),
                                        grid["row"].to_numpy(), block_cells, executor)
        seconds = time.perf_counter() - start
        executor.release()
        _write(cfg, year, grid, p, card, float(threshold), int(block_cells), seconds, cell_size, crs)


def _write(cfg, year, grid, p, card, threshold: float, block_cells: int, seconds: float, cell_size, crs) -> None:
    """The stage's four outputs from the grid table and its (n,) p_urban."""
    import contextlib

    import pandas as pd

    from urbanmap import cellmap, io, paths

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
