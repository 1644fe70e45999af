"""The `series` stage: every period's map side by side, per cell, over periods.list.

``urbanmap series`` reads ``predictions/<period>.parquet`` of every listed period (the
same model on every period's mosaic, `predict`) and builds, per cell, the sequence of
classes and probabilities over the periods (its trajectory), and beside it a
**consistent** series: built land rarely disappears (the logic of WSF-Evolution and of
GHSL's multi-temporal built-up layers), so once a cell is urban it stays urban unless the
evidence against it is strong over consecutive periods:

- a cell urban in the consistent series at t-1 reverts to non_urban at t only if its raw
  class is non_urban with ``p_urban <= series.consistency.revert_max`` and not
  ``low_quality`` in ``series.consistency.revert_periods`` consecutive periods from t on
  (the last periods, fewer than that many left, never revert);
- a cell with no prediction (``nodata``) or a low_quality prediction at t keeps its class
  of t-1 (a gap is no evidence); before its first usable period it is ``nodata``;
- otherwise the consistent class is the raw one.

``series.consistency.enabled: false`` makes the consistent series the raw one (nodata
and low-quality gaps still filled).

The **first urban period** of a cell is the first period of its consistent series that is
urban: ``before`` when it is urban already in the first period (urban before the series
starts), ``never`` when it is never urban, ``nodata`` when it has no usable period.

Outputs under ``<region_dir>/series/``:

- ``series.parquet``: GeoParquet, one row per cell: cell_id, col, row; per period
  ``class_<p>``, ``p_urban_<p>``, ``low_quality_<p>`` (raw) and ``consistent_<p>``;
  ``first_urban`` (a period's label, before, never, nodata);
- ``first_urban.tif``: uint8 COG, one pixel per cell: 1 = before (urban in the first
  period), k + 1 = first urban in the k-th period (k >= 1, 0-based), 0 = never, 255 =
  nodata; the codes in the band description and the ``FIRST_URBAN_CODES`` tag;
  ``first_urban.png``: the map, a WSF-Evolution-like picture of the city's growth;
- ``change_<a>_<b>.parquet`` / ``.tif`` / ``.png``: the change between the consistent
  maps of periods a and b (mapping/change.py's classes and codes), for every pair of
  consecutive periods and for the first to the last;
- ``areas.csv``: per period (label, start, end, middle): urban km² raw and consistent,
  low-quality and nodata cells; ``areas.png``: urban km² against time, raw and consistent,
  with the low-quality cells' share.

And ``<region_dir>/series.json`` (DVC metrics): the periods, the urban km² per period (raw,
consistent), the cells whose consistent class differs from the raw one, the first-urban
counts per period.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pyproj import CRS

from urbanmap.core import io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice
from urbanmap.core.periods import Period, PeriodSettings
from urbanmap.mapping import cellmap
from urbanmap.mapping.cellmap import extent_km, pyplot, save_png
from urbanmap.mapping.change import CHANGES, CODES, COLOURS, change_png, compare

#: first_urban.tif's nodata and "never urban" codes; period k (0-based) is k + 1.
NEVER, NODATA = 0, 255


@dataclass(frozen=True)
class SeriesSettings:
    """What the `series` stage reads from the config, checked.

    Attributes:
        periods: the listed periods in time order (periods.list).
        consistency: whether the consistency rule applies (series.consistency.enabled).
        revert_max: p_urban at or below which a non_urban prediction is strong evidence
            (series.consistency.revert_max, 0..threshold).
        revert_periods: consecutive periods of strong evidence that revert an urban cell
            (series.consistency.revert_periods, >= 1).
        region: data.name, for the maps' titles.
        predictions: each period's predictions/<period>.parquet.
        out_dir: the series/ folder; summary: series.json.
    """

    periods: tuple[Period, ...]
    consistency: bool
    revert_max: float
    revert_periods: int
    region: str
    predictions: tuple[Path, ...]
    out_dir: Path
    summary: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SeriesSettings:
        """Read `periods` and `series`; InputError naming the config key that is wrong."""
        periods = PeriodSettings.from_config(cfg).periods
        if len(periods) < 2:
            raise InputError(f"periods.list: the series needs at least two periods, got {periods[0].label} alone")
        c = cfg.series.consistency
        revert_max, revert_periods = c.revert_max, c.revert_periods
        if isinstance(revert_max, bool) or not isinstance(revert_max, (int, float)) or not 0 <= revert_max < 1:
            raise InputError(f"series.consistency.revert_max: expected a number in [0, 1), got {revert_max!r}")
        if isinstance(revert_periods, bool) or not isinstance(revert_periods, int) or revert_periods < 1:
            raise InputError(f"series.consistency.revert_periods: expected a whole number >= 1, got {revert_periods!r}")
        return cls(
            periods=periods, consistency=bool(c.enabled), revert_max=float(revert_max), revert_periods=int(revert_periods),
            region=str(cfg.data.name), predictions=tuple(paths.predictions(cfg, p) for p in periods),
            out_dir=paths.series_dir(cfg), summary=paths.series_summary(cfg),
        )


def consistent_classes(classes: np.ndarray, p_urban: np.ndarray, low_quality: np.ndarray, enabled: bool = True,
                       revert_max: float = 0.2, revert_periods: int = 2) -> np.ndarray:
    """(n, T) consistent classes from the raw (n, T) classes (urban, non_urban, nodata),
    p_urban and low_quality over T periods in time order (see the module docstring)."""
    classes = np.asarray(classes, object)
    n, t_count = classes.shape
    usable = (classes != "nodata") & ~np.asarray(low_quality, bool)
    strong = usable & (classes == "non_urban") & (np.asarray(p_urban, float) <= revert_max)
    # strong_run[:, t]: strong evidence in revert_periods consecutive periods from t on
    strong_run = np.zeros((n, t_count), bool)
    for t in range(t_count - revert_periods + 1):
        strong_run[:, t] = strong[:, t:t + revert_periods].all(axis=1)
    out = np.empty((n, t_count), object)
    previous = np.full(n, "nodata", object)
    for t in range(t_count):
        raw = np.where(usable[:, t], classes[:, t], previous)
        if enabled:
            keep = (previous == "urban") & (raw == "non_urban") & ~strong_run[:, t]
            raw = np.where(keep, "urban", raw)
        out[:, t] = raw
        previous = raw
    return out


def first_urban(consistent: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the first period of the (n, T) consistent series that is urban: (label
    (object: a label, "before", "never", "nodata"), uint8 code (first_urban.tif's))."""
    urban = consistent == "urban"
    any_urban = urban.any(axis=1)
    first = np.argmax(urban, axis=1)
    all_nodata = (consistent == "nodata").all(axis=1)
    names = np.array(["before", *labels[1:]], object)
    label = np.where(any_urban, names[first], np.where(all_nodata, "nodata", "never")).astype(object)
    code = np.where(any_urban, first + 1, np.where(all_nodata, NODATA, NEVER)).astype(np.uint8)
    return label, code


def read_series(settings: SeriesSettings) -> tuple[pd.DataFrame, float, CRS]:
    """Every period's predictions merged on the cells: cell_id, col, row and, per period,
    class_<p>, p_urban_<p>, low_quality_<p>; InputError naming the period whose map is
    missing or made on other cells."""
    table: pd.DataFrame | None = None
    cell_size, crs = 0.0, None
    for period, path in zip(settings.periods, settings.predictions):
        what = f"predictions of period {period}"
        pred, cell_size, crs = io.read_cells(path, what)
        missing = [c for c in ("cell_id", "p_urban", "class") if c not in pred.columns]
        if missing:
            raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
        low = pred["low_quality"] if "low_quality" in pred.columns else pd.Series(False, index=pred.index)
        part = pd.DataFrame({"cell_id": pred["cell_id"].astype(str), f"class_{period}": pred["class"].astype(str),
                             f"p_urban_{period}": pred["p_urban"].astype(np.float32),
                             f"low_quality_{period}": low.astype(bool)})
        if table is None:
            table = pred[["cell_id", "col", "row"]].assign(cell_id=lambda f: f["cell_id"].astype(str)).merge(part, on="cell_id")
        else:
            if len(part) != len(table) or not part["cell_id"].isin(table["cell_id"]).all():
                raise InputError(f"{path}: period {period} was predicted on other cells than {settings.periods[0]}; "
                                 "predict every period on the same grid")
            table = table.merge(part, on="cell_id")
    assert table is not None and crs is not None
    table["col"], table["row"] = table["col"].astype(np.int64), table["row"].astype(np.int64)
    return table.sort_values(["row", "col"], ascending=[False, True], ignore_index=True), cell_size, crs


def build_series(table: pd.DataFrame, settings: SeriesSettings) -> pd.DataFrame:
    """series.parquet's table: the raw columns of `table`, consistent_<p> and first_urban."""
    labels = [p.label for p in settings.periods]
    classes = np.stack([table[f"class_{p}"].to_numpy(object) for p in labels], axis=1)
    p_urban = np.stack([table[f"p_urban_{p}"].to_numpy(float) for p in labels], axis=1)
    low = np.stack([table[f"low_quality_{p}"].to_numpy(bool) for p in labels], axis=1)
    consistent = consistent_classes(classes, p_urban, low, settings.consistency, settings.revert_max,
                                    settings.revert_periods)
    out = table.copy()
    for k, p in enumerate(labels):
        out[f"consistent_{p}"] = consistent[:, k]
    out["first_urban"], _ = first_urban(consistent, labels)
    return out


def pairs(labels: list[str]) -> list[tuple[str, str]]:
    """Consecutive pairs of periods, then the first to the last (when not already one)."""
    out = list(zip(labels, labels[1:]))
    return out if (labels[0], labels[-1]) in out else [*out, (labels[0], labels[-1])]


def areas(series: pd.DataFrame, periods: tuple[Period, ...], cell_km2: float) -> pd.DataFrame:
    """areas.csv: per period its window and middle, urban km² (raw, consistent), low-quality
    and nodata cells."""
    rows = []
    for p in periods:
        raw, cons = series[f"class_{p}"].to_numpy(), series[f"consistent_{p}"].to_numpy()
        rows.append({"period": p.label, "start": p.start.isoformat(), "end": p.end.isoformat(),
                     "middle": round(p.middle, 6), "urban_km2_raw": float((raw == "urban").sum() * cell_km2),
                     "urban_km2_consistent": float((cons == "urban").sum() * cell_km2),
                     "low_quality_cells": int(series[f"low_quality_{p}"].sum()),
                     "nodata_cells": int((raw == "nodata").sum())})
    return pd.DataFrame(rows)


def _first_urban_map(path: Path, lattice: PixelLattice, codes: np.ndarray, labels: list[str], title: str) -> None:
    """PNG: the first urban period of each cell (one colour per period, grey never)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = pyplot()
    n = len(labels)
    cmap = plt.get_cmap("viridis", n)
    colours = ["#e6e6e6", *(cmap(k) for k in range(n))]
    names = ["never urban", f"urban by {labels[0]}", *(f"first urban {p}" for p in labels[1:])]
    fig, ax = plt.subplots(figsize=(8, 7.4), constrained_layout=True)
    ax.set_facecolor("#ffffff")
    shown = np.ma.masked_equal(codes.astype(int), NODATA)
    ax.imshow(shown, cmap=ListedColormap(colours), vmin=-0.5, vmax=n + 0.5, extent=extent_km(lattice),
              interpolation="nearest")
    counts = [int((codes == k).sum()) for k in range(n + 1)]
    ax.legend(handles=[Patch(color=c, label=f"{name} ({k:,} cells)") for c, name, k in zip(colours, names, counts)],
              loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_xlabel("easting (km)")
    ax.set_ylabel("northing (km)")
    ax.set_title(title)
    save_png(fig, path)


def _areas_chart(path: Path, table: pd.DataFrame, title: str) -> None:
    """PNG: urban km² against the periods' middles, raw and consistent."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    ax.plot(table["middle"], table["urban_km2_raw"], "o--", color="#888888", label="mapped (raw)")
    ax.plot(table["middle"], table["urban_km2_consistent"], "o-", color="#c0392b", label="mapped (consistent)")
    for _, r in table.iterrows():
        ax.annotate(str(r["period"]), (r["middle"], r["urban_km2_consistent"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("period (middle, decimal year)")
    ax.set_ylabel("urban area (km²)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    save_png(fig, path)


def write_series(settings: SeriesSettings, series: pd.DataFrame, cell_size: float, crs: CRS) -> dict[str, Any]:
    """Every output into a temporary series/ folder renamed into place at the end (all or
    none), then series.json; returns the summary."""
    labels = [p.label for p in settings.periods]
    cell_km2 = cell_size**2 / 1e6
    raster = cellmap.cell_lattice(series["col"], series["row"], cell_size, crs)
    _, codes = first_urban(np.stack([series[f"consistent_{p}"].to_numpy(object) for p in labels], axis=1), labels)
    grid = cellmap.to_raster(raster, series["col"], series["row"], codes, NODATA, np.uint8)
    legend = ", ".join([f"{NEVER} never", f"1 before {labels[0]}", *(f"{k + 1} {p}" for k, p in enumerate(labels) if k),
                        f"{NODATA} nodata"])
    table = areas(series, settings.periods, cell_km2)
    changes = {}
    with io.atomic_directory(settings.out_dir) as tmp:
        io.write_cells(tmp / "series.parquet", series, cell_size, crs)
        cellmap.write_cog(tmp / "first_urban.tif", grid, raster, NODATA, f"first urban period: {legend}",
                          {"FIRST_URBAN_CODES": legend, "periods": ",".join(labels)}, resampling="mode")
        _first_urban_map(tmp / "first_urban.png", raster, grid, labels,
                         f"{settings.region}: first urban period ({'consistent' if settings.consistency else 'raw'} series)")
        for a, b in pairs(labels):
            first = series[["cell_id", "col", "row"]].assign(**{"class": series[f"consistent_{a}"]})
            second = series[["cell_id", "col", "row"]].assign(**{"class": series[f"consistent_{b}"]})
            change = compare(first, second, (a, b))
            counts = {c: int((change["change"] == c).sum()) for c in CHANGES}
            changes[f"{a}_{b}"] = counts
            change_codes = change["change"].map(CODES).to_numpy(np.uint8)
            change_grid = cellmap.to_raster(raster, change["col"], change["row"], change_codes, CODES["nodata"], np.uint8)
            code_legend = ", ".join(f"{v} {k}" for k, v in CODES.items())
            io.write_cells(tmp / f"change_{a}_{b}.parquet", change, cell_size, crs)
            cellmap.write_cog(tmp / f"change_{a}_{b}.tif", change_grid, raster, CODES["nodata"],
                              f"change {a}-{b}: {code_legend}", {"CHANGE_CODES": code_legend, "periods": f"{a},{b}"},
                              resampling="mode", colormap={CODES[c]: COLOURS[c] for c in CHANGES})
            change_png(tmp / f"change_{a}_{b}.png", raster, change_grid, counts, cell_km2,
                       f"{settings.region}: urban change {a} -> {b} (consistent series)")
        table.to_csv(tmp / "areas.csv", index=False, float_format="%.6g")
        _areas_chart(tmp / "areas.png", table, f"{settings.region}: urban area per period")
    differs = {p: int((series[f"class_{p}"].isin(["urban", "non_urban"])
                       & (series[f"class_{p}"] != series[f"consistent_{p}"])).sum()) for p in labels}
    summary = {
        "periods": labels,
        "consistency": {"enabled": settings.consistency, "revert_max": settings.revert_max,
                        "revert_periods": settings.revert_periods},
        "cells": len(series),
        "urban_km2_raw": dict(zip(labels, table["urban_km2_raw"].tolist())),
        "urban_km2_consistent": dict(zip(labels, table["urban_km2_consistent"].tolist())),
        "low_quality_cells": dict(zip(labels, table["low_quality_cells"].tolist())),
        "cells_changed_by_consistency": differs,
        "first_urban": {k: int((series["first_urban"] == k).sum()) for k in ["before", *labels[1:], "never", "nodata"]},
        "changes": changes,
    }
    io.write_json(settings.summary, summary)
    return summary


def run(cfg: DictConfig) -> None:
    """The stage: predictions/<period>.parquet of every period -> series/ and series.json."""
    settings = SeriesSettings.from_config(cfg)
    table, cell_size, crs = read_series(settings)
    series = build_series(table, settings)
    summary = write_series(settings, series, cell_size, crs)
    first = ", ".join(f"{k} {v:,}" for k, v in summary["first_urban"].items())
    print(f"series ({', '.join(summary['periods'])}): urban km² (consistent) "
          f"{', '.join(f'{v:,.0f}' for v in summary['urban_km2_consistent'].values())}; first urban: {first}; "
          f"{sum(summary['cells_changed_by_consistency'].values()):,} cell-periods made consistent -> {settings.out_dir}")
