"""The `synth` stage: a year of synthetic Landsat scenes, their STAC catalog and the truth.

`urbanmap synth year=2010` (null year: years.train) writes, under `<region_dir>/`:

- `scenes/<year>/<product id>/<product id>_SR_B*.TIF, _QA_PIXEL.TIF`: one COG per band
  in the scene's UTM zone at 30 m, as USGS distributes Collection 2 Level-2;
- `scenes/<year>/catalog.json`: a self-contained STAC catalog, one Item per product;
- `truth/<year>/cells.parquet`: per-cell truth (GeoParquet, like every cell table);
- `truth/<year>/landcover.tif`, `reflectance.tif`, `clear_observations.tif`: on the
  region's pixel lattice (the grid's CRS): land-cover classes, the cloud-free truth
  reflectance (6 bands, float32: per pixel, the median over the year's acquisition
  dates of the noise-free, cloud-free reflectance), and the number of clear
  observations (no fill, cloud, dilated cloud, shadow or cirrus) per pixel;
- `truth/<year>/summary.json`: per-scene cloud statistics and the region's coverage.

The landscape of the census year (years.train) is the same for every year (seeded by
`seed` alone); a later year adds fringe growth, and its truth flags `new_urban` cells.

Tiles (issue 6): the world (the scenes' 30 m grid over the region plus the margin) is cut
into tiles of compute.tile_size cells (executor.stage_tile_size) in whole 30 m pixels, and
one task per tile (executor.run_tiles: threads in this process, or Dask) computes its part
of every scene and of the truth (tiles.py); every value is a pure function of (seed,
stream, global pixel coordinates), so the files are the same bytes whatever the tile size
and the executor. A later year runs two passes: the census year's classes per tile, then,
once the client has grown the fringe cells (a per-cell table), the scenes. The client
assembles the products block by block and samples the truth onto the lattice in blocks of
whole cells (assemble.py); it never holds a world-sized array. What is decided from the
whole region is small: the localities' target impervious fractions, the per-cell growth,
and each scene's cloud cut (the cloud field's quantile at the drawn cover, measured on a
sample of the product's pixels, so that every scene's measured cover is the drawn one to
within ~0.1%). Land-cover shares, park and cirrus shares are cut at the normal quantiles
of the fields' analytic distribution, so they are approximate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from tqdm import tqdm

from urbanmap.census import labels
from urbanmap.compute.executor import ComputeSettings, Executor, run_tiles
from urbanmap.compute.tiles import parts_folder
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.imagery.landsat import BANDS, CIRRUS_SENSORS, SLC_OFF_SINCE
from urbanmap.imagery.synth import assemble, fields, landcover, scenes, schedule, stac, truth
from urbanmap.imagery.synth import tiles as tasks
from urbanmap.imagery.synth.endmembers import read_endmembers
from urbanmap.imagery.synth.fields import Win
from urbanmap.imagery.synth.schedule import Footprint
from urbanmap.imagery.synth.tiles import SCENE, SceneSpec, scene_valid


@dataclass(frozen=True)
class World:
    """The scenes' pixel grid over the region: north-up, `pixel` metres, in `crs`.

    Pixel corners sit at odd multiples of half a pixel (centres on multiples of 30 m),
    as in USGS's products.
    """

    crs: CRS
    transform: Affine
    height: int
    width: int

    @classmethod
    def around(cls, bounds, bounds_crs, crs: CRS, margin: float, pixel: float) -> World:
        """The grid covering `bounds` (xmin, ymin, xmax, ymax in `bounds_crs`) plus
        `margin` metres, in `crs`."""
        xmin, ymin, xmax, ymax = Transformer.from_crs(bounds_crs, crs, always_xy=True).transform_bounds(
            *bounds, densify_pts=21
        )
        half = pixel / 2
        x0 = np.floor((xmin - margin - half) / pixel) * pixel + half
        y1 = np.ceil((ymax + margin - half) / pixel) * pixel + half
        x1 = np.ceil((xmax + margin - half) / pixel) * pixel + half
        y0 = np.floor((ymin - margin - half) / pixel) * pixel + half
        return cls(crs, Affine(pixel, 0, x0, 0, -pixel, y1), int(round((y1 - y0) / pixel)), int(round((x1 - x0) / pixel)))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)

    def window(self, geom: shapely.Geometry) -> tuple[slice, slice] | None:
        """Rows and columns of the world pixels meeting `geom`'s bounding box, or None."""
        clipped = shapely.intersection(geom, shapely.box(*self.bounds))
        if clipped.is_empty or clipped.area == 0:
            return None
        t = self.transform
        xmin, ymin, xmax, ymax = clipped.bounds
        c0, c1 = int(np.floor((xmin - t.c) / t.a)), int(np.ceil((xmax - t.c) / t.a))
        r0, r1 = int(np.floor((t.f - ymax) / -t.e)), int(np.ceil((t.f - ymin) / -t.e))
        return slice(max(r0, 0), min(r1, self.height)), slice(max(c0, 0), min(c1, self.width))

    @property
    def win(self) -> Win:
        """The world as a window of the global pixel grid (fields.Win: pixel (r, c) has
        its centre at x = c * pixel, y = -r * pixel)."""
        t = self.transform
        return Win(int(round(-(t.f + t.e / 2) / t.a)), int(round((t.c + t.a / 2) / t.a)), self.height, self.width)

    def to_win(self, rows: slice, cols: slice) -> Win:
        """World rows and columns as a window of the global pixel grid."""
        w = self.win
        return Win(w.r0 + rows.start, w.c0 + cols.start, rows.stop - rows.start, cols.stop - cols.start)

def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])

def _lonlat(geom: shapely.Geometry, crs: CRS) -> shapely.Geometry:
    """`geom` in lon/lat (EPSG:4326), edges densified every 1 km first."""
    to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
    dense = shapely.segmentize(geom, 1000.0)
    return shapely.transform(dense, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))

def _write_raster(path: Path, data: np.ndarray, lattice, nodata, descriptions, tags, threads: int) -> None:
    """A COG (deflate, 256 px tiles) on the region's pixel lattice; data (rows, cols) or
    (bands, rows, cols); band descriptions and dataset tags."""
    data = data if data.ndim == 3 else data[None]
    predictor = 3 if data.dtype.kind == "f" else 2
    with rasterio.open(
        path, "w", driver="COG", compress="deflate", predictor=predictor, blocksize=256, overviews="NONE",
        count=data.shape[0], dtype=data.dtype, width=data.shape[2], height=data.shape[1], crs=lattice.crs,
        transform=lattice.transform, nodata=nodata, num_threads=str(threads),
    ) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
        if tags:
            dst.update_tags(**tags)

def _footprints(cfg_s, bounds) -> list:

    out = []
    for i, f in enumerate(cfg_s.footprints):
        try:
            out.append(Footprint.crossing(f.path, f.row, bounds, f.side, float(f.edge), float(cfg_s.bearing)))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"synth.footprints[{i}]: needs path, row, side and edge ({exc})") from exc
    if not out:
        raise InputError("synth.footprints: at least one footprint is needed")
    return out

def _in_grid(lattice, cells) -> np.ndarray:
    """Bool (nrows, ncols) in truth.cell_means order: the cells of the grid."""
    mask = np.zeros((lattice.nrows, lattice.ncols), bool)
    mask[truth.cell_index(lattice, cells["col"], cells["row"])] = True
    return mask

def _settlements(cfg, world: World, lattice):
    """The census localities over the world, with their target impervious fraction, in
    painting order (landcover.settlement_targets): a GeoDataFrame in the scene CRS (the
    stage writes it as GeoParquet for every task to rasterise over its tile)."""
    grid_crs, u = lattice.crs, cfg.synth.urban
    census_bounds = Transformer.from_crs(world.crs, grid_crs, always_xy=True).transform_bounds(*world.bounds, densify_pts=21)
    polygons, kind, population, _ = labels.read_census(cfg.data.census, census_bounds, grid_crs)
    polygons = np.asarray(gpd.GeoSeries(polygons, crs=grid_crs).to_crs(world.crs).values, dtype=object)
    ordered, targets = landcover.settlement_targets(
        polygons, population, kind, at_density=float(u.at_density), value=float(u.value),
        per_decade=float(u.per_decade), low=float(u.low), high=float(u.high), rural_factor=float(u.rural_factor),
    )
    return gpd.GeoDataFrame({"target": targets}, geometry=list(ordered), crs=world.crs)

def _landscape_params(cfg) -> dict:
    lc, u = cfg.synth.landcover, cfg.synth.urban
    return dict(water=float(lc.water), soil=float(lc.soil), vegetation=float(lc.vegetation), terrain_m=float(lc.terrain_m),
                patch_m=float(lc.patch_m), parcel_m=[float(v) for v in lc.parcel_m], fallow=float(lc.fallow),
                texture=float(u.texture), park_fraction=float(u.parks))

def scene_specs(cfg_s, seed: int, year: int, acqs, states, world: World) -> tuple[list, list]:
    """Per acquisition: its tiles.SceneSpec (window, scalar draws of its sky, the cloud
    field's cut at its cover measured on a sample of the product's pixels) and its sun
    (azimuth, elevation, UTC datetime). InputError if a footprint misses the region."""
    pixel, cl, specs, suns = world.transform.a, cfg_s.clouds, [], []
    scales_px = [float(v) / pixel for v in cl.scales_m]
    wet_months = {int(m) for m in cl.wet_months}
    for k, (acq, state) in enumerate(zip(acqs, states)):
        fp = acq.footprint
        win = world.window(fp.polygon())
        if win is None:
            raise InputError(f"synth.footprints: path {fp.path} row {fp.row} does not overlap the region")
        key = (seed, SCENE, year, fp.path, fp.row, acq.acquired.toordinal())
        rng = _rng(*key)
        gap_phase = float(rng.uniform(0.0, 32.0))
        cover = float(rng.uniform(*(cl.wet_cover if acq.acquired.month in wet_months else cl.dry_cover)))
        lon, lat = Transformer.from_crs(world.crs, 4326, always_xy=True).transform(*fp.centre)
        sun = schedule.solar_angles(acq.acquired, lon, lat)
        offset = scenes.shadow_offset(float(rng.uniform(*cl.height_m)), sun[0], sun[1], pixel)
        cirrus_band = acq.sensor in CIRRUS_SENSORS
        cirrus = float(rng.uniform(*cl.cirrus)) if cirrus_band else 0.0
        noise = cfg_s.noise.get(acq.sensor, cfg_s.noise.default)
        spec = SceneSpec(
            k, key, world.to_win(*win), fp, acq.sensor == "LE07" and bool(cfg_s.slc_off) and acq.acquired >= SLC_OFF_SINCE,
            gap_phase, cover, float("inf"), offset, cirrus, cirrus_band, tuple(state), tuple(float(v) for v in noise),
        )
        cut = scenes.cloud_cut(key, spec.win, scene_valid(spec, pixel), cover, scales_px)
        specs.append(dataclasses.replace(spec, cloud_cut=cut))
        suns.append(sun)
    return specs, suns

def _grown_cells(cfg, settings: ComputeSettings, ex, job, tiles, world: World, lattice, cells, year: int, folder: Path):
    """Pass 1 of a later year: the census year's classes per tile, onto the lattice, then
    the fringe growth per cell (truth.fringe_growth). Writes the grown cells' polygons
    (scene CRS) to `folder/grown.parquet`. Returns (its path, the census year's urban
    fraction per cell (nrows, ncols))."""
    for _ in run_tiles(settings, functools.partial(tasks.base_task, job=job), tiles, desc=f"synth {year} base",
                               executor=ex):
        pass
    parts = [(folder / t["tile_id"] / "base.npy", t["win"]) for t in tiles]
    base = assemble.world_raster(folder / "base.tif", parts, world.win, world.transform.a, world.crs, "uint8", 1, 0)
    urban = np.zeros((lattice.nrows, lattice.ncols))
    water = np.zeros_like(urban)
    with rasterio.open(base) as src:
        for block in assemble.lattice_blocks(lattice):
            classes = assemble.warp_block(src, lattice, block, 0)[0]
            i0, j0, ni, nj = block
            urban[i0:i0 + ni, j0:j0 + nj] = assemble.block_cell_means(classes == landcover.URBAN, lattice.patch_size)
            water[i0:i0 + ni, j0:j0 + nj] = assemble.block_cell_means(classes == landcover.WATER, lattice.patch_size)
    base.unlink()
    s, g = cfg.synth, cfg.synth.growth
    train, target = int(cfg.years.train), int(cfg.years.target)
    progress = 1.0 if target <= train else min((year - train) / (target - train), 1.0)
    # One uniform draw per cell, keyed by the cell's (row, col): nested growth across years.
    top = lattice.row0 + lattice.nrows - 1
    priority = fields.chunked((int(cfg.seed), tasks.GROWTH), -top, lattice.col0, lattice.nrows, lattice.ncols, 64,
                              lambda rng, shape: rng.random(shape))
    grown = truth.fringe_growth(urban >= float(s.urban_min.cell), _in_grid(lattice, cells), water, priority,
                                float(g.share) * progress, int(g.min_neighbours))
    i, j = np.nonzero(grown)
    size = lattice.cell_size
    x0, y0 = (lattice.col0 + j) * size, (top - i) * size
    boxes = shapely.segmentize(shapely.box(x0, y0, x0 + size, y0 + size), size / 10)
    path = folder / "grown.parquet"
    tasks.write_polygons(gpd.GeoDataFrame(geometry=list(boxes), crs=lattice.crs).to_crs(world.crs), path)
    return path, urban

def run(cfg) -> dict:
    """Stage: write a year of scenes, their catalog and the truth (see module docstring)."""
    s = cfg.synth
    year = paths.stage_year(cfg)
    settings = ComputeSettings.from_config(cfg)
    sensors = schedule.sensors_for_year(year, s.sensors)
    pixel = float(s.pixel_size)
    if pixel <= 0:
        raise InputError(f"synth.pixel_size: must be positive, got {pixel}")
    threads = int(cfg.compute.get("threads", 2) or 2) if "compute" in cfg else 2
    seed, pixel_min, cell_min = int(cfg.seed), float(s.urban_min.pixel), float(s.urban_min.cell)

    em = read_endmembers(s.spectra, {k: list(v) for k, v in s.endmembers.items()}, float(s.max_reflectance))
    cells, cell_size, grid_crs = io.read_cells(paths.grid(cfg), "grid", columns=["cell_id"])
    if cells.empty:
        raise InputError(f"{paths.grid(cfg)}: the grid has no cells")
    lattice = PixelLattice.from_cells(
        cells["col"], cells["row"], cell_size, patch_size(cell_size, float(cfg.data.pixel_size), cfg.data.patch_size), grid_crs
    )
    xmin, ymin, xmax, ymax = lattice.bounds
    lon, lat = Transformer.from_crs(grid_crs, 4326, always_xy=True).transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    scene_crs = CRS.from_user_input(s.crs) if s.crs else schedule.utm_crs(lon, lat)
    world = World.around(lattice.bounds, grid_crs, scene_crs, float(s.margin), pixel)
    # Tiles: compute.tile_size cells (the stages' common tile size) in whole scene pixels.
    tile_px = max(int(round(settings.tile_size * cell_size / pixel)), 1)
    tiles = tasks.world_tiles(world.win, tile_px)

    footprints = _footprints(s, world.bounds)
    acqs = schedule.acquisitions(year, sensors, footprints, int(s.scenes_per_footprint))
    if len(acqs) > 254:
        raise InputError(f"synth: {len(acqs)} scenes in a year; at most 254 are supported")
    ph = s.phenology
    states = [landcover.seasonal_state(a.acquired, float(ph.peak_doy), float(ph.crop_peak_doy), float(ph.crop_days)) for a in acqs]
    specs, suns = scene_specs(s, seed, year, acqs, states, world)
    median_state = tuple(float(np.median([st[k] for st in states])) for k in (0, 1))
    later = year > int(cfg.years.train)

    with contextlib.ExitStack() as stack:
        # Dask workers start before the census is read, so they do not begin life with
        # (nor report, in their peak RSS) the client's memory.
        ex = stack.enter_context(Executor(settings))
        settlements = _settlements(cfg, world, lattice)  # before any output folder: bad input leaves nothing
        scenes_tmp = stack.enter_context(io.atomic_directory(paths.scenes_dir(cfg, year)))
        truth_tmp = stack.enter_context(io.atomic_directory(paths.truth_dir(cfg, year)))
        folder = stack.enter_context(parts_folder(paths.scenes_dir(cfg, year)))
        tasks.write_polygons(settlements, folder / "settlements.parquet")
        job = tasks.Job(seed, pixel, _landscape_params(cfg), em, str(folder / "settlements.parquet"), pixel_min,
                        tuple(specs), tuple(float(v) / pixel for v in s.clouds.scales_m), int(s.clouds.dilate_px),
                        median_state, None, tuple(float(v) for v in s.growth.impervious), str(folder))
        base_urban = None
        if later:
            (folder / "base").mkdir()
            grown, base_urban = _grown_cells(cfg, settings, ex, dataclasses.replace(job, parts=str(folder / "base")), tiles, world,
                                             lattice, cells, year, folder / "base")
            job = dataclasses.replace(job, grown=str(grown))

        # Pass 2: every tile's parts of the scenes and of the truth.
        scene_parts = {k: [] for k in range(len(specs))}
        counts = {k: dict.fromkeys(("valid", "cloud", "dilated", "shadow", "cirrus", "usable"), 0) for k in range(len(specs))}
        task = functools.partial(tasks.scene_task, job=job)
        for _, result in run_tiles(settings, task, tiles, desc=f"synth {year}", executor=ex):
            for k, (sub, n) in result["scenes"].items():
                scene_parts[k].append((folder / result["tile_id"] / f"scene{k}.npy", sub))
                counts[k] = {name: counts[k][name] + v for name, v in n.items()}

        products, scene_stats = [], []
        for spec, acq, state, (azimuth, elevation, when) in tqdm(
            list(zip(specs, acqs, states, suns)), desc=f"synth {year} scenes", unit="scene", disable=None
        ):
            pid, transform, shape = acq.product_id, tasks.window_transform(spec.win, pixel), (spec.win.h, spec.win.w)
            parts = sorted(scene_parts[spec.index], key=lambda part: (part[1].r0, part[1].c0))
            files = assemble.assemble_scene(scenes_tmp / pid, folder, pid, parts, spec.win, pixel, scene_crs, threads)
            n = counts[spec.index]
            n_valid = max(n["valid"], 1)
            stats = {
                "id": pid, "sensor": acq.sensor, "date": acq.acquired.isoformat(), "path": acq.footprint.path,
                "row": acq.footprint.row, "cloud_cover": n["cloud"] / n_valid, "dilated": n["dilated"] / n_valid,
                "shadow": n["shadow"] / n_valid, "cirrus": n["cirrus"] / n_valid, "clear": n["usable"] / n_valid,
                "fill": float(1.0 - n["valid"] / (shape[0] * shape[1])),
                "seasonal_state": {"natural": round(state[0], 4), "cropland": round(state[1], 4)},
            }
            scene_stats.append(stats)
            footprint = shapely.intersection(acq.footprint.polygon(), shapely.box(*_bounds(transform, shape)))
            products.append(stac.Product(
                pid, acq.sensor, when, _lonlat(footprint, scene_crs), scene_crs.to_epsg(), shape,
                tuple(transform)[:6], 100.0 * stats["cloud_cover"], azimuth, elevation, acq.footprint.path,
                acq.footprint.row, {k: str(v) for k, v in files.items()},
            ))
            for path, _ in parts:  # assembled: free the disk early
                path.unlink()
        region = str(cfg.data.name)
        stac.write_catalog(
            scenes_tmp, f"{region}-landsat-c2-l2-{year}",
            f"Synthetic Landsat Collection 2 Level-2 scenes of {region} in {year} (urbanmap synth; seed {seed})",
            products,
        )

        # The truth: world rasters from the tiles' parts, onto the lattice block by block.
        def world_file(name, dtype, count, nodata):
            parts = [(folder / t["tile_id"] / f"{name}.npy", t["win"]) for t in tiles]
            return assemble.world_raster(folder / f"{name}.tif", parts, world.win, pixel, scene_crs, dtype, count, nodata)

        nan = float("nan")
        sources = {"classes": (world_file("classes", "uint8", 1, 0), 0),
                   "impervious": (world_file("impervious", "float32", 1, nan), nan),
                   "reflectance": (world_file("reflectance", "float32", len(BANDS), nan), nan),
                   "clear": (world_file("clear", "uint8", 1, 0), 0)}
        definition = "per-pixel median over the year's acquisition dates of the noise-free, cloud-free surface reflectance"
        writers = {
            "reflectance": assemble.LatticeWriter(folder / "lat_refl.tif", lattice, "float32", len(BANDS), nan, list(BANDS),
                                                  {"definition": definition}),
            "classes": assemble.LatticeWriter(folder / "lat_classes.tif", lattice, "uint8", 1, 0, ["land_cover"],
                                              {str(k): v for k, v in landcover.CLASS_NAMES.items()}),
            "clear": assemble.LatticeWriter(folder / "lat_clear.tif", lattice, "uint8", 1, None, ["clear_observations"]),
        }
        in_grid = _in_grid(lattice, cells)
        p = lattice.patch_size
        fractions = {code: np.zeros((lattice.nrows, lattice.ncols)) for code in landcover.CLASS_NAMES}
        impervious = np.zeros((lattice.nrows, lattice.ncols))
        clear_hist = np.zeros(256, np.int64)
        class_hist = np.zeros(256, np.int64)
        with contextlib.ExitStack() as stack:
            srcs = {name: stack.enter_context(rasterio.open(path)) for name, (path, _) in sources.items()}
            for block in assemble.lattice_blocks(lattice):
                i0, j0, ni, nj = block
                got = {name: assemble.warp_block(srcs[name], lattice, block, nodata) for name, (_, nodata) in sources.items()}
                for name, writer in writers.items():
                    writer.write(got[name], block)
                classes, clear = got["classes"][0], got["clear"][0]
                for code in fractions:
                    fractions[code][i0:i0 + ni, j0:j0 + nj] = assemble.block_cell_means(classes == code, p)
                impervious[i0:i0 + ni, j0:j0 + nj] = assemble.block_cell_means(got["impervious"][0], p)
                region_px = np.repeat(np.repeat(in_grid[i0:i0 + ni, j0:j0 + nj], p, 0), p, 1)
                clear_hist += np.bincount(clear[region_px], minlength=256)
                class_hist += np.bincount(classes[region_px], minlength=256)
        writers["reflectance"].close_to(truth_tmp / paths.truth_reflectance(cfg, year).name, threads)
        writers["classes"].close_to(truth_tmp / paths.truth_landcover(cfg, year).name, threads)
        writers["clear"].close_to(truth_tmp / paths.truth_clear_count(cfg, year).name, threads)
        table = truth.cell_table(cells, lattice, fractions, impervious, cell_min, base_urban)
        io.write_cells(truth_tmp / paths.truth_cells(cfg, year).name, table, cell_size, grid_crs)

        n_px = int(clear_hist.sum())
        summary = {
            "year": year, "sensors": sensors, "scene_crs": scene_crs.to_string(), "scenes": len(acqs),
            "median_seasonal_state": {"natural": median_state[0], "cropland": median_state[1]},
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
                **({"new_urban": int(table["new_urban"].sum())} if later else {}),
            },
            "scene_stats": scene_stats,
        }
        io.write_json(truth_tmp / paths.synth_summary(cfg, year).name, summary)

    c = summary["clear_observations"]
    clouds = [x["cloud_cover"] for x in scene_stats]
    print(
        f"synth {year}: {len(acqs)} scenes ({', '.join(sensors)}) in {scene_crs.to_string()}, cloud "
        f"{min(clouds):.0%}-{max(clouds):.0%}; {c['share_at_least_1']:.2%} of the region's pixels have a clear "
        f"observation (median {c['median']:g}); cells: {summary['cells']} -> {paths.scenes_dir(cfg, year)}, "
        f"{paths.truth_dir(cfg, year)}"
    )
    return summary

def _hist_median(hist: np.ndarray) -> float:
    """Median of the values whose counts are `hist` (hist[v]: how many equal v)."""
    cum = np.cumsum(hist)
    n = int(cum[-1])
    lo, hi = np.searchsorted(cum, (n - 1) // 2, side="right"), np.searchsorted(cum, n // 2, side="right")
    return float((lo + hi) / 2)

def _bounds(transform: Affine, shape) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a north-up raster."""
    return (transform.c, transform.f + shape[0] * transform.e, transform.c + shape[1] * transform.a, transform.f)
