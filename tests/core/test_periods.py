"""Periods: labels that parse into windows of dates, a list without overlaps, the census
and target periods in it, and old `years` configs refused with how to convert them."""

from __future__ import annotations

import datetime as dt

import pytest

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.core.errors import InputError
from urbanmap.core.periods import PeriodSettings, parse, parse_list


@pytest.mark.parametrize(("label", "kind", "start", "end", "months", "middle"), [
    ("2015", "year", dt.date(2015, 1, 1), dt.date(2015, 12, 31), 12, 2015.5),
    (2015, "year", dt.date(2015, 1, 1), dt.date(2015, 12, 31), 12, 2015.5),
    ("2019H1", "semester", dt.date(2019, 1, 1), dt.date(2019, 6, 30), 6, 2019.25),
    ("2019H2", "semester", dt.date(2019, 7, 1), dt.date(2019, 12, 31), 6, 2019.75),
    ("2019Q3", "quarter", dt.date(2019, 7, 1), dt.date(2019, 9, 30), 3, 2019.625),
    ("2020Q1", "quarter", dt.date(2020, 1, 1), dt.date(2020, 3, 31), 3, 2020.125),
    ("2019M05", "months", dt.date(2019, 5, 1), dt.date(2019, 5, 31), 1, 2019 + 4 / 12 + 1 / 24),
    ("2019M03-08", "months", dt.date(2019, 3, 1), dt.date(2019, 8, 31), 6, 2019 + 2 / 12 + 0.25),
    ("2019M11-2020M02", "months", dt.date(2019, 11, 1), dt.date(2020, 2, 29), 4, 2019 + 10 / 12 + 4 / 24),
])
def test_period_labels_parse_into_windows(label, kind, start, end, months, middle):
    p = parse(label)
    assert (p.label, p.kind, p.start, p.end, p.months) == (str(label), kind, start, end, months)
    assert p.middle == pytest.approx(middle) and p.year == start.year
    assert p.contains(start) and p.contains(end) and not p.contains(end + dt.timedelta(days=1))


@pytest.mark.parametrize("label", ["19", "2019H3", "2019Q5", "2019S1", "2019M13", "2019M08-03", "2019.5", "", "soon"])
def test_a_label_that_does_not_parse_is_named(label):
    with pytest.raises(InputError, match=f"periods.list: period {label!r} does not parse|periods.list: period "
                                         f"{label!r}: months"):
        parse(label)


def test_the_list_is_sorted_and_overlaps_are_refused():
    assert [p.label for p in parse_list(["2019H2", "2010", "2019H1"])] == ["2010", "2019H1", "2019H2"]
    for labels, pair in ((["2019", "2019H1"], "2019 and 2019H1"), (["2019Q2", "2019H1"], "2019H1 and 2019Q2"),
                         (["2015", "2015"], "2015 and 2015"), (["2019M11-2020M02", "2020Q1"], "2019M11-2020M02 and 2020Q1")):
        with pytest.raises(InputError, match=f"periods {pair} overlap"):
            parse_list(labels)


def test_the_default_config_lists_four_periods_with_the_census_first():
    settings = PeriodSettings.from_config(config.load(REPO))
    assert settings.labels == ["2010", "2015", "2019H1", "2019H2"]
    assert settings.census.label == "2010" and settings.target.label == "2019H2"
    cfg = config.load(REPO, ["period=2019H1"])
    assert paths.stage_period(cfg).label == "2019H1" and paths.mosaic(cfg, paths.stage_period(cfg)).name == "mosaic_2019H1.tif"
    assert paths.stage_period(config.load(REPO)).label == "2010"
    assert paths.stage_period(config.load(REPO, ["period=2021Q2"])).kind == "quarter"  # by hand, unlisted


@pytest.mark.parametrize(("overrides", "message"), [
    (["periods.census=2005"], "periods.census: period 2005 is not in periods.list"),
    (["periods.target=2019"], "periods.target: period 2019 is not in periods.list"),
    (["periods.list=[2010,2019,2019H2]"], "periods.list: periods 2019 and 2019H2 overlap"),
    (["periods.list=[2010,2019X]"], "periods.list: period '2019X' does not parse"),
    (["periods.list=[]"], "periods.list: no periods"),
    (["period=2019H3"], "period: period '2019H3' does not parse"),
])
def test_bad_periods_name_the_key_and_the_period(overrides, message):
    with pytest.raises(InputError, match=message):
        paths.stage_period(config.load(REPO, overrides))


def test_old_years_configs_are_refused_with_how_to_convert(monkeypatch, capsys):
    cfg = config.load(REPO)
    del cfg["periods"]
    cfg["years"] = {"train": 2010, "target": 2019}
    with pytest.raises(InputError, match=r"years.train / years.target are replaced by periods: write "
                                         r"periods.list=\[T,Y\] periods.census=T periods.target=Y"):
        PeriodSettings.from_config(cfg)
    monkeypatch.chdir(REPO)
    for override, hint in (("years.train=2005", "periods.list=[T,Y]"), ("year=2019", "replaced by period=")):
        assert main(["mosaic", override]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and hint in err


def test_a_period_stage_refuses_a_bad_period_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(REPO)
    assert main(["mosaic", f"out_dir={tmp_path}", "periods.list=[2010,2015,2015H1]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "periods 2015 and 2015H1 overlap" in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
