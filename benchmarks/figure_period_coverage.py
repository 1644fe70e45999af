"""Coverage of synth's true urban area by the error-adjusted area's 95% interval, per
period, on a region the pipeline has run on (issue 20's figure: at least 18 of 20 seeded
repetitions, a semester too).

    python benchmarks/figure_period_coverage.py [--repeats 20] [key=value overrides]

For every listed period: the period's map (predictions/<period>.parquet) sampled as
`validate sample` samples it (map strata, the configured design), reference classes from
the synthetic truth (truth/<period>/cells.parquet) through the simulated interpreter at
validation.interpreter_error, and the Olofsson estimate (validate estimate), `--repeats`
seeds. The truth compared is the true urban area of the cells the map covers (nodata
cells are outside the sampled population, as in `validate sample`). Prints one JSON
object: per period, the repetitions whose interval covers it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from urbanmap.core import config, io, paths
from urbanmap.core.periods import PeriodSettings
from urbanmap.validation import estimate
from urbanmap.validation.interpret import simulate_interpreter
from urbanmap.validation.sample import MAP_CLASSES, draw_sample, population, sample_design
from urbanmap.validation.settings import ValidationSettings


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args, overrides = parser.parse_known_args(argv)
    cfg = config.load(".", overrides)
    v = ValidationSettings.from_config(cfg)
    out = {}
    for period in PeriodSettings.from_config(cfg).periods:
        pred, cell_size, _ = io.read_cells(paths.predictions(cfg, period), f"predictions of {period}",
                                           ["cell_id", "p_urban", "class"])
        cells, _ = population(pred)
        truth, _, _ = io.read_cells(paths.truth_cells(cfg, period), f"truth of {period}", ["cell_id", "true_class"])
        true_class = cells[["cell_id"]].merge(truth[["cell_id", "true_class"]], on="cell_id", how="left")["true_class"]
        true_class = true_class.fillna("non_urban").to_numpy(object)
        km2 = cell_size**2 / 1e6
        true_area = float((true_class == "urban").sum() * km2)
        strata = cells["stratum"].to_numpy(object)
        design = sample_design(strata, v.anticipated, v.target_se, v.min_per_stratum, km2, MAP_CLASSES)
        covered, estimates = 0, []
        for seed in range(args.repeats):
            picked = draw_sample(strata, design, seed)
            ref = simulate_interpreter(true_class[picked], v.interpreter_error, MAP_CLASSES, seed)
            r = estimate.stratified_estimates(cells["map_class"].to_numpy(object)[picked], ref,
                                              design.set_index("class")["area"])
            est = r["area"]["urban"]
            covered += int(abs(est["estimate"] - true_area) <= est["ci95"])
            estimates.append(est["estimate"])
        out[period.label] = {"kind": period.kind, "cells": len(cells), "true_urban_km2": true_area,
                             "mapped_urban_km2": float((cells["map_class"] == "urban").sum() * km2),
                             "mean_estimate_km2": round(float(np.mean(estimates)), 2),
                             "covered": f"{covered} of {args.repeats}"}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
