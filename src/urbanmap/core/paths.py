"""Where each stage writes, from the config. dvc.yaml declares the same paths
(a test checks that they agree)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from urbanmap.core.errors import InputError


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


def train_year(cfg: DictConfig) -> int:
    """The census year whose imagery and labels train the models (years.train)."""
    return int(cfg.years.train)


def mosaic(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/mosaic_<year>.tif`: the annual mosaic COG on the region's pixel lattice."""
    return region_dir(cfg) / f"mosaic_{int(year)}.tif"


def mosaic_summary(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/mosaic_<year>.json`: scenes used, clear observations, nodata pixels, seconds."""
    return region_dir(cfg) / f"mosaic_{int(year)}.json"


def patches(cfg: DictConfig) -> Path:
    """Balanced sample of labelled cells and their patches of the training year (npz)."""
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

# --- synth: synthetic scenes and the generator's truth, per year ------------------------


def stage_year(cfg: DictConfig) -> int:
    """The year a per-year stage runs for: `year`, or `years.train` when it is null."""
    value = cfg.year if cfg.year is not None else cfg.years.train
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"year={value!r}: not a year") from None


def scenes_dir(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/scenes/<year>/`: one folder per Landsat product, and catalog.json."""
    return region_dir(cfg) / "scenes" / str(int(year))


def scene_catalog(cfg: DictConfig, year: int) -> Path:
    """The self-contained STAC catalog of a year's scenes."""
    return scenes_dir(cfg, year) / "catalog.json"


def truth_dir(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/truth/<year>/`: the synthetic generator's truth for a year."""
    return region_dir(cfg) / "truth" / str(int(year))


def truth_cells(cfg: DictConfig, year: int) -> Path:
    """Per-cell truth (GeoParquet): urban fraction, true class, new_urban (later years)."""
    return truth_dir(cfg, year) / "cells.parquet"


def truth_landcover(cfg: DictConfig, year: int) -> Path:
    """Land-cover class raster (uint8 GeoTIFF) on the region's pixel lattice."""
    return truth_dir(cfg, year) / "landcover.tif"


def truth_reflectance(cfg: DictConfig, year: int) -> Path:
    """Cloud-free truth reflectance (6-band float32 GeoTIFF) on the region's pixel lattice."""
    return truth_dir(cfg, year) / "reflectance.tif"


def truth_clear_count(cfg: DictConfig, year: int) -> Path:
    """Clear observations per lattice pixel over the year's scenes (uint8 GeoTIFF)."""
    return truth_dir(cfg, year) / "clear_observations.tif"


def synth_summary(cfg: DictConfig, year: int) -> Path:
    """Per-scene cloud statistics, coverage of the region and truth counts (JSON)."""
    return truth_dir(cfg, year) / "summary.json"

# --- predict and change -----------------------------------------------------------------


def predictions(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/predictions_<year>.parquet`: p_urban and class of every grid cell."""
    return region_dir(cfg) / f"predictions_{int(year)}.parquet"


def p_urban_cog(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/p_urban_<year>.tif`: COG of p_urban, one pixel per grid cell."""
    return region_dir(cfg) / f"p_urban_{int(year)}.tif"


def predictions_map(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/predictions_<year>.png`: the map of p_urban and classes."""
    return region_dir(cfg) / f"predictions_{int(year)}.png"


def predictions_summary(cfg: DictConfig, year: int) -> Path:
    """`<region_dir>/predictions_<year>.json`: cells per class, seconds, cells/s."""
    return region_dir(cfg) / f"predictions_{int(year)}.json"


def change_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/change/`: the change between years.train's and years.target's maps."""
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
    """`<region_dir>/validation/`: the validation sample of years.target's map and its estimate."""
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


def sdg_dir(cfg: DictConfig) -> Path:
    """`<region_dir>/sdg/`: SDG indicator 11.3.1 per municipality and for the region."""
    return region_dir(cfg) / "sdg"


def sdg_table(cfg: DictConfig) -> Path:
    """`<region_dir>/sdg/sdg_11_3_1.csv`: the indicator per municipality."""
    return sdg_dir(cfg) / "sdg_11_3_1.csv"


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


def fill_path(template: str, cfg: DictConfig, year: int) -> str:
    """`template` with `{year}`, `{region_dir}`, `{out_dir}` and `{name}` filled in."""
    try:
        return str(template).format(
            year=int(year), region_dir=str(region_dir(cfg)), out_dir=str(cfg.out_dir), name=cfg.data.name
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"data.imagery.file: bad placeholder in {template!r}: {exc}") from None
