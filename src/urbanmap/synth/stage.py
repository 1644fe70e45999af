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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from urbanmap.errors import InputError

#: Tags that separate the random streams derived from the seed.
_LANDSCAPE, _GROWTH, _GROWTH_PIXELS, _SCENE = 101, 202, 303, 404


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
    def around(cls, bounds, bounds_crs, crs: CRS, margin: float, pixel: float) -> "World":
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

    def centres(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """x of the pixel centres of `cols` and y of those of `rows` (metres)."""
        t = self.transform
        xs = t.c + (np.arange(cols.start, cols.stop) + 0.5) * t.a
        ys = t.f + (np.arange(rows.start, rows.stop) + 0.5) * t.e
        return xs, ys

    def sub_transform(self, rows: slice, cols: slice) -> Affine:
        return self.transform @ Affine.translation(cols.start, rows.start)


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
    import rasterio

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
    from urbanmap.synth.schedule import Footprint

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
    """bool (nrows, ncols) in truth.cell_means order: the cells of the grid."""
    from urbanmap.synth import truth

    mask = np.zeros((lattice.nrows, lattice.ncols), bool)
    mask[truth.cell_index(lattice, cells["col"], cells["row"])] = True
    return mask


def landscape(cfg, em, cells, lattice, world: World, year: int):
    """The landscape of `year` on the world grid, and the census year's land-cover
    classes on the lattice: (Landscape, uint8 lattice raster).

    Settlements come from the census localities; a year after years.train adds the
    fringe growth of the share of years elapsed towards years.target.
    """
    import geopandas as gpd

    from urbanmap import labels
    from urbanmap.synth import landcover, truth

    s, seed = cfg.synth, int(cfg.seed)
    grid_crs, shape = lattice.crs, (world.height, world.width)
    census_bounds = Transformer.from_crs(world.crs, grid_crs, always_xy=True).transform_bounds(*world.bounds, densify_pts=21)
    polygons, kind, population, _ = labels.read_census(cfg.data.census, census_bounds, grid_crs)
    polygons = np.asarray(gpd.GeoSeries(polygons, crs=grid_crs).to_crs(world.crs).values, dtype=object)
    u, lc = s.urban, s.landcover
    settlement = landcover.settlement_impervious(
        polygons, population, kind, world.transform, shape, at_density=float(u.at_density), value=float(u.value),
        per_decade=float(u.per_decade), low=float(u.low), high=float(u.high), rural_factor=float(u.rural_factor),
    )
    base = landcover.build_landscape(
        _rng(seed, _LANDSCAPE), settlement, em, world.transform.a, water=float(lc.water), soil=float(lc.soil),
        vegetation=float(lc.vegetation), terrain_m=float(lc.terrain_m), patch_m=float(lc.patch_m),
        parcel_m=[float(v) for v in lc.parcel_m], fallow=float(lc.fallow), texture=float(u.texture),
        park_fraction=float(u.parks),
    )
    base_classes = truth.to_lattice(base.classes(float(s.urban_min.pixel)), world.transform, world.crs, lattice, 0)
    train, target = int(cfg.years.train), int(cfg.years.target)
    if year <= train:
        return base, base_classes
    g = s.growth
    progress = 1.0 if target <= train else min((year - train) / (target - train), 1.0)
    in_grid = _in_grid(lattice, cells)
    grown = truth.fringe_growth(
        truth.cell_means(base_classes == landcover.URBAN, lattice) >= float(s.urban_min.cell), in_grid,
        truth.cell_means(base_classes == landcover.WATER, lattice),
        _rng(seed, _GROWTH).random(in_grid.shape), float(g.share) * progress, int(g.min_neighbours),
    )
    p = lattice.patch_size
    grown_px = np.repeat(np.repeat(grown.astype(np.uint8), p, axis=0), p, axis=1)
    where = truth.from_lattice(grown_px, lattice, world.transform, world.crs, shape, 0).astype(bool)
    return landcover.grow(base, where, _rng(seed, _GROWTH_PIXELS), em, *(float(v) for v in g.impervious)), base_classes


def simulate_scene(cfg_s, seed: int, year: int, acq, state, land, em, water: np.ndarray, world: World):
    """Draw one acquisition: its window of the world, sky, DN and QA.

    Returns (rows, cols) window slices, valid mask, Sky, DN (6, h, w), QA (h, w),
    (sun azimuth, sun elevation, UTC datetime).
    """
    from urbanmap.landsat import CIRRUS_SENSORS, SLC_OFF_SINCE
    from urbanmap.synth import landcover, scenes, schedule

    fp, pixel = acq.footprint, world.transform.a
    win = world.window(fp.polygon())
    if win is None:
        raise InputError(f"synth.footprints: path {fp.path} row {fp.row} does not overlap the region")
    rows, cols = win
    rng = _rng(seed, _SCENE, year, fp.path, fp.row, acq.acquired.toordinal())
    along, across = fp.coordinates(*world.centres(rows, cols))
    valid = fp.inside(along, across)
    gap_phase = float(rng.uniform(0.0, 32.0))
    if acq.sensor == "LE07" and bool(cfg_s.slc_off) and acq.acquired >= SLC_OFF_SINCE:
        valid &= ~scenes.slc_off_gaps(along, across, pixel, gap_phase)
    del along, across
    cl = cfg_s.clouds
    wet = acq.acquired.month in {int(m) for m in cl.wet_months}
    cover = float(rng.uniform(*(cl.wet_cover if wet else cl.dry_cover)))
    lon, lat = Transformer.from_crs(world.crs, 4326, always_xy=True).transform(*fp.centre)
    sun = schedule.solar_angles(acq.acquired, lon, lat)
    offset = scenes.shadow_offset(float(rng.uniform(*cl.height_m)), sun[0], sun[1], pixel)
    cirrus_band = acq.sensor in CIRRUS_SENSORS
    cirrus = float(rng.uniform(*cl.cirrus)) if cirrus_band else 0.0
    sky = scenes.draw_sky(
        rng, valid, cover, scales_px=[float(v) / pixel for v in cl.scales_m], dilate_px=int(cl.dilate_px),
        shadow_rc=offset, cirrus=cirrus,
    )
    clean = landcover.reflectance(land.window(rows, cols), em, *state)
    noise = cfg_s.noise.get(acq.sensor, cfg_s.noise.default)
    dn = scenes.observe(clean, sky, valid, list(noise), rng)
    qa = scenes.qa_pixel(valid, sky, water[rows, cols], cirrus_band)
    return (rows, cols), valid, sky, dn, qa, sun


def run(cfg) -> dict:
    """Stage: write a year of scenes, their catalog and the truth (see module docstring)."""
    from tqdm import tqdm

    from urbanmap import io, paths
    from urbanmap.landsat import BANDS
    from urbanmap.lattice import PixelLattice, patch_size
    from urbanmap.synth import landcover, scenes, schedule, stac, truth
    from urbanmap.synth.endmembers import read_endmembers

    s = cfg.synth
    year = paths.stage_year(cfg)
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

    land, base_classes = landscape(cfg, em, cells, lattice, world, year)
    footprints = _footprints(s, world.bounds)
    acqs = schedule.acquisitions(year, sensors, footprints, int(s.scenes_per_footprint))
    if len(acqs) > 254:
        raise InputError(f"synth: {len(acqs)} scenes in a year; at most 254 are supported")
    ph = s.phenology
    states = [landcover.seasonal_state(a.acquired, float(ph.peak_doy), float(ph.crop_peak_doy), float(ph.crop_days)) for a in acqs]
    classes_world = land.classes(pixel_min)
    water = classes_world == landcover.WATER
    clear_world = np.zeros(classes_world.shape, np.uint8)
    products, scene_stats = [], []

    with io.atomic_directory(paths.scenes_dir(cfg, year)) as scenes_tmp, io.atomic_directory(paths.truth_dir(cfg, year)) as truth_tmp:
        for acq, state in tqdm(list(zip(acqs, states)), desc=f"synth {year}", unit="scene"):
            (rows, cols), valid, sky, dn, qa, (azimuth, elevation, when) = simulate_scene(
                s, seed, year, acq, state, land, em, water, world
            )
            pid, transform = acq.product_id, world.sub_transform(rows, cols)
            files = scenes.write_product(scenes_tmp / pid, pid, dn, qa, scene_crs, transform, threads)
            usable = valid & ~(sky.cloud | sky.dilated | sky.shadow | sky.cirrus)
            clear_world[rows, cols] += usable.astype(np.uint8)
            n_valid = max(int(valid.sum()), 1)
            share = lambda mask: float(mask.sum() / n_valid)  # noqa: E731
            stats = {
                "id": pid, "sensor": acq.sensor, "date": acq.acquired.isoformat(), "path": acq.footprint.path,
                "row": acq.footprint.row, "cloud_cover": share(sky.cloud), "dilated": share(sky.dilated),
                "shadow": share(sky.shadow), "cirrus": share(sky.cirrus), "clear": share(usable),
                "fill": float(1.0 - valid.sum() / valid.size),
                "seasonal_state": {"natural": round(state[0], 4), "cropland": round(state[1], 4)},
            }
            scene_stats.append(stats)
            footprint = shapely.intersection(acq.footprint.polygon(), shapely.box(*_bounds(transform, valid.shape)))
            products.append(stac.Product(
                pid, acq.sensor, when, _lonlat(footprint, scene_crs), scene_crs.to_epsg(), valid.shape,
                tuple(transform)[:6], 100.0 * stats["cloud_cover"], azimuth, elevation, acq.footprint.path,
                acq.footprint.row, {k: str(v) for k, v in files.items()},
            ))
        region = str(cfg.data.name)
        stac.write_catalog(
            scenes_tmp, f"{region}-landsat-c2-l2-{year}",
            f"Synthetic Landsat Collection 2 Level-2 scenes of {region} in {year} (urbanmap synth; seed {seed})",
            products,
        )

        # The truth, on the region's pixel lattice.
        median_state = tuple(float(np.median([st[k] for st in states])) for k in (0, 1))
        refl = truth.to_lattice(landcover.reflectance(land, em, *median_state), world.transform, scene_crs, lattice, np.float32(np.nan))
        classes = truth.to_lattice(classes_world, world.transform, scene_crs, lattice, 0)
        impervious = truth.to_lattice(land.impervious, world.transform, scene_crs, lattice, np.float32(np.nan))
        clear = truth.to_lattice(clear_world, world.transform, scene_crs, lattice, 0)
        definition = "per-pixel median over the year's acquisition dates of the noise-free, cloud-free surface reflectance"
        _write_raster(truth_tmp / paths.truth_reflectance(cfg, year).name, refl, lattice, float("nan"), list(BANDS), {"definition": definition}, threads)
        _write_raster(truth_tmp / paths.truth_landcover(cfg, year).name, classes, lattice, 0, ["land_cover"],
                      {str(k): v for k, v in landcover.CLASS_NAMES.items()}, threads)
        _write_raster(truth_tmp / paths.truth_clear_count(cfg, year).name, clear, lattice, None, ["clear_observations"], None, threads)
        later = year > int(cfg.years.train)
        table = truth.cell_table(cells, lattice, classes, impervious, cell_min, base_classes if later else None)
        io.write_cells(truth_tmp / paths.truth_cells(cfg, year).name, table, cell_size, grid_crs)

        p = lattice.patch_size
        region_px = np.repeat(np.repeat(_in_grid(lattice, cells), p, 0), p, 1)
        counts = clear[region_px]
        summary = {
            "year": year, "sensors": sensors, "scene_crs": scene_crs.to_string(), "scenes": len(acqs),
            "median_seasonal_state": {"natural": median_state[0], "cropland": median_state[1]},
            "region_pixels": int(counts.size),
            "clear_observations": {
                "min": int(counts.min()), "median": float(np.median(counts)), "mean": float(counts.mean()),
                "share_at_least_1": float((counts >= 1).mean()), "share_at_least_3": float((counts >= 3).mean()),
            },
            "landcover_share": {name: float((classes[region_px] == code).mean()) for code, name in landcover.CLASS_NAMES.items()},
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


def _bounds(transform: Affine, shape) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a north-up raster."""
    return (transform.c, transform.f + shape[0] * transform.e, transform.c + shape[1] * transform.a, transform.f)
