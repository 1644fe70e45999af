"""`urbanmap plan [overrides]`: a dry run of the heavy stages on a region (e.g. data=mexico).

Reads only the grid (and, when there is one, the year's STAC catalog): nothing is
computed on imagery. Writes under `<region_dir>/`:

- `tiles.parquet`: the tile index (executor.tile_index, GeoParquet in the grid's CRS), with
  `scenes`, the number of the year's catalog items whose footprint (their STAC bbox,
  projected to the grid's CRS) meets the tile, when `data.imagery.source` is `stac` and
  the catalog file exists;
- `plan.json`: cells, tiles (cells per tile), scenes per tile, and the estimated cost of
  each heavy stage, printed as a table too.

Costs come from `plan.costs`, a JSON file that benchmarks/bench_scaling.py writes from
its measurements (see that script): for each stage (`mosaic` includes `synth`'s scenes
being read, not made; `synth` is the embedded default's generator), the wall seconds per
cell of this machine's local run (`local_s_per_cell`, compute=local with its threads)
and the busy seconds per cell of one Dask worker of one thread (`worker_s_per_cell`:
the sum of the tasks' durations divided by the cells). `patches` is per sampled cell
(2 x patches.n_per_class), the others per grid cell; `synth` and `mosaic` run once per
year (years.train and years.target). A cluster of W workers is estimated at
cells x worker_s_per_cell / W, i.e. perfect scaling of the tasks plus nothing for the
client's assembly: a lower bound, stated as such.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
from rasterio.warp import transform_bounds

from urbanmap.compute.executor import ComputeSettings
from urbanmap.compute.tiles import tile_index, write_tile_index
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size

#: Heavy stages, and what their cost is per.
STAGES = {"synth": "grid cell and year", "mosaic": "grid cell and year", "patches": "sampled cell",
          "predict": "grid cell and year"}

def scenes_per_tile(tiles, bboxes_grid: np.ndarray) -> np.ndarray:
    """(tiles,) int: how many of the footprints (bboxes (m, 4) xmin, ymin, xmax, ymax in
    the grid's CRS) meet each tile."""
    if not len(bboxes_grid):
        return np.zeros(len(tiles), np.int64)
    t = tiles[["xmin", "ymin", "xmax", "ymax"]].to_numpy()[:, None, :]
    b = np.asarray(bboxes_grid, float)[None]
    meets = (t[..., 0] < b[..., 2]) & (b[..., 0] < t[..., 2]) & (t[..., 1] < b[..., 3]) & (b[..., 1] < t[..., 3])
    return meets.sum(axis=1)

def catalog_bboxes(catalog: str, year: int, crs) -> np.ndarray:
    """(m, 4) bounds in `crs` of the catalog's items of `year` (their STAC bbox)."""
    try:
        root = pystac.read_file(catalog)
    except Exception as exc:  # pystac raises several types; the user needs the file
        raise InputError(f"{catalog}: cannot read STAC catalog: {exc}".splitlines()[0]) from exc
    items = root.items if isinstance(root, pystac.ItemCollection) else root.get_items(recursive=True)
    out = [transform_bounds("EPSG:4326", crs, *item.bbox[:4], densify_pts=21)
           for item in items if item.bbox and item.datetime is not None and item.datetime.year == year]
    return np.array(out, float).reshape(-1, 4)

def estimate(costs: dict, cells: int, sampled: int, years: int, workers: list[int]) -> dict:
    """Estimated wall seconds per stage: this machine (local) and clusters of `workers`."""
    out = {}
    for stage, per in STAGES.items():
        c = costs.get("stages", {}).get(stage)
        if not c:
            continue
        n = sampled if stage == "patches" else cells * (years if stage in ("synth", "mosaic", "predict") else 1)
        row = {"per": per, "units": n}
        if c.get("local_s_per_cell") is not None:
            row["local_s"] = n * float(c["local_s_per_cell"])
        if c.get("worker_s_per_cell") is not None:
            row.update({f"workers_{w}_s": n * float(c["worker_s_per_cell"]) / w for w in workers})
        out[stage] = row
    return out

def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"

def run(cfg) -> dict:
    """The command: tiles.parquet and plan.json (see module docstring)."""
    cells, cell_size, crs = io.read_cells(paths.grid(cfg), "grid", columns=["col", "row"])
    lattice = PixelLattice.from_cells(cells["col"], cells["row"], cell_size,
                                      patch_size(cell_size, float(cfg.data.pixel_size), cfg.data.get("patch_size")), crs)
    size = ComputeSettings.from_config(cfg).tile_size
    tiles = tile_index(lattice, cells["col"].to_numpy(), cells["row"].to_numpy(), size)
    year = paths.stage_year(cfg)

    im = cfg.data.get("imagery") or {}
    catalog = None
    if str(im.get("source")) == "stac":
        catalog = str(im.catalog).format(region_dir=paths.region_dir(cfg), year=year, out_dir=cfg.out_dir,
                                         name=cfg.data.name)
        if not Path(catalog).is_file():
            catalog = None
    if catalog:
        tiles["scenes"] = scenes_per_tile(tiles, catalog_bboxes(catalog, year, lattice.crs))
    write_tile_index(paths.tiles(cfg), tiles, lattice.crs)

    p = cfg.get("plan") or {}
    workers = [int(w) for w in (p.get("workers") or [32])]
    costs_path = Path(str(p.get("costs") or "benchmarks/cost_per_cell.json"))
    costs = json.loads(costs_path.read_text()) if costs_path.is_file() else None
    years = len({int(cfg.years.train), int(cfg.years.target)})
    sampled = 2 * int(cfg.patches.n_per_class)
    n = tiles["n_cells"].to_numpy()
    result = {
        "region": str(cfg.data.name),
        "cells": int(len(cells)),
        "pixels_per_band": int(len(cells)) * lattice.patch_size ** 2,
        "tile_size_cells": size,
        "tiles": int(len(tiles)),
        "cells_per_tile": {"min": int(n.min()), "median": float(np.median(n)), "max": int(n.max())},
        "compute": str(cfg.compute.name),
        "catalog": catalog,
        "year": year,
        "scenes_per_tile": None if not catalog else {
            "min": int(tiles["scenes"].min()), "median": float(tiles["scenes"].median()),
            "max": int(tiles["scenes"].max()), "tiles_without_scenes": int((tiles["scenes"] == 0).sum())},
        "costs_file": str(costs_path) if costs else None,
        "costs_measured_on": costs.get("machine") if costs else None,
        "estimate_s": estimate(costs, len(cells), sampled, years, workers) if costs else None,
        "tiles_file": str(paths.tiles(cfg)),
    }
    io.write_json(paths.plan(cfg), result)

    print(f"plan {result['region']}: {result['cells']:,} cells, {result['pixels_per_band']:,} mosaic pixels per band; "
          f"{result['tiles']:,} tiles of {size} x {size} cells (median {result['cells_per_tile']['median']:g} cells)")
    if catalog:
        s = result["scenes_per_tile"]
        print(f"  scenes per tile ({year}, {catalog}): min {s['min']}, median {s['median']:g}, max {s['max']}; "
              f"{s['tiles_without_scenes']} tiles without a scene")
    else:
        print(f"  no STAC catalog for {year}: scenes per tile not counted")
    if costs:
        print(f"  estimated wall time from {costs_path} (measured on {costs.get('machine')}):")
        for stage, row in result["estimate_s"].items():
            parts = [f"{row['units']:,} x {row['per']}"]
            if "local_s" in row:
                parts.append(f"this machine {_hours(row['local_s'])}")
            parts += [f"{w} workers {_hours(row[f'workers_{w}_s'])}" for w in workers if f"workers_{w}_s" in row]
            print(f"    {stage:8s} " + "; ".join(parts))
    else:
        print(f"  no measured costs ({costs_path} missing): run benchmarks/bench_scaling.py")
    print(f"  -> {paths.plan(cfg)}, {paths.tiles(cfg)}")
    return result
