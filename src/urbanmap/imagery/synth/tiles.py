"""The `synth` stage's tasks: one per tile of the world grid (executor.run_tiles).

A tile is a block of the world raster (the scenes' 30 m grid in the scene CRS) of
`tile_px` x `tile_px` pixels counted from the world's north-west corner (`world_tiles`);
every value in it is a pure function of (seed, stream, global pixel coordinates)
(fields.py), so a task needs nothing from its neighbours and the parts are the same
whatever the tile size or the executor.

- `base_task` (later years only, pass 1): the census year's land-cover classes of the
  tile, for the per-cell fringe growth the client decides between the passes.
- `scene_task` (pass 2): the year's landscape (with the grown cells built over), then,
  for every scene meeting the tile, its sky, DN and QA_PIXEL over the tile's part of the
  scene; and the world-level truth of the tile (classes, impervious fraction, cloud-free
  reflectance, clear-observation count).

Each task writes its parts as .npy files into `<parts>/<tile_id>/` (executor.part_output:
complete or absent) and returns only counts; the client assembles them (assemble.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from urbanmap.compute.tiles import part_output
from urbanmap.imagery.synth import landcover, scenes
from urbanmap.imagery.synth.endmembers import Endmembers
from urbanmap.imagery.synth.fields import Win
from urbanmap.imagery.synth.scenes import slc_off_gaps
from urbanmap.imagery.synth.schedule import Footprint

#: Tags that separate the random streams derived from the seed.
LANDSCAPE, GROWTH, GROWTH_PIXELS, SCENE = 101, 202, 303, 404


@dataclass(frozen=True)
class SceneSpec:
    """One acquisition, as a task needs it (small, picklable)."""

    index: int
    key: tuple[int, ...]  # (seed, SCENE, year, path, row, ordinal date): the scene's random streams
    win: Win  # the product's window of the world (global pixel indices)
    footprint: Footprint
    slc_gaps: bool
    gap_phase: float
    cover: float
    cloud_cut: float  # the cloud field's value at the scene's cover (scenes.cloud_cut)
    shadow_rc: tuple[int, int]
    cirrus: float
    cirrus_band: bool
    state: tuple[float, float]  # seasonal state (natural, cropland)
    noise: tuple[float, ...]  # (6,) sensor noise, reflectance


@dataclass(frozen=True)
class Job:
    """What every task of one run shares (small, picklable; files by path)."""

    seed: int
    pixel: float
    landscape: dict[str, Any]  # keyword arguments of landcover.build_landscape
    em: Endmembers
    settlements: str  # GeoParquet: locality polygons (scene CRS) and targets, painting order
    urban_min: float
    scenes: tuple[SceneSpec, ...] = ()
    scales_px: tuple[float, ...] = ()
    dilate_px: int = 0
    median_state: tuple[float, float] = (0.0, 0.0)
    grown: str | None = None  # GeoParquet of grown cells' polygons (scene CRS), or None
    grown_impervious: tuple[float, ...] = (0.0, 0.0)  # (low, high) impervious fraction of grown pixels
    parts: str = ""
    young: str | None = None  # GeoParquet of the localities' fringe not yet built this year (zones.young_fringe), or None
    sprawl: str | None = None  # GeoParquet of the zone around the urban area (zones.sprawl_zone), or None
    base_young: str | None = None  # the census year's young fringe, for pass 1 of a later year


def window_transform(win: Win, pixel: float) -> Affine:
    """North-up transform of a window of the global grid (pixel centres at c * pixel,
    -r * pixel)."""
    return Affine(pixel, 0.0, (win.c0 - 0.5) * pixel, 0.0, -pixel, (0.5 - win.r0) * pixel)


def window_bounds(win: Win, pixel: float) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of a window, metres."""
    return ((win.c0 - 0.5) * pixel, (0.5 - win.r0 - win.h) * pixel, (win.c0 + win.w - 0.5) * pixel, (0.5 - win.r0) * pixel)


def world_tiles(world: Win, tile_px: int) -> list[dict[str, Any]]:
    """The tiles of the world window, north to south then west to east: dicts with
    `tile_id` ("r<i>c<j>") and `win` (fields.Win)."""
    t = int(tile_px)
    return [
        {"tile_id": f"r{i}c{j}", "win": Win(world.r0 + r, world.c0 + c, min(t, world.h - r), min(t, world.w - c))}
        for i, r in enumerate(range(0, world.h, t)) for j, c in enumerate(range(0, world.w, t))
    ]


#: Rows per row group of the polygon files the tasks share (write_polygons).
_ROWS_PER_GROUP = 256


def write_polygons(frame: gpd.GeoDataFrame, path: str | Path) -> None:
    """Write the polygons the tasks share (the settlements, the grown cells) so that each
    task reads and decodes only those that meet its tile (_polygons_in): rows sorted along
    a Hilbert curve in row groups of _ROWS_PER_GROUP, with a bbox covering column
    (GeoParquet 1.1) whose per-group statistics let the reader skip the groups away from
    the tile, and the rows' original order kept in `file_order`. A task's memory is then
    bounded by its tile, not by the region's number of polygons (measured on the national
    localities, a 16 km tile: +57 MB read, against +316 MB from one row group in file
    order)."""
    frame = frame.assign(file_order=np.arange(len(frame)))
    order = np.argsort(frame.hilbert_distance().to_numpy(), kind="stable") if len(frame) else np.arange(0)
    frame.iloc[order].to_parquet(path, write_covering_bbox=True, row_group_size=_ROWS_PER_GROUP)


def _polygons_in(path: str, bounds: Sequence[float], columns: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Polygons of a file written by write_polygons whose bounds meet `bounds`, in the
    order they were given to it (painting order), and the requested columns. Only the
    row groups near `bounds` are read (the bbox covering's statistics); each row's exact
    bounds are then checked here."""
    frame = gpd.read_parquet(path, bbox=tuple(float(v) for v in bounds))
    frame = frame.sort_values("file_order", kind="stable")
    b = shapely.bounds(frame.geometry.values)
    keep = (b[:, 0] <= bounds[2]) & (b[:, 2] >= bounds[0]) & (b[:, 1] <= bounds[3]) & (b[:, 3] >= bounds[1])
    return np.asarray(frame.geometry.values[keep], dtype=object), {c: frame[c].to_numpy()[keep] for c in columns}


def landscape(win: Win, job: Job, grown: bool) -> landcover.Landscape:
    """The landscape (landcover.Landscape) of a window: the year's (the localities, less
    their fringe not yet built, with the sprawl around them), and with `grown` the cells
    grown by this year built over."""
    transform, bounds = window_transform(win, job.pixel), window_bounds(win, job.pixel)
    shape = (win.h, win.w)
    polygons, cols = _polygons_in(job.settlements, bounds, ["target", "urban"])
    settlement, urban = landcover.settlement_rasters(polygons, cols["target"], cols["urban"], transform, shape)
    young, sprawl = (_mask(path, bounds, transform, shape) for path in (job.young, job.sprawl))
    land = landcover.build_landscape((job.seed, LANDSCAPE), win, settlement, job.em, job.pixel, urban=urban, young=young,
                                     sprawl=sprawl, **job.landscape)
    if grown and job.grown:
        where = _mask(job.grown, bounds, transform, shape)
        if where is not None and where.any():
            low, high = job.grown_impervious
            land = landcover.grow(land, where, (job.seed, GROWTH_PIXELS), win, job.em, low, high, pixel_size=job.pixel)
    return land


def _mask(path: str | None, bounds: Sequence[float], transform: Affine, shape: tuple[int, int]) -> np.ndarray | None:
    """The window's pixels inside the polygons of a file written by write_polygons (bool),
    or None without a file."""
    if path is None:
        return None
    polygons, _ = _polygons_in(path, bounds)
    # Clipped to the window (and a pixel around it) first: a zone is a few large
    # polygons, and GDAL's rasterizer would otherwise be handed all of their vertices.
    pad = abs(transform.a)
    polygons = shapely.clip_by_rect(polygons, bounds[0] - pad, bounds[1] - pad, bounds[2] + pad, bounds[3] + pad)
    return landcover.polygon_mask(polygons[~shapely.is_empty(polygons)], transform, shape)


def base_task(tile: dict[str, Any], job: Job) -> str:
    """Pass 1: the census year's classes of the tile -> `<parts>/<tile_id>/base.npy`."""
    win = tile["win"]
    land = landscape(win, job, grown=False)
    with part_output(Path(job.parts) / tile["tile_id"]) as tmp:
        np.save(tmp / "base.npy", land.classes(job.urban_min))
    return tile["tile_id"]


def scene_valid(spec: SceneSpec, pixel: float) -> Callable[..., np.ndarray]:
    """Function (Win, stride=1) -> bool (h, w): the scene's pixels with data (inside the
    footprint, outside Landsat 7's SLC-off gaps), every `stride`-th from (r0, c0)."""

    def valid(win: Win, stride: int = 1) -> np.ndarray:
        xs = (win.c0 + stride * np.arange(win.w)) * pixel
        ys = -(win.r0 + stride * np.arange(win.h)) * pixel
        along, across = spec.footprint.coordinates(xs, ys)
        inside = spec.footprint.inside(along, across)
        if spec.slc_gaps:
            inside &= ~slc_off_gaps(along, across, pixel, spec.gap_phase)
        return inside

    return valid


def scene_task(tile: dict[str, Any], job: Job) -> dict[str, Any]:
    """Pass 2: the tile's parts of every scene and of the world truth.

    Writes into `<parts>/<tile_id>/`: `scene<k>.npy` (uint16 (7, h, w): DN blue..swir2
    and QA_PIXEL over the tile's part of scene k), `classes.npy` (uint8), `impervious.npy`
    (float32), `reflectance.npy` (float32 (6, h, w), at the median seasonal state),
    `clear.npy` (uint8, clear observations) over the tile.
    Returns {"tile_id", "scenes": {k: (Win, counts)}}: counts of valid, cloud, dilated,
    shadow, cirrus and usable pixels of each scene in the tile.
    """
    win = tile["win"]
    land = landscape(win, job, grown=True)
    classes = land.classes(job.urban_min)
    water = classes == landcover.WATER
    clear = np.zeros((win.h, win.w), np.uint8)
    found = {}
    with part_output(Path(job.parts) / tile["tile_id"]) as tmp:
        for spec in job.scenes:
            sub = win.intersect(spec.win)
            if sub is None:
                continue
            valid_fn = scene_valid(spec, job.pixel)
            valid = valid_fn(sub)
            sky = scenes.draw_sky(spec.key, sub, valid_fn, spec.cover, scales_px=list(job.scales_px),
                                  dilate_px=job.dilate_px, shadow_rc=spec.shadow_rc, cirrus=spec.cirrus,
                                  cut=spec.cloud_cut)
            rows, cols = sub.crop(win)
            clean = landcover.reflectance(land.window(rows, cols), job.em, *spec.state)
            out = np.empty((7, sub.h, sub.w), np.uint16)
            out[:6] = scenes.observe(clean, sky, valid, list(spec.noise), spec.key, sub)
            out[6] = scenes.qa_pixel(valid, sky, water[rows, cols], spec.cirrus_band)
            np.save(tmp / f"scene{spec.index}.npy", out)
            usable = valid & ~(sky.cloud | sky.dilated | sky.shadow | sky.cirrus)
            clear[rows, cols] += usable.astype(np.uint8)
            found[spec.index] = (sub, {
                "valid": int(valid.sum()), "cloud": int(sky.cloud.sum()), "dilated": int(sky.dilated.sum()),
                "shadow": int(sky.shadow.sum()), "cirrus": int(sky.cirrus.sum()), "usable": int(usable.sum()),
            })
        np.save(tmp / "classes.npy", classes)
        np.save(tmp / "impervious.npy", land.impervious)
        np.save(tmp / "reflectance.npy", landcover.reflectance(land, job.em, *job.median_state))
        np.save(tmp / "clear.npy", clear)
    return {"tile_id": tile["tile_id"], "scenes": found}
