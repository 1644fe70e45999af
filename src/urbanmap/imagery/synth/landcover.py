"""The cloud-free truth: land cover and sub-pixel composition of every pixel, and its
reflectance on any date.

The landscape lives on the "world" raster: the scenes' 30 m UTM pixel grid over the
region plus a margin (every scene file is a window of it). Every value is a pure
function of (seed, global pixel coordinates) (fields.py), so any window of the world can
be built on its own (the stage builds it tile by tile). Each pixel holds:

- `impervious`: fraction of built surface (0..1), from the census: inside localities it
  rises with the locality's population density, with neighbourhood texture and parks;
  where census and image disagree (synth.realism), urban localities hold unbuilt open
  land (`OpenLand`), dense rural ones are built like urban ones (`settlement_targets`),
  the fringe drawn after the year is unbuilt (`young`) and a band around the urban area
  is partly built (`Sprawl`);
- `cover`: the class of its pervious part: vegetation (forest, shrub, grass), cropland
  (rectangular parcels, some fallow), bare soil or water, laid out by smoothed random
  fields (water in the lowest ground, bare soil next, natural vegetation on the highest
  ground, cropland in between; patches of bare soil take the soils nearest the built
  spectra, `AridSoil`); settlements' pervious part is gardens or bare ground;
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
                       value: float, per_decade: float, low: float, high: float, rural_factor: float,
                       dense_rural: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target impervious fraction of each census locality, in painting order.

    A locality of density d (inhabitants per km² of its polygon) gets
    ``clip(value + per_decade * log10(d / at_density), low, high)``, times
    `rural_factor` for rural localities less dense than `dense_rural` (all of them when
    it is None): a dense rural locality is built up like an urban one, though the census
    labels it rural. Unclassified localities are ignored and a missing population takes
    the median density of its kind (over the localities given: the client computes this
    once for the whole region). Larger polygons come first, so that smaller ones are
    painted over them (`settlement_rasters`).

    Args:
        polygons: shapely polygons (n,) in the scene CRS (metres).
        population: float (n,), NaN where unknown.
        kind: str (n,) "urban" / "rural" / "unclassified" (labels.read_census).
        dense_rural: inhabitants per km² from which a rural locality is built like an
            urban one, or None.
    Returns:
        (polygons (m,) object array, targets float32 (m,), urban bool (m,): the census
        classes the locality urban), m <= n.
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
    sparse_rural = (kind == "rural") & ~(density >= (np.inf if dense_rural is None else float(dense_rural)))
    target = np.where(sparse_rural, target * rural_factor, target).astype(np.float32)
    order = np.argsort(-area_km2, kind="stable")
    return polygons[order], target[order], (kind == "urban")[order]


def settlement_rasters(polygons: Sequence[shapely.Geometry] | np.ndarray, targets: npt.ArrayLike, urban: npt.ArrayLike,
                       transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Target impervious fraction and census class of each pixel of a window:
    `polygons` painted in order (later over earlier) by pixel centre (GDAL's rasterizer,
    on the window's own transform).

    Returns:
        (float32 (rows, cols) target, 0 outside localities; bool (rows, cols): inside an
        urban locality).
    """
    if len(polygons) == 0:
        return np.zeros(shape, np.float32), np.zeros(shape, bool)
    ids = rasterio.features.rasterize(
        ((g, int(i) + 1) for i, g in enumerate(polygons)), out_shape=shape, transform=transform, fill=0, dtype="int32"
    )
    target = np.concatenate([[np.float32(0)], np.asarray(targets, np.float32)])[ids]
    return target, np.concatenate([[False], np.asarray(urban, bool)])[ids]


def polygon_mask(polygons: Sequence[shapely.Geometry] | np.ndarray, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Bool (rows, cols): the window's pixels whose centre lies in one of `polygons`."""
    if len(polygons) == 0:
        return np.zeros(shape, bool)
    return rasterio.features.rasterize(((g, 1) for g in polygons), out_shape=shape, transform=transform, fill=0,
                                       dtype="uint8").astype(bool)


#: Sub-streams of the landscape's key (seed, tag): one per random field or draw.
(_TERRAIN, _PATCHES, _GREEN, _GREEN_PX, _DRY, _DRY_PX, _SHIFT, _FALLOW, _CROP_GREEN, _CROP_SOIL, _CROP_PEAK,
 _HOOD, _GRAIN, _PARK, _IMP, _IMP_PX, _GROW, _ROOF, _OPEN, _OPEN_USE, _ARID, _SPRAWL) = range(1, 23)
#: Parcels per side of a chunk of per-parcel draws.
_PARCEL_CHUNK = 64


@dataclass(frozen=True)
class OpenLand:
    """Large unbuilt patches inside urban localities: parks, vacant lots, quarries
    (synth.realism.open_land). The census counts them as urban land; the image sees
    grass, trees or bare soil.

    Attributes:
        share: share (about) of the urban localities' land left unbuilt (0: none).
        patch_m: correlation length (m) of the patches.
        uses: shares of the open land that are parks (irrigated vegetation), vacant lots
            (bare soil with weeds) and quarries (the brightest soils, no vegetation).
    """

    share: float = 0.0
    patch_m: float = 800.0
    uses: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)


@dataclass(frozen=True)
class AridSoil:
    """Bare soils spectrally close to built surfaces (synth.realism.arid_soil).

    Attributes:
        share: share (about) of the bare-soil land whose spectra are drawn from the pool.
        patch_m: correlation length (m) of those areas.
        pool: share of the soil spectra, nearest the impervious ones, that form the pool
            (Endmembers.soil_near_built).
    """

    share: float = 0.0
    patch_m: float = 1500.0
    pool: float = 0.025


@dataclass(frozen=True)
class Sprawl:
    """Built-up land just outside the urban localities (synth.realism.sprawl): the
    pixels of the zone around them (`build_landscape`'s `sprawl` mask) that no locality
    covers are built over in clusters.

    Attributes:
        share: share (about) of the zone's pixels built over (0: none).
        impervious: their target impervious fraction (texture, yards and gardens as in
            the localities).
        cluster_m: correlation length (m) of the clusters.
    """

    share: float = 0.0
    impervious: float = 0.55
    cluster_m: float = 150.0


def build_landscape(
    key: Sequence[int], win: Win, settlement: np.ndarray, em: Endmembers, pixel_size: float, *,
    water: float, soil: float, vegetation: float, terrain_m: float, patch_m: float,
    parcel_m: Sequence[float], fallow: float, texture: float, park_fraction: float,
    urban: np.ndarray | None = None, young: np.ndarray | None = None, sprawl: np.ndarray | None = None,
    open_land: OpenLand = OpenLand(), arid_soil: AridSoil = AridSoil(), sprawl_built: Sprawl = Sprawl(),
) -> Landscape:
    """The base landscape of a year over a window of the global pixel grid.

    Every value is a pure function of (key, global pixel coordinates), so windows can be
    computed independently and agree where they overlap.

    Args:
        key: integers (seed, stream tag): every year shares the same base landscape.
        win: the window (global pixel indices, see fields.Win).
        settlement: float32 (win.h, win.w) target impervious fraction (settlement_rasters).
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
        urban: bool (win.h, win.w), pixels of urban localities (where `open_land` lies);
            None: none.
        young: bool (win.h, win.w), pixels of the localities not yet built in this year
            (zones.young_fringe): left as they were before settlement; None: none.
        sprawl: bool (win.h, win.w), the zone around the urban localities where
            `sprawl_built` builds outside every locality; None: none.
        open_land, arid_soil, sprawl_built: where the census and the image disagree
            (their defaults: not at all).
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
    _arid(land, em, key, win, px, u_dry, arid_soil)
    wet = cover == WATER
    land.i_dry[wet] = dry["water"][0] + pick(u_dry[wet], dry["water"][1])
    urban = np.zeros(shape, bool) if urban is None else urban
    if young is not None:  # the locality's polygon was drawn after this year: not built yet
        settlement, urban = np.where(young, np.float32(0), settlement), urban & ~young
    if sprawl is not None:
        settlement = _sprawl(key, win, px, settlement, sprawl & (cover != WATER), sprawl_built)
    _settle(land, em, key, win, px, settlement, u_dry, texture, park_fraction)
    _open_land(land, em, key, win, px, settlement > 0, urban, u_dry, open_land)
    land.crop[...] = cover == CROPLAND
    return land


def _arid(land: Landscape, em: Endmembers, key: Sequence[int], win: Win, px: float, u_dry: np.ndarray,
          arid: AridSoil) -> None:
    """Arid soils (in place): patches of the bare-soil land take their spectra from the
    soils nearest the built surfaces, with fewer weeds."""
    bare = land.cover == SOIL
    if arid.share <= 0 or not bare.any():
        return
    where = bare & (_field(key, win, px, _ARID, arid.patch_m) >= threshold(arid.share))
    pool = em.soil_near_built(arid.pool)
    land.i_dry[where] = em.dry_offsets["soil"][0] + pool[pick(u_dry[where], len(pool))]
    land.g_max[where], land.g_amp[where] = 0.05, 0.05


def _sprawl(key: Sequence[int], win: Win, px: float, settlement: np.ndarray, zone: np.ndarray,
            sprawl: Sprawl) -> np.ndarray:
    """The settlement targets with clusters of the sprawl zone outside every locality
    built over (a new array)."""
    zone = zone & (settlement <= 0)
    if sprawl.share <= 0 or not zone.any():
        return settlement
    built = zone & (_field(key, win, px, _SPRAWL, sprawl.cluster_m) >= threshold(sprawl.share))
    return np.where(built, np.float32(sprawl.impervious), settlement)


def _open_land(land: Landscape, em: Endmembers, key: Sequence[int], win: Win, px: float, settled: np.ndarray,
               urban: np.ndarray, u_dry: np.ndarray, open_land: OpenLand) -> None:
    """Open land (in place): patches of the urban localities left unbuilt, each a park,
    a vacant lot or a quarry."""
    urban = settled & urban
    if open_land.share <= 0 or not urban.any():
        return
    where = urban & (_field(key, win, px, _OPEN, open_land.patch_m) >= threshold(open_land.share))
    if not where.any():
        return
    land.impervious[where] *= 0.05  # paths, kiosks, a shed
    use = uniform(_field(key, win, px, _OPEN_USE, open_land.patch_m))  # one use per patch, about
    park_cut, lot_cut = np.cumsum(open_land.uses[:2]) / max(float(np.sum(open_land.uses)), 1e-9)
    park, lot = where & (use < park_cut), where & (use >= park_cut) & (use < lot_cut)
    quarry = where & (use >= lot_cut)
    dry = em.dry_offsets
    start, n = dry["soil"]
    land.cover[park], land.cover[lot | quarry] = VEGETATION, SOIL
    land.g_max[park], land.g_amp[park] = 0.75, 0.30  # irrigated lawns and trees
    land.i_dry[park] = dry["npv"][0] + pick(u_dry[park], dry["npv"][1])
    land.g_max[lot], land.g_amp[lot] = 0.15, 0.15  # weeds in the rainy season
    land.i_dry[lot] = start + pick(u_dry[lot], n)
    land.g_max[quarry], land.g_amp[quarry] = 0.0, 0.0
    bright = max(n // 10, 1)  # the brightest tenth of the soil table (sorted by brightness)
    land.i_dry[quarry] = start + n - 1 - pick(u_dry[quarry], bright)


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
