"""The series stage: trajectories over the periods, the consistency rule, the first urban
period and the change maps between periods."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, io, paths
from urbanmap.core.errors import InputError
from urbanmap.examples import tiny
from urbanmap.mapping.series import SeriesSettings, consistent_classes, first_urban, pairs

U, N, X = "urban", "non_urban", "nodata"


def test_urban_does_not_revert_without_strong_evidence_over_consecutive_periods():
    classes = np.array([
        [U, N, U, U],  # one weak non-urban period: stays urban
        [U, N, N, N],  # strong evidence in two consecutive periods: reverts
        [U, N, U, N],  # strong but not consecutive: stays urban
        [N, N, U, U],  # grows: first urban in the third period
        [X, N, X, U],  # gaps carry the last usable class
        [U, U, U, N],  # the last period alone cannot revert (two periods needed)
    ], object)
    p = np.array([[0.9, 0.4, 0.8, 0.9], [0.9, 0.1, 0.1, 0.1], [0.9, 0.1, 0.9, 0.1], [0.1, 0.1, 0.9, 0.9],
                  [np.nan, 0.1, np.nan, 0.9], [0.9, 0.9, 0.9, 0.05]])
    low = np.zeros(classes.shape, bool)
    got = consistent_classes(classes, p, low, True, revert_max=0.2, revert_periods=2)
    assert got.tolist() == [
        [U, U, U, U],
        [U, N, N, N],
        [U, U, U, U],
        [N, N, U, U],
        [X, N, N, U],
        [U, U, U, U],
    ]
    label, code = first_urban(got, ["2010", "2015", "2019H1", "2019H2"])
    assert label.tolist() == ["before", "before", "before", "2019H1", "2019H2", "before"]
    assert code.tolist() == [1, 1, 1, 3, 4, 1]
    raw = consistent_classes(classes, p, low, False)
    assert raw[:, 1].tolist() == [N, N, N, N, N, U] and raw[4].tolist() == [X, N, N, U]


def test_a_low_quality_period_is_a_gap_not_evidence():
    classes = np.array([[U, N, N], [N, U, N]], object)
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.9, 0.1]])
    low = np.array([[False, True, False], [False, True, False]])
    got = consistent_classes(classes, p, low, True, revert_max=0.2, revert_periods=1)
    assert got.tolist() == [[U, U, N], [N, N, N]]
    label, code = first_urban(got, ["a", "b", "c"])
    assert label.tolist() == ["before", "never"] and code.tolist() == [1, 0]
    assert first_urban(np.array([[X, X]], object), ["a", "b"])[0].tolist() == ["nodata"]


def test_pairs_are_consecutive_then_first_to_last():
    assert pairs(["2010", "2015", "2019H1", "2019H2"]) == [("2010", "2015"), ("2015", "2019H1"), ("2019H1", "2019H2"),
                                                          ("2010", "2019H2")]
    assert pairs(["2010", "2019"]) == [("2010", "2019")]


PERIODS = ["2010", "2015", "2019H1"]


@pytest.fixture
def region(tmp_path):
    """Three periods' predictions of the tiny region's 20 x 20 cells: a city growing into
    its fringe, one cell lost for one period, one low-quality gap, one nodata cell."""
    cells = tiny.labelled_cells(20, 20)[["cell_id", "col", "row"]].reset_index(drop=True)
    rng = np.random.default_rng(1)
    p0 = rng.uniform(0, 0.3, len(cells)).astype(np.float32)
    p0[:50] = 0.9
    grow1, grow2 = np.arange(50, 70), np.arange(70, 95)
    ps = [p0, p0.copy(), p0.copy()]
    ps[1][grow1] = 0.8
    ps[2][np.r_[grow1, grow2]] = 0.8
    ps[1][3] = 0.05  # lost in 2015 only: the consistent series keeps it
    ps[2][200] = np.nan
    folder = tmp_path / "out" / "tiny" / "predictions"
    folder.mkdir(parents=True)
    for k, (period, p) in enumerate(zip(PERIODS, ps)):
        cls = np.where(np.isnan(p), X, np.where(p >= 0.5, U, N))
        low = np.zeros(len(cells), bool)
        if k == 1:
            low[60] = True
        io.write_cells(folder / f"{period}.parquet",
                       cells.assign(p_urban=p, **{"class": cls}, clear=np.float32(4), low_quality=low), tiny.CELL, tiny.CRS)
    over = [f"out_dir={tmp_path / 'out'}", "data.name=tiny", f"periods.list=[{','.join(PERIODS)}]", "periods.target=2019H1"]
    return over, cells, (grow1, grow2)


def test_series_stage_writes_trajectories_first_urban_map_and_changes(region, monkeypatch):
    over, cells, (grow1, grow2) = region
    monkeypatch.chdir(REPO)
    assert main(["series", *over]) == 0
    cfg = config.load(REPO, over)
    out = paths.series_dir(cfg)
    series, _, _ = io.read_cells(out / "series.parquet", "series")
    by_id = series.set_index("cell_id")
    ids = cells["cell_id"].to_numpy()
    assert (by_id.loc[ids[:50], "first_urban"] == "before").all()
    grown = np.setdiff1d(grow1, [60])  # cell 60's 2015 map is low quality: a gap, not evidence
    assert (by_id.loc[ids[grown], "first_urban"] == "2015").all() and (by_id.loc[ids[grow2], "first_urban"] == "2019H1").all()
    assert by_id.loc[ids[60], "first_urban"] == "2019H1" and by_id.loc[ids[60], "low_quality_2015"]
    assert by_id.loc[ids[3], "class_2015"] == N and by_id.loc[ids[3], "consistent_2015"] == U
    assert by_id.loc[ids[200], "consistent_2019H1"] == N  # nodata carried from 2015
    assert (by_id.loc[ids[95:], "first_urban"].isin(["never"])).sum() == len(ids) - 95
    with rasterio.open(out / "first_urban.tif") as src:
        codes = src.read(1)
        assert "FIRST_URBAN_CODES" in src.tags() and src.nodata == 255
    values, counts = np.unique(codes[codes != 255], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {0: len(ids) - 95, 1: 50, 2: 19, 3: 26}
    names = sorted(p.name for p in out.iterdir())
    for a, b in (("2010", "2015"), ("2015", "2019H1"), ("2010", "2019H1")):
        assert {f"change_{a}_{b}.{ext}" for ext in ("parquet", "tif", "png")} <= set(names)
    change, _, _ = io.read_cells(out / "change_2010_2019H1.parquet", "change")
    assert (change["change"] == "new_urban").sum() == 45 and (change["change"] == "urban_lost").sum() == 0
    table = pd.read_csv(out / "areas.csv")
    assert table["period"].astype(str).tolist() == PERIODS
    assert table["urban_km2_consistent"].tolist() == [50, 69, 95] and table["urban_km2_raw"].tolist() == [50, 69, 95]
    assert table["low_quality_cells"].tolist() == [0, 1, 0]
    summary = json.loads(paths.series_summary(cfg).read_text())
    assert summary["first_urban"] == {"before": 50, "2015": 19, "2019H1": 26, "never": len(ids) - 95, "nodata": 0}
    assert summary["cells_changed_by_consistency"]["2015"] == 2  # cell 3 kept, cell 60 a gap


def test_series_refuses_a_missing_period_in_one_line(region, monkeypatch, capsys):
    over, *_ = region
    monkeypatch.chdir(REPO)
    cfg = config.load(REPO, over)
    paths.predictions(cfg, "2015").unlink()
    assert main(["series", *over]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "predictions of period 2015 not found" in err
    assert not paths.series_dir(cfg).exists() and not paths.series_summary(cfg).exists()


def test_series_settings_name_the_key_that_is_wrong():
    s = SeriesSettings.from_config(config.load(REPO))
    assert [p.label for p in s.periods] == ["2010", "2015", "2019H1", "2019H2"] and s.consistency
    for override, message in (("series.consistency.revert_max=2", "series.consistency.revert_max"),
                              ("series.consistency.revert_periods=0", "series.consistency.revert_periods"),
                              ("periods.list=[2010]", "at least two periods")):
        with pytest.raises(InputError, match=message):
            SeriesSettings.from_config(config.load(REPO, [override, "periods.target=2010"] if "list" in override
                                                   else [override]))
