"""The cloud-free truth: land cover and sub-pixel composition of every pixel, and its
reflectance on any date.

The landscape lives on the "world" raster: the scenes' 30 m UTM pixel grid over the
region plus a margin (every scene file is a window of it). Every value is a pure
function of (seed, global pixel coordinates) (fields.py), so any window of the world can
be built on its own (the stage builds it tile by tile). Each pixel holds:

- `impervious`: fraction of built surface (0..1), from the census: inside localities it
  rises with the locality's population density, with neighbourhood texture and parks;
- `cover`: the class of its pervious part: vegetation (forest, shrub, grass), cropland
  (rectangular parcels, some fallow), bare soil or water, laid out by smoothed random
  fields (water in the lowest ground, bare soil next, natural vegetation on the highest
  ground, cropland in between); settlements' pervious part is gardens or bare ground;
- `i_imp`, `i_green`, `i_dry`: which measured spectrum (endmembers tables) its built,
  green and dry/background parts have, spatially coherent;
- `g_max`, `g_amp`: green fraction of the pervious part at the seasonal peak, and its
  seasonal amplitude (0 <= g_max - g_amp <= g_max <= 1); `crop` selects the cropland
  calendar instead of the natural one.

Reflectance on a date (linear sub-pixel mixing of end-members)::

    g = g_max - g_amp * (1 - s(date))                 s: seasonal state 0..1
    R = f * IMP[i_imp] + (1 - f) * (g * GREEN[i_green] + (1 - g) * DRY[i_dry])

R is affine in s, so its median over a set of dates equals R at the median of s: the
cloud-free truth (`truth_reflectance`) is exact without stacking the dates.

The land-cover class of a pixel is "urban" where f >= `urban_min` (0.5), else its cover.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import rasterio.features
import shapely
from affine import Affine

from urbanmap.imagery.synth.endmembers import Endmembers
from urbanmap.imagery.synth.fields import Win, chunked, field, field_octaves, pick, pixel_noise, threshold, uniform

#: Land-cover class codes of the truth raster (0 is nodata).
URBAN, VEGETATION, CROPLAND, SOIL, WATER = 1, 2, 3, 4, 5
CLASS_NAMES = {URBAN: "urban", VEGETATION: "vegetation", CROPLAND: "cropland", SOIL: "bare_soil", WATER: "water"}


@dataclass(frozen=True)
class Landscape:
    """Per-pixel composition on the world raster; every array has shape (rows, cols)."""

    impervious: np.ndarray  # float32, 0..1
    cover: np.ndarray  # uint8 class code of the pervious part (VEGETATION..WATER)
    i_imp: np.ndarray  # uint16 row of Endmembers.impervious
    i_green: np.ndarray  # uint16 row of Endmembers.vegetation
    i_dry: np.ndarray  # uint16 row of Endmembers.dry
    g_max: np.ndarray  # float32
    g_amp: np.ndarray  # float32
    crop: np.ndarray  # bool: cropland calendar

    def classes(self, urban_min: float) -> np.ndarray:
        """uint8 land-cover class per pixel: URBAN where impervious >= urban_min."""
        return np.where(self.impervious >= urban_min, np.uint8(URBAN), self.cover).astype(np.uint8)

    def window(self, rows: slice, cols: slice) -> Landscape:
        """The same landscape cut to a window (views, no copy)."""
        return Landscape(**{k: getattr(self, k)[rows, cols] for k in self.__dataclass_fields__})


def seasonal_state(date: dt.date, peak_doy: float, crop_peak_doy: float, crop_days: float) -> tuple[float, float]:
    """(natural, cropland) seasonal state in 0..1 on `date`.

    Natural vegetation follows a cosine over the year peaking on `peak_doy` (the rainy
    season); cropland is green only during a growing season of `crop_days` centred on
    `crop_peak_doy` (rain-fed maize: sown with the rains, harvested in autumn) and bare
    otherwise.
    """
    doy = date.timetuple().tm_yday
    natural = 0.5 * (1.0 + np.cos(2 * np.pi * (doy - peak_doy) / 365.25))
    d = (doy - crop_peak_doy + 365.25 / 2) % 365.25 - 365.25 / 2
    crop = np.clip(np.cos(np.pi * d / crop_days), 0.0, 1.0) if abs(d) < crop_days / 2 else 0.0
    return float(natural), float(crop)


def settlement_targets(polygons: npt.ArrayLike, population: npt.ArrayLike, kind: npt.ArrayLike, *, at_density: float,
                       value: float, per_decade: float, low: float, high: float,
                       rural_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Target impervious fraction of each census locality, in painting order.

    A locality of density d (inhabitants per km² of its polygon) gets
    ``clip(value + per_decade * log10(d / at_density), low, high)``, times
    `rural_factor` for rural localities; unclassified ones are ignored and a missing
    population takes the median density of its kind (over the localities given: the
    client computes this once for the whole region). Larger polygons come first, so that
    smaller ones are painted over them (`settlement_raster`).

    Args:
        polygons: shapely polygons (n,) in the scene CRS (metres).
        population: float (n,), NaN where unknown.
        kind: str (n,) "urban" / "rural" / "unclassified" (labels.read_census).
    Returns:
        (polygons (m,) object array, targets float32 (m,)), m <= n.
    """
    kind = np.asarray(kind)
    keep = np.isin(kind, ["urban", "rural"])
    polygons, kind = np.asarray(polygons, dtype=object)[keep], kind[keep]
    pop = np.asarray(population, np.float64)[keep]
    area_km2 = shapely.area(polygons) / 1e6
    density = np.divide(pop, area_km2, out=np.full_like(pop, np.nan), where=area_km2 > 0)
    for k in ("urban", "rural"):
        sel = kind == k
        known = density[sel & np.isfinite(density)]
        density[sel & ~np.isfinite(density)] = np.median(known) if known.size else at_density
    target = np.clip(value + per_decade * np.log10(np.maximum(density, 1.0) / at_density), low, high)
    target = np.where(kind == "rural", target * rural_factor, target).astype(np.float32)
    order = np.argsort(-area_km2, kind="stable")
    return polygons[order], target[order]


def settlement_raster(polygons: Sequence[shapely.Geometry] | np.ndarray, targets: npt.ArrayLike, transform: Affine,
                      shape: tuple[int, int]) -> np.ndarray:
    """Target impervious fraction of each pixel of a window (float32 (rows, cols), 0
    outside localities): `polygons` painted in order (later over earlier) by pixel centre
    (GDAL's rasterizer, on the window's own transform)."""
    if len(polygons) == 0:
        return np.zeros(shape, np.float32)
    ids = rasterio.features.rasterize(
        ((g, int(i) + 1) for i, g in enumerate(polygons)), out_shape=shape, transform=transform, fill=0, dtype="int32"
    )
    return np.concatenate([[np.float32(0)], np.asarray(targets, np.float32)])[ids]


#: Sub-streams of the landscape's key (seed, tag): one per random field or draw.
(_TERRAIN, _PATCHES, _GREEN, _GREEN_PX, _DRY, _DRY_PX, _SHIFT, _FALLOW, _CROP_GREEN, _CROP_SOIL, _CROP_PEAK,
 _HOOD, _GRAIN, _PARK, _IMP, _IMP_PX, _GROW, _ROOF) = range(1, 19)
#: Parcels per side of a chunk of per-parcel draws.
_PARCEL_CHUNK = 64


def build_landscape(
    key: Sequence[int], win: Win, settlement: np.ndarray, em: Endmembers, pixel_size: float, *,
    water: float, soil: float, vegetation: float, terrain_m: float, patch_m: float,
    parcel_m: Sequence[float], fallow: float, texture: float, park_fraction: float,
) -> Landscape:
    """The base landscape of the census year over a window of the global pixel grid.

    Every value is a pure function of (key, global pixel coordinates), so windows can be
    computed independently and agree where they overlap.

    Args:
        key: integers (seed, stream tag): every year shares the same base landscape.
        win: the window (global pixel indices, see fields.Win).
        settlement: float32 (win.h, win.w) target impervious fraction (settlement_raster).
        em: end-member tables.
        pixel_size: metres.
        water, soil, vegetation: shares of the landscape (before settlements) given to
            each cover by thresholds on the terrain field at its normal quantiles (so the
            shares are approximate); the rest is cropland.
        terrain_m, patch_m: correlation lengths (m) of the terrain and of land-cover patches.
        parcel_m: (height, width) of crop parcels, metres; the parcel grid is anchored to
            the CRS's origin, each row of parcels shifted by its own draw.
        fallow: share of crop parcels left bare all year.
        texture: standard deviation of the impervious fraction around a locality's target.
        park_fraction: share (about) of settled pixels that are parks and gardens.
    """
    key = tuple(int(k) for k in key)
    shape = (win.h, win.w)
    if settlement.shape != shape:
        raise ValueError(f"settlement {settlement.shape} does not match the window {shape}")
    px = float(pixel_size)
    cover, lay, q_veg = base_cover(key, win, px, water=water, soil=soil, vegetation=vegetation, terrain_m=terrain_m,
                                   patch_m=patch_m)
    # Which measured spectrum: a smooth field (neighbours alike) dithered by pixel noise
    # (no contour steps between neighbouring table rows).
    u_green = uniform(0.9 * _field(key, win, px, _GREEN, 300) + 0.45 * pixel_noise((*key, _GREEN_PX), win))
    u_dry = uniform(0.9 * _field(key, win, px, _DRY, 500) + 0.45 * pixel_noise((*key, _DRY_PX), win))
    land = Landscape(np.zeros(shape, np.float32), cover, np.zeros(shape, np.uint16), pick(u_green, len(em.vegetation)),
                     np.empty(shape, np.uint16), np.zeros(shape, np.float32), np.zeros(shape, np.float32),
                     np.zeros(shape, bool))
    _natural_vegetation(land, em, u_dry, uniform(2.0 * (lay - q_veg)))  # 0.5 at the vegetation line, -> 1 uphill
    _cropland(land, em, key, win, px, parcel_m, fallow)
    dry = em.dry_offsets
    bare = cover == SOIL
    land.g_max[bare], land.g_amp[bare] = 0.12, 0.12  # weeds in the rainy season
    land.i_dry[bare] = dry["soil"][0] + pick(u_dry[bare], dry["soil"][1])
    wet = cover == WATER
    land.i_dry[wet] = dry["water"][0] + pick(u_dry[wet], dry["water"][1])
    _settle(land, em, key, win, px, settlement, u_dry, texture, park_fraction)
    land.crop[...] = cover == CROPLAND
    return land


def _field(key: Sequence[int], win: Win, px: float, sub: int, scale_m: float) -> np.ndarray:
    """The landscape's field `sub` (fields.field) of correlation length `scale_m` metres."""
    return field((*key, sub), win, scale_m / px)


def base_cover(key: Sequence[int], win: Win, px: float, *, water: float, soil: float, vegetation: float,
               terrain_m: float, patch_m: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The cover before settlements (build_landscape's arguments): water in the lowest
    ground, bare soil next, natural vegetation on the highest, cropland in between.

    Returns (cover uint8 (h, w) VEGETATION..WATER, the layout field float32 (h, w) that
    cuts it, the layout's value at the vegetation line).
    """
    terrain = field_octaves((*key, _TERRAIN), win, [terrain_m / px, terrain_m / (4 * px)], [1.0, 0.3])
    lay = terrain + np.float32(0.6) * _field(key, win, px, _PATCHES, patch_m)
    lay_std = float(np.sqrt(1.0 + 0.6**2))
    q_water = -threshold(water)  # terrain below it: the share `water`
    q_soil, q_veg = -lay_std * threshold(water + soil), lay_std * threshold(vegetation)
    cover = np.full((win.h, win.w), CROPLAND, np.uint8)
    cover[lay >= q_veg] = VEGETATION
    cover[(lay < q_soil) & (cover == CROPLAND)] = SOIL
    cover[terrain < q_water] = WATER
    return cover, lay, q_veg


def _natural_vegetation(land: Landscape, em: Endmembers, u_dry: np.ndarray, forest: np.ndarray) -> None:
    """Natural vegetation (in place): evergreen forest on the highest ground (`forest`
    -> 1), seasonal grass lower."""
    dry = em.dry_offsets
    veg = land.cover == VEGETATION
    land.g_max[veg] = 0.70 + 0.25 * forest[veg]
    land.g_amp[veg] = land.g_max[veg] * (0.65 - 0.55 * forest[veg])
    land.i_dry[veg] = dry["npv"][0] + pick(u_dry[veg], dry["npv"][1])


def _cropland(land: Landscape, em: Endmembers, key: Sequence[int], win: Win, px: float, parcel_m: Sequence[float],
              fallow: float) -> None:
    """Cropland (in place): parcels with their own crop, soil and calendar amplitude."""
    dry = em.dry_offsets
    ph, pw = (max(int(round(m / px)), 1) for m in parcel_m)
    prow = np.arange(win.r0, win.r0 + win.h) // ph  # global parcel rows
    p0, np_rows = int(prow[0]), int(prow[-1] - prow[0] + 1)
    c = _PARCEL_CHUNK
    shift = chunked((*key, _SHIFT), p0, 0, np_rows, 1, c, lambda rng, s: rng.integers(0, pw, s))[:, 0]
    pcol = (np.arange(win.c0, win.c0 + win.w)[None, :] + shift[prow - p0][:, None]) // pw
    q0 = int(pcol.min())
    grid = (p0, q0, np_rows, int(pcol.max()) - q0 + 1)
    parcel_fallow = chunked((*key, _FALLOW), *grid, c, lambda rng, s: rng.random(s)) < fallow
    parcel_green = chunked((*key, _CROP_GREEN), *grid, c, lambda rng, s: rng.integers(0, len(em.vegetation), s))
    parcel_soil = chunked((*key, _CROP_SOIL), *grid, c, lambda rng, s: rng.integers(0, dry["soil"][1], s))
    parcel_peak = chunked((*key, _CROP_PEAK), *grid, c, lambda rng, s: rng.uniform(0.80, 0.95, s))
    crop = land.cover == CROPLAND
    r_idx = np.broadcast_to((prow - p0)[:, None], crop.shape)[crop]
    c_idx = pcol[crop] - q0
    fallow_px = parcel_fallow[r_idx, c_idx]
    land.g_max[crop] = np.where(fallow_px, 0.10, parcel_peak[r_idx, c_idx])
    land.g_amp[crop] = land.g_max[crop]
    land.i_green[crop] = parcel_green[r_idx, c_idx]
    land.i_dry[crop] = dry["soil"][0] + parcel_soil[r_idx, c_idx]


def _settle(land: Landscape, em: Endmembers, key: Sequence[int], win: Win, px: float, settlement: np.ndarray,
            u_dry: np.ndarray, texture: float, park_fraction: float) -> None:
    """Settlements (in place): built fraction around the locality's target, parks,
    gardens and bare yards; then every pixel's impervious spectrum."""
    dry = em.dry_offsets
    settled = settlement > 0
    imp = land.impervious
    if settled.any():
        hood = _field(key, win, px, _HOOD, 250)
        grain = pixel_noise((*key, _GRAIN), win)
        imp[settled] = settlement[settled] + texture * (0.7 * hood[settled] + 0.7 * grain[settled])
        park = _field(key, win, px, _PARK, 200)
        imp[settled & (park >= threshold(park_fraction))] *= 0.15
    np.clip(imp, 0.0, 0.97, out=imp)
    yard_soil = settled & (u_dry < 0.3)
    garden = settled & ~yard_soil
    land.cover[garden], land.cover[yard_soil] = VEGETATION, SOIL
    land.g_max[garden], land.g_amp[garden] = 0.60, 0.30
    land.g_max[yard_soil], land.g_amp[yard_soil] = 0.10, 0.10
    land.i_dry[garden] = dry["npv"][0] + pick(u_dry[garden], dry["npv"][1])
    land.i_dry[yard_soil] = dry["soil"][0] + pick(u_dry[yard_soil], dry["soil"][1])
    land.i_imp[...] = pick(uniform(0.7 * _field(key, win, px, _IMP, 120) + 0.7 * pixel_noise((*key, _IMP_PX), win)),
                           len(em.impervious))


def grow(land: Landscape, where: np.ndarray, key: Sequence[int], win: Win, em: Endmembers, low: float, high: float,
         pixel_size: float = 30.0) -> Landscape:
    """Build over the pixels `where` (bool, win.h x win.w), except water: new housing
    estates with an impervious fraction in [low, high], new (brighter) roofs and bare
    ground between them. `key` (seed, tag) and the window's global coordinates are the
    only randomness. Returns a new Landscape; `land` is unchanged."""
    key = tuple(int(k) for k in key)
    built = where & (land.cover != WATER)
    if not built.any():
        return land
    u = uniform(field((*key, _GROW), win, 150 / float(pixel_size)))
    roof = uniform(pixel_noise((*key, _ROOF), win))
    n_imp = len(em.impervious)
    imp, cover, i_imp = land.impervious.copy(), land.cover.copy(), land.i_imp.copy()
    g_max, g_amp, i_dry, crop = land.g_max.copy(), land.g_amp.copy(), land.i_dry.copy(), land.crop.copy()
    imp[built] = np.maximum(imp[built], low + (high - low) * u[built])
    i_imp[built] = pick(0.5 + 0.5 * roof[built], n_imp)  # the brighter half of the table
    cover[built] = SOIL
    g_max[built], g_amp[built], crop[built] = 0.10, 0.10, False
    start, n = em.dry_offsets["soil"]
    i_dry[built] = start + pick(u[built], n)
    return replace(land, impervious=imp, cover=cover, i_imp=i_imp, g_max=g_max, g_amp=g_amp, i_dry=i_dry, crop=crop)


def reflectance(land: Landscape, em: Endmembers, natural: float, crop: float) -> np.ndarray:
    """Noise-free, cloud-free surface reflectance at seasonal states (natural, crop).

    Returns:
        float32 (6, rows, cols), bands in landsat.BANDS order, unitless.
    """
    state = np.where(land.crop, np.float32(crop), np.float32(natural))
    g = land.g_max - land.g_amp * (1.0 - state)
    f = land.impervious
    dry_table = em.dry
    out = np.empty((dry_table.shape[1], *f.shape), np.float32)
    for b in range(out.shape[0]):
        green = em.vegetation[:, b][land.i_green]
        back = dry_table[:, b][land.i_dry]
        out[b] = f * em.impervious[:, b][land.i_imp] + (1.0 - f) * (back + g * (green - back))
    return out
