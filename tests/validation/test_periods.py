"""`validate periods`: every period's error-adjusted urban area with its interval, from
the target's own interpreted sample and the other periods' drawn samples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, io, paths
from urbanmap.examples.tiny import CELL, CRS, labelled_cells

PERIODS = ["2010", "2019H1"]
#: Cells of each map stratum in the target period's own (interpreted) sample.
TARGET_PER_STRATUM = 40


@pytest.fixture
def region(tmp_path):
    """Two periods' maps of 20 x 20 cells and their truths: the map misses some urban
    cells and adds others; the semester has low-quality and nodata cells."""
    cells = labelled_cells(20, 20)[["cell_id", "col", "row"]].reset_index(drop=True)
    rng = np.random.default_rng(4)
    folder = tmp_path / "out" / "tiny"
    for k, period in enumerate(PERIODS):
        truth = np.where(np.arange(len(cells)) < 150 + 40 * k, "urban", "non_urban")
        flip = rng.random(len(cells)) < 0.08
        mapped = np.where(flip, np.where(truth == "urban", "non_urban", "urban"), truth)
        low = np.zeros(len(cells), bool)
        if k:
            mapped[:5] = "nodata"
            low[5:40] = True
        p = np.where(mapped == "urban", 0.9, np.where(mapped == "nodata", np.nan, 0.1)).astype(np.float32)
        io.write_cells(folder / "predictions" / f"{period}.parquet",
                       cells.assign(p_urban=p, **{"class": mapped}, low_quality=low), CELL, CRS)
        (folder / "truth" / period).mkdir(parents=True)
        io.write_cells(folder / "truth" / period / "cells.parquet", cells.assign(true_class=truth), CELL, CRS)
    # The target's sample, as `validate sample` and `validate interpret` leave it
    picked = np.concatenate([rng.choice(np.flatnonzero(mapped == c), TARGET_PER_STRATUM, replace=False)
                             for c in ("urban", "non_urban")])
    (folder / "validation").mkdir()
    pd.DataFrame({"sample_id": [f"S{i:04d}" for i in range(len(picked))], "cell_id": cells["cell_id"][picked],
                  "stratum": mapped[picked], "map_class": mapped[picked], "ref_class": truth[picked]}).to_csv(
        folder / "validation" / "interpreted.csv", index=False)
    pd.DataFrame({"class": ["urban", "non_urban"], "area": [(mapped == c).sum() for c in ("urban", "non_urban")],
                  "unit": "km2"}).to_csv(folder / "validation" / "strata.csv", index=False)
    over = [f"out_dir={tmp_path / 'out'}", "data.name=tiny", f"periods.list=[{','.join(PERIODS)}]",
            "periods.target=2019H1", "validation.target_se=0.04", "validation.min_per_stratum=10",
            "validation.interpreter_error=0"]
    return over, cells


def test_every_periods_area_is_estimated_with_its_interval(region, monkeypatch):
    over, cells = region
    monkeypatch.chdir(REPO)
    assert main(["validate", "periods", *over]) == 0
    cfg = config.load(REPO, over)
    table = pd.read_csv(paths.validation_periods_dir(cfg) / "areas.csv", dtype={"period": str})
    assert table["period"].tolist() == PERIODS and table["middle"].tolist() == [2010.5, 2019.25]
    assert table["cells"].tolist() == [400, 395] and table["nodata_cells"].tolist() == [0, 5]
    assert table["low_quality_cells"].tolist() == [0, 35] and table["low_quality_sampled"][1] > 0
    for k, true_km2 in enumerate((150, 190)):
        est, ci = table["urban_km2"][k], table["urban_km2_ci95"][k]
        assert abs(est - true_km2) <= ci + 5 and ci == pytest.approx(1.96 * table["urban_km2_se"][k], rel=1e-4)
    assert table["n_sample"][1] == 2 * TARGET_PER_STRATUM  # the target's own sample
    samples = pd.read_csv(paths.validation_periods_dir(cfg) / "samples.csv", dtype=str)
    interpreted = pd.read_csv(paths.validation_interpreted(cfg), dtype=str)
    assert samples[samples["period"] == "2019H1"]["cell_id"].tolist() == interpreted["cell_id"].tolist()
    assert (samples["period"] == "2010").sum() == table["n_sample"][0]
    strata = pd.read_csv(paths.validation_periods_dir(cfg) / "strata.csv", dtype={"period": str})
    assert strata.groupby("period")["area"].sum().tolist() == [400, 395]
    summary = json.loads(paths.validation_periods_summary(cfg).read_text())
    assert set(summary["periods"]) == set(PERIODS)
    assert (paths.validation_periods_dir(cfg) / "areas.png").read_bytes()[:4] == b"\x89PNG"


def test_a_period_without_truth_is_named(region, monkeypatch, capsys):
    over, _ = region
    monkeypatch.chdir(REPO)
    cfg = config.load(REPO, over)
    paths.truth_cells(cfg, "2010").unlink()
    assert main(["validate", "periods", *over]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no synthetic truth of 2010" in err
    assert not paths.validation_periods_summary(cfg).exists()


def test_real_imagery_has_the_targets_sample_only(region, monkeypatch):
    """People interpret the target's sample (validation.interpreter=human) and no period
    has synthetic truth: the other periods get their mapped area and no estimate."""
    over, _ = region
    monkeypatch.chdir(REPO)
    cfg = config.load(REPO, over)
    for period in PERIODS:
        paths.truth_cells(cfg, period).unlink()
    assert main(["validate", "periods", *over, "validation.interpreter=human"]) == 0
    table = pd.read_csv(paths.validation_periods_dir(cfg) / "areas.csv", dtype={"period": str})
    assert table["n_sample"].tolist() == [0, 2 * TARGET_PER_STRATUM]
    assert np.isnan(table["urban_km2"][0]) and table["mapped_urban_km2"][0] > 0 and table["urban_km2"][1] > 0
    samples = pd.read_csv(paths.validation_periods_dir(cfg) / "samples.csv", dtype=str)
    assert set(samples["period"]) == {"2019H1"}
