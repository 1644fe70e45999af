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
(2 x patches.n_per_class), the others per grid cell; `synth`, `mosaic` and `predict` run
once per period (periods.list). A cluster of W workers is estimated at
cells x worker_s_per_cell / W, i.e. perfect scaling of the tasks plus nothing for the
client's assembly: a lower bound, stated as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
from omegaconf import DictConfig
from rasterio.warp import transform_bounds

from urbanmap.compute.executor import ComputeSettings
from urbanmap.compute.tiles import tile_index, write_tile_index
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.core.periods import Period, PeriodSettings, as_period

#: Heavy stages, and what their cost is per.
STAGES = {"synth": "grid cell and year", "mosaic": "grid cell and year", "patches": "sampled cell",
          "predict": "grid cell and year"}


@dataclass(frozen=True)
class PlanSettings:
    """What `urbanmap plan` reads from the config, checked.

    Attributes:
        region: data.name.
        grid: the region's grid.parquet.
        pixel_size: data.pixel_size (m); patch_size: data.patch_size or None.
        year: the period planned (periods.census unless period= is given).
        years: how many periods the heavy stages run for (periods.list).
        sampled: cells the patches stage cuts (2 x patches.n_per_class).
        catalog: the year's STAC catalog file when data.imagery.source is stac and it
            exists, else None.
        workers: cluster sizes to estimate for (plan.workers).
        costs: the measured costs file (plan.costs).
        compute: the compute settings (tile size, mode).
        tiles_out, plan_out: where the tile index and plan.json go.
    """

    region: str
    grid: Path
    pixel_size: float
    patch_size: int | None
    year: Period
    years: int
    sampled: int
    catalog: str | None
    workers: tuple[int, ...]
    costs: Path
    compute: ComputeSettings
    tiles_out: Path
    plan_out: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PlanSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        year = paths.stage_period(cfg)
        p = cfg.get("plan") or {}
        try:
            workers = tuple(int(w) for w in (p.get("workers") or [32]))
        except (TypeError, ValueError):
            raise InputError(f"plan.workers: expected a list of whole numbers, got {p.get('workers')!r}") from None
        if any(w < 1 for w in workers):
            raise InputError(f"plan.workers: every cluster size must be >= 1, got {list(workers)}")
        return cls(
            region=str(cfg.data.name), grid=paths.grid(cfg), pixel_size=float(cfg.data.pixel_size),
            patch_size=cfg.data.get("patch_size"), year=year,
            years=len(PeriodSettings.from_config(cfg).periods), sampled=2 * int(cfg.patches.n_per_class),
            catalog=_catalog(cfg, year), workers=workers, costs=Path(str(p.get("costs") or "benchmarks/cost_per_cell.json")),
            compute=ComputeSettings.from_config(cfg), tiles_out=paths.tiles(cfg), plan_out=paths.plan(cfg),
        )


def _catalog(cfg: DictConfig, year: Period) -> str | None:
    """The period's STAC catalog file, when data.imagery.source is stac and it exists."""
    im = cfg.data.get("imagery") or {}
    if str(im.get("source")) != "stac":
        return None
    catalog = str(im.get("catalog")).format(region_dir=paths.region_dir(cfg), period=year.label, year=year.year,
                                            out_dir=cfg.out_dir,
                                            name=cfg.data.name)
    return catalog if Path(catalog).is_file() else None


def scenes_per_tile(tiles: pd.DataFrame, bboxes_grid: np.ndarray) -> np.ndarray:
    """(tiles,) int: how many of the footprints (bboxes (m, 4) xmin, ymin, xmax, ymax in
    the grid's CRS) meet each tile."""
    if not len(bboxes_grid):
        return np.zeros(len(tiles), np.int64)
    t = tiles[["xmin", "ymin", "xmax", "ymax"]].to_numpy()[:, None, :]
    b = np.asarray(bboxes_grid, float)[None]
    meets = (t[..., 0] < b[..., 2]) & (b[..., 0] < t[..., 2]) & (t[..., 1] < b[..., 3]) & (b[..., 1] < t[..., 3])
    counts: np.ndarray = meets.sum(axis=1)
    return counts


def catalog_bboxes(catalog: str, year: Period | int, crs: Any) -> np.ndarray:
    """(m, 4) bounds in `crs` of the catalog's items of `year` (a period or a year; their STAC bbox)."""
    period = as_period(year)
    try:
        root = pystac.read_file(catalog)
    except Exception as exc:  # pystac raises several types; the user needs the file
        raise InputError(f"{catalog}: cannot read STAC catalog: {exc}".splitlines()[0]) from exc
    if isinstance(root, pystac.ItemCollection):
        items = list(root.items)
    elif isinstance(root, pystac.Catalog):
        items = list(root.get_items(recursive=True))
    else:
        raise InputError(f"{catalog}: not a STAC catalog, collection or item collection")
    out = [transform_bounds("EPSG:4326", crs, *item.bbox[:4], densify_pts=21)
           for item in items if item.bbox and item.datetime is not None and period.contains(item.datetime.date())]
    return np.array(out, float).reshape(-1, 4)


def estimate(costs: dict[str, Any], cells: int, sampled: int, years: int, workers: tuple[int, ...]) -> dict[str, Any]:
    """Estimated wall seconds per stage: this machine (local) and clusters of `workers`."""
    out: dict[str, Any] = {}
    for stage, per in STAGES.items():
        c = costs.get("stages", {}).get(stage)
        if not c:
            continue
        n = sampled if stage == "patches" else cells * (years if stage in ("synth", "mosaic", "predict") else 1)
        row: dict[str, Any] = {"per": per, "units": n}
        if c.get("local_s_per_cell") is not None:
            row["local_s"] = n * float(c["local_s_per_cell"])
        if c.get("worker_s_per_cell") is not None:
            row.update({f"workers_{w}_s": n * float(c["worker_s_per_cell"]) / w for w in workers})
        out[stage] = row
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def make_plan(s: PlanSettings) -> dict[str, Any]:
    """Write the tile index; return plan.json's content (see module docstring)."""
    cells, cell_size, crs = io.read_cells(s.grid, "grid", columns=["col", "row"])
    lattice = PixelLattice.from_cells(cells["col"], cells["row"], cell_size,
                                      patch_size(cell_size, s.pixel_size, s.patch_size), crs)
    size = s.compute.tile_size
    tiles = tile_index(lattice, cells["col"].to_numpy(), cells["row"].to_numpy(), size)
    if s.catalog:
        tiles["scenes"] = scenes_per_tile(tiles, catalog_bboxes(s.catalog, s.year, lattice.crs))
    write_tile_index(s.tiles_out, tiles, lattice.crs)
    costs = json.loads(s.costs.read_text()) if s.costs.is_file() else None
    n = tiles["n_cells"].to_numpy()
    return {
        "region": s.region,
        "cells": int(len(cells)),
        "pixels_per_band": int(len(cells)) * lattice.patch_size ** 2,
        "tile_size_cells": size,
        "tiles": int(len(tiles)),
        "cells_per_tile": {"min": int(n.min()), "median": float(np.median(n)), "max": int(n.max())},
        "compute": s.compute.mode,
        "catalog": s.catalog,
        "period": s.year.label,
        "scenes_per_tile": None if not s.catalog else {
            "min": int(tiles["scenes"].min()), "median": float(tiles["scenes"].median()),
            "max": int(tiles["scenes"].max()), "tiles_without_scenes": int((tiles["scenes"] == 0).sum())},
        "costs_file": str(s.costs) if costs else None,
        "costs_measured_on": costs.get("machine") if costs else None,
        "estimate_s": estimate(costs, len(cells), s.sampled, s.years, s.workers) if costs else None,
        "tiles_file": str(s.tiles_out),
    }


def print_plan(s: PlanSettings, result: dict[str, Any]) -> None:
    """The plan as a table on stdout."""
    size = result["tile_size_cells"]
    print(f"plan {result['region']}: {result['cells']:,} cells, {result['pixels_per_band']:,} mosaic pixels per band; "
          f"{result['tiles']:,} tiles of {size} x {size} cells (median {result['cells_per_tile']['median']:g} cells)")
    if s.catalog:
        sc = result["scenes_per_tile"]
        print(f"  scenes per tile ({s.year}, {s.catalog}): min {sc['min']}, median {sc['median']:g}, max {sc['max']}; "
              f"{sc['tiles_without_scenes']} tiles without a scene")
    else:
        print(f"  no STAC catalog for {s.year}: scenes per tile not counted")
    if result["estimate_s"] is not None:
        print(f"  estimated wall time from {s.costs} (measured on {result['costs_measured_on']}):")
        for stage, row in result["estimate_s"].items():
            parts = [f"{row['units']:,} x {row['per']}"]
            if "local_s" in row:
                parts.append(f"this machine {_hours(row['local_s'])}")
            parts += [f"{w} workers {_hours(row[f'workers_{w}_s'])}" for w in s.workers if f"workers_{w}_s" in row]
            print(f"    {stage:8s} " + "; ".join(parts))
    else:
        print(f"  no measured costs ({s.costs} missing): run benchmarks/bench_scaling.py")
    print(f"  -> {s.plan_out}, {s.tiles_out}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """The command: tiles.parquet and plan.json (see module docstring)."""
    settings = PlanSettings.from_config(cfg)
    result = make_plan(settings)
    io.write_json(settings.plan_out, result)
    print_plan(settings, result)
    return result
