"""Validation of the target year's map: `urbanmap validate sample | interpret | estimate`.

The three steps, each a dvc stage, write under `<region_dir>/validation/`:

1. **sample** (`urbanmap validate sample [key=value ...]`): a stratified random sample of
   grid cells of years.target's map (predictions_<year>.parquet). Strata
   (`validation.strata`): `map`, the map classes (urban, non_urban), or `change`, the
   change classes of change/change.parquet (new_urban, urban_lost, stable_urban,
   stable_non_urban). Cells without a map class (nodata: no imagery) are outside the
   sampled population and are counted in the printed summary.

   *Sample size*: n = (Σ_h W_h S_h / S(Ô))², S_h = sqrt(U_h (1 - U_h)) (Olofsson et al.
   2014, eq. 13), with W_h the share of the mapped area in stratum h, U_h its anticipated
   user's accuracy (`validation.anticipated_accuracy`) and S(Ô) the target standard
   error of overall accuracy (`validation.target_se`). With change strata U_h is the
   anticipated agreement of the stratum's cells with the reference.

   *Allocation* (estimate.allocate): proportional to area, except that every stratum
   gets at least `validation.min_per_stratum` cells (rare strata such as new urban) and
   at most all its cells; the remainder of n is shared among the other strata in
   proportion to area. Cells are drawn without replacement within each stratum from
   the seed, and the sample is shuffled (sample_id order says nothing about strata).

   Writes `sample.csv` (sample_id, cell_id, col, row, x, y (cell centre, grid CRS, m),
   lon, lat (WGS 84), stratum, map_class, p_urban, chip, and an empty ref_class for
   the interpreter), `sample.gpkg` (the same rows as cell polygons, layer `sample`),
   `strata.csv` (class, area in km², cells, weight, anticipated accuracy, sample size)
   and `chips/<sample_id>_<cell_id>.png` (see chips.py).

2. **interpret** (embedded default): the simulated interpreter fills ref_class with the
   synthetic generator's true class of each cell (truth/<years.target>/cells.parquet),
   flipping a share `validation.interpreter_error` of the sampled cells (chosen from the
   seed) to another class -> `interpreted.csv`. With real imagery, people fill
   sample.csv's ref_class column instead (from the chips, or imagery of their own).

3. **estimate** (`urbanmap validate estimate [--sample S.csv --strata T.csv] [--out F.json]`):
   Olofsson et al. (2014) stratified estimates (estimate.py) of overall, user's and
   producer's accuracy, the error-adjusted area of each class (km² for the stage's own
   strata.csv) and the error matrix in area proportions; printed, and written to
   estimate.json. Without --sample and --strata it reads interpreted.csv and strata.csv
   and writes estimate.json (the dvc stage); with them, any sample and strata files,
   written only where --out says.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Mapping, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer

from urbanmap.core import config, io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.training.patches import check_mosaic
from urbanmap.validation import chips, estimate
from urbanmap.validation.estimate import allocate, sample_size

#: Strata of each design, in the order they are listed.
MAP_CLASSES = ("urban", "non_urban")
CHANGE_CLASSES = ("new_urban", "urban_lost", "stable_urban", "stable_non_urban")
NODATA = "nodata"
#: Tags that separate the random streams derived from the seed.
_SAMPLE, _INTERPRETER = 505, 606


# --- pure core ----------------------------------------------------------------------------


def sample_design(strata: Sequence[str], anticipated: Mapping[str, float], target_se: float, minimum: int,
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
        raise InputError(f"validation.anticipated_accuracy: no value for stratum {missing[0]!r}")
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

def draw_sample(strata: Sequence[str], design: pd.DataFrame, seed: int) -> np.ndarray:
    """Positions (into `strata`) of a stratified random sample: design.n_sample cells
    drawn without replacement from each design.class, then shuffled. Deterministic
    from `seed` and the order of `strata`. Returns (n,) int64."""
    rng = np.random.default_rng([int(seed), _SAMPLE])
    strata = np.asarray(strata, dtype=object)
    picks = [rng.choice(np.flatnonzero(strata == name), int(n), replace=False)
             for name, n in zip(design["class"], design["n_sample"])]
    chosen = np.concatenate(picks) if picks else np.empty(0, np.int64)
    return rng.permutation(chosen).astype(np.int64)

def simulate_interpreter(truth: Sequence[str], error: float, classes: Sequence[str], seed: int) -> np.ndarray:
    """Reference classes from a simulated interpreter: the true class, except for
    round(error x n) units (chosen from the seed) labelled with another of `classes`
    (the next one, cyclically, after a random step: with two classes, the other one).

    Returns (n,) object array."""
    truth = np.asarray(truth, dtype=object)
    classes = list(classes)
    if not 0 <= error <= 1:
        raise InputError(f"validation.interpreter_error: {error} is not in [0, 1]")
    unknown = sorted(set(truth) - set(classes))
    if unknown:
        raise InputError(f"truth: class {unknown[0]!r} is not one of {', '.join(classes)}")
    rng = np.random.default_rng([int(seed), _INTERPRETER])
    n = truth.size
    flip = rng.permutation(n)[: int(round(error * n))]
    out = truth.copy()
    if len(classes) > 1 and flip.size:
        index = pd.Index(classes).get_indexer(truth[flip])
        step = rng.integers(1, len(classes), flip.size)
        out[flip] = np.asarray(classes, dtype=object)[(index + step) % len(classes)]
    return out

# --- stages -------------------------------------------------------------------------------


def _population(cfg) -> tuple[pd.DataFrame, float, object, int]:
    """The sampled population: cells of years.target's map with their stratum, sorted by
    cell_id (so the draw does not depend on file row order), and the nodata count."""
    target = int(cfg.years.target)
    pred, cell_size, crs = io.read_cells(paths.predictions(cfg, target), f"predictions of {target}",
                                         ["cell_id", "p_urban", "class"])
    pred = pred.rename(columns={"class": "map_class"})
    design = str(cfg.validation.strata)
    if design == "map":
        pred["stratum"] = pred["map_class"]
    elif design == "change":
        change, _, _ = io.read_cells(paths.change_cells(cfg), "change", ["cell_id", "change"])
        pred = pred.merge(change[["cell_id", "change"]], on="cell_id", how="left", validate="one_to_one")
        if pred["change"].isna().any():
            raise InputError(f"{paths.change_cells(cfg)}: lacks {int(pred['change'].isna().sum())} cell(s) of the map")
        pred = pred.rename(columns={"change": "stratum"})
    else:
        raise InputError(f"validation.strata: {design!r} is not map or change")
    nodata = (pred["map_class"] == NODATA) | (pred["stratum"] == NODATA)
    pred = pred[~nodata].sort_values("cell_id", kind="stable").reset_index(drop=True)
    return pred, cell_size, crs, int(nodata.sum())

def _sample_table(cells: pd.DataFrame, cell_size: float, crs) -> pd.DataFrame:
    """sample_id, cell_id, col, row, x, y, lon, lat, stratum, map_class, p_urban, chip, ref_class."""
    out = cells.copy()
    out.insert(0, "sample_id", [f"S{k:04d}" for k in range(1, len(out) + 1)])
    out["x"] = (out["col"] + 0.5) * cell_size
    out["y"] = (out["row"] + 0.5) * cell_size
    out["lon"], out["lat"] = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(out["x"].to_numpy(), out["y"].to_numpy())
    out["lon"], out["lat"] = out["lon"].round(6), out["lat"].round(6)
    out["chip"] = "chips/" + out["sample_id"] + "_" + out["cell_id"] + ".png"
    out["ref_class"] = ""
    return out[["sample_id", "cell_id", "col", "row", "x", "y", "lon", "lat", "stratum", "map_class", "p_urban", "chip", "ref_class"]]

def _write_chips(cfg, folder, sample: pd.DataFrame, cell_size: float, crs) -> None:



    c = cfg.validation.chips
    target = int(cfg.years.target)
    grid, _, _ = io.read_cells(paths.grid(cfg), "grid", ["cell_id"])
    lattice = PixelLattice.from_cells(grid["col"], grid["row"], cell_size,
                                      patch_size(cell_size, cfg.data.pixel_size, cfg.data.patch_size), crs)
    path = io.require_file(paths.mosaic(cfg, target), f"mosaic of {target}")
    true_bands, false_bands = list(c.true_colour), list(c.false_colour)
    if len(true_bands) != 3 or len(false_bands) != 3:
        raise InputError("validation.chips: true_colour and false_colour need 3 band names each")
    bands = list(dict.fromkeys(true_bands + false_bands))
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read mosaic: {exc}".splitlines()[0]) from exc
    with src:
        indexes = check_mosaic(src, lattice, str(path), bands)
        windows = chips.read_windows(src, lattice, sample["col"], sample["row"], indexes, int(c.context))
    names = (sample["sample_id"] + "_" + sample["cell_id"]).tolist()
    captions = (sample["sample_id"] + "  " + sample["cell_id"] + f"  {target}   true colour | false colour ("
                + "/".join(false_bands) + ")").tolist()
    chips.write_chips(folder, names, captions, windows, [bands.index(b) for b in true_bands],
                      [bands.index(b) for b in false_bands], int(c.context), lattice.patch_size, int(c.scale),
                      [float(v) for v in c.stretch])

def run_sample(cfg) -> pd.DataFrame:
    """Stage `validate sample`: predictions (+ change) -> sample.csv, sample.gpkg, strata.csv, chips/."""
    v = cfg.validation
    cells, cell_size, crs, n_nodata = _population(cfg)
    order = MAP_CLASSES if str(v.strata) == "map" else CHANGE_CLASSES
    design = sample_design(cells["stratum"], dict(v.anticipated_accuracy), float(v.target_se),
                           int(v.min_per_stratum), cell_size**2 / 1e6, order)
    picked = draw_sample(cells["stratum"], design, int(cfg.seed))
    sample = _sample_table(cells.iloc[picked].reset_index(drop=True), cell_size, crs)

    strata = design.assign(unit="km2")
    geometry = shapely.box(sample["col"] * cell_size, sample["row"] * cell_size,
                           (sample["col"] + 1) * cell_size, (sample["row"] + 1) * cell_size)
    frame = gpd.GeoDataFrame(sample, geometry=geometry, crs=crs)
    with io.atomic_directory(paths.validation_chips(cfg)) as chips_tmp:
        _write_chips(cfg, chips_tmp, sample, cell_size, crs)
        with io.atomic_output(paths.validation_sample_gpkg(cfg)) as tmp, warnings.catch_warnings():
            # GDAL warns that the temporary name does not end in .gpkg; the rename fixes it.
            warnings.filterwarnings("ignore", "The filename extension should be", RuntimeWarning)
            frame.to_file(tmp, driver="GPKG", layer="sample", engine="pyogrio")
        with io.atomic_output(paths.validation_strata(cfg)) as tmp:
            strata.to_csv(tmp, index=False)
        with io.atomic_output(paths.validation_sample(cfg)) as tmp:
            sample.to_csv(tmp, index=False)
    lines = ", ".join(f"{r['class']} {r['n_sample']} of {r['cells']:,}" for _, r in design.iterrows())
    print(f"validate sample ({int(cfg.years.target)}, strata {v.strata}): {len(sample)} cells ({lines}); "
          f"{n_nodata:,} nodata cells not sampled -> {paths.validation_dir(cfg)}")
    return sample

def run_interpret(cfg) -> pd.DataFrame:
    """Stage `validate interpret`: sample.csv + synthetic truth -> interpreted.csv."""
    target = int(cfg.years.target)
    sample_path = io.require_file(paths.validation_sample(cfg), "validation sample")
    sample = pd.read_csv(sample_path, dtype={"cell_id": str, "ref_class": str}, keep_default_na=False)
    if "cell_id" not in sample.columns:
        raise InputError(f"{sample_path}: sample lacks column cell_id")
    truth_path = paths.truth_cells(cfg, target)
    if not truth_path.is_file():
        raise InputError(f"{truth_path}: no synthetic truth of {target}; the simulated interpreter needs "
                         f"`urbanmap synth year={target}` (with real imagery, fill ref_class by hand)")
    truth, _, _ = io.read_cells(truth_path, f"truth of {target}", ["cell_id", "true_class"])
    true_class = sample["cell_id"].map(truth.set_index("cell_id")["true_class"])
    if true_class.isna().any():
        raise InputError(f"{truth_path}: no truth for cell {sample['cell_id'][true_class.isna()].iloc[0]}")
    error = float(cfg.validation.interpreter_error)
    sample["ref_class"] = simulate_interpreter(true_class.to_numpy(), error, MAP_CLASSES, int(cfg.seed))
    with io.atomic_output(paths.validation_interpreted(cfg)) as tmp:
        sample.to_csv(tmp, index=False)
    wrong = int((sample["ref_class"] != true_class).sum())
    print(f"validate interpret ({target}): {len(sample)} cells labelled from the synthetic truth, "
          f"{wrong} flipped (interpreter_error {error:g}) -> {paths.validation_interpreted(cfg)}")
    return sample

def run_estimate(sample_path, strata_path, out=None) -> dict:
    """Estimate from a sample CSV and a strata CSV; print it; write JSON to `out` if given."""
    result = estimate.estimate_files(sample_path, strata_path)
    unit = result.pop("unit", None)
    result = {"sample_file": str(sample_path), "strata_file": str(strata_path), "area_unit": unit, **result}
    if out is not None:
        io.write_json(out, result)
    suffix = f" {unit}" if unit else ""
    print("\n".join(estimate.summary_lines(result, suffix)) + (f"\n-> {out}" if out else ""))
    return result

# --- command line -------------------------------------------------------------------------

def command(args: argparse.Namespace) -> None:
    """Run `urbanmap validate <step>` (its parser: cli.py); the configuration is read only
    when needed."""
    if args.step == "estimate" and args.sample and args.strata and not args.overrides:
        run_estimate(args.sample, args.strata, args.out)
        return
    cfg = config.load(".", args.overrides)
    if args.step == "sample":
        run_sample(cfg)
    elif args.step == "interpret":
        run_interpret(cfg)
    else:
        defaults = not (args.sample or args.strata)
        out = args.out or (paths.validation_estimate(cfg) if defaults else None)
        run_estimate(args.sample or paths.validation_interpreted(cfg), args.strata or paths.validation_strata(cfg), out)
