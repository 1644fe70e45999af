"""The `sdg` stage: SDG indicator 11.3.1 per municipality and for the region.

Indicator 11.3.1 is the ratio of land consumption rate to population growth rate
(UN-Habitat, SDG indicator metadata 11.3.1), between two periods t1 and t2 of
periods.list (sdg.periods; null: periods.census and periods.target), y = the years
between the periods' middles (2010 -> 2019H2: 9.25):

- LCR = ln(Urb_t2 / Urb_t1) / y (urban area, km²);
- PGR = ln(Pop_t2 / Pop_t1) / y;
- LCRPGR = LCR / PGR;
- and, as the metadata's companion figures, the urban area per capita (m² per person)
  at both periods.

Undefined cases are flagged, never divided blindly (`flags`, ";"-separated; the
affected figures are empty):

- `no_urban_t1` / `no_urban_t2`: no urban area at a year (LCR undefined);
- `no_population`: no population at a year (PGR undefined);
- `population_constant` (PGR = 0) and `population_decline` (PGR < 0): LCRPGR is not
  computed (a ratio with a zero or negative denominator says nothing about efficiency);
- `urban_decline`: less urban area at t2 than at t1 (LCR < 0; computed, but most often a
  map error: see change's urban_lost cells);
- `partial`: the municipality's cells cover less than sdg.min_coverage of its area (the
  region's window cuts it): its figures are for the part inside the region;
- `few_sampled`: fewer than sdg.min_sampled of the period's reference sample in it: no
  interval;
- `nodata`: some of its cells have no map class at a period (no imagery): not counted.

Inputs: predictions/<period>.parquet (each period's class per cell; every period for
municipal_areas.csv), validation/periods/ (each period's reference sample and strata, from `validate
periods`), labels.parquet (census population per cell) and data.municipalities; a cell
belongs to the municipality holding its centre (change.assign_municipalities, with
data.municipality_id / data.municipality_name).

*Error adjustment and uncertainty.* Each period's urban area, per municipality and for
the region, is error-adjusted from that period's reference sample by the difference
estimator (validation.estimate.domain_areas: the mapped area plus the sample's estimate
of the domain's reference-minus-map area), with its standard error; for the region and
map strata it is Olofsson et al.'s (2014) estimate of `validate periods`. LCR and LCRPGR
of the adjusted areas get 95% intervals by the delta method (not a bootstrap: the
estimators are smooth and the samples hundreds of cells): the two periods' samples are
treated as independent, so var(ln A2 - ln A1) = (se1 / A1)² + (se2 / A2)² (conservative
when they share cells, whose errors are then positively correlated), LCR's SE is its root
over y, and PGR is taken as exact (census counts), so LCRPGR's SE is LCR's over |PGR|. A
municipality with fewer than sdg.min_sampled sampled cells in a period has too few for
an interval (flag `few_sampled`: its adjusted figures are given, their intervals empty).

*Population.* With sdg.population.table null: the census population allocated to
cells by `labels` (data.census.population_column; INEGI's `pob` is the 2020 census),
summed per municipality, counted in sdg.population.census_year and carried to t1 and
t2 with a continuous growth rate: P(t) = P_c exp(g (t - census_year)) (default g =
0.0115 per year, Mexico's 2010-2020 intercensal rate). The same rate everywhere makes
PGR = g in every municipality: LCRPGR then ranks municipalities by land consumption
only. With a table (sdg.population.table; for Mexican regions INEGI's 2010 and 2020
censuses and the 2015 intercensal survey, `inegi_municipal_population.csv`, the default),
each municipality's own figures: long (id, year, population) or wide (the key, then
pob_<YYYY> columns). A table's year Y is taken at Y's middle, like a period's, and each
period's population is interpolated log-linearly between the nearest two dates that
bracket its middle (P(t) = P_a (P_b / P_a)^((t - t_a) / (t_b - t_a))), or extrapolated at
the rate of the nearest two dates outside them (flag `population_extrapolated`). PGR
then differs by municipality. A municipality created after the table's first date
(split off another; 13 in Mexico since 2010, none in the default window) has no
population before it: flag `created_after_<year>`, PGR undefined (`no_population`).

Outputs under `<region_dir>/sdg/`: `sdg_11_3_1.csv` (one row per municipality, then
the region: mapped and error-adjusted areas with 95% intervals and sampled cells per
period, population, the mapped and the adjusted indicators), `municipal_areas.csv`
(every period's urban area per municipality and for the region, mapped and
error-adjusted with its 95% interval: the area series per municipality), `sdg_11_3_1.png` (chart) and `sdg_11_3_1.json` (the region's row, for
`dvc metrics`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from omegaconf import DictConfig
from pyproj import CRS

from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.io import require_file
from urbanmap.core.periods import Period, PeriodSettings
from urbanmap.indicators.chart import sdg_chart
from urbanmap.mapping.change import assign_municipalities
from urbanmap.validation import estimate
from urbanmap.validation.estimate import Z95
from urbanmap.validation.periods import SAMPLES_FILE, STRATA_FILE

REGION = "region"


@dataclass(frozen=True)
class PopulationSettings:
    """Where each municipality's population at t1 and t2 comes from (sdg.population).

    Attributes:
        table: a CSV with columns id, year, population (persons) holding both years for
            every municipality, or None: the census population of labels.parquet carried
            to each year at `growth_rate`.
        census_year: the year the census population was counted (a calendar year).
        growth_rate: continuous growth rate per year, P(t) = P(census_year) exp(rate (t - census_year)).
    """

    table: str | None
    census_year: int
    growth_rate: float

    @classmethod
    def from_config(cls, section: Any) -> PopulationSettings:
        """Read `section`, the sdg.population config node; InputError naming the key that is wrong."""
        values = []
        for key, kind in (("census_year", int), ("growth_rate", float)):
            try:
                values.append(kind(section.get(key)))
            except (TypeError, ValueError):
                raise InputError(f"sdg.population.{key}: expected a number, got {section.get(key)!r}") from None
        return cls(str(section.table) if section.get("table") is not None else None, int(values[0]), float(values[1]))


@dataclass(frozen=True)
class SdgSettings:
    """What the `sdg` stage reads from the config, checked.

    Attributes:
        years: (t1, t2), the labels of sdg.periods (default: periods.census, periods.target).
        times: the two periods' middles, decimal years (Period.middle): y = t2 - t1.
        municipalities: the municipalities' vector file, any CRS (data.municipalities).
        id_column, name_column: its key and name columns (data.municipality_id, data.municipality_name).
        min_coverage: share 0..1 of a municipality's area its cells must cover, else it
            is flagged `partial` (sdg.min_coverage).
        min_sampled: sampled cells a municipality needs in a period for an interval
            (sdg.min_sampled), else it is flagged `few_sampled`.
        population: the population source (sdg.population).
        every_period: (label, predictions/<label>.parquet) of every period of periods.list.
        labels: labels.parquet.
        samples, strata: validation/periods/samples.csv and strata.csv (validate periods).
        out_dir: the sdg/ folder; table_out, chart_out, summary_out: sdg_11_3_1.csv, .png and
            .json; series_out: municipal_areas.csv.
    """

    years: tuple[str, str]
    times: tuple[float, float]
    municipalities: str
    id_column: str
    name_column: str
    min_coverage: float
    min_sampled: int
    population: PopulationSettings
    every_period: tuple[tuple[str, Path], ...]
    labels: Path
    samples: Path
    strata: Path
    out_dir: Path
    table_out: Path
    chart_out: Path
    summary_out: Path
    series_out: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SdgSettings:
        """Read `periods`, `sdg` and the data section; InputError naming the config key that is wrong."""
        if not cfg.data.get("municipalities"):
            raise InputError("data.municipalities: null; the sdg indicator is computed per municipality")
        numbers = {}
        for key, kind in (("min_coverage", float), ("min_sampled", int)):
            try:
                numbers[key] = kind(cfg.sdg.get(key))
            except (TypeError, ValueError):
                raise InputError(f"sdg.{key}: expected a number, got {cfg.sdg.get(key)!r}") from None
        settings = PeriodSettings.from_config(cfg)
        t1, t2 = _two_periods(settings, cfg.sdg.get("periods"))
        return cls(
            years=(t1.label, t2.label), times=(t1.middle, t2.middle), municipalities=str(cfg.data.municipalities),
            id_column=str(cfg.data.municipality_id), name_column=str(cfg.data.municipality_name),
            min_coverage=float(numbers["min_coverage"]), min_sampled=int(numbers["min_sampled"]),
            population=PopulationSettings.from_config(cfg.sdg.population),
            every_period=tuple((p.label, paths.predictions(cfg, p)) for p in settings.periods), labels=paths.labels(cfg),
            samples=paths.validation_periods_dir(cfg) / SAMPLES_FILE,
            strata=paths.validation_periods_dir(cfg) / STRATA_FILE, out_dir=paths.sdg_dir(cfg),
            table_out=paths.sdg_table(cfg), chart_out=paths.sdg_chart(cfg), summary_out=paths.sdg_summary(cfg),
            series_out=paths.sdg_area_series(cfg),
        )


def _two_periods(settings: PeriodSettings, chosen: Any) -> tuple[Period, Period]:
    """sdg.periods: two labels of periods.list, the earlier first; null: (census, target)."""
    if chosen is None:
        return settings.census, settings.target
    labels = [str(c) for c in chosen] if not isinstance(chosen, str) else []
    by_label = {p.label: p for p in settings.periods}
    if len(labels) != 2 or labels[0] == labels[1]:
        raise InputError(f"sdg.periods: expected two periods of periods.list, got {chosen!r}")
    missing = [label for label in labels if label not in by_label]
    if missing:
        raise InputError(f"sdg.periods: period {missing[0]} is not in periods.list ({', '.join(by_label)})")
    t1, t2 = by_label[labels[0]], by_label[labels[1]]
    if not t1.middle < t2.middle:
        raise InputError(f"sdg.periods: {t1.label} is not before {t2.label}")
    return t1, t2


def indicator(urban_t1: ArrayLike, urban_t2: ArrayLike, pop_t1: ArrayLike, pop_t2: ArrayLike, years: float) -> pd.DataFrame:
    """LCR, PGR and LCRPGR with flags, element-wise.

    Args:
        urban_t1, urban_t2: (n,) urban area at t1 and t2 (any one unit), >= 0.
        pop_t1, pop_t2: (n,) population at t1 and t2, >= 0.
        years: t2 - t1 (> 0).
    Returns:
        frame (n rows): lcr, pgr, lcrpgr (NaN where undefined) and flags (str, ";"-joined:
        no_urban_t1, no_urban_t2, no_population, population_constant, population_decline,
        and urban_decline: less urban area at t2, LCR < 0, kept).
    """
    if not years > 0:
        raise InputError(f"years: t2 - t1 = {years} is not positive")
    u1, u2 = np.asarray(urban_t1, float), np.asarray(urban_t2, float)
    p1, p2 = np.asarray(pop_t1, float), np.asarray(pop_t2, float)
    urban_ok = (u1 > 0) & (u2 > 0)
    pop_ok = (p1 > 0) & (p2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lcr = np.where(urban_ok, np.log(u2 / u1) / years, np.nan)
        pgr = np.where(pop_ok, np.log(p2 / p1) / years, np.nan)
        ratio_ok = urban_ok & pop_ok & (pgr > 0)
        lcrpgr = np.where(ratio_ok, lcr / pgr, np.nan)
    checks = {
        "no_urban_t1": u1 <= 0, "no_urban_t2": u2 <= 0, "no_population": ~pop_ok,
        "population_constant": pop_ok & (pgr == 0), "population_decline": pop_ok & (pgr < 0),
        "urban_decline": urban_ok & (u2 < u1),
    }
    flags = np.full(u1.size, "", object)
    for name, hit in checks.items():
        flags = np.where(hit, np.where(flags == "", name, flags + ";" + name), flags)
    return pd.DataFrame({"lcr": lcr, "pgr": pgr, "lcrpgr": lcrpgr, "flags": flags})


def project_population(population: ArrayLike, census_year: int, rate: float, year: float) -> np.ndarray:
    """Census population carried to `year` (a whole or decimal year): P exp(rate (year -
    census_year))."""
    return np.asarray(population, float) * np.exp(float(rate) * (float(year) - int(census_year)))


def table(per_muni: pd.DataFrame, years: tuple[Any, Any], adjusted: pd.DataFrame, min_coverage: float,
          min_sampled: int, elapsed: float) -> pd.DataFrame:
    """The indicator table: one row per municipality, then the region.

    Args:
        per_muni: one row per municipality: id, name, cells, cells_km2, area_km2 (the
            municipality's own area), nodata_cells, urban_km2_<t> (mapped) and
            population_<t> for both periods.
        adjusted: one row per municipality, then the region: urban_km2_<t> (error-adjusted),
            urban_km2_<t>_se and n_sampled_<t> for both periods (adjusted_areas).
        elapsed: years from t1 to t2.
    Returns:
        id, name, cells, coverage; for each period urban_km2_<t>_mapped, _adjusted,
        _adjusted_ci95 and n_sampled_<t>; population_<t>, urban_m2_per_capita_<t>
        (adjusted); lcr, pgr, lcrpgr (mapped areas); lcr_adjusted, lcrpgr_adjusted with
        their ci95 (delta method, module docstring); flags.
    """
    t1, t2 = years
    region = per_muni.drop(columns=["id", "name"]).sum(numeric_only=True).to_frame().T
    region.insert(0, "id", REGION)
    region.insert(1, "name", REGION)
    rows = pd.concat([per_muni, region], ignore_index=True)
    adjusted = adjusted.reset_index(drop=True)
    out = rows[["id", "name"]].copy()
    out["cells"] = rows["cells"].astype(np.int64)
    out["coverage"] = np.where(rows["id"] == REGION, np.nan, rows["cells_km2"] / rows["area_km2"].where(rows["area_km2"] > 0))
    enough = np.ones(len(rows), bool)
    for t in years:
        enough &= adjusted[f"n_sampled_{t}"].to_numpy() >= min_sampled
    for t in years:
        out[f"urban_km2_{t}_mapped"] = rows[f"urban_km2_{t}"]
        # The difference estimator can fall below 0 in a municipality with few sampled
        # cells (flagged few_sampled); an area is reported as 0 then.
        out[f"urban_km2_{t}_adjusted"] = adjusted[f"urban_km2_{t}"].clip(lower=0.0)
        out[f"urban_km2_{t}_adjusted_ci95"] = np.where(enough, Z95 * adjusted[f"urban_km2_{t}_se"], np.nan)
        out[f"n_sampled_{t}"] = adjusted[f"n_sampled_{t}"].astype(np.int64)
    for t in years:
        out[f"population_{t}"] = rows[f"population_{t}"]
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in years:
            per_capita = out[f"urban_km2_{t}_adjusted"] * 1e6 / out[f"population_{t}"]
            out[f"urban_m2_per_capita_{t}"] = per_capita.where(out[f"population_{t}"] > 0)
    pops = (rows[f"population_{t1}"], rows[f"population_{t2}"])
    mapped = indicator(rows[f"urban_km2_{t1}"], rows[f"urban_km2_{t2}"], *pops, elapsed)
    out = pd.concat([out, mapped], axis=1)
    a1, a2 = out[f"urban_km2_{t1}_adjusted"].to_numpy(float), out[f"urban_km2_{t2}_adjusted"].to_numpy(float)
    fixed = indicator(a1, a2, *pops, elapsed)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.sqrt((adjusted[f"urban_km2_{t1}_se"] / a1) ** 2 + (adjusted[f"urban_km2_{t2}_se"] / a2) ** 2).to_numpy()
        lcr_ci = np.where(enough & (a1 > 0) & (a2 > 0), Z95 * rel / elapsed, np.nan)
        out["lcr_adjusted"], out["lcr_adjusted_ci95"] = fixed["lcr"], lcr_ci
        out["lcrpgr_adjusted"] = fixed["lcrpgr"]
        out["lcrpgr_adjusted_ci95"] = np.where(np.isfinite(fixed["lcrpgr"]), lcr_ci / np.abs(fixed["pgr"]), np.nan)
    extra = [";".join(f for f, hit in (("partial", c < min_coverage), ("nodata", n > 0), ("few_sampled", not e)) if hit)
             for c, n, e in zip(out["coverage"].fillna(1.0), rows["nodata_cells"], enough)]
    out["flags"] = [";".join(f for f in (a, b) if f) for a, b in zip(out["flags"], extra)]
    return out


# --- stage --------------------------------------------------------------------------------


def population(settings: PopulationSettings, labels: pd.DataFrame, key: np.ndarray, ids: pd.Index,
               years: tuple[Any, Any], times: tuple[float, float] | None = None,
               id_column: str = "id") -> tuple[pd.DataFrame, pd.Series]:
    """population_<t1>, population_<t2> (persons) per municipality id (index `ids`), and
    the population flags per id (table_population; none without a table).

    Args:
        settings: the population source (sdg.population).
        labels: labels.parquet's `population` per cell (used without a table).
        key: (n,) the municipality key of each row of `labels`.
        years: the periods' labels (or years); times: their middles, decimal years (None:
            the years' middles).
    """
    times = times if times is not None else (float(years[0]) + 0.5, float(years[1]) + 0.5)
    if settings.table is None:
        census = labels["population"].fillna(0).groupby(key).sum().reindex(ids, fill_value=0.0)
        # The census year is counted at its middle: a period's middle less half a year.
        return pd.DataFrame({f"population_{t}": project_population(census, settings.census_year, settings.growth_rate,
                                                                    when - YEAR_MIDDLE)
                             for t, when in zip(years, times)}, index=ids), pd.Series("", index=ids, dtype=object)
    return table_population(settings.table, ids, years, times, id_column)


#: A population table's year Y stands for the middle of Y (Y + 0.5), as a period's middle does.
YEAR_MIDDLE = 0.5
_WIDE = re.compile(r"^(?:pob|population)_(\d{4})$")


def read_population_table(table_path: str, id_column: str = "id") -> pd.DataFrame:
    """The population table as a wide frame: index the municipality key (str), one float
    column per year (NaN where the municipality did not exist). Long (id, year,
    population) or wide (`id` or `id_column`, then pob_<YYYY> or population_<YYYY>, as
    INEGI's inegi_municipal_population.csv); InputError naming the file otherwise."""
    path = require_file(table_path, "population table")
    frame = pd.read_csv(path, dtype={"id": str, id_column: str})
    wide_columns = {c: int(m[1]) for c in frame.columns if (m := _WIDE.match(str(c)))}
    if wide_columns:
        key = "id" if "id" in frame.columns else id_column
        if key not in frame.columns:
            raise InputError(f"{path}: population table lacks the key column id (or {id_column})")
        wide = frame.set_index(frame[key].astype(str))[list(wide_columns)].rename(columns=wide_columns)
        return wide.astype(float).sort_index(axis=1)
    missing = [c for c in ("id", "year", "population") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: population table lacks column(s) {', '.join(missing)} "
                         "(or pob_<YYYY> columns beside the key)")
    return frame.pivot_table(index="id", columns="year", values="population", aggfunc="sum").astype(float)


def interpolate_population(wide: pd.DataFrame, when: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's population at the decimal year `when`, log-linear between the nearest two
    of its dates (a column Y at Y + 0.5) that bracket `when`, else extrapolated at the rate
    of its nearest two dates. Returns (population (NaN where the row has no date, or one
    date and `when` is not it), extrapolated (bool))."""
    years = np.asarray(wide.columns, float) + YEAR_MIDDLE
    values = wide.to_numpy(float)
    out = np.full(len(wide), np.nan)
    extrapolated = np.zeros(len(wide), bool)
    for i, row in enumerate(values):
        ok = np.isfinite(row) & (row > 0)
        t, v = years[ok], np.log(row[ok])
        if not len(t):
            continue
        if np.any(np.isclose(t, when)):
            out[i] = float(row[ok][np.isclose(t, when)][0])  # a date itself: the figure as counted
            continue
        if len(t) < 2:
            continue
        k = int(np.clip(np.searchsorted(t, when), 1, len(t) - 1))
        a, b = k - 1, k
        extrapolated[i] = not t[0] <= when <= t[-1]
        out[i] = float(np.exp(v[a] + (v[b] - v[a]) * (when - t[a]) / (t[b] - t[a])))
    return out, extrapolated


def table_population(table_path: str, ids: pd.Index, years: tuple[Any, Any], times: tuple[float, float] | None = None,
                     id_column: str = "id") -> tuple[pd.DataFrame, pd.Series]:
    """population_<t1>, population_<t2> per municipality id (index `ids`) from the table
    (read_population_table), each period's population interpolated log-linearly at its
    middle (`times`; None: the years' middles); and per id its flags:
    `population_extrapolated` (a period outside the table's dates) and
    `created_after_<first year>` (a municipality split off another after the table's
    first date: its population before it is unknown, so PGR is left undefined).
    InputError naming the file when a municipality is missing."""
    wide = read_population_table(table_path, id_column)
    times = times if times is not None else (float(years[0]) + YEAR_MIDDLE, float(years[1]) + YEAR_MIDDLE)
    absent = [i for i in ids if i not in wide.index and i != ""]
    if absent:
        raise InputError(f"{table_path}: no population for municipality {absent[0]}")
    wide = wide.reindex(ids)
    columns, extrapolated = {}, np.zeros(len(ids), bool)
    for t, when in zip(years, times):
        pop, extra = interpolate_population(wide, when)
        columns[f"population_{t}"] = pop
        extrapolated |= extra
    first = wide.columns[0]
    created = wide[first].isna().to_numpy() & wide.notna().any(axis=1).to_numpy()
    flags = [";".join(f for f, hit in (("population_extrapolated", e), (f"created_after_{first}", c)) if hit)
             for e, c in zip(extrapolated, created)]
    return pd.DataFrame(columns, index=ids), pd.Series(flags, index=ids, dtype=object)


def mapped_per_municipality(change: pd.DataFrame, key: np.ndarray, name: np.ndarray, years: tuple[Any, Any],
                            cell_km2: float) -> pd.DataFrame:
    """Per municipality (key `id`, `name`, sorted by both): cells, mapped urban km² at
    both periods (urban_km2_<t>), nodata_cells (no class at a period) and cells_km2.

    Args:
        change: class_<t1>, class_<t2> per cell (n rows): both periods' maps.
        key, name: (n,) each cell's municipality (change.assign_municipalities).
        cell_km2: a cell's area, km².
    """
    t1, t2 = years
    per = pd.DataFrame({"id": key, "name": name, "cells": 1})
    for t in (t1, t2):
        per[f"urban_km2_{t}"] = (change[f"class_{t}"].to_numpy() == "urban") * cell_km2
    per["nodata_cells"] = ((change[f"class_{t1}"] == "nodata") | (change[f"class_{t2}"] == "nodata")).to_numpy().astype(int)
    per = per.groupby(["id", "name"], sort=True).sum().reset_index()
    per["cells_km2"] = per["cells"] * cell_km2
    return per


def municipality_areas(munis: gpd.GeoDataFrame, crs: CRS, id_column: str) -> pd.Series:
    """Each municipality's own area, km² (measured in the grid's projected `crs`), indexed
    by its key as str."""
    return munis.to_crs(crs).assign(id=lambda f: f[id_column].astype(str)).set_index("id").area / 1e6


def read_reference_samples(samples_path: Path, strata_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every period's reference sample (period, cell_id, stratum, map_class, ref_class:
    validation/periods/samples.csv) and strata (period, class, area in km²: strata.csv);
    InputError naming the file when it is missing or malformed."""
    frames = []
    for path, what, columns in ((samples_path, "reference samples", ["period", "cell_id", "stratum", "map_class", "ref_class"]),
                                (strata_path, "strata", ["period", "class", "area"])):
        frame = pd.read_csv(require_file(path, what), dtype=str, keep_default_na=False)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputError(f"{path}: {what} lack column(s) {', '.join(missing)}")
        frames.append(frame)
    return frames[0], frames[1]


def adjusted_areas(samples: pd.DataFrame, strata: pd.DataFrame, period: str, key_of_cell: pd.Series, ids: pd.Index,
                   mapped_km2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`period`'s error-adjusted urban area (km²) of each municipality of `ids`, then of
    the region, from its reference sample (validation.estimate.domain_areas).

    Args:
        samples, strata: every period's (read_reference_samples).
        key_of_cell: the municipality key of every cell of the map, indexed by cell_id.
        mapped_km2: (k + 1,) mapped urban area of each municipality, then of the region.
    Returns:
        (estimate, standard error, sampled cells), each (k + 1,): the mapped areas, NaN
        and 0 when the period has no reference sample.
    """
    sample = samples[samples["period"] == period]
    if sample.empty:  # no reference sample of the period (validate periods): the mapped areas, no interval
        return mapped_km2, np.full(len(mapped_km2), np.nan), np.zeros(len(mapped_km2), np.int64)
    areas = strata[strata["period"] == period]
    stratum_is_map = bool((sample["stratum"] == sample["map_class"]).all())
    design = estimate.strata_design(sample["stratum"].to_numpy(object),
                                    pd.Series(pd.to_numeric(areas["area"]).to_numpy(float), index=areas["class"]),
                                    stratum_is_map)
    map_is, ref_is = sample["map_class"].to_numpy() == "urban", sample["ref_class"].to_numpy() == "urban"
    position = pd.Series(np.arange(len(ids)), index=ids)
    domain = sample["cell_id"].map(key_of_cell).map(position).fillna(-1).to_numpy(np.int64)
    munis = estimate.domain_areas(design, mapped_km2[:-1], map_is, ref_is, domain, len(ids))
    region = estimate.domain_areas(design, mapped_km2[-1:], map_is, ref_is, np.zeros(len(sample), np.int64), 1)
    est, se, n = (np.concatenate([m, r]) for m, r in zip(munis, region))
    return est, se, n


def rounded(out: pd.DataFrame) -> pd.DataFrame:
    """The indicator table as written to CSV: km² and coverage to 4 decimals, persons
    whole, m² per capita to 2, LCR and PGR to 6, LCRPGR to 4."""
    table = out.round({c: 4 for c in out.columns if c.startswith("urban_km2") or c == "coverage"}
                      | {c: 0 for c in out.columns if c.startswith("population")}
                      | {c: 2 for c in out.columns if c.startswith("urban_m2")}
                      | {"lcr": 6, "pgr": 6, "lcrpgr": 4, "lcr_adjusted": 6, "lcr_adjusted_ci95": 6,
                         "lcrpgr_adjusted": 4, "lcrpgr_adjusted_ci95": 4})
    for c in table.columns[table.columns.str.startswith("population")]:
        table[c] = table[c].astype("Int64")
    return table


def region_summary(out: pd.DataFrame, years: tuple[Any, Any]) -> dict[str, Any]:
    """sdg_11_3_1.json: the periods and the region's row (NaN as null)."""
    t1, t2 = years
    region = out.iloc[-1].drop(["id", "name"]).to_dict()
    return {"periods": [t1, t2],
            **{str(k): (None if isinstance(v, float) and not np.isfinite(v) else (v.item() if hasattr(v, "item") else v))
               for k, v in region.items()}}


def read_maps(settings: SdgSettings) -> tuple[pd.DataFrame, float, CRS]:
    """Every period's map side by side: cell_id, col, row and class_<label> per period;
    InputError naming a map that is missing or covers other cells."""
    maps: pd.DataFrame | None = None
    for label, path in settings.every_period:
        pred, cell_size, crs = io.read_cells(path, f"predictions of {label}", ["cell_id", "class"])
        pred = pred[["cell_id", "col", "row", "class"]].rename(columns={"class": f"class_{label}"})
        if maps is None:
            maps, first = pred, path
            continue
        merged = maps.merge(pred.drop(columns=["col", "row"]), on="cell_id", how="inner")
        if not len(merged) == len(maps) == len(pred):
            raise InputError(f"{path}: its cells differ from those of {first}")
        maps = merged
    assert maps is not None  # PeriodSettings holds at least the census period
    return maps, cell_size, crs


def area_series(settings: SdgSettings, maps: pd.DataFrame, per: pd.DataFrame, key: np.ndarray,
                cell_km2: float) -> pd.DataFrame:
    """Every period's urban area per municipality (the rows of `per`: id, name), then the
    region: mapped_urban_km2, urban_km2 (error-adjusted, adjusted_areas), urban_km2_se,
    urban_km2_ci95 (empty under sdg.min_sampled sampled cells) and n_sampled; one row per
    municipality and period, periods in periods.list's order."""
    samples, strata = read_reference_samples(settings.samples, settings.strata)
    ids = pd.Index(per["id"])
    key_of_cell = pd.Series(key, index=maps["cell_id"].to_numpy())
    frames = []
    for label, _ in settings.every_period:
        urban = (maps[f"class_{label}"].to_numpy() == "urban") * cell_km2
        mapped = pd.Series(urban).groupby(key).sum().reindex(ids, fill_value=0.0).to_numpy(float)
        mapped = np.append(mapped, urban.sum())
        est, se, n = adjusted_areas(samples, strata, label, key_of_cell, ids, mapped)
        frames.append(pd.DataFrame({
            "id": [*ids, REGION], "name": [*per["name"], REGION], "period": label, "mapped_urban_km2": mapped,
            "urban_km2": est, "urban_km2_se": se,
            "urban_km2_ci95": np.where(n >= settings.min_sampled, Z95 * se, np.nan), "n_sampled": n}))
    return pd.concat(frames, ignore_index=True)


def sdg_indicator(settings: SdgSettings) -> pd.DataFrame:
    """The stage's work: every period's map + reference samples + labels.parquet +
    municipalities -> sdg/; returns the indicator table."""
    t1, t2 = years = settings.years
    maps, cell_size, crs = read_maps(settings)
    labels, _, _ = io.read_cells(settings.labels, "labels", ["cell_id", "population"])
    id_column, name_column = settings.id_column, settings.name_column
    munis = io.read_vector(settings.municipalities, "municipalities", [id_column, name_column])
    key, name = assign_municipalities(maps["col"], maps["row"], cell_size, crs, munis, id_column, name_column)
    labels = labels.merge(maps[["cell_id"]].assign(key=key), on="cell_id", how="right")
    cell_km2 = cell_size**2 / 1e6

    per = mapped_per_municipality(maps, key, name, years, cell_km2)
    per["area_km2"] = per["id"].map(municipality_areas(munis, crs, id_column)).fillna(0.0).to_numpy()
    pop, pop_flags = population(settings.population, labels, labels["key"].to_numpy(), pd.Index(per["id"]), years,
                                settings.times, id_column)
    per = pd.concat([per, pop.reset_index(drop=True)], axis=1)
    series = area_series(settings, maps, per, key, cell_km2)
    rows = {t: series[series["period"] == t].reset_index(drop=True) for t in years}
    adjusted = pd.DataFrame({column.format(t=t): rows[t][source] for t in years for column, source in
                             (("urban_km2_{t}", "urban_km2"), ("urban_km2_{t}_se", "urban_km2_se"),
                              ("n_sampled_{t}", "n_sampled"))})
    out = table(per, years, adjusted, settings.min_coverage, settings.min_sampled, settings.times[1] - settings.times[0])
    extra = [*pop_flags.to_numpy(), ""]  # the region's row last
    out["flags"] = [";".join(f for f in (a, b) if f) for a, b in zip(out["flags"], extra)]

    with io.atomic_output(settings.table_out) as tmp:
        rounded(out).to_csv(tmp, index=False)
    with io.atomic_output(settings.series_out) as tmp:
        series.assign(urban_km2=series["urban_km2"].clip(lower=0.0)).drop(columns="urban_km2_se").to_csv(
            tmp, index=False, float_format="%.4f")
    with io.atomic_output(settings.chart_out) as tmp:
        sdg_chart(tmp, out, years, REGION)
    io.write_json(settings.summary_out, region_summary(out, years))
    r = out.iloc[-1]
    with_interval = int(np.isfinite(out["lcr_adjusted_ci95"].iloc[:-1]).sum())
    print(f"sdg 11.3.1 ({t1}-{t2}): region urban {r[f'urban_km2_{t1}_adjusted']:,.1f} ± "
          f"{r[f'urban_km2_{t1}_adjusted_ci95']:,.1f} -> {r[f'urban_km2_{t2}_adjusted']:,.1f} ± "
          f"{r[f'urban_km2_{t2}_adjusted_ci95']:,.1f} km² (error-adjusted, 95%), LCR {r['lcr_adjusted']:.4f} ± "
          f"{r['lcr_adjusted_ci95']:.4f}, PGR {r['pgr']:.4f}, LCRPGR {r['lcrpgr_adjusted']:.2f} ± "
          f"{r['lcrpgr_adjusted_ci95']:.2f} (mapped areas: LCRPGR {r['lcrpgr']:.2f}); {len(out) - 1} municipalities, "
          f"{with_interval} with intervals -> {settings.out_dir}")
    return out


def run(cfg: DictConfig) -> pd.DataFrame:
    """Stage: both periods' maps + reference samples + labels.parquet + municipalities -> sdg/."""
    return sdg_indicator(SdgSettings.from_config(cfg))
