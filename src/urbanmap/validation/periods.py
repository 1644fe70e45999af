"""Step `validate periods`: the urban area of every period, mapped and error-adjusted with
its 95% interval (the area series), and each period's reference sample.

periods.target has the validation sample of `validate sample` and `validate interpret`
(interpreted.csv, strata.csv: the simulated interpreter, or people's answers with
validation.interpreter=human). Every other period of periods.list gets the same design on
its own map (predictions/<period>.parquet; map strata, nodata cells left out), reference
classes from the synthetic truth of the period (truth/<period>/cells.parquet) through the
simulated interpreter (validation.interpreter_error): the embedded default. With
validation.interpreter=human and no synthetic truth (real imagery), a period other than
the target has no reference sample: its row gives the mapped area only, and `sdg` its
mapped area without an interval (people can interpret such a period's own sample and
`validate estimate --sample --strata` estimates it). With the simulated interpreter, a
period without synthetic truth is an error naming it. Each sample gives
Olofsson et al. (2014) stratified estimates (estimate.py).

Outputs under `<region_dir>/validation/periods/`: `areas.csv` (per period: its window and
middle, cells sampled, mapped urban km², error-adjusted urban km² with its standard error
and 95% half-width, overall accuracy, low-quality cells in the map and in the sample),
`areas.png` (the area against time with the intervals), `samples.csv` (period, cell_id,
stratum, map_class, ref_class: every period's reference sample, which `sdg` turns into
each municipality's error-adjusted area) and `strata.csv` (period, class, area in km²);
and `<region_dir>/validation/periods.json` (DVC metrics: the areas per period).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from urbanmap.core import io, paths
from urbanmap.core.periods import Period, PeriodSettings
from urbanmap.validation import estimate
from urbanmap.validation.estimate import Z95
from urbanmap.validation.interpret import simulate_interpreter, true_classes
from urbanmap.validation.sample import MAP_CLASSES, draw_sample, population, sample_design
from urbanmap.validation.settings import ValidationSettings

#: A reference sample's columns, as samples.csv holds them after `period`.
SAMPLE_COLUMNS = ["cell_id", "stratum", "map_class", "ref_class"]
#: Every period's samples and strata, in validation/periods/ (sdg reads them).
SAMPLES_FILE, STRATA_FILE = "samples.csv", "strata.csv"


@dataclass(frozen=True)
class PeriodsValidation:
    """What the step reads: the validation settings, the periods, and per period its map
    and truth; the outputs."""

    validation: ValidationSettings
    target: str
    periods: tuple[Period, ...]
    predictions: tuple[Path, ...]
    truths: tuple[Path, ...]
    folder: Path
    samples: Path
    strata: Path
    summary: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PeriodsValidation:
        """Read the settings; InputError naming the config key that is wrong."""
        settings = PeriodSettings.from_config(cfg)
        periods = settings.periods
        return cls(ValidationSettings.from_config(cfg), settings.target.label, periods, tuple(paths.predictions(cfg, p) for p in periods),
                   tuple(paths.truth_cells(cfg, p) for p in periods), paths.validation_periods_dir(cfg),
                   paths.validation_periods_dir(cfg) / SAMPLES_FILE, paths.validation_periods_dir(cfg) / STRATA_FILE,
                   paths.validation_periods_summary(cfg))


def drawn_sample(cells: pd.DataFrame, truth_path: Path, period: Period, v: ValidationSettings,
                 cell_km2: float) -> tuple[pd.DataFrame, pd.Series]:
    """A period without a sample of its own: the design of `validate sample` on its map
    (map strata) and the simulated interpreter on its synthetic truth. Returns (sample:
    cell_id, stratum, map_class, ref_class; the strata's areas, km²)."""
    strata = cells["stratum"].to_numpy(object)
    design = sample_design(strata, v.anticipated, v.target_se, v.min_per_stratum, cell_km2, MAP_CLASSES)
    sampled = cells.iloc[draw_sample(strata, design, v.seed)].reset_index(drop=True)
    truth = true_classes(sampled["cell_id"], truth_path, period.label).to_numpy(object)
    sampled["ref_class"] = simulate_interpreter(truth, v.interpreter_error, MAP_CLASSES, v.seed)
    return sampled[SAMPLE_COLUMNS], design.set_index("class")["area"]


def interpreted_sample(v: ValidationSettings) -> tuple[pd.DataFrame, pd.Series]:
    """periods.target's own sample: interpreted.csv and strata.csv (`validate sample`,
    `validate interpret`). Returns (sample: cell_id, stratum, map_class, ref_class; the
    strata's areas)."""
    return estimate.read_sample(v.interpreted, keep=["cell_id"])[SAMPLE_COLUMNS], estimate.read_strata(v.strata_csv)


def period_estimate(cells: pd.DataFrame, n_nodata: int, sample: pd.DataFrame | None, strata: pd.Series | None,
                    period: Period, cell_km2: float) -> dict[str, Any]:
    """One period's row of areas.csv: the map's figures (`cells`: its sampled population,
    with low_quality; `n_nodata` cells left out) and, when the period has a reference
    sample, its estimates (else None: mapped figures only)."""
    row = {
        "period": period.label, "start": period.start.isoformat(), "end": period.end.isoformat(),
        "middle": round(period.middle, 6), "cells": int(len(cells)), "nodata_cells": int(n_nodata),
        "n_sample": 0, "mapped_urban_km2": float((cells["map_class"] == "urban").sum() * cell_km2),
        "urban_km2": None, "urban_km2_se": None, "urban_km2_ci95": None, "overall_accuracy": None,
        "low_quality_cells": int(cells["low_quality"].sum()), "low_quality_sampled": 0,
    }
    if sample is None or strata is None:
        return row
    stratum = None if (sample["stratum"] == sample["map_class"]).all() else sample["stratum"]
    r = estimate.stratified_estimates(sample["map_class"], sample["ref_class"], strata, stratum=stratum,
                                      classes=list(MAP_CLASSES))
    area = r["area"]["urban"]
    ci95 = area["ci95"]
    sampled_low = sample["cell_id"].map(cells.set_index("cell_id")["low_quality"]).fillna(False).astype(bool)
    return {**row, "n_sample": int(len(sample)), "urban_km2": area["estimate"],
            "urban_km2_se": None if ci95 is None else ci95 / Z95, "urban_km2_ci95": ci95,
            "overall_accuracy": r["overall_accuracy"]["estimate"], "low_quality_sampled": int(sampled_low.sum())}


def _chart(path: Path, table: pd.DataFrame, title: str) -> None:
    """PNG: mapped and error-adjusted urban km² against the periods' middles, the latter
    with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    ax.plot(table["middle"], table["mapped_urban_km2"], "o--", color="#888888", label="mapped")
    ax.errorbar(table["middle"], table["urban_km2"], yerr=table["urban_km2_ci95"], fmt="o-", color="#c0392b",
                capsize=4, label="error-adjusted, 95% interval")
    for _, r in table.iterrows():
        ax.annotate(str(r["period"]), (r["middle"], r["urban_km2"]), textcoords="offset points", xytext=(6, -12),
                    fontsize=8)
    ax.set_xlabel("period (middle, decimal year)")
    ax.set_ylabel("urban area (km²)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_periods(cfg: DictConfig) -> pd.DataFrame:
    """Step `validate periods`: every period's map + truth -> validation/periods/, periods.json."""
    s = PeriodsValidation.from_config(cfg)
    rows, samples, strata = [], [], []
    for period, pred_path, truth_path in zip(s.periods, s.predictions, s.truths):
        pred, cell_size, _ = io.read_cells(pred_path, f"predictions of period {period}")
        cell_km2 = cell_size**2 / 1e6
        low = pred["low_quality"].to_numpy(bool) if "low_quality" in pred.columns else np.zeros(len(pred), bool)
        cells, n_nodata = population(pred[["cell_id", "col", "row", "p_urban", "class"]].assign(low_quality=low))
        if period.label == s.target:
            sample, areas = interpreted_sample(s.validation)
        elif s.validation.interpreter == "human" and not truth_path.is_file():
            sample, areas = None, None  # real imagery: people interpreted the target's sample only
        else:
            sample, areas = drawn_sample(cells, truth_path, period, s.validation, cell_km2)
        rows.append(period_estimate(cells, n_nodata, sample, areas, period, cell_km2))
        if sample is not None and areas is not None:
            samples.append(sample.assign(period=period.label))
            strata.append(pd.DataFrame({"period": period.label, "class": areas.index, "area": areas.to_numpy(float)}))
    table = pd.DataFrame(rows)
    with io.atomic_directory(s.folder) as tmp:
        table.to_csv(tmp / "areas.csv", index=False, float_format="%.6g")
        pd.concat(samples)[["period", *SAMPLE_COLUMNS]].to_csv(tmp / s.samples.name, index=False)
        pd.concat(strata).to_csv(tmp / s.strata.name, index=False, float_format="%.6g")
        _chart(tmp / "areas.png", table, f"{cfg.data.name}: urban area per period")
    io.write_json(s.summary, {"periods": {r["period"]: {k: v for k, v in r.items() if k != "period"} for r in rows}})
    print("validate periods: urban km² (error-adjusted, 95%) " + "; ".join(
        f"{r['period']} {r['urban_km2']:,.0f} ± {r['urban_km2_ci95']:,.0f} (mapped {r['mapped_urban_km2']:,.0f})"
        if r["urban_km2"] is not None else f"{r['period']} no reference sample (mapped {r['mapped_urban_km2']:,.0f})"
        for r in rows) + f" -> {s.folder}")
    return table
