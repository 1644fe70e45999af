"""Step `validate sample`: a stratified random sample of grid cells of periods.target's map.

Strata (`validation.strata`): `map`, the map classes (urban, non_urban), or `change`, the
change classes of change/change.parquet (new_urban, urban_lost, stable_urban,
stable_non_urban). Cells without a map class (nodata: no imagery) are outside the
sampled population and are counted in the printed summary.

*Sample size*: n = (Σ_h W_h S_h / S(Ô))², S_h = sqrt(U_h (1 - U_h)) (Olofsson et al.
2014, eq. 13), with W_h the share of the mapped area in stratum h, U_h its anticipated
user's accuracy (`validation.anticipated_accuracy`) and S(Ô) the target standard error
of overall accuracy (`validation.target_se`). With change strata U_h is the anticipated
agreement of the stratum's cells with the reference.

*Allocation* (`allocate`): proportional to area, except that every stratum gets at least
`validation.min_per_stratum` cells (rare strata such as new urban) and at most all its
cells; the remainder of n is shared among the other strata in proportion to area. Cells
are drawn without replacement within each stratum from the seed, and the sample is
shuffled (sample_id order says nothing about strata).

Writes, under `<region_dir>/validation/`, `sample.csv` (sample_id, cell_id, col, row, x,
y (cell centre, grid CRS, m), lon, lat (WGS 84), stratum, map_class, p_urban, chip, and
an empty ref_class for the interpreter), `sample.gpkg` (the same rows as cell polygons,
layer `sample`), `strata.csv` (class, area in km², cells, weight, anticipated accuracy,
sample size, unit) and `chips/<sample_id>_<cell_id>.png`, one sheet per cell of the
mosaics of periods.target and periods.census, with chips/layout.json (see chips.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from numpy.typing import ArrayLike
from omegaconf import DictConfig
from pyproj import Transformer

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.training.patchset import check_mosaic
from urbanmap.validation import chips
from urbanmap.validation.settings import ValidationSettings

#: Strata of each design, in the order they are listed.
MAP_CLASSES = ("urban", "non_urban")
CHANGE_CLASSES = ("new_urban", "urban_lost", "stable_urban", "stable_non_urban")
NODATA = "nodata"
#: Tag that separates the sample's random stream from the others derived from the seed.
_SAMPLE = 505
#: Columns of sample.csv, in order.
COLUMNS = ["sample_id", "cell_id", "col", "row", "x", "y", "lon", "lat", "stratum", "map_class", "p_urban", "chip",
           "ref_class"]


# --- sample design (pure) -------------------------------------------------------------------


def sample_size(weights: ArrayLike, users_accuracy: ArrayLike, target_se: float) -> int:
    """Total sample size for a target standard error of overall accuracy.

    Olofsson et al. (2014), eq. 13 (Cochran 1977, eq. 5.25 without the finite population
    correction): n = (Σ_i W_i S_i / S(Ô))², S_i = sqrt(U_i (1 - U_i)).

    Args:
        weights: W_i, each stratum's share of the area (summing to 1).
        users_accuracy: U_i, the anticipated user's accuracy (0..1) of each stratum.
        target_se: S(Ô), the target standard error of overall accuracy (0..1).
    Returns:
        n, rounded up.
    """
    w, u = np.asarray(weights, float), np.asarray(users_accuracy, float)
    if not 0 < target_se < 1:
        raise InputError(f"validation.target_se: {target_se} is not in (0, 1)")
    if np.any((u < 0) | (u > 1)):
        raise InputError("validation.anticipated_accuracy: accuracies must be in [0, 1]")
    spread = float(np.sum(w * np.sqrt(u * (1 - u))))
    return max(int(math.ceil(round((spread / target_se) ** 2, 9))), 0)


def allocate(n: int, weights: ArrayLike, minimum: int, available: ArrayLike) -> np.ndarray:
    """Units per stratum: proportional to area, with at least `minimum` per stratum.

    Strata whose proportional share n W_h falls below `minimum` get `minimum` (rare
    strata, e.g. new urban); strata whose share exceeds their number of units get all
    of them; the rest of n is shared among the other strata in proportion to their
    area, repeated until no stratum changes (Olofsson et al. 2014, section 5.1.1: "a
    minimum for the rare classes, the remainder proportional"). Shares are rounded by
    largest remainder, so the total is n, or more when the minimums need more. Strata
    with weight 0 get 0.

    Args:
        n: total sample size (e.g. from `sample_size`).
        weights: (H,) area shares of the strata.
        minimum: least units per stratum with weight > 0.
        available: (H,) units in each stratum (the cap).
    Returns:
        (H,) int64 units per stratum.
    """
    w = np.asarray(weights, float)
    cap = np.asarray(available, np.int64)
    size = np.zeros(w.size, float)
    fixed = w <= 0
    while True:
        free = ~fixed
        if not free.any():
            break
        remaining = max(n - size[fixed].sum(), 0.0)
        size[free] = remaining * w[free] / w[free].sum()
        low = free & (size < np.minimum(minimum, cap))
        high = free & (size > cap)
        if not (low | high).any():
            break
        size[low] = np.minimum(minimum, cap[low])
        size[high] = cap[high]
        fixed |= low | high
    whole = np.floor(size + 1e-9).astype(np.int64)
    # Largest remainder among the proportional strata, none past its cap.
    short = int(round(size.sum())) - int(whole.sum())
    if short > 0:
        rest = np.where(~fixed & (whole < cap), size - whole, -1.0)
        order = np.argsort(-rest, kind="stable")[:short]
        whole[order[rest[order] >= 0]] += 1
    return whole


def sample_design(strata: ArrayLike, anticipated: Mapping[str, float], target_se: float, minimum: int,
                  unit_area: float = 1.0, order: Sequence[str] = ()) -> pd.DataFrame:
    """Sample size and allocation for cells with the given strata (module docstring).

    Args:
        strata: (N,) stratum of every cell of the population.
        anticipated: anticipated user's accuracy (0..1) by stratum name.
        target_se: target standard error of overall accuracy.
        minimum: least cells per stratum.
        unit_area: area of one cell (e.g. km²).
        order: strata listed first, in this order (the others follow, sorted).
    Returns:
        one row per stratum present: class, cells, area (cells x unit_area), weight,
        anticipated_accuracy, n_sample.
    """
    counts = pd.Series(np.asarray(strata, dtype=object)).value_counts()
    if counts.empty:
        raise InputError("validation: no cell with a map class to sample")
    names = [s for s in order if s in counts.index] + sorted(set(counts.index) - set(order))
    missing = [s for s in names if s not in anticipated]
    if missing:
        raise InputError(f"validation.anticipated_accuracy: no value for stratum '{missing[0]}'")
    cells = counts[names].to_numpy(np.int64)
    weight = cells / cells.sum()
    accuracy = np.array([float(anticipated[s]) for s in names])
    n = sample_size(weight, accuracy, float(target_se))
    if int(minimum) < 2:
        raise InputError(f"validation.min_per_stratum: {minimum} is below 2 (a stratum's variance needs 2 units)")
    n_sample = allocate(n, weight, int(minimum), cells)
    return pd.DataFrame({
        "class": names, "cells": cells, "area": cells * float(unit_area), "weight": weight,
        "anticipated_accuracy": accuracy, "n_sample": n_sample,
    })


def draw_sample(strata: ArrayLike, design: pd.DataFrame, seed: int) -> np.ndarray:
    """Positions (into `strata`) of a stratified random sample: design.n_sample cells
    drawn without replacement from each design.class, then shuffled. Deterministic
    from `seed` and the order of `strata`. Returns (n,) int64."""
    rng = np.random.default_rng([int(seed), _SAMPLE])
    values = np.asarray(strata, dtype=object)
    picks = [rng.choice(np.flatnonzero(values == name), int(n), replace=False)
             for name, n in zip(design["class"], design["n_sample"])]
    chosen = np.concatenate(picks) if picks else np.empty(0, np.int64)
    return rng.permutation(chosen).astype(np.int64)


# --- population and sample table (pure) -----------------------------------------------------


def population(predictions: pd.DataFrame, change: pd.DataFrame | None = None,
               context: str = "change") -> tuple[pd.DataFrame, int]:
    """The sampled population: cells of the map with their stratum, sorted by cell_id (so
    the draw does not depend on file row order), and the count of nodata cells left out.

    Args:
        predictions: one row per cell: cell_id, col, row, p_urban, class (the map class).
        change: cell_id and change class per cell for change strata; None: the strata are
            the map classes.
        context: the change file, named when it lacks cells of the map.
    Returns:
        (cells with cell_id, col, row, p_urban, map_class, stratum; nodata cells).
    """
    pred = predictions.rename(columns={"class": "map_class"})
    if change is None:
        pred["stratum"] = pred["map_class"]
    else:
        pred = pred.merge(change[["cell_id", "change"]], on="cell_id", how="left", validate="one_to_one")
        if pred["change"].isna().any():
            raise InputError(f"{context}: lacks {int(pred['change'].isna().sum())} cell(s) of the map")
        pred = pred.rename(columns={"change": "stratum"})
    nodata = (pred["map_class"] == NODATA) | (pred["stratum"] == NODATA)
    pred = pred[~nodata].sort_values("cell_id", kind="stable").reset_index(drop=True)
    return pred, int(nodata.sum())


def sample_table(cells: pd.DataFrame, cell_size: float, crs: Any) -> pd.DataFrame:
    """The sampled cells as sample.csv's rows (COLUMNS): sample ids S0001.., cell centres
    x, y (m, grid CRS `crs`) and lon, lat (WGS 84, 6 decimals), chip file, empty ref_class."""
    out = cells.copy()
    out.insert(0, "sample_id", [f"S{k:04d}" for k in range(1, len(out) + 1)])
    out["x"] = (out["col"] + 0.5) * cell_size
    out["y"] = (out["row"] + 0.5) * cell_size
    out["lon"], out["lat"] = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(out["x"].to_numpy(), out["y"].to_numpy())
    out["lon"], out["lat"] = out["lon"].round(6), out["lat"].round(6)
    out["chip"] = "chips/" + out["sample_id"] + "_" + out["cell_id"] + ".png"
    out["ref_class"] = ""
    return out[COLUMNS]


# --- the step -------------------------------------------------------------------------------


def read_population(settings: ValidationSettings) -> tuple[pd.DataFrame, float, Any, int]:
    """`population` of periods.target's predictions (and the change classes with change
    strata); returns (cells, cell size (m), grid CRS, nodata cells)."""
    target = settings.target_period
    pred, cell_size, crs = io.read_cells(settings.predictions, f"predictions of {target}", ["cell_id", "p_urban", "class"])
    change = None
    if settings.strata == "change":
        change, _, _ = io.read_cells(settings.change_cells, "change", ["cell_id", "change"])
    cells, n_nodata = population(pred, change, str(settings.change_cells))
    return cells, cell_size, crs, n_nodata


def read_chip_windows(settings: ValidationSettings, path: Path, period: str, lattice: PixelLattice,
                      cells: pd.DataFrame, bands: Sequence[str]) -> np.ndarray:
    """The mosaic of `period` at `path` around each of `cells` (col, row): chips.read_windows
    of `bands`; InputError naming the mosaic when it is missing, unreadable or off the
    grid's lattice."""
    path = io.require_file(path, f"mosaic of {period}")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read mosaic: {exc}".splitlines()[0]) from exc
    with src:
        indexes = check_mosaic(src, lattice, str(path), bands)
        return chips.read_windows(src, lattice, cells["col"], cells["row"], indexes, settings.chips.context)


def chip_lattice(settings: ValidationSettings, cell_size: float, crs: Any) -> PixelLattice:
    """The region's pixel lattice (grid.parquet's cells), on which the mosaics lie."""
    grid, _, _ = io.read_cells(settings.grid, "grid", ["cell_id"])
    return PixelLattice.from_cells(grid["col"], grid["row"], cell_size,
                                   patch_size(cell_size, settings.pixel_size, settings.patch_size), crs)


def chip_bands(settings: ValidationSettings) -> list[str]:
    """The mosaic bands the chips read: the true- then the false-colour bands, once each."""
    return list(dict.fromkeys(settings.chips.true_colour + settings.chips.false_colour))


def write_chips(settings: ValidationSettings, folder: Path, sample: pd.DataFrame, cell_size: float, crs: Any) -> None:
    """One chip sheet per sampled cell (chips.py) from the mosaics of periods.target
    and periods.census into `folder`, and its layout.json."""
    c = settings.chips
    lattice = chip_lattice(settings, cell_size, crs)
    bands = chip_bands(settings)
    periods = settings.chip_periods
    windows = [read_chip_windows(settings, settings.chip_mosaics[k], period, lattice, sample, bands)
               for k, period in enumerate(periods)]
    names = (sample["sample_id"] + "_" + sample["cell_id"]).tolist()
    chips.write_sheets(folder, names, sample["cell_id"].tolist(), periods, windows, bands, c.true_colour,
                       c.false_colour, c.context, lattice.patch_size, c.scale, list(c.stretch))


#: The date GeoPackages are stamped with (gpkg_contents.last_change and the like): a fixed
#: one, so the same rows give the same bytes on every run (GDAL stamps the time now).
GPKG_DATE = "2000-01-01T00:00:00.000Z"


def write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    """Write `frame` as the GeoPackage layer `layer` at `path`, dated GPKG_DATE (GDAL's
    OGR_CURRENT_DATE, set for this write only)."""
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_DATE})
    try:
        frame.to_file(path, driver="GPKG", layer=layer, engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


def write_sample(settings: ValidationSettings, sample: pd.DataFrame, design: pd.DataFrame, cell_size: float,
                 crs: Any) -> None:
    """chips/, sample.gpkg, strata.csv and sample.csv, each written atomically (the chips
    folder replaced whole, renamed last)."""
    strata = design.assign(unit="km2")
    geometry = shapely.box(sample["col"] * cell_size, sample["row"] * cell_size,
                           (sample["col"] + 1) * cell_size, (sample["row"] + 1) * cell_size)
    frame = gpd.GeoDataFrame(sample, geometry=geometry, crs=crs)
    with io.atomic_directory(settings.chips_dir) as chips_tmp:
        write_chips(settings, chips_tmp, sample, cell_size, crs)
        with io.atomic_output(settings.sample_gpkg) as tmp, warnings.catch_warnings():
            # GDAL warns that the temporary name does not end in .gpkg; the rename fixes it.
            warnings.filterwarnings("ignore", "The filename extension should be", RuntimeWarning)
            write_gpkg(frame, tmp, "sample")
        with io.atomic_output(settings.strata_csv) as tmp:
            strata.to_csv(tmp, index=False)
        with io.atomic_output(settings.sample) as tmp:
            sample.to_csv(tmp, index=False)


def run_sample(cfg: DictConfig) -> pd.DataFrame:
    """Step `validate sample`: predictions (+ change) -> sample.csv, sample.gpkg, strata.csv, chips/."""
    settings = ValidationSettings.from_config(cfg)
    cells, cell_size, crs, n_nodata = read_population(settings)
    order = MAP_CLASSES if settings.strata == "map" else CHANGE_CLASSES
    design = sample_design(cells["stratum"], settings.anticipated, settings.target_se, settings.min_per_stratum,
                           cell_size**2 / 1e6, order)
    picked = draw_sample(cells["stratum"], design, settings.seed)
    sample = sample_table(cells.iloc[picked].reset_index(drop=True), cell_size, crs)
    write_sample(settings, sample, design, cell_size, crs)
    lines = ", ".join(f"{r['class']} {r['n_sample']} of {r['cells']:,}" for _, r in design.iterrows())
    print(f"validate sample ({settings.target_period}, strata {settings.strata}): {len(sample)} cells ({lines}); "
          f"{n_nodata:,} nodata cells not sampled -> {settings.folder}")
    return sample
