"""The cloud-free truth: land cover and sub-pixel composition of every pixel, and its
reflectance on any date.

The landscape lives on the "world" raster: the scenes' 30 m UTM pixel grid over the
region plus a margin (every scene file is a window of it). Each pixel holds:

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
from dataclasses import dataclass, replace

import numpy as np
import rasterio.features

from urbanmap.synth.endmembers import Endmembers
from urbanmap.synth.fields import octaves, pick, smooth_noise, uniform

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

    def window(self, rows: slice, cols: slice) -> "Landscape":
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


def settlement_impervious(
    polygons, population, kind, transform, shape, *, at_density: float, value: float,
    per_decade: float, low: float, high: float, rural_factor: float,
) -> np.ndarray:
    """Target impervious fraction of each pixel from census localities (0 outside).

    A locality of density d (inhabitants per km² of its polygon) gets
    ``clip(value + per_decade * log10(d / at_density), low, high)``, times
    `rural_factor` for rural localities; unclassified ones are ignored and a missing
    population takes the median density of its kind. Smaller polygons are painted over
    larger ones.

    Args:
        polygons: shapely polygons (n,) in the world raster's CRS (metres).
        population: float (n,), NaN where unknown.
        kind: str (n,) "urban" / "rural" / "unclassified" (labels.read_census).
        transform, shape: the world raster.
    Returns:
        float32 (rows, cols).
    """
    import shapely

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
    if len(polygons) == 0:
        return np.zeros(shape, np.float32)
    order = np.argsort(-area_km2, kind="stable")
    ids = rasterio.features.rasterize(
        ((polygons[i], int(i) + 1) for i in order), out_shape=shape, transform=transform, fill=0, dtype="int32"
    )
    return np.concatenate([[np.float32(0)], target])[ids]


def build_landscape(
    rng: np.random.Generator, settlement: np.ndarray, em: Endmembers, pixel_size: float, *,
    water: float, soil: float, vegetation: float, terrain_m: float, patch_m: float,
    parcel_m, fallow: float, texture: float, park_fraction: float,
) -> Landscape:
    """The base landscape of the census year.

    Args:
        rng: random generator (seeded from the config's seed only, so every year shares
            the same base landscape).
        settlement: float32 (rows, cols) target impervious fraction (settlement_impervious).
        em: end-member tables.
        pixel_size: metres.
        water, soil, vegetation: shares of the landscape (before settlements) given to
            each cover by ranking the terrain field; the rest is cropland.
        terrain_m, patch_m: correlation lengths (m) of the terrain and of land-cover patches.
        parcel_m: (height, width) of crop parcels, metres.
        fallow: share of crop parcels left bare all year.
        texture: standard deviation of the impervious fraction around a locality's target.
        park_fraction: share of settled pixels that are parks and gardens.
    """
    shape = settlement.shape
    px = float(pixel_size)
    terrain = octaves(rng, shape, [terrain_m / px, terrain_m / (4 * px)], [1.0, 0.3])
    patches = smooth_noise(rng, shape, patch_m / px)
    lay = terrain + 0.6 * patches
    q_water = np.quantile(terrain, water)
    q_soil, q_veg = np.quantile(lay, [water + soil, 1.0 - vegetation])
    cover = np.full(shape, CROPLAND, np.uint8)
    cover[lay >= q_veg] = VEGETATION
    cover[(lay < q_soil) & (cover == CROPLAND)] = SOIL
    cover[terrain < q_water] = WATER

    dry = em.dry_offsets
    n_green = len(em.vegetation)
    # Which measured spectrum: a smooth field (neighbours alike) dithered by pixel noise
    # (no contour steps between neighbouring table rows).
    u_green = uniform(0.9 * smooth_noise(rng, shape, 300 / px) + 0.45 * rng.standard_normal(shape, dtype=np.float32))
    u_dry = uniform(0.9 * smooth_noise(rng, shape, 500 / px) + 0.45 * rng.standard_normal(shape, dtype=np.float32))
    i_green = pick(u_green, n_green)
    i_dry = np.empty(shape, np.uint16)
    g_max = np.zeros(shape, np.float32)
    g_amp = np.zeros(shape, np.float32)

    # Natural vegetation: evergreen forest on the highest ground, seasonal grass lower.
    forest = uniform(2.0 * (lay - q_veg))  # 0.5 at the vegetation line, -> 1 uphill
    veg = cover == VEGETATION
    g_max[veg] = 0.70 + 0.25 * forest[veg]
    g_amp[veg] = g_max[veg] * (0.65 - 0.55 * forest[veg])
    i_dry[veg] = dry["npv"][0] + pick(u_dry[veg], dry["npv"][1])

    # Cropland: parcels with their own crop, soil and calendar amplitude.
    ph, pw = (max(int(round(m / px)), 1) for m in parcel_m)
    rows = np.arange(shape[0]) // ph
    shift = rng.integers(0, pw, rows.max() + 1)
    pcol = (np.arange(shape[1])[None, :] + shift[rows][:, None]) // pw
    grid_shape = (rows.max() + 1, int(pcol.max()) + 1)
    parcel_fallow = rng.random(grid_shape) < fallow
    parcel_green = rng.integers(0, n_green, grid_shape)
    parcel_soil = rng.integers(0, dry["soil"][1], grid_shape)
    parcel_peak = rng.uniform(0.80, 0.95, grid_shape)
    crop = cover == CROPLAND
    r_idx = np.broadcast_to(rows[:, None], shape)[crop]
    c_idx = pcol[crop]
    fallow_px = parcel_fallow[r_idx, c_idx]
    g_max[crop] = np.where(fallow_px, 0.10, parcel_peak[r_idx, c_idx])
    g_amp[crop] = g_max[crop]
    i_green[crop] = parcel_green[r_idx, c_idx]
    i_dry[crop] = dry["soil"][0] + parcel_soil[r_idx, c_idx]

    bare = cover == SOIL
    g_max[bare], g_amp[bare] = 0.12, 0.12  # weeds in the rainy season
    i_dry[bare] = dry["soil"][0] + pick(u_dry[bare], dry["soil"][1])
    wet = cover == WATER
    i_dry[wet] = dry["water"][0] + pick(u_dry[wet], dry["water"][1])

    # Settlements: built fraction around the locality's target, parks, gardens.
    settled = settlement > 0
    imp = np.zeros(shape, np.float32)
    hood = smooth_noise(rng, shape, 250 / px)
    grain = rng.standard_normal(shape, dtype=np.float32)
    imp[settled] = settlement[settled] + texture * (0.7 * hood[settled] + 0.7 * grain[settled])
    park = smooth_noise(rng, shape, 200 / px)
    if settled.any():
        park_cut = np.quantile(park[settled], 1.0 - park_fraction)
        imp[settled & (park >= park_cut)] *= 0.15
    np.clip(imp, 0.0, 0.97, out=imp)
    yard_soil = settled & (u_dry < 0.3)
    garden = settled & ~yard_soil
    cover[garden], cover[yard_soil] = VEGETATION, SOIL
    g_max[garden], g_amp[garden] = 0.60, 0.30
    g_max[yard_soil], g_amp[yard_soil] = 0.10, 0.10
    i_dry[garden] = dry["npv"][0] + pick(u_dry[garden], dry["npv"][1])
    i_dry[yard_soil] = dry["soil"][0] + pick(u_dry[yard_soil], dry["soil"][1])
    i_imp = pick(uniform(0.7 * smooth_noise(rng, shape, 120 / px) + 0.7 * rng.standard_normal(shape, dtype=np.float32)), len(em.impervious))
    crop_calendar = cover == CROPLAND
    return Landscape(imp, cover, i_imp, i_green, i_dry, g_max, g_amp, crop_calendar)


def grow(land: Landscape, where: np.ndarray, rng: np.random.Generator, em: Endmembers, low: float, high: float) -> Landscape:
    """Build over the pixels `where` (bool, rows x cols), except water: new housing
    estates with an impervious fraction in [low, high], new (brighter) roofs and bare
    ground between them. Returns a new Landscape; `land` is unchanged."""
    shape = where.shape
    u = uniform(smooth_noise(rng, shape, 150 / 30.0))
    roof = uniform(rng.standard_normal(shape, dtype=np.float32))
    built = where & (land.cover != WATER)
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
