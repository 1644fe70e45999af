"""Step `validate periods`: the urban area of every period, mapped and error-adjusted with
its 95% interval (the area series).

For each period of periods.list, the same design as `validate sample` on the period's map
(predictions/<period>.parquet; map strata, nodata cells left out), reference classes from
the synthetic truth of the period (truth/<period>/cells.parquet) through the simulated
interpreter (validation.interpreter_error), and Olofsson et al. (2014) stratified
estimates (estimate.py). The embedded default only: a period without synthetic truth is
an error naming it (with real imagery, people interpret each period's sample in the web
app and `validate estimate --sample --strata` estimates it).

Outputs under `<region_dir>/validation/periods/`: `areas.csv` (per period: its window and
middle, cells sampled, mapped urban km², error-adjusted urban km² with its standard error
and 95% half-width, overall accuracy, low-quality cells in the map and in the sample) and
`areas.png` (the area against time with the intervals); and
`<region_dir>/validation/periods.json` (DVC metrics: the same per period).
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


@dataclass(frozen=True)
class PeriodsValidation:
    """What the step reads: the validation settings, the periods, and per period its map
    and truth; the outputs."""

    validation: ValidationSettings
    periods: tuple[Period, ...]
    predictions: tuple[Path, ...]
    truths: tuple[Path, ...]
    folder: Path
    summary: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PeriodsValidation:
        """Read the settings; InputError naming the config key that is wrong."""
        periods = PeriodSettings.from_config(cfg).periods
        return cls(ValidationSettings.from_config(cfg), periods, tuple(paths.predictions(cfg, p) for p in periods),
                   tuple(paths.truth_cells(cfg, p) for p in periods), paths.validation_periods_dir(cfg),
                   paths.validation_periods_summary(cfg))


def period_estimate(pred: pd.DataFrame, truth_path: Path, period: Period, v: ValidationSettings,
                    cell_km2: float) -> dict[str, Any]:
    """One period's row: the design on its map, the simulated interpretation, the estimate."""
    low = pred["low_quality"].to_numpy(bool) if "low_quality" in pred.columns else np.zeros(len(pred), bool)
    pred = pred.assign(low_quality=low)
    cells, n_nodata = population(pred[["cell_id", "col", "row", "p_urban", "class", "low_quality"]])
    strata = cells["stratum"].to_numpy(object)
    design = sample_design(strata, v.anticipated, v.target_se, v.min_per_stratum, cell_km2, MAP_CLASSES)
    picked = draw_sample(strata, design, v.seed)
    sampled = cells.iloc[picked].reset_index(drop=True)
    truth = true_classes(sampled["cell_id"], truth_path, period.label).to_numpy(object)
    ref = simulate_interpreter(truth, v.interpreter_error, MAP_CLASSES, v.seed)
    r = estimate.stratified_estimates(sampled["map_class"].to_numpy(object), ref, design.set_index("class")["area"])
    area = r["area"]["urban"]
    ci95 = area["ci95"]
    return {
        "period": period.label, "start": period.start.isoformat(), "end": period.end.isoformat(),
        "middle": round(period.middle, 6), "cells": int(len(cells)), "nodata_cells": int(n_nodata),
        "n_sample": int(len(sampled)),
        "mapped_urban_km2": float((cells["map_class"] == "urban").sum() * cell_km2),
        "urban_km2": area["estimate"], "urban_km2_se": None if ci95 is None else ci95 / Z95, "urban_km2_ci95": ci95,
        "overall_accuracy": r["overall_accuracy"]["estimate"],
        "low_quality_cells": int(cells["low_quality"].sum()), "low_quality_sampled": int(sampled["low_quality"].sum()),
    }


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
    rows = []
    for period, pred_path, truth_path in zip(s.periods, s.predictions, s.truths):
        what = f"predictions of period {period}"
        pred, cell_size, _ = io.read_cells(pred_path, what)
        rows.append(period_estimate(pred, truth_path, period, s.validation, cell_size**2 / 1e6))
    table = pd.DataFrame(rows)
    with io.atomic_directory(s.folder) as tmp:
        table.to_csv(tmp / "areas.csv", index=False, float_format="%.6g")
        _chart(tmp / "areas.png", table, f"{cfg.data.name}: urban area per period")
    io.write_json(s.summary, {"periods": {r["period"]: {k: v for k, v in r.items() if k != "period"} for r in rows}})
    print("validate periods: urban km² (error-adjusted, 95%) " + "; ".join(
        f"{r['period']} {r['urban_km2']:,.0f} ± {r['urban_km2_ci95']:,.0f} (mapped {r['mapped_urban_km2']:,.0f})"
        for r in rows) + f" -> {s.folder}")
    return table
