"""The `synth` stage: a period of synthetic Landsat scenes, their STAC catalog and the truth.

`urbanmap synth period=2019H1` (null period: periods.census) writes, under `<region_dir>/`:

- `scenes/<period>/<product id>/<product id>_SR_B*.TIF, _QA_PIXEL.TIF`: one COG per band
  in the scene's UTM zone at 30 m, as USGS distributes Collection 2 Level-2;
- `scenes/<period>/catalog.json`: a self-contained STAC catalog, one Item per product;
- `truth/<period>/cells.parquet`: per-cell truth (GeoParquet, like every cell table);
- `truth/<period>/landcover.tif`, `reflectance.tif`, `clear_observations.tif`: on the
  region's pixel lattice (the grid's CRS): land-cover classes, the cloud-free truth
  reflectance (6 bands, float32: per pixel, the median over the period's acquisition
  dates of the noise-free, cloud-free reflectance), and the number of clear
  observations (no fill, cloud, dilated cloud, shadow or cirrus) per pixel;
- `truth/<period>/summary.json`: per-scene cloud statistics and the region's coverage.

The landscape of the census period (periods.census) is the same for every period (seeded
by `seed` alone); a later period adds fringe growth (synth.growth.share_per_year times the
years between the periods' middles; nested: a cell built stays built), and its truth flags
`new_urban` cells. A period shorter than a year gets its share of the year's acquisitions
(schedule.per_period: a semester half), spread over its own dates.

Tiles (issue 6): the world (the scenes' 30 m grid over the region plus the margin) is cut
into tiles of compute.tile_size cells (executor.stage_tile_size) in whole 30 m pixels, and
one task per tile (executor.run_tiles: threads in this process, or Dask) computes its part
of every scene and of the truth (tiles.py); every value is a pure function of (seed,
stream, global pixel coordinates), so the files are the same bytes whatever the tile size
and the executor. A later year runs two passes: the census year's classes per tile, then,
once the client has grown the fringe cells (a per-cell table), the scenes. The client
assembles the products block by block and samples the truth onto the lattice in blocks of
whole cells (assemble.py); it never holds a world-sized array. What is decided from the
whole region is small: the localities' target impervious fractions, the urban area's
zones (the fringe not yet built, the sprawl band: zones.py), the per-cell growth,
and each scene's cloud cut (the cloud field's quantile at the drawn cover, measured on a
sample of the product's pixels, so that every scene's measured cover is the drawn one to
within ~0.1%). Land-cover shares, park and cirrus shares are cut at the normal quantiles
of the fields' analytic distribution, so they are approximate.

The stage's steps, each a function of the typed settings (settings.SynthSettings, read
once by `run`): read_lattice, scene_world, world_tiles, acquisitions.plan_scenes
(footprints, scene_specs), settlements, make_job, grown_cells (pass 1), scene_pass
(pass 2), write_products, write_truth (assemble.lattice_truth), synth_summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import CRS, Transformer
from tqdm import tqdm

from urbanmap.census import labels
from urbanmap.compute.executor import Executor, run_tiles
from urbanmap.compute.tiles import parts_folder
from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.imagery.synth import assemble, fields, landcover, schedule, stac, truth, zones
from urbanmap.imagery.synth import tiles as tasks
from urbanmap.imagery.synth.acquisitions import ScenePlan, plan_scenes
from urbanmap.imagery.synth.endmembers import Endmembers, read_endmembers
from urbanmap.imagery.synth.schedule import Acquisition
from urbanmap.imagery.synth.settings import SynthSettings
from urbanmap.imagery.synth.world import World, lonlat, raster_bounds

#: Per-scene pixel counts of pass 2: valid, cloud, dilated, shadow, cirrus, usable.
COUNTS = ("valid", "cloud", "dilated", "shadow", "cirrus", "usable")


def read_lattice(settings: SynthSettings) -> tuple[pd.DataFrame, PixelLattice]:
    """The grid's cells (cell_id, col, row) and the region's pixel lattice; InputError if
    the grid has no cells."""
    cells, cell_size, grid_crs = io.read_cells(settings.grid, "grid", columns=["cell_id"])
    if cells.empty:
        raise InputError(f"{settings.grid}: the grid has no cells")
    size = patch_size(cell_size, settings.data_pixel_size, settings.patch_size)
    return cells, PixelLattice.from_cells(cells["col"], cells["row"], cell_size, size, grid_crs)


def scene_epsg(crs: CRS) -> int:
    """The EPSG code of the scene CRS (the items' proj:code); InputError if it has none."""
    epsg = crs.to_epsg()
    if epsg is None:
        raise InputError(f"synth.crs: {crs.to_string()} has no EPSG code (the STAC items' proj:code needs one)")
    return epsg


def scene_world(settings: SynthSettings, lattice: PixelLattice) -> World:
    """The scenes' world: in synth.crs, or the UTM zone of the lattice's centre."""
    xmin, ymin, xmax, ymax = lattice.bounds
    lon, lat = Transformer.from_crs(lattice.crs, 4326, always_xy=True).transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    scene_crs = settings.crs if settings.crs is not None else schedule.utm_crs(lon, lat)
    scene_epsg(scene_crs)
    return World.around(lattice.bounds, lattice.crs, scene_crs, settings.margin, settings.pixel)


def world_tiles(settings: SynthSettings, world: World, lattice: PixelLattice) -> list[dict[str, Any]]:
    """The tasks' tiles (tiles.world_tiles): compute.tile_size cells (the stages' common
    tile size) in whole scene pixels."""
    tile_px = max(int(round(settings.compute.tile_size * lattice.cell_size / settings.pixel)), 1)
    return tasks.world_tiles(world.win, tile_px)


def settlements(settings: SynthSettings, world: World, lattice: PixelLattice) -> gpd.GeoDataFrame:
    """The census localities over the world, with their target impervious fraction and
    whether the census classes them urban, in painting order
    (landcover.settlement_targets): a GeoDataFrame in the scene CRS (the stage writes it
    as GeoParquet for every task to rasterise over its tile)."""
    grid_crs = lattice.crs
    census_bounds = Transformer.from_crs(world.crs, grid_crs, always_xy=True).transform_bounds(*world.bounds, densify_pts=21)
    polygons, kind, population, _ = labels.read_census(settings.census, census_bounds, grid_crs)
    polygons = np.asarray(gpd.GeoSeries(polygons, crs=grid_crs).to_crs(world.crs).values, dtype=object)
    ordered, targets, urban = landcover.settlement_targets(polygons, population, kind, **settings.settlement)
    return gpd.GeoDataFrame({"target": targets, "urban": urban}, geometry=list(ordered), crs=world.crs)


def urban_zones(settings: SynthSettings, places: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The urban area's parts (zones.urban_area, of the urban localities simplified to
    half a scene pixel: the zones need no finer edges) and the sprawl zone around them;
    none when neither synth.realism.vintage nor the sprawl needs them."""
    if settings.realism.vintage is None and settings.realism.sprawl_m <= 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=object)
    polygons = shapely.simplify(places.geometry.values[places["urban"].to_numpy(bool)], settings.pixel / 2)
    parts = zones.urban_area(polygons)
    return parts, zones.sprawl_zone(parts, settings.realism.sprawl_m)


def make_job(settings: SynthSettings, em: Endmembers, places: gpd.GeoDataFrame, plan: ScenePlan, folder: Path) -> tasks.Job:
    """What every task shares: the settlements written to `folder/settlements.parquet`
    (tiles.write_polygons), the year's young fringe and the sprawl zone beside it, the
    scenes' specs, the parts folder `folder`."""
    tasks.write_polygons(places, folder / "settlements.parquet")
    parts, sprawl = urban_zones(settings, places)
    job = tasks.Job(settings.seed, settings.pixel, dict(settings.landscape), em, str(folder / "settlements.parquet"),
                    settings.urban_min_pixel, tuple(plan.specs), tuple(float(v) / settings.pixel for v in settings.clouds.scales_m),
                    settings.clouds.dilate_px, plan.median_state, None, settings.growth_impervious, str(folder),
                    young=young_file(settings, parts, settings.year, places.crs, folder),
                    sprawl=zone_file(sprawl, places.crs, folder / "sprawl.parquet"))
    if settings.later:  # pass 1 builds the census year, whose fringe was younger
        job = dataclasses.replace(job, base_young=young_file(settings, parts, settings.census_period.year, places.crs, folder))
    return job


def young_file(settings: SynthSettings, parts: np.ndarray, year: int, crs: Any, folder: Path) -> str | None:
    """The urban area's fringe not yet built in `year` (zones.young_fringe) written to
    `folder/young_<year>.parquet`, or None where there is none."""
    r = settings.realism
    return zone_file(zones.young_fringe(parts, zones.unbuilt_share(year, r.vintage, r.growth_rate)), crs,
                      folder / f"young_{year}.parquet")


def zone_file(polygons: np.ndarray, crs: Any, path: Path) -> str | None:
    """Polygons written for the tasks (tiles.write_polygons), or None if there are none."""
    if len(polygons) == 0:
        return None
    tasks.write_polygons(gpd.GeoDataFrame(geometry=list(polygons), crs=crs), path)
    return str(path)


def _base_fractions(base: Path, lattice: PixelLattice) -> tuple[np.ndarray, np.ndarray]:
    """Urban and water fractions per cell (float64 (nrows, ncols), truth.cell_means order)
    of the world raster of classes `base`, sampled onto the lattice block by block."""
    urban = np.zeros((lattice.nrows, lattice.ncols))
    water = np.zeros_like(urban)
    with rasterio.open(base) as src:
        for block in assemble.lattice_blocks(lattice):
            classes = assemble.warp_block(src, lattice, block, 0)[0]
            i0, j0, ni, nj = block
            urban[i0:i0 + ni, j0:j0 + nj] = assemble.block_cell_means(classes == landcover.URBAN, lattice.patch_size)
            water[i0:i0 + ni, j0:j0 + nj] = assemble.block_cell_means(classes == landcover.WATER, lattice.patch_size)
    return urban, water


def _in_grid(lattice: PixelLattice, cells: pd.DataFrame) -> np.ndarray:
    """Bool (nrows, ncols) in truth.cell_means order: the cells of the grid."""
    mask = np.zeros((lattice.nrows, lattice.ncols), bool)
    mask[truth.cell_index(lattice, cells["col"], cells["row"])] = True
    return mask


def grown_cells(settings: SynthSettings, ex: Executor, job: tasks.Job, tiles: list[dict[str, Any]], world: World,
                lattice: PixelLattice, cells: pd.DataFrame, folder: Path) -> tuple[Path, np.ndarray]:
    """Pass 1 of a later year: the census year's classes per tile, onto the lattice, then
    the fringe growth per cell (truth.fringe_growth). Writes the grown cells' polygons
    (scene CRS) to `folder/grown.parquet`. Returns (its path, the census year's urban
    fraction per cell (nrows, ncols))."""
    for _ in run_tiles(settings.compute, functools.partial(tasks.base_task, job=job), tiles,
                       desc=f"synth {settings.period} base", executor=ex):
        pass
    parts = [(folder / t["tile_id"] / "base.npy", t["win"]) for t in tiles]
    base = assemble.world_raster(folder / "base.tif", parts, world.win, world.transform.a, world.crs, "uint8", 1, 0)
    urban, water = _base_fractions(base, lattice)
    base.unlink()
    # One uniform draw per cell, keyed by the cell's (row, col): nested growth across periods.
    top = lattice.row0 + lattice.nrows - 1
    priority = fields.chunked((settings.seed, tasks.GROWTH), -top, lattice.col0, lattice.nrows, lattice.ncols, 64,
                              lambda rng, shape: rng.random(shape))
    grown = truth.fringe_growth(urban >= settings.urban_min_cell, _in_grid(lattice, cells), water, priority,
                                settings.growth_share, settings.growth_min_neighbours)
    i, j = np.nonzero(grown)
    size = lattice.cell_size
    x0, y0 = (lattice.col0 + j) * size, (top - i) * size
    boxes = shapely.segmentize(shapely.box(x0, y0, x0 + size, y0 + size), size / 10)
    path = folder / "grown.parquet"
    tasks.write_polygons(gpd.GeoDataFrame(geometry=list(boxes), crs=lattice.crs).to_crs(world.crs), path)
    return path, urban


ScenePart = tuple[Path, fields.Win]


def scene_pass(settings: SynthSettings, ex: Executor, job: tasks.Job, tiles: list[dict[str, Any]],
               folder: Path) -> tuple[dict[int, list[ScenePart]], dict[int, dict[str, int]]]:
    """Pass 2: every tile's parts of the scenes and of the truth (tiles.scene_task).
    Returns per scene index its parts [(npy path, Win)] and its pixel COUNTS."""
    n = len(job.scenes)
    scene_parts: dict[int, list[ScenePart]] = {k: [] for k in range(n)}
    counts = {k: dict.fromkeys(COUNTS, 0) for k in range(n)}
    task = functools.partial(tasks.scene_task, job=job)
    for _, result in run_tiles(settings.compute, task, tiles, desc=f"synth {settings.period}", executor=ex):
        for k, (sub, found) in result["scenes"].items():
            scene_parts[k].append((folder / result["tile_id"] / f"scene{k}.npy", sub))
            counts[k] = {name: counts[k][name] + v for name, v in found.items()}
    return scene_parts, counts


def scene_stats(acq: Acquisition, state: tuple[float, float], n: dict[str, int], shape: tuple[int, int]) -> dict[str, Any]:
    """One scene's entry of the summary's scene_stats: shares of its valid pixels under
    cloud, ring, shadow, cirrus, and clear; its share of fill; its seasonal state."""
    n_valid = max(n["valid"], 1)
    return {
        "id": acq.product_id, "sensor": acq.sensor, "date": acq.acquired.isoformat(), "path": acq.footprint.path,
        "row": acq.footprint.row, "cloud_cover": n["cloud"] / n_valid, "dilated": n["dilated"] / n_valid,
        "shadow": n["shadow"] / n_valid, "cirrus": n["cirrus"] / n_valid, "clear": n["usable"] / n_valid,
        "fill": float(1.0 - n["valid"] / (shape[0] * shape[1])),
        "seasonal_state": {"natural": round(state[0], 4), "cropland": round(state[1], 4)},
    }


def write_products(settings: SynthSettings, plan: ScenePlan, scene_parts: dict[int, list[ScenePart]],
                   counts: dict[int, dict[str, int]], scenes_tmp: Path, folder: Path,
                   scene_crs: CRS) -> list[dict[str, Any]]:
    """Assemble every product from its parts into `scenes_tmp` (deleting the parts), then
    write their STAC catalog there. Returns the scenes' stats (scene_stats)."""
    products, stats = [], []
    for spec, acq, state, (azimuth, elevation, when) in tqdm(
        list(zip(plan.specs, plan.acqs, plan.states, plan.suns)), desc=f"synth {settings.period} scenes", unit="scene",
        disable=None,
    ):
        pid, transform, shape = acq.product_id, tasks.window_transform(spec.win, settings.pixel), (spec.win.h, spec.win.w)
        parts = sorted(scene_parts[spec.index], key=lambda part: (part[1].r0, part[1].c0))
        files = assemble.assemble_scene(scenes_tmp / pid, folder, pid, parts, spec.win, settings.pixel, scene_crs,
                                        settings.threads)
        stats.append(scene_stats(acq, state, counts[spec.index], shape))
        footprint = shapely.intersection(acq.footprint.polygon(), shapely.box(*raster_bounds(transform, shape)))
        products.append(stac.Product(
            pid, acq.sensor, when, lonlat(footprint, scene_crs), scene_epsg(scene_crs), shape,
            tuple(transform)[:6], 100.0 * stats[-1]["cloud_cover"], azimuth, elevation, acq.footprint.path,
            acq.footprint.row, {k: str(v) for k, v in files.items()},
        ))
        for path, _ in parts:  # assembled: free the disk early
            path.unlink()
    stac.write_catalog(
        scenes_tmp, f"{settings.region}-landsat-c2-l2-{settings.period}",
        f"Synthetic Landsat Collection 2 Level-2 scenes of {settings.region} in {settings.period} "
        f"(urbanmap synth; seed {settings.seed})",
        products,
    )
    return stats


# --- the truth ------------------------------------------------------------------------------


def write_truth(settings: SynthSettings, world: World, lattice: PixelLattice, cells: pd.DataFrame,
                tiles: list[dict[str, Any]], folder: Path, truth_tmp: Path,
                base_urban: np.ndarray | None) -> tuple[pd.DataFrame, assemble.LatticeTruth]:
    """The truth from the tiles' parts: world rasters onto the lattice block by block
    (landcover, reflectance, clear observations COGs) and the per-cell table, written
    into `truth_tmp`. Returns (the cell table, the lattice truth)."""
    sources = assemble.truth_sources(world, tiles, folder)
    writers = assemble.truth_writers(folder, lattice)
    got = assemble.lattice_truth(sources, writers, lattice, _in_grid(lattice, cells))
    writers["reflectance"].close_to(truth_tmp / settings.truth_reflectance.name, settings.threads)
    writers["classes"].close_to(truth_tmp / settings.truth_landcover.name, settings.threads)
    writers["clear"].close_to(truth_tmp / settings.truth_clear.name, settings.threads)
    table = truth.cell_table(cells, lattice, got.fractions, got.impervious, settings.urban_min_cell, base_urban)
    io.write_cells(truth_tmp / settings.truth_cells.name, table, lattice.cell_size, lattice.crs)
    return table, got


def _hist_median(hist: np.ndarray) -> float:
    """Median of the values whose counts are `hist` (hist[v]: how many equal v)."""
    cum = np.cumsum(hist)
    n = int(cum[-1])
    lo, hi = np.searchsorted(cum, (n - 1) // 2, side="right"), np.searchsorted(cum, n // 2, side="right")
    return float((lo + hi) / 2)


def synth_summary(settings: SynthSettings, scene_crs: CRS, plan: ScenePlan, got: assemble.LatticeTruth, table: pd.DataFrame,
                  stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The stage's summary.json: sensors, scenes, clear observations per pixel of the
    region, land-cover shares, urban cells and every scene's stats."""
    clear_hist, class_hist = got.clear_hist, got.class_hist
    n_px = int(clear_hist.sum())
    return {
        "period": settings.period.label, "sensors": settings.sensors, "scene_crs": scene_crs.to_string(), "scenes": len(plan.acqs),
        "median_seasonal_state": {"natural": plan.median_state[0], "cropland": plan.median_state[1]},
        "region_pixels": n_px,
        "clear_observations": {
            "min": int(np.flatnonzero(clear_hist)[0]), "median": _hist_median(clear_hist),
            "mean": float((np.arange(256) * clear_hist).sum() / n_px),
            "share_at_least_1": float(clear_hist[1:].sum() / n_px), "share_at_least_3": float(clear_hist[3:].sum() / n_px),
        },
        "landcover_share": {name: float(class_hist[code] / n_px) for code, name in landcover.CLASS_NAMES.items()},
        "cells": {
            "urban": int((table["true_class"] == "urban").sum()),
            "non_urban": int((table["true_class"] == "non_urban").sum()),
            **({"new_urban": int(table["new_urban"].sum())} if settings.later else {}),
        },
        "scene_stats": stats,
    }


# --- the stage ------------------------------------------------------------------------------


def run(cfg: Any) -> dict[str, Any]:
    """Stage: write a year of scenes, their catalog and the truth (see module docstring)."""
    s = SynthSettings.from_config(cfg)
    em = read_endmembers(s.spectra, s.endmembers, s.max_reflectance)
    cells, lattice = read_lattice(s)
    world = scene_world(s, lattice)
    tiles = world_tiles(s, world, lattice)
    plan = plan_scenes(s, world)
    with contextlib.ExitStack() as stack:
        # Dask workers start before the census is read, so they do not begin life with
        # (nor report, in their peak RSS) the client's memory.
        ex = stack.enter_context(Executor(s.compute))
        places = settlements(s, world, lattice)  # before any output folder: bad input leaves nothing
        scenes_tmp = stack.enter_context(io.atomic_directory(s.scenes_dir))
        truth_tmp = stack.enter_context(io.atomic_directory(s.truth_dir))
        folder = stack.enter_context(parts_folder(s.scenes_dir))
        job = make_job(s, em, places, plan, folder)
        base_urban = None
        if s.later:
            (folder / "base").mkdir()
            base_job = dataclasses.replace(job, parts=str(folder / "base"), young=job.base_young)
            grown, base_urban = grown_cells(s, ex, base_job, tiles, world, lattice, cells, folder / "base")
            job = dataclasses.replace(job, grown=str(grown))
        scene_parts, counts = scene_pass(s, ex, job, tiles, folder)
        stats = write_products(s, plan, scene_parts, counts, scenes_tmp, folder, world.crs)
        table, got = write_truth(s, world, lattice, cells, tiles, folder, truth_tmp, base_urban)
        summary = synth_summary(s, world.crs, plan, got, table, stats)
        io.write_json(truth_tmp / s.summary.name, summary)
    c = summary["clear_observations"]
    clouds = [x["cloud_cover"] for x in stats]
    print(
        f"synth {s.period}: {len(plan.acqs)} scenes ({', '.join(s.sensors)}) in {world.crs.to_string()}, cloud "
        f"{min(clouds):.0%}-{max(clouds):.0%}; {c['share_at_least_1']:.2%} of the region's pixels have a clear "
        f"observation (median {c['median']:g}); cells: {summary['cells']} -> {s.scenes_dir}, {s.truth_dir}"
    )
    return summary
