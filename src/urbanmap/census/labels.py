"""The `labels` stage: census measures per grid cell and the urban / non-urban label.

For every cell, from the census polygons (INEGI localities by default):

- `urban_area`, `rural_area`, `unclassified_area`: m² of the cell covered by localities
  of each class (INEGI's `ambito` URBANO / RURAL / null);
- `urban_fraction`: urban_area / cell area, clipped to 1 (localities may overlap);
- `population`: each locality's population shared among cells by area;
- `population_density`: population per km² of cell;
- `n_localities`: localities touching the cell with positive area;
- `label`: "urban", "non_urban" or "excluded" by the configured rule.

Real-data quirks, handled on purpose:

- invalid polygons (INEGI has 3 self-intersecting ones) are repaired with
  ``shapely.make_valid`` and their count is reported;
- rows with no class (155 in INEGI, none with population) count as "unclassified":
  their area is reported but never makes a cell urban;
- rows with no population (249 in INEGI) contribute 0 people; the count is reported;
- the census may be in a geographic CRS (INEGI: EPSG:6365, degrees); it is projected to
  the grid's CRS before any area is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from omegaconf import DictConfig
from pyproj import CRS
from pyproj.transformer import Transformer

from urbanmap.census import landcover
from urbanmap.census.rules import LABELS, RuleThresholds, apply_rule, label_counts
from urbanmap.core import io, paths
from urbanmap.core.errors import InputError

URBAN, RURAL, UNCLASSIFIED = "urban", "rural", "unclassified"
#: The census label rules: the measure of census_measures each one thresholds.
RULES = ("urban_fraction", "population_density")


@dataclass(frozen=True)
class CensusSettings:
    """The census polygons and how to read them (the `data.census` config section).

    Attributes:
        path: the census vector file (any CRS; GeoParquet or anything GDAL reads).
        class_column: the column holding each polygon's class.
        urban_values, rural_values: the values of `class_column` that count as urban / rural
            (any other value, or none, is "unclassified").
        population_column: the column of each polygon's population (persons; nulls count
            as 0), or None when the census has none.
    """

    path: str
    class_column: str
    urban_values: tuple[Any, ...]
    rural_values: tuple[Any, ...]
    population_column: str | None

    @classmethod
    def from_config(cls, census: Any) -> CensusSettings:
        """Read `census`, the data.census config node; InputError naming the key that is wrong."""
        if not census:
            raise InputError("data.census: null; census labels need census polygons (or set data.landcover)")
        for key in ("path", "class_column"):
            if not census.get(key):
                raise InputError(f"data.census.{key}: missing")
        return cls(
            path=str(census.path),
            class_column=str(census.class_column),
            urban_values=tuple(census.get("urban_values") or ()),
            rural_values=tuple(census.get("rural_values") or ()),
            population_column=str(census.population_column) if census.get("population_column") else None,
        )


@dataclass(frozen=True)
class LabelSettings:
    """What the `labels` stage reads from the config (census labels), checked.

    Attributes:
        rule: the measure that labels a cell: "urban_fraction" (0..1) or
            "population_density" (inhabitants per km²) (labels.rule).
        thresholds: the rule's thresholds (labels.<rule>), in the measure's unit.
        census: the census polygons (data.census).
        grid: the region's grid.parquet, read.
        labels_out, summary_out: where labels.parquet and label_summary.json go.
    """

    rule: str
    thresholds: RuleThresholds
    census: CensusSettings
    grid: Path
    labels_out: Path
    summary_out: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> LabelSettings:
        """Read `labels` and `data.census`; InputError naming the config key that is wrong."""
        rule = cfg.labels.rule
        if rule not in RULES:
            raise InputError(f"labels.rule: unknown rule {rule!r} (urban_fraction or population_density)")
        return cls(
            rule=str(rule),
            thresholds=RuleThresholds.from_config(cfg.labels.get(rule), f"labels.{rule}"),
            census=CensusSettings.from_config(cfg.data.get("census")),
            grid=paths.grid(cfg),
            labels_out=paths.labels(cfg),
            summary_out=paths.label_summary(cfg),
        )


def _candidate_pairs(polygons: np.ndarray, cell_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(polygon index, col, row), three (k,) int64 arrays: every lattice cell in each
    polygon's bounding box."""
    bounds = shapely.bounds(polygons)
    col0 = np.floor(bounds[:, 0] / cell_size).astype(np.int64)
    row0 = np.floor(bounds[:, 1] / cell_size).astype(np.int64)
    ncols = np.maximum(np.ceil(bounds[:, 2] / cell_size).astype(np.int64) - col0, 1)
    nrows = np.maximum(np.ceil(bounds[:, 3] / cell_size).astype(np.int64) - row0, 1)
    count = ncols * nrows
    poly = np.repeat(np.arange(len(polygons)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return poly, col0[poly] + k % ncols[poly], row0[poly] + k // ncols[poly]


def overlap_areas(
    polygons: np.ndarray, cell_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (polygon, lattice cell) pair that overlaps with positive area, and that area.

    Each polygon is paired with the lattice cells of its bounding box (arithmetic, no
    spatial index needed on a lattice); cells strictly inside it get the full cell area,
    cells crossed by its outline get the exact intersection area (vectorised GEOS).

    Args:
        polygons: shapely (Multi)Polygons of shape (m,), valid, in the grid CRS (metres);
            prepared in place.
        cell_size: cell side in metres.
    Returns:
        (polygon index, col, row, area m²): four (k,) arrays, one entry per pair.
    """
    poly, pc_, pr_ = _candidate_pairs(polygons, cell_size)
    shapely.prepare(polygons)
    geoms = polygons[poly]
    x0, y0 = pc_ * cell_size, pr_ * cell_size
    boxes = shapely.box(x0, y0, x0 + cell_size, y0 + cell_size)
    full = shapely.contains_properly(geoms, boxes)
    partial = ~full & shapely.intersects(geoms, boxes)
    area = np.where(full, cell_size * cell_size, 0.0)
    area[partial] = shapely.area(shapely.intersection(geoms[partial], boxes[partial]))
    hit = area > 0
    return poly[hit], pc_[hit], pr_[hit], area[hit]


def census_measures(
    cells: pd.DataFrame,
    cell_size: float,
    polygons: np.ndarray,
    kind: np.ndarray,
    population: np.ndarray,
) -> pd.DataFrame:
    """Area by class, allocated population and locality count per cell (`overlap_areas`
    joined to the grid's cells by lattice position).

    Args:
        cells: the grid, with int columns `col`, `row` (n cells).
        cell_size: cell side in metres.
        polygons: shapely (Multi)Polygons of shape (m,), valid, in the grid CRS.
        kind: str array (m,) of "urban" / "rural" / "unclassified".
        population: float array (m,), NaN where unknown (counted as 0).
    Returns:
        DataFrame of n rows aligned with `cells`: urban_area, rural_area,
        unclassified_area (m²), urban_fraction, population, population_density (per km²),
        n_localities.
    """
    poly, pc_, pr_, area = overlap_areas(polygons, cell_size)

    # Join the pairs to the grid's cells by lattice position.
    index = pd.MultiIndex.from_arrays([cells["col"].to_numpy(np.int64), cells["row"].to_numpy(np.int64)])
    cell = index.get_indexer(pd.MultiIndex.from_arrays([pc_, pr_]))
    inside = cell >= 0
    poly, cell, area = poly[inside], cell[inside], area[inside]

    n = len(cells)
    poly_area = shapely.area(polygons)
    pop = np.nan_to_num(np.asarray(population, dtype=np.float64), nan=0.0)
    share = np.divide(area, poly_area[poly], out=np.zeros_like(area), where=poly_area[poly] > 0)
    out = pd.DataFrame(index=cells.index)
    for name in (URBAN, RURAL, UNCLASSIFIED):
        sel = kind[poly] == name
        out[f"{name}_area"] = np.bincount(cell[sel], weights=area[sel], minlength=n)
    out["urban_fraction"] = np.minimum(out["urban_area"].to_numpy() / cell_size**2, 1.0)
    out["population"] = np.bincount(cell, weights=pop[poly] * share, minlength=n)
    out["population_density"] = out["population"].to_numpy() / (cell_size**2 / 1e6)
    out["n_localities"] = np.bincount(cell, minlength=n).astype(np.int32)
    return out


def _areal_part(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a repaired geometry (make_valid may add lines or points)."""
    parts = shapely.get_parts(shapely.get_parts(geometry))
    return shapely.multipolygons(parts[shapely.get_type_id(parts) == 3])


def read_census(
    census: CensusSettings | Any, grid_bounds: tuple[float, float, float, float], grid_crs: CRS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Census polygons overlapping the grid, repaired and projected to the grid CRS.

    Args:
        census: the census (`CensusSettings`; a data.census config node is read with
            `CensusSettings.from_config`).
        grid_bounds: (xmin, ymin, xmax, ymax) of the grid, metres in `grid_crs`.
        grid_crs: the grid's projected CRS.
    Returns:
        (polygons, kind, population, report): (m,) shapely (Multi)Polygons in `grid_crs`,
        (m,) str "urban" / "rural" / "unclassified", (m,) float population (NaN where
        unknown), and the counts of the quirks met.
    """
    if not isinstance(census, CensusSettings):
        census = CensusSettings.from_config(census)
    path = census.path
    columns = [census.class_column]
    if census.population_column:
        columns.append(census.population_column)
    frame = io.read_vector(path, "census polygons", columns=columns)
    # Keep the polygons whose bounds meet the grid's, before projecting them all.
    to_census = Transformer.from_crs(grid_crs, frame.crs, always_xy=True)
    bx0, by0, bx1, by1 = to_census.transform_bounds(*grid_bounds, densify_pts=21)
    b = shapely.bounds(frame.geometry.values)
    frame = frame[(b[:, 0] <= bx1) & (b[:, 2] >= bx0) & (b[:, 1] <= by1) & (b[:, 3] >= by0)]
    frame = frame[~frame.geometry.isna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InputError(f"{path}: no census polygon overlaps the grid")
    frame = frame.to_crs(grid_crs)
    polygons = np.asarray(frame.geometry.values, dtype=object)
    invalid = ~shapely.is_valid(polygons)
    polygons[invalid] = [_areal_part(shapely.make_valid(g)) for g in polygons[invalid]]
    klass = frame[census.class_column].astype("string")
    kind = np.full(len(frame), UNCLASSIFIED, dtype=object)
    kind[klass.isin(list(census.urban_values)).fillna(False).to_numpy()] = URBAN
    kind[klass.isin(list(census.rural_values)).fillna(False).to_numpy()] = RURAL
    if census.population_column:
        population = frame[census.population_column].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    else:
        population = np.full(len(frame), np.nan)
    report = {
        "polygons": int(len(frame)),
        "repaired_invalid": int(invalid.sum()),
        "unclassified": int((kind == UNCLASSIFIED).sum()),
        "missing_population": int(np.isnan(population).sum()),
    }
    return polygons, kind, population, report


def grid_bounds(cells: pd.DataFrame, cell_size: float) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the cells (int columns `col`, `row`), metres in the grid's CRS."""
    x0, y0 = cells["col"].to_numpy() * cell_size, cells["row"].to_numpy() * cell_size
    return (x0.min(), y0.min(), x0.max() + cell_size, y0.max() + cell_size)


def census_labels(
    cells: pd.DataFrame, cell_size: float, crs: CRS, census: CensusSettings, rule: str, thresholds: RuleThresholds
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The labels table of the grid's cells from the census, and the census's quirks.

    Args:
        cells: the grid (n cells: cell_id, col, row), not empty.
        cell_size: cell side, metres; crs: the grid's projected CRS.
        census: the census polygons; rule, thresholds: the label rule (`LabelSettings`).
    Returns:
        (table, report): n rows, cell_id, col, row, the `census_measures` and `label`;
        the counts of `read_census`.
    """
    polygons, kind, population, report = read_census(census, grid_bounds(cells, cell_size), crs)
    measures = census_measures(cells, cell_size, polygons, kind, population)
    if measures["n_localities"].sum() == 0:
        raise InputError(f"{census.path}: no census polygon overlaps any grid cell")
    table = pd.concat([cells[["cell_id", "col", "row"]], measures], axis=1)
    table["label"] = apply_rule(measures[rule].to_numpy(), thresholds.urban_min, thresholds.non_urban_max)
    return table, report


def label_census(settings: LabelSettings) -> dict[str, Any]:
    """The stage's work for census labels: grid -> labels.parquet, label_summary.json;
    returns the summary."""
    cells, cell_size, crs = io.read_cells(settings.grid, "grid", columns=["cell_id"])
    if cells.empty:
        raise InputError(f"{settings.grid}: the grid has no cells")
    table, report = census_labels(cells, cell_size, crs, settings.census, settings.rule, settings.thresholds)
    io.write_cells(settings.labels_out, table, cell_size, crs)
    counts = label_counts(table["label"])
    summary = {
        "cells": int(len(table)),
        "rule": settings.rule,
        **{f"{name}_cells": counts[name] for name in LABELS},
        "urban_area_km2": float(table["urban_area"].sum() / 1e6),
        "population": float(table["population"].sum()),
        "census": report,
    }
    io.write_json(settings.summary_out, summary)
    print(
        f"labels ({settings.rule}): {len(table):,} cells: "
        + ", ".join(f"{name} {counts[name]:,}" for name in LABELS)
        + f"; census: {report['polygons']:,} polygons, {report['repaired_invalid']} repaired, "
        f"{report['unclassified']} unclassified, {report['missing_population']} without population"
        f" -> {settings.labels_out}"
    )
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Stage: label the grid's cells from the census; write labels and a summary.

    Writes `<out_dir>/<region>/labels.parquet` (GeoParquet keyed by `cell_id`) and
    `label_summary.json` (counts per label, census quirks met), prints the counts and
    returns the summary. With data.landcover set, the labels come from that land-cover
    raster instead (landcover.run).
    """
    if cfg.data.get("landcover"):
        return landcover.run(cfg)
    return label_census(LabelSettings.from_config(cfg))
