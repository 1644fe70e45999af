"""What the `synth` stage reads from the config, checked once at its entry (SynthSettings).

Every step of the stage (stage.py) takes these settings, never the config: a benchmark
or a test can call a step with settings of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyproj import CRS

from urbanmap.census.labels import CensusSettings
from urbanmap.compute.executor import ComputeSettings
from urbanmap.core import paths
from urbanmap.core.errors import InputError
from urbanmap.core.periods import Period
from urbanmap.imagery.synth import schedule
from urbanmap.imagery.synth.landcover import AridSoil, OpenLand, Sprawl


@dataclass(frozen=True)
class FootprintSpec:
    """One WRS-2 footprint of `synth.footprints` (see schedule.Footprint.crossing).

    Attributes:
        path, row: its WRS-2 path and row.
        side: the side of the region it covers, "east" or "west".
        edge: where its long edge crosses the region's centre line, as a fraction of the
            region's width from the west.
    """

    path: int
    row: int
    side: str
    edge: float


@dataclass(frozen=True)
class CloudSettings:
    """The sky of the scenes (`synth.clouds`).

    Attributes:
        wet_months: months (1-12) of the rainy season, whose scenes are cloudier.
        dry_cover, wet_cover: (low, high) of the share of a scene's valid pixels under
            cloud, drawn uniformly per scene, outside and in the rainy season.
        scales_m: correlation lengths (m) of the cloud field's octaves.
        dilate_px: width of the dilated-cloud ring, scene pixels.
        height_m: (low, high) of the cloud height (m), which sets the shadow's offset.
        cirrus: (low, high) of the share of valid pixels under cirrus (Landsat 8-9 only).
    """

    wet_months: tuple[int, ...]
    dry_cover: tuple[float, float]
    wet_cover: tuple[float, float]
    scales_m: tuple[float, ...]
    dilate_px: int
    height_m: tuple[float, float]
    cirrus: tuple[float, float]

    @classmethod
    def from_config(cls, clouds: Any) -> CloudSettings:
        """Read the `synth.clouds` section."""
        def pair(values: Any) -> tuple[float, float]:
            low, high = (float(v) for v in values)
            return low, high

        return cls(
            wet_months=tuple(int(m) for m in clouds.wet_months), dry_cover=pair(clouds.dry_cover),
            wet_cover=pair(clouds.wet_cover), scales_m=tuple(float(v) for v in clouds.scales_m),
            dilate_px=int(clouds.dilate_px), height_m=pair(clouds.height_m), cirrus=pair(clouds.cirrus),
        )


@dataclass(frozen=True)
class RealismSettings:
    """Where the census and the image disagree (`synth.realism`).

    Attributes:
        open_land: unbuilt patches of the urban localities (landcover.OpenLand).
        dense_rural: inhabitants per km² from which a rural locality is built like an
            urban one, or None (landcover.settlement_targets).
        arid_soil: bare soils drawn from the spectra nearest the built ones
            (landcover.AridSoil).
        vintage: the year the locality polygons were drawn, or None; growth_rate: the
            urban area's growth per year before it (zones.unbuilt_share).
        sprawl: built-up land outside the localities (landcover.Sprawl); sprawl_m: the
            width (m) of the zone around the urban area where it lies.
    """

    open_land: OpenLand
    dense_rural: float | None
    arid_soil: AridSoil
    vintage: int | None
    growth_rate: float
    sprawl: Sprawl
    sprawl_m: float

    @classmethod
    def from_config(cls, realism: Any) -> RealismSettings:
        """Read the `synth.realism` section; InputError naming the key that is wrong."""
        o, a, v, sp = realism.open_land, realism.arid_soil, realism.vintage, realism.sprawl
        uses = tuple(float(u) for u in o.uses)
        if len(uses) != 3 or min(uses) < 0 or sum(uses) <= 0:
            raise InputError(f"synth.realism.open_land.uses: needs three shares >= 0 (parks, vacant lots, quarries), "
                             f"got {list(uses)}")
        shares = {"open_land.share": o.share, "arid_soil.share": a.share, "arid_soil.pool": a.pool,
                  "sprawl.share": sp.share}
        for name, value in shares.items():
            if not 0 <= float(value) <= 1:
                raise InputError(f"synth.realism.{name}: must be a share between 0 and 1, got {value}")
        return cls(
            open_land=OpenLand(float(o.share), float(o.patch_m), (uses[0], uses[1], uses[2])),
            dense_rural=None if realism.dense_rural is None else float(realism.dense_rural),
            arid_soil=AridSoil(float(a.share), float(a.patch_m), float(a.pool)),
            vintage=None if v.year is None else int(v.year), growth_rate=float(v.growth_rate),
            sprawl=Sprawl(float(sp.share), float(sp.impervious), float(sp.cluster_m)), sprawl_m=float(sp.width_m),
        )


@dataclass(frozen=True)
class SynthSettings:
    """The `synth` stage's settings: the `synth` config group, checked, with the year,
    the seed, the compute settings and every path the stage reads or writes.

    Attributes:
        period: the period synthesised (period=, else periods.census); year: the year it
            starts in (its sensors, the scenes' random streams).
        census_period: periods.census (the landscape before any growth).
        seed: the seed of every random stream.
        region: data.name (names the STAC catalog).
        sensors: the sensors acquiring in `year` (synth.sensors).
        pixel: the scenes' pixel size, metres (synth.pixel_size, > 0).
        crs: the scenes' CRS (synth.crs), or None: the UTM zone of the region's centre.
        margin: metres around the region that the scenes cover (synth.margin).
        data_pixel_size: data.pixel_size, metres; patch_size: data.patch_size or None
            (the region's pixel lattice).
        threads: GDAL's threads when writing COGs (compute.threads; 2 without it).
        compute: the compute settings (tile size, local or Dask).
        spectra: the measured spectra CSV (synth.spectra).
        endmembers: end-member group -> class prefixes (synth.endmembers).
        max_reflectance: spectra with a band above it are left out (synth.max_reflectance).
        footprints: the WRS-2 footprints (synth.footprints); bearing: their swath edges'
            angle, degrees clockwise from grid north (synth.bearing).
        scenes_per_footprint: acquisitions per footprint in the period: synth's per year
            times the period's months / 12, rounded, at least 1 (a semester: half).
        slc_off: whether Landsat 7 scenes after 2003-05-31 have SLC-off gaps.
        clouds: the sky (synth.clouds).
        noise: sensor -> (6,) standard deviation of the sensor noise (reflectance),
            "default" for the others (synth.noise).
        peak_doy, crop_peak_doy, crop_days: the seasons (synth.phenology), days of year.
        landscape: keyword arguments of landcover.build_landscape (synth.landcover, the
            texture and parks of synth.urban, the open land, arid soils and sprawl of
            synth.realism).
        settlement: keyword arguments of landcover.settlement_targets (synth.urban and
            synth.realism.dense_rural).
        realism: synth.realism (RealismSettings).
        urban_min_pixel, urban_min_cell: impervious fraction that makes a pixel urban,
            share of urban pixels that makes a cell urban (synth.urban_min).
        growth_per_year, growth_min_neighbours, growth_impervious: later periods' fringe
            growth (synth.growth): share of fringe cells built over per year, urban
            neighbours a fringe cell needs, (low, high) impervious fraction of new estates.
        census: the census polygons that place the settlements (data.census).
        grid: the region's grid.parquet.
        scenes_dir: `<region_dir>/scenes/<year>/` (the products and catalog.json).
        truth_dir: `<region_dir>/truth/<year>/`; truth_cells, truth_landcover,
            truth_reflectance, truth_clear, summary: the files in it.
    """

    period: Period
    year: int
    census_period: Period
    seed: int
    region: str
    sensors: list[str]
    pixel: float
    crs: CRS | None
    margin: float
    data_pixel_size: float
    patch_size: int | None
    threads: int
    compute: ComputeSettings
    spectra: str
    endmembers: dict[str, list[str]]
    max_reflectance: float
    footprints: tuple[FootprintSpec, ...]
    bearing: float
    scenes_per_footprint: int
    slc_off: bool
    clouds: CloudSettings
    noise: dict[str, tuple[float, ...]]
    peak_doy: float
    crop_peak_doy: float
    crop_days: float
    landscape: dict[str, Any]
    settlement: dict[str, Any]
    realism: RealismSettings
    urban_min_pixel: float
    urban_min_cell: float
    growth_per_year: float
    growth_min_neighbours: int
    growth_impervious: tuple[float, ...]
    census: CensusSettings
    grid: Path
    scenes_dir: Path
    truth_dir: Path
    truth_cells: Path
    truth_landcover: Path
    truth_reflectance: Path
    truth_clear: Path
    summary: Path

    @property
    def later(self) -> bool:
        """Whether the period is after the census period (the fringe grows, two passes)."""
        return self.period.start > self.census_period.end

    @property
    def growth_share(self) -> float:
        """Share of the fringe cells built over by the period: growth_per_year times the
        years from the census period's middle to the period's, within [0, 1]."""
        years = self.period.middle - self.census_period.middle
        return float(min(max(self.growth_per_year * years, 0.0), 1.0)) if self.later else 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> SynthSettings:
        """Read the settings; InputError naming the config key that is wrong."""
        s = cfg.synth
        period = paths.stage_period(cfg)
        year = period.year
        compute = ComputeSettings.from_config(cfg)
        sensors = schedule.sensors_for_year(year, s.sensors)
        pixel = float(s.pixel_size)
        if pixel <= 0:
            raise InputError(f"synth.pixel_size: must be positive, got {pixel}")
        lc, u, ph, g, patch = s.landcover, s.urban, s.phenology, s.growth, cfg.data.get("patch_size")
        realism = RealismSettings.from_config(s.realism)
        return cls(
            period=period, year=year, census_period=paths.census_period(cfg), seed=int(cfg.seed),
            region=str(cfg.data.name), sensors=sensors, pixel=pixel,
            crs=CRS.from_user_input(s.crs) if s.crs else None, margin=float(s.margin),
            data_pixel_size=float(cfg.data.pixel_size), patch_size=int(patch) if patch else None,
            threads=int(cfg.compute.get("threads", 2) or 2) if "compute" in cfg else 2, compute=compute,
            spectra=str(s.spectra), endmembers={k: list(v) for k, v in s.endmembers.items()},
            max_reflectance=float(s.max_reflectance), footprints=_footprints(s.footprints), bearing=float(s.bearing),
            scenes_per_footprint=schedule.per_period(int(s.scenes_per_footprint), period), slc_off=bool(s.slc_off),
            clouds=CloudSettings.from_config(s.clouds),
            noise={str(k): tuple(float(v) for v in values) for k, values in s.noise.items()},
            peak_doy=float(ph.peak_doy), crop_peak_doy=float(ph.crop_peak_doy), crop_days=float(ph.crop_days),
            landscape=dict(water=float(lc.water), soil=float(lc.soil), vegetation=float(lc.vegetation),
                           terrain_m=float(lc.terrain_m), patch_m=float(lc.patch_m), parcel_m=[float(v) for v in lc.parcel_m],
                           fallow=float(lc.fallow), texture=float(u.texture), park_fraction=float(u.parks),
                           open_land=realism.open_land, arid_soil=realism.arid_soil, sprawl_built=realism.sprawl),
            settlement=dict(at_density=float(u.at_density), value=float(u.value), per_decade=float(u.per_decade),
                            low=float(u.low), high=float(u.high), rural_factor=float(u.rural_factor),
                            dense_rural=realism.dense_rural),
            realism=realism,
            urban_min_pixel=float(s.urban_min.pixel), urban_min_cell=float(s.urban_min.cell),
            growth_per_year=_growth_per_year(g), growth_min_neighbours=int(g.min_neighbours),
            growth_impervious=tuple(float(v) for v in g.impervious), census=CensusSettings.from_config(cfg.data.census),
            grid=paths.grid(cfg),
            scenes_dir=paths.scenes_dir(cfg, period), truth_dir=paths.truth_dir(cfg, period),
            truth_cells=paths.truth_cells(cfg, period), truth_landcover=paths.truth_landcover(cfg, period),
            truth_reflectance=paths.truth_reflectance(cfg, period), truth_clear=paths.truth_clear_count(cfg, period),
            summary=paths.synth_summary(cfg, period),
        )


def _growth_per_year(g: Any) -> float:
    """synth.growth.share_per_year, checked; the `share` of before periods (a share by
    years.target) is refused with how to convert it."""
    if g.get("share_per_year") is None:
        raise InputError("synth.growth.share_per_year: missing (synth.growth.share, a share by years.target, is "
                         "replaced by a share per year from the census period: share / (target - train))")
    value = float(g.share_per_year)
    if not 0 <= value <= 1:
        raise InputError(f"synth.growth.share_per_year: must be within [0, 1], got {value}")
    return value


def _footprints(footprints: Any) -> tuple[FootprintSpec, ...]:
    """`synth.footprints`, checked: InputError naming the footprint that is incomplete."""
    out = []
    for i, f in enumerate(footprints):
        try:
            out.append(FootprintSpec(int(f.path), int(f.row), str(f.side), float(f.edge)))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"synth.footprints[{i}]: needs path, row, side and edge ({exc})") from exc
    if not out:
        raise InputError("synth.footprints: at least one footprint is needed")
    return tuple(out)
