"""The `change` stage: urban change per cell between the census period's map and
periods.target's (periods.census -> periods.target; the `series` stage gives every other pair).

Both maps come from `predict` with the same model, so a difference is a change of the
imagery, not of method. Per cell (class of the first period -> class of the second):

==================  ====  ============================================================
change              code  rule
==================  ====  ============================================================
stable_non_urban    1     non_urban -> non_urban
stable_urban        2     urban -> urban
new_urban           3     non_urban -> urban
urban_lost          4     urban -> non_urban: flagged as a likely error (built-up land
                          rarely reverts within a decade; check these cells first)
nodata              255   either period has no prediction (the COG's nodata value)
==================  ====  ============================================================

Outputs under ``<region_dir>/change/``:

- ``change.parquet``: GeoParquet, one row per grid cell: cell_id, col, row,
  class_<t1>, class_<t2>, change, likely_error (urban_lost);
- ``change.tif``: uint8 COG of the codes above, one pixel per cell, in the grid's CRS,
  with a colour table; the codes are in the band description and the ``CHANGE_CODES`` tag;
- ``change.png``: the map with a legend and the municipalities' boundaries;
- ``municipalities.csv``: per municipality (``data.municipalities``, reprojected to
  ``data.crs``; a cell belongs to the municipality holding its centre; cells in none get
  an empty key and name ``(none)``): key (``data.municipality_id``), name, cells and km² per
  change class and in total, and urban km² at each period (data.municipalities null: one
  row, ``(none)``, for the whole region). ``urban_km2_<t>`` counts the cells mapped urban
  in period t, including cells that are nodata in the other period; the change classes
  count only cells with a prediction in both periods (stable_urban + urban_lost is the
  first period's urban area over those cells);
- ``region.json``: the same totals for the region.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from omegaconf import DictConfig
from pyproj import CRS
from shapely.geometry import box

from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice
from urbanmap.core.periods import PeriodSettings
from urbanmap.mapping import cellmap
from urbanmap.mapping.cellmap import extent_km, pyplot, save_png

#: change class -> uint8 code of change.tif (255 is the raster's nodata).
CODES = {"stable_non_urban": 1, "stable_urban": 2, "new_urban": 3, "urban_lost": 4, "nodata": 255}
CHANGES = tuple(CODES)
#: RGBA colours of the map and the COG's colour table.
COLOURS = {"stable_non_urban": (220, 235, 205, 255), "stable_urban": (120, 120, 120, 255),
           "new_urban": (214, 39, 40, 255), "urban_lost": (31, 119, 180, 255), "nodata": (255, 255, 255, 0)}
MAP_CLASSES = ("urban", "non_urban", "nodata")


@dataclass(frozen=True)
class ChangeSettings:
    """What the `change` stage reads from the config, checked.

    Attributes:
        years: (t1, t2) = the labels of (periods.census, periods.target), two different periods.
        region: the region's name (data.name), for the map's title.
        municipalities: the municipalities' vector file, any CRS (data.municipalities), or
            None: one row, "(none)", for the whole region.
        id_column, name_column: the municipalities' key and name columns
            (data.municipality_id, data.municipality_name).
        predictions: the two periods' predictions/<period>.parquet, read.
        out_dir: the change/ folder; cells_out, cog_out, map_out, municipalities_out,
            region_out: change.parquet, change.tif, change.png, municipalities.csv, region.json.
    """

    years: tuple[str, str]
    region: str
    municipalities: str | None
    id_column: str
    name_column: str
    predictions: tuple[Path, Path]
    out_dir: Path
    cells_out: Path
    cog_out: Path
    map_out: Path
    municipalities_out: Path
    region_out: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ChangeSettings:
        """Read `periods` and the data section; InputError naming the config key that is wrong."""
        periods = PeriodSettings.from_config(cfg)
        t1, t2 = periods.census.label, periods.target.label
        if t1 == t2:
            raise InputError(f"periods: census and target are both {t1}; change needs two different periods")
        return cls(
            years=(t1, t2), region=str(cfg.data.name),
            municipalities=str(cfg.data.municipalities) if cfg.data.get("municipalities") else None,
            id_column=str(cfg.data.municipality_id), name_column=str(cfg.data.municipality_name),
            predictions=(paths.predictions(cfg, t1), paths.predictions(cfg, t2)), out_dir=paths.change_dir(cfg),
            cells_out=paths.change_cells(cfg), cog_out=paths.change_cog(cfg), map_out=paths.change_map(cfg),
            municipalities_out=paths.change_municipalities(cfg), region_out=paths.change_region(cfg),
        )


def change_classes(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """(n,) change class of cells from their map classes (urban / non_urban / nodata)
    in the first and the second year (see the module docstring)."""
    first, second = np.asarray(first, str), np.asarray(second, str)
    u1, u2 = first == "urban", second == "urban"
    missing = (first == "nodata") | (second == "nodata")
    out = np.select([u1 & u2, ~u1 & u2, u1 & ~u2], ["stable_urban", "new_urban", "urban_lost"], "stable_non_urban")
    return np.where(missing, "nodata", out).astype(object)


def compare(first: pd.DataFrame, second: pd.DataFrame, years: tuple[int | str, int | str],
            names: Sequence[str] = ("first", "second")) -> pd.DataFrame:
    """One row per cell: cell_id, col, row, class_<t1>, class_<t2>, change, likely_error.

    Args:
        first, second: predictions of the two periods (cell_id, col, row, class), on the
            same cells (InputError naming `names` otherwise).
        years: (t1, t2), the periods' labels (or years).
    Returns:
        The cells north to south, then west to east.
    """
    for frame, name in zip((first, second), names):
        bad = sorted(set(frame["class"].astype(str)) - set(MAP_CLASSES))
        if bad:
            raise InputError(f"{name}: unknown class(es) {', '.join(bad)} (expected {', '.join(MAP_CLASSES)})")
    t1, t2 = (str(y) for y in years)
    if t1 == t2:
        raise InputError(f"periods: both maps are of {t1}; change needs two different periods")
    merged = first[["cell_id", "col", "row", "class"]].merge(
        second[["cell_id", "class"]], on="cell_id", how="outer", suffixes=(f"_{t1}", f"_{t2}"), indicator=True)
    only = merged["_merge"] != "both"
    if only.any():
        n1, n2 = int((merged["_merge"] == "left_only").sum()), int((merged["_merge"] == "right_only").sum())
        raise InputError(
            f"{names[1]}: predicted on other cells than {names[0]} ({n1:,} cells only in {t1}'s map, "
            f"{n2:,} only in {t2}'s); predict both periods on the same grid"
        )
    merged = merged.drop(columns="_merge")
    merged["change"] = change_classes(merged[f"class_{t1}"].to_numpy(), merged[f"class_{t2}"].to_numpy())
    merged["likely_error"] = merged["change"] == "urban_lost"
    merged["col"], merged["row"] = merged["col"].astype(np.int64), merged["row"].astype(np.int64)
    return merged.sort_values(["row", "col"], ascending=[False, True], ignore_index=True)


def assign_municipalities(cols: ArrayLike, rows: ArrayLike, cell_size: float, crs: Any, municipalities: gpd.GeoDataFrame,
                          id_column: str, name_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Key and name of the municipality holding each cell's centre.

    Args:
        cols, rows: (n,) lattice indices; centre = ((col + 0.5) * cell_size, (row + 0.5) *
            cell_size) metres in `crs`.
        municipalities: GeoDataFrame of polygons in any CRS (reprojected to `crs`).
        id_column, name_column: its key and name columns.
    Returns:
        ((n,) key str, (n,) name str): "" and "(none)" for centres in no polygon; a centre
        on a shared border goes to the smallest key.
    """
    x = (np.asarray(cols, np.float64) + 0.5) * cell_size
    y = (np.asarray(rows, np.float64) + 0.5) * cell_size
    points = gpd.GeoDataFrame({"cell": np.arange(len(x))}, geometry=gpd.points_from_xy(x, y), crs=crs)
    polygons = municipalities[[id_column, name_column, "geometry"]].to_crs(crs)
    polygons = polygons[polygons.intersects(points.union_all().envelope)]  # only the region's
    polygons = polygons.assign(geometry=polygons.geometry.make_valid())
    hits = gpd.sjoin(points, polygons, how="inner", predicate="intersects")
    hits = hits.sort_values(["cell", id_column]).drop_duplicates("cell")
    key = np.full(len(x), "", object)
    name = np.full(len(x), "(none)", object)
    key[hits["cell"].to_numpy()] = hits[id_column].astype(str).to_numpy()
    name[hits["cell"].to_numpy()] = hits[name_column].astype(str).to_numpy()
    return key, name


def tally(change: pd.DataFrame, by: np.ndarray | None, years: Sequence[int | str], cell_km2: float) -> pd.DataFrame:
    """Cells and km² per change class (and urban km² per year) per group `by` (n,), or one
    row for the whole table when `by` is None. Index: the groups."""
    groups = np.zeros(len(change), object) if by is None else np.asarray(by, object)
    cells = pd.crosstab(groups, change["change"].to_numpy()).reindex(columns=list(CHANGES), fill_value=0)
    cells.columns = [f"cells_{c}" for c in CHANGES]
    cells["cells_total"] = cells.sum(axis=1)
    km2 = cells * cell_km2
    km2.columns = [c.replace("cells_", "km2_") for c in cells.columns]
    urban = pd.DataFrame({f"urban_km2_{t}": pd.Series(change[f"class_{t}"].to_numpy() == "urban").groupby(groups).sum()
                          * cell_km2 for t in years})
    return pd.concat([cells, km2, urban.reindex(cells.index)], axis=1)


def change_png(path: Path, lattice: PixelLattice, codes_grid: np.ndarray, counts: dict[str, int], cell_km2: float, title: str,
         boundaries: gpd.GeoDataFrame | None = None) -> None:
    """PNG: change classes with a legend (km² each), municipality boundaries on top.

    Args:
        lattice: the one-pixel-per-cell lattice of `codes_grid`, (nrows, ncols) uint8 codes.
        counts: cells per change class; cell_km2: a cell's area, km².
        boundaries: the municipalities, in the lattice's CRS, or None.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = pyplot()
    shown = [c for c in CHANGES if c != "nodata"]
    index = np.full(codes_grid.shape, -1)
    for i, c in enumerate(shown):
        index[codes_grid == CODES[c]] = i
    colours = [np.array(COLOURS[c]) / 255 for c in shown]
    fig, ax = plt.subplots(figsize=(8, 7.4), constrained_layout=True)
    ax.set_facecolor("#f4f4f4")
    ax.imshow(np.ma.masked_less(index, 0), cmap=ListedColormap(colours), vmin=-0.5, vmax=len(shown) - 0.5,
              extent=extent_km(lattice), interpolation="nearest")
    if boundaries is not None and len(boundaries):
        xmin, xmax, ymin, ymax = extent_km(lattice)
        boundaries.boundary.scale(1e-3, 1e-3, origin=(0, 0)).plot(ax=ax, color="black", linewidth=0.4, alpha=0.6)
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)
    labels = {"urban_lost": "urban_lost (likely error)"}
    handles = [Patch(color=col, label=f"{labels.get(c, c)}: {counts[c] * cell_km2:,.0f} km²")  # type: ignore[arg-type]  # stubs: an RGBA array is a colour
               for c, col in zip(shown, colours)]
    if counts["nodata"]:
        handles.append(Patch(facecolor="#f4f4f4", edgecolor="grey", label=f"nodata: {counts['nodata'] * cell_km2:,.0f} km²"))
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_xlabel("easting (km)")
    ax.set_ylabel("northing (km)")
    ax.set_title(title)
    save_png(fig, path)


def read_maps(settings: ChangeSettings) -> tuple[pd.DataFrame, float, CRS]:
    """The two years' predictions compared cell by cell (`compare`), with the cell size
    (metres) and CRS of the grid."""
    tables = []
    for path, period in zip(settings.predictions, settings.years):
        table, cell_size, crs = io.read_cells(path, f"predictions of {period}", ["cell_id", "class"])
        tables.append(table)
    names = tuple(str(p) for p in settings.predictions)
    return compare(tables[0], tables[1], settings.years, names), cell_size, crs


def municipality_keys(settings: ChangeSettings, change: pd.DataFrame, cell_size: float, crs: CRS,
                      raster: PixelLattice) -> tuple[gpd.GeoDataFrame | None, np.ndarray, np.ndarray]:
    """The municipalities over the region (in `crs`; None without data.municipalities) and
    each cell's municipality key and name (`assign_municipalities`; "" and "(none)" for all
    without municipalities)."""
    if settings.municipalities is None:  # a region without municipalities: the table has the one row "(none)"
        return None, np.full(len(change), "", object), np.full(len(change), "(none)", object)
    id_column, name_column = settings.id_column, settings.name_column
    munis = io.read_vector(settings.municipalities, "municipalities", [id_column, name_column])
    munis = munis.to_crs(crs)
    munis = munis[munis.intersects(box(*raster.bounds))]
    key, name = assign_municipalities(change["col"], change["row"], cell_size, crs, munis, id_column, name_column)
    return munis, key, name


def municipality_table(change: pd.DataFrame, key: np.ndarray, name: np.ndarray, years: tuple[str, str],
                       cell_km2: float, id_column: str) -> pd.DataFrame:
    """municipalities.csv: one row per municipality key (`id_column`), its name, then the
    `tally` of its cells."""
    per_muni = tally(change, key, years, cell_km2)
    names_of = pd.Series(name, index=key).groupby(level=0).first()
    per_muni.insert(0, "name", names_of.reindex(per_muni.index).to_numpy())
    per_muni.index.name = id_column
    return per_muni.reset_index()


def region_summary(change: pd.DataFrame, per_muni: pd.DataFrame, key: np.ndarray, years: tuple[str, str],
                   cell_km2: float, id_column: str) -> dict[str, Any]:
    """region.json: the region's cells and km² per change class, urban km² per year and
    the counts of municipalities and of cells outside them."""
    t1, t2 = years
    region = tally(change, None, years, cell_km2).iloc[0]
    counts = {c: int(region[f"cells_{c}"]) for c in CHANGES}
    return {
        "periods": [t1, t2],
        "cells": len(change),
        "cell_km2": cell_km2,
        "cells_per_change": counts,
        "km2_per_change": {c: counts[c] * cell_km2 for c in CHANGES},
        f"urban_km2_{t1}": float(region[f"urban_km2_{t1}"]),
        f"urban_km2_{t2}": float(region[f"urban_km2_{t2}"]),
        "likely_error_cells": counts["urban_lost"],
        "municipalities": int((per_muni[id_column] != "").sum()),
        "cells_outside_municipalities": int((key == "").sum()),
    }


def write_change(settings: ChangeSettings, change: pd.DataFrame, raster: PixelLattice, per_muni: pd.DataFrame,
                 summary: dict[str, Any], munis: gpd.GeoDataFrame | None, cell_size: float, crs: CRS) -> None:
    """The stage's five outputs, renamed into place together (all or none)."""
    t1, t2 = settings.years
    counts, cell_km2 = summary["cells_per_change"], summary["cell_km2"]
    codes = change["change"].map(CODES).to_numpy(np.uint8)
    codes_grid = cellmap.to_raster(raster, change["col"], change["row"], codes, CODES["nodata"], np.uint8)
    legend = ", ".join(f"{v} {k}" for k, v in CODES.items())
    title = f"{settings.region}: urban change {t1} -> {t2}"
    with contextlib.ExitStack() as stack:  # all five renamed together, or none
        tmp = {k: stack.enter_context(io.atomic_output(f)) for k, f in (
            ("json", settings.region_out), ("csv", settings.municipalities_out), ("png", settings.map_out),
            ("tif", settings.cog_out), ("parquet", settings.cells_out))}
        io.write_cells(tmp["parquet"], change, cell_size, crs)
        cellmap.write_cog(tmp["tif"], codes_grid, raster, CODES["nodata"], f"change {t1}-{t2}: {legend}",
                          {"CHANGE_CODES": legend, "periods": f"{t1},{t2}"}, resampling="mode",
                          colormap={CODES[c]: COLOURS[c] for c in CHANGES})
        change_png(tmp["png"], raster, codes_grid, counts, cell_km2, title, munis)
        per_muni.to_csv(tmp["csv"], index=False, float_format="%.6g")
        io.write_json(tmp["json"], summary)


def map_change(settings: ChangeSettings) -> None:
    """The stage's work: the two periods' predictions + municipalities -> change/."""
    t1, t2 = settings.years
    change, cell_size, crs = read_maps(settings)
    raster = cellmap.cell_lattice(change["col"], change["row"], cell_size, crs)
    munis, key, name = municipality_keys(settings, change, cell_size, crs, raster)
    cell_km2 = cell_size**2 / 1e6
    per_muni = municipality_table(change, key, name, settings.years, cell_km2, settings.id_column)
    summary = region_summary(change, per_muni, key, settings.years, cell_km2, settings.id_column)
    write_change(settings, change, raster, per_muni, summary, munis, cell_size, crs)
    counts = summary["cells_per_change"]
    print(
        f"change ({t1} -> {t2}): {counts['new_urban']:,} new_urban, {counts['stable_urban']:,} stable_urban, "
        f"{counts['urban_lost']:,} urban_lost (likely errors), {counts['nodata']:,} nodata cells; "
        f"{summary['municipalities']} municipalities -> {settings.out_dir}"
    )


def run(cfg: DictConfig) -> None:
    """The stage: predictions/<periods.census>.parquet + predictions/<periods.target>.parquet +
    data.municipalities -> change/ (change.parquet, change.tif, change.png,
    municipalities.csv, region.json)."""
    map_change(ChangeSettings.from_config(cfg))
