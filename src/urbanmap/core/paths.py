"""Where each stage writes, from the config. dvc.yaml declares the same paths
(a test checks that they agree)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from urbanmap.core import periods
from urbanmap.core.errors import InputError
from urbanmap.core.periods import Period, PeriodSettings

PeriodLike = Period | str


def label(period: PeriodLike) -> str:
    """The label that names a period's files (`2019H1`)."""
    return period.label if isinstance(period, Period) else str(period)


def region_dir(cfg: DictConfig) -> Path:
    """`<out_dir>/<data.name>/`: every output of one region lives here."""
    return Path(str(cfg.out_dir)) / str(cfg.data.name)


def grid(cfg: DictConfig) -> Path:
    """`<region_dir>/grid.parquet`: the region's cells (census.grid)."""
    return region_dir(cfg) / "grid.parquet"


def labels(cfg: DictConfig) -> Path:
    """`<region_dir>/labels.parquet`: census measures and label per cell."""
    return region_dir(cfg) / "labels.parquet"


def label_summary(cfg: DictConfig) -> Path:
    """`<region_dir>/label_summary.json`: counts per label (DVC metrics)."""
    return region_dir(cfg) / "label_summary.json"

# --- patches, train, evaluate -------------------------------------------------------------


def census_period(cfg: DictConfig) -> Period:
    """The census period whose imagery and labels train the models (periods.census)."""
    return PeriodSettings.from_config(cfg).census


def mosaic(cfg: DictConfig, period: PeriodLike) -> Path:
    """`<region_dir>/mosaic_<period>.tif`: the annual mosaic COG on the region's pixel lattice."""
    return region_dir(cfg) / f"mosaic_{label(period)}.tif"


def mosaic_summary(cfg: DictConfig, period: PeriodLike) -> Path:
    """`<region_dir>/mosaic_<period>.json`: scenes used, clear observations, nodata pixels, seconds."""
    return region_dir(cfg) / f"mosaic_{label(period)}.json"


def patches(cfg: DictConfig) -> Path:
    """Balanced sample of labelled cells and their patches of the census period (npz)."""
    return region_dir(cfg) / "patches.npz"


def patches_summary(cfg: DictConfig) -> Path:
    """`<region_dir>/patches_summary.json`: the sample's counts (DVC metrics)."""
    return region_dir(cfg) / "patches_summary.json"


def cv_predictions(cfg: DictConfig) -> Path:
    """Out-of-fold predictions of the cross-validation: fold, cell_id, y_true, p_urban."""
    return region_dir(cfg) / "cv_predictions.parquet"


def model_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/model/`: the final model (skops or safetensors + JSON) and its card."""
    return region_dir(cfg) / "model"


def metrics(cfg: DictConfig) -> Path:
    """Cross-validation metrics (means, stds, pooled) for `dvc metrics show`."""
    return region_dir(cfg) / "metrics.json"


def plots_dir(cfg: DictConfig) -> Path:
    """CSV files for `dvc plots show`: confusion.csv, roc.csv, pr.csv."""
    return region_dir(cfg) / "plots"


def evaluation_dir(cfg: DictConfig) -> Path:
    """Per-fold table, PNG figures, feature importances and the markdown report."""
    return region_dir(cfg) / "evaluation"

# --- synth: synthetic scenes and the generator's truth, per period ------------------------


def stage_period(cfg: DictConfig) -> Period:
    """The period a per-period stage runs for: `period=`, or periods.census when it is null."""
    return periods.stage_period(cfg)


def scenes_dir(cfg: DictConfig, period: PeriodLike) -> Path:
    """`<region_dir>/scenes/<period>/`: one folder per Landsat product, and catalog.json."""
    return region_dir(cfg) / "scenes" / label(period)


def scene_catalog(cfg: DictConfig, period: PeriodLike) -> Path:
    """The self-contained STAC catalog of a period's scenes."""
    return scenes_dir(cfg, period) / "catalog.json"


def truth_dir(cfg: DictConfig, period: PeriodLike) -> Path:
    """`<region_dir>/truth/<period>/`: the synthetic generator's truth for a period."""
    return region_dir(cfg) / "truth" / label(period)


def truth_cells(cfg: DictConfig, period: PeriodLike) -> Path:
    """Per-cell truth (GeoParquet): urban fraction, true class, new_urban (later periods)."""
    return truth_dir(cfg, period) / "cells.parquet"


def truth_landcover(cfg: DictConfig, period: PeriodLike) -> Path:
    """Land-cover class raster (uint8 GeoTIFF) on the region's pixel lattice."""
    return truth_dir(cfg, period) / "landcover.tif"


def truth_reflectance(cfg: DictConfig, period: PeriodLike) -> Path:
    """Cloud-free truth reflectance (6-band float32 GeoTIFF) on the region's pixel lattice."""
    return truth_dir(cfg, period) / "reflectance.tif"


def truth_clear_count(cfg: DictConfig, period: PeriodLike) -> Path:
    """Clear observations per lattice pixel over the period's scenes (uint8 GeoTIFF)."""
    return truth_dir(cfg, period) / "clear_observations.tif"


def synth_summary(cfg: DictConfig, period: PeriodLike) -> Path:
    """Per-scene cloud statistics, coverage of the region and truth counts (JSON)."""
    return truth_dir(cfg, period) / "summary.json"

# --- predict and change -----------------------------------------------------------------


def predictions_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/predictions/`: every period's map; the `series` stage depends on the
    folder, so a period added to periods.list is read without listing its files."""
    return region_dir(cfg) / "predictions"


def predictions(cfg: DictConfig, period: PeriodLike) -> Path:
    """`predictions/<period>.parquet`: p_urban, class, clear and low_quality of every grid cell."""
    return predictions_dir(cfg) / f"{label(period)}.parquet"


def p_urban_cog(cfg: DictConfig, period: PeriodLike) -> Path:
    """`predictions/<period>.tif`: COG of p_urban, one pixel per grid cell."""
    return predictions_dir(cfg) / f"{label(period)}.tif"


def predictions_map(cfg: DictConfig, period: PeriodLike) -> Path:
    """`predictions/<period>.png`: the map of p_urban and classes (low-quality cells hatched)."""
    return predictions_dir(cfg) / f"{label(period)}.png"


def predictions_summary(cfg: DictConfig, period: PeriodLike) -> Path:
    """`predictions/<period>.json`: cells per class, low-quality cells, urban km²."""
    return predictions_dir(cfg) / f"{label(period)}.json"

# --- series and change: trajectories over the periods, change between two ---------------


def series_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/series/`: per-cell trajectories, first urban period, changes between
    periods, the area series (mapping/series.py)."""
    return region_dir(cfg) / "series"


def series_summary(cfg: DictConfig) -> Path:
    """`<region_dir>/series.json`: the series' figures (DVC metrics)."""
    return region_dir(cfg) / "series.json"


def change_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/change/`: the change between the census period's and periods.target's maps."""
    return region_dir(cfg) / "change"


def change_cells(cfg: DictConfig) -> Path:
    """Per-cell change classes (GeoParquet)."""
    return change_dir(cfg) / "change.parquet"


def change_cog(cfg: DictConfig) -> Path:
    """uint8 COG of change codes, one pixel per grid cell."""
    return change_dir(cfg) / "change.tif"


def change_map(cfg: DictConfig) -> Path:
    """`<region_dir>/change/change.png`: the change map."""
    return change_dir(cfg) / "change.png"


def change_municipalities(cfg: DictConfig) -> Path:
    """Cells and km² per change class and municipality (CSV)."""
    return change_dir(cfg) / "municipalities.csv"


def change_region(cfg: DictConfig) -> Path:
    """Region totals per change class (JSON)."""
    return change_dir(cfg) / "region.json"

# --- validate: sample -> interpret -> estimate; sdg ---------------------------------------


def validation_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/validation/`: the validation sample of periods.target's map and its estimate."""
    return region_dir(cfg) / "validation"


def validation_sample(cfg: DictConfig) -> Path:
    """The sample for interpreters (CSV, empty ref_class column)."""
    return validation_dir(cfg) / "sample.csv"


def validation_sample_gpkg(cfg: DictConfig) -> Path:
    """The same sample as cell polygons (GeoPackage, layer `sample`)."""
    return validation_dir(cfg) / "sample.gpkg"


def validation_chips(cfg: DictConfig) -> Path:
    """One PNG per sampled cell: true- and false-colour mosaic around it."""
    return validation_dir(cfg) / "chips"


def validation_strata(cfg: DictConfig) -> Path:
    """Strata of the sample: class, area (km²), cells, weight, sample size (CSV)."""
    return validation_dir(cfg) / "strata.csv"


def validation_interpreted(cfg: DictConfig) -> Path:
    """The sample with ref_class filled in (by the simulated interpreter on the default)."""
    return validation_dir(cfg) / "interpreted.csv"


def validation_estimate(cfg: DictConfig) -> Path:
    """Accuracy and error-adjusted area with 95% intervals (JSON, dvc metrics)."""
    return validation_dir(cfg) / "estimate.json"


def validation_periods_dir(cfg: DictConfig) -> Path:
    """`validation/periods/`: every period's error-adjusted urban area (areas.csv, areas.png)."""
    return validation_dir(cfg) / "periods"


def validation_periods_summary(cfg: DictConfig) -> Path:
    """`validation/periods.json`: the same per period (DVC metrics; sdg's intervals)."""
    return validation_dir(cfg) / "periods.json"


def sdg_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/sdg/`: SDG indicator 11.3.1 per municipality and for the region."""
    return region_dir(cfg) / "sdg"


def sdg_table(cfg: DictConfig) -> Path:
    """`<region_dir>/sdg/sdg_11_3_1.csv`: the indicator per municipality."""
    return sdg_dir(cfg) / "sdg_11_3_1.csv"


def sdg_area_series(cfg: DictConfig) -> Path:
    """`<region_dir>/sdg/municipal_areas.csv`: every period's urban area per municipality."""
    return sdg_dir(cfg) / "municipal_areas.csv"


def sdg_chart(cfg: DictConfig) -> Path:
    """`<region_dir>/sdg/sdg_11_3_1.png`: the indicator's chart."""
    return sdg_dir(cfg) / "sdg_11_3_1.png"


def sdg_summary(cfg: DictConfig) -> Path:
    """The region's row of the table (JSON, dvc metrics)."""
    return sdg_dir(cfg) / "sdg_11_3_1.json"

# --- plan: the tiles of the heavy stages and their estimated cost --------------------------


def tiles(cfg: DictConfig) -> Path:
    """`<region_dir>/tiles.parquet`: the tile index (GeoParquet, one polygon per tile)."""
    return region_dir(cfg) / "tiles.parquet"


def plan(cfg: DictConfig) -> Path:
    """`<region_dir>/plan.json`: tiles, scenes per tile and estimated cost per stage."""
    return region_dir(cfg) / "plan.json"


def timings_log(cfg: DictConfig) -> Path:
    """`<region_dir>/logs/timings.jsonl`: one JSON line per timed stage run (seconds,
    cells/s, date). DVC does not track it: timings change on every run, results do not."""
    return region_dir(cfg) / "logs" / "timings.jsonl"


def fill_path(template: str, cfg: DictConfig, period: Period) -> str:
    """`template` with `{period}` (the label), `{year}` (the year the period starts in),
    `{region_dir}`, `{out_dir}` and `{name}` filled in."""
    try:
        return str(template).format(
            period=period.label, year=period.year, region_dir=str(region_dir(cfg)), out_dir=str(cfg.out_dir), name=cfg.data.name
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"data.imagery.file: bad placeholder in {template!r}: {exc}") from None
