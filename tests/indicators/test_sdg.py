"""SDG 11.3.1: the indicator's arithmetic and flags, population projection, and the
stage on a small region with two municipalities."""

import json
import math
import re
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, io, paths
from urbanmap.core.errors import InputError
from urbanmap.examples.tiny import CELL, CRS
from urbanmap.indicators import sdg


def test_indicator_follows_un_habitat_formulas_and_flags_undefined_cases():
    # Urban area doubles in 10 years while population grows by half; then the edge cases.
    u1 = [10.0, 10.0, 0.0, 10.0, 10.0, 12.0]
    u2 = [20.0, 20.0, 5.0, 20.0, 20.0, 10.0]
    p1 = [100.0, 100.0, 100.0, 100.0, 0.0, 100.0]
    p2 = [150.0, 100.0, 150.0, 90.0, 50.0, 150.0]
    out = sdg.indicator(u1, u2, p1, p2, 10)
    lcr, pgr = math.log(2) / 10, math.log(1.5) / 10
    assert out.loc[0, "lcr"] == pytest.approx(lcr) and out.loc[0, "pgr"] == pytest.approx(pgr)
    assert out.loc[0, "lcrpgr"] == pytest.approx(lcr / pgr) and out.loc[0, "flags"] == ""
    assert out.loc[1, "flags"] == "population_constant" and np.isnan(out.loc[1, "lcrpgr"])
    assert out.loc[1, "lcr"] == pytest.approx(lcr)
    assert out.loc[2, "flags"] == "no_urban_t1" and np.isnan(out.loc[2, "lcr"]) and np.isnan(out.loc[2, "lcrpgr"])
    assert out.loc[3, "flags"] == "population_decline" and out.loc[3, "pgr"] < 0 and np.isnan(out.loc[3, "lcrpgr"])
    assert out.loc[4, "flags"] == "no_population" and np.isnan(out.loc[4, "pgr"])
    assert out.loc[5, "flags"] == "urban_decline" and out.loc[5, "lcrpgr"] == pytest.approx(math.log(10 / 12) / 10 / pgr)


def test_population_projection():
    got = sdg.project_population([1_000_000, 0], 2020, 0.0115, 2010)
    assert got[0] == pytest.approx(1_000_000 * math.exp(-0.115)) and got[1] == 0
    # Mexico's 2010 and 2020 census totals give the default rate.
    assert math.log(126_014_024 / 112_336_538) / 10 == pytest.approx(0.0115, abs=1e-4)


#: Each period's reference sample in the small region: 8 cells of each map stratum.
PER_STRATUM = 8


def reference_samples(folder, cells, classes):
    """validation/periods/samples.csv and strata.csv: per period, the first PER_STRATUM
    cells mapped urban and the first mapped non_urban, all interpreted as mapped except
    the first non_urban one of the west half (municipality A), which is urban."""
    samples, strata = [], []
    west = cells["col"].to_numpy() < 2795
    for period, mapped in classes.items():
        picked = []
        for stratum in ("urban", "non_urban"):
            picked += list(np.flatnonzero(mapped == stratum)[:PER_STRATUM])
            strata.append({"period": period, "class": stratum, "area": float((mapped == stratum).sum())})
        ref = mapped[picked].copy()
        missed = next(k for k, i in enumerate(picked) if mapped[i] == "non_urban" and west[i])
        ref[missed] = "urban"
        samples.append(pd.DataFrame({"period": period, "cell_id": cells["cell_id"].to_numpy()[picked],
                                     "stratum": mapped[picked], "map_class": mapped[picked], "ref_class": ref}))
    (folder / "validation" / "periods").mkdir(parents=True)
    pd.concat(samples).to_csv(folder / "validation" / "periods" / "samples.csv", index=False)
    pd.DataFrame(strata).to_csv(folder / "validation" / "periods" / "strata.csv", index=False)


@pytest.fixture
def region(tmp_path):
    """10 x 6 cells: municipality A covers the west half, B the east half and as much
    again outside the region (partial). Urban grows from 10 to 15 cells in A and from
    4 to 4 in B; one nodata cell in B. Each period's reference sample finds one urban
    cell of A mapped non_urban."""
    folder = tmp_path / "out" / "tiny"
    cols, rows = np.meshgrid(np.arange(2790, 2800), np.arange(820, 826))
    cols, rows = cols.ravel(), rows.ravel()
    cells = pd.DataFrame({"cell_id": [f"E{c}N{r:04d}" for c, r in zip(cols, rows)], "col": cols, "row": rows})
    west = cols < 2795
    k = np.arange(len(cells))
    c2010 = np.where(west & (k % 3 == 0), "urban", "non_urban").astype(object)
    c2019 = c2010.copy()
    c2019[np.flatnonzero(west & (c2010 == "non_urban"))[:5]] = "urban"
    east = np.flatnonzero(~west)
    c2010[east[:4]] = "urban"
    c2019[east[:4]] = "urban"
    c2019[east[-1]] = "nodata"
    for period, mapped in (("2010", c2010), ("2019", c2019)):
        p_urban = np.where(mapped == "urban", 0.8, 0.2).astype(np.float32)
        io.write_cells(folder / "predictions" / f"{period}.parquet", cells.assign(p_urban=p_urban, **{"class": mapped}),
                       CELL, CRS)
    io.write_cells(folder / "labels.parquet", cells.assign(population=np.where(west, 1000.0, 500.0)), CELL, CRS)
    munis = gpd.GeoDataFrame(
        {"cvegeo": ["A", "B"], "nom_mun": ["West", "East"]},
        geometry=[shapely.box(2790e3, 820e3, 2795e3, 826e3), shapely.box(2795e3, 820e3, 2805e3, 826e3)], crs=CRS,
    ).to_crs("EPSG:6365")
    munis.to_parquet(tmp_path / "munis.parquet")
    reference_samples(folder, cells, {"2010": c2010, "2019": c2019})
    over = [f"out_dir={tmp_path / 'out'}", "data.name=tiny", f"data.municipalities={tmp_path / 'munis.parquet'}",
            "periods.list=[2010,2019]", "periods.target=2019", "sdg.population.table=null", "sdg.min_sampled=4"]
    return over, c2010, c2019, west


def test_sdg_stage(in_repo, region, capsys):
    """Mapped and error-adjusted areas per municipality and for the region, the
    difference estimator's intervals by hand, and the delta method's for LCR."""
    over, c2010, c2019, west = region
    assert main(["sdg", *over]) == 0
    cfg = config.load(REPO, over)
    out = pd.read_csv(paths.sdg_table(cfg), dtype={"id": str}, keep_default_na=False, na_values=[""])
    assert out["id"].tolist() == ["A", "B", "region"]
    a, b, reg = (out.iloc[i] for i in range(3))
    assert a["urban_km2_2010_mapped"] == (west & (c2010 == "urban")).sum() == 10
    assert a["urban_km2_2019_mapped"] == 15 and b["urban_km2_2019_mapped"] == 4
    # One missed urban cell of A among the 8 sampled of the non_urban stratum: each
    # stands for N_non_urban / 8 km²; var = N² s² / 8 with s² = 1/8 (one 1 among eight).
    adjusted, ci95 = {}, {}
    for period, mapped in (("2010", c2010), ("2019", c2019)):
        n_non = float((mapped == "non_urban").sum())
        adjusted[period] = n_non / PER_STRATUM
        ci95[period] = 1.96 * math.sqrt(n_non**2 * 0.125 / PER_STRATUM)
        assert a[f"urban_km2_{period}_adjusted"] == pytest.approx(a[f"urban_km2_{period}_mapped"] + adjusted[period], abs=1e-3)
        assert b[f"urban_km2_{period}_adjusted"] == b[f"urban_km2_{period}_mapped"]
        assert reg[f"urban_km2_{period}_adjusted"] == pytest.approx(reg[f"urban_km2_{period}_mapped"] + adjusted[period],
                                                                    abs=1e-3)
        assert reg[f"urban_km2_{period}_adjusted_ci95"] == pytest.approx(ci95[period], abs=1e-3)
        assert a[f"urban_km2_{period}_adjusted_ci95"] == pytest.approx(ci95[period], abs=1e-3)
    assert a["n_sampled_2010"] + b["n_sampled_2010"] == reg["n_sampled_2010"] == 2 * PER_STRATUM
    pop_2010 = 30 * 1000 * math.exp(0.0115 * (2010 - 2020))
    assert a["population_2010"] == round(pop_2010)
    assert a["lcr"] == pytest.approx(math.log(15 / 10) / 9, abs=1e-6) and a["pgr"] == pytest.approx(0.0115, abs=1e-6)
    assert a["lcrpgr"] == pytest.approx(math.log(1.5) / 9 / 0.0115, abs=1e-3)
    a1, a2 = 10 + adjusted["2010"], 15 + adjusted["2019"]
    lcr = math.log(a2 / a1) / 9
    se = math.sqrt((ci95["2010"] / 1.96 / a1) ** 2 + (ci95["2019"] / 1.96 / a2) ** 2) / 9
    assert a["lcr_adjusted"] == pytest.approx(lcr, abs=1e-6) and a["lcr_adjusted_ci95"] == pytest.approx(1.96 * se, abs=1e-6)
    assert a["lcrpgr_adjusted"] == pytest.approx(lcr / 0.0115, abs=1e-3)
    assert a["lcrpgr_adjusted_ci95"] == pytest.approx(1.96 * se / 0.0115, abs=1e-3)
    assert pd.isna(a["flags"])  # no flag for A
    assert set(b["flags"].split(";")) == {"partial", "nodata"} and b["coverage"] == pytest.approx(0.5, abs=0.01)
    assert b["lcr"] == 0 and b["lcrpgr"] == 0 and b["lcr_adjusted_ci95"] == 0  # no error found in B's cells
    assert reg["cells"] == 60 and reg["population_2019"] == pytest.approx(out["population_2019"][:2].sum(), abs=1)
    summary = json.loads(paths.sdg_summary(cfg).read_text())
    assert summary["periods"] == ["2010", "2019"] and summary["lcrpgr_adjusted"] == pytest.approx(reg["lcrpgr_adjusted"], abs=1e-4)
    assert paths.sdg_chart(cfg).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the area series per municipality: every period of the list, the same estimates
    series = pd.read_csv(paths.sdg_area_series(cfg), dtype={"id": str, "period": str})
    assert series[["id", "period"]].values.tolist() == [["A", "2010"], ["B", "2010"], ["region", "2010"],
                                                          ["A", "2019"], ["B", "2019"], ["region", "2019"]]
    for period in ("2010", "2019"):
        row = series[(series["id"] == "A") & (series["period"] == period)].iloc[0]
        assert row["urban_km2"] == pytest.approx(a[f"urban_km2_{period}_adjusted"], abs=1e-3)
        assert row["urban_km2_ci95"] == pytest.approx(ci95[period], abs=1e-3) and row["n_sampled"] == a[f"n_sampled_{period}"]
    # fewer sampled cells than sdg.min_sampled: the estimate stays, its interval goes
    assert main(["sdg", *over, "sdg.min_sampled=9"]) == 0
    out = pd.read_csv(paths.sdg_table(cfg), dtype={"id": str}, keep_default_na=False, na_values=[""])
    assert "few_sampled" in out["flags"][0] and pd.isna(out["urban_km2_2019_adjusted_ci95"][0])
    assert out["urban_km2_2019_adjusted"][0] == pytest.approx(a["urban_km2_2019_adjusted"])
    assert out["urban_km2_2019_adjusted_ci95"].iloc[-1] == pytest.approx(ci95["2019"], abs=1e-3)


def test_sdg_between_any_two_periods(in_repo, region, tmp_path):
    """sdg.periods picks two periods of periods.list, the earlier first."""
    over, *_ = region
    over = [o.replace("periods.list=[2010,2019]", "periods.list=[2010,2015,2019]") for o in over]
    cfg = config.load(REPO, over)
    folder = paths.region_dir(cfg)
    shutil.copy(folder / "predictions" / "2010.parquet", folder / "predictions" / "2015.parquet")
    for name in ("samples.csv", "strata.csv"):
        path = folder / "validation" / "periods" / name
        frame = pd.read_csv(path, dtype=str)
        pd.concat([frame, frame[frame["period"] == "2010"].assign(period="2015")]).to_csv(path, index=False)
    assert main(["sdg", *over, "sdg.periods=[2015,2019]"]) == 0
    out = pd.read_csv(paths.sdg_table(cfg), dtype={"id": str}, keep_default_na=False, na_values=[""])
    assert out["lcr"][0] == pytest.approx(math.log(15 / 10) / 4, abs=1e-6)  # 2015.5 -> 2019.5
    for bad, message in (("[2019,2015]", "sdg.periods: 2019 is not before 2015"),
                         ("[2010,2019]", "sdg.periods: period 2010 is not in periods.list (2015, 2019)"),
                         ("[2015]", "sdg.periods: expected two periods")):
        bad_over = [*over, f"sdg.periods={bad}"]
        if "2010" in bad:
            bad_over = [o.replace("periods.list=[2010,2015,2019]", "periods.list=[2015,2019]") for o in bad_over]
            bad_over += ["periods.census=2015"]
        with pytest.raises(InputError, match=re.escape(message)):
            sdg.SdgSettings.from_config(config.load(REPO, bad_over))


def test_population_table(in_repo, region, tmp_path):
    over, *_ = region
    table = pd.DataFrame({"id": ["A", "A", "B", "B"], "year": [2010, 2019, 2010, 2019], "population": [100, 100, 50, 40]})
    table.to_csv(tmp_path / "pop.csv", index=False)
    over = [*over, f"sdg.population.table={tmp_path / 'pop.csv'}"]
    assert main(["sdg", *over]) == 0
    out = pd.read_csv(paths.sdg_table(config.load(REPO, over)), dtype={"id": str}, keep_default_na=False)
    assert out["population_2019"].tolist() == [100, 40, 140]
    assert out["flags"][0] == "population_constant" and out["lcrpgr"][0] == ""
    assert "population_decline" in out["flags"][1]

    table[table["id"] == "A"].to_csv(tmp_path / "pop.csv", index=False)
    assert main(["sdg", *over]) == 2


def test_a_period_without_reference_sample_keeps_its_mapped_area(in_repo, region):
    """Real imagery with people's answers for the target only: t1's areas are the mapped
    ones, without intervals (n_sampled 0, few_sampled)."""
    over, *_ = region
    cfg = config.load(REPO, over)
    for name in ("samples.csv", "strata.csv"):
        path = paths.validation_periods_dir(cfg) / name
        frame = pd.read_csv(path, dtype=str)
        frame[frame["period"] != "2010"].to_csv(path, index=False)
    assert main(["sdg", *over]) == 0
    out = pd.read_csv(paths.sdg_table(cfg), dtype={"id": str}, keep_default_na=False, na_values=[""])
    assert (out["urban_km2_2010_adjusted"] == out["urban_km2_2010_mapped"]).all()
    assert (out["n_sampled_2010"] == 0).all() and out["urban_km2_2010_adjusted_ci95"].isna().all()
    assert out["lcr_adjusted_ci95"].isna().all() and all("few_sampled" in f for f in out["flags"])
    assert out["urban_km2_2019_adjusted"].iloc[-1] > out["urban_km2_2019_mapped"].iloc[-1]


def test_sdg_without_reference_samples(in_repo, region, capsys):
    over, *_ = region
    cfg = config.load(REPO, over)
    (paths.validation_periods_dir(cfg) / "samples.csv").unlink()
    assert main(["sdg", *over]) == 2
    err = capsys.readouterr().err
    assert "samples.csv" in err and "not found" in err and not paths.sdg_table(cfg).exists()


def test_sdg_settings_name_the_config_key_that_is_wrong():
    settings = sdg.SdgSettings.from_config(config.load(REPO))
    assert settings.years == ("2010", "2019H2") and settings.min_coverage == 0.9
    assert settings.times == (2010.5, 2019.75)
    assert settings.population == sdg.PopulationSettings("../shared/data/mexico/inegi_municipal_population.csv", 2020,
                                                         0.0115)
    for override, message in (("data.municipalities=null", "data.municipalities: null"),
                              ("sdg.min_coverage=most", "sdg.min_coverage takes a number"),
                              ("sdg.population.growth_rate=fast", "sdg.population.growth_rate takes a number")):
        with pytest.raises(InputError, match=message):
            sdg.SdgSettings.from_config(config.load(REPO, [override]))


def test_population_is_interpolated_log_linearly_at_each_periods_middle(tmp_path):
    """INEGI's wide table (pob_2010, pob_2015, pob_2020): a semester between two dates
    is log-linear between them; a period after the last date is extrapolated (flagged);
    a municipality split off after 2010 has no 2010 population (flagged, PGR undefined)."""
    pd.DataFrame({"cvegeo": ["A", "B", "C"], "nom_mun": ["a", "b", "c"], "pob_2010": [1000, 500, None],
                  "pob_2015": [2000, 500, None], "pob_2020": [4000, 400, 80]}).to_csv(tmp_path / "pop.csv", index=False)
    ids = pd.Index(["A", "B", "C"])
    pop, flags = sdg.table_population(str(tmp_path / "pop.csv"), ids, ("2010", "2019H2"), (2010.5, 2019.75),
                                      id_column="cvegeo")
    assert pop["population_2010"].tolist()[:2] == [1000, 500] and math.isnan(pop["population_2010"]["C"])
    # 2019H2's middle, 2019.75, is 4.25 of the 5 years from 2015.5 to 2020.5
    assert pop["population_2019H2"]["A"] == pytest.approx(2000 * 2 ** (4.25 / 5))
    assert pop["population_2019H2"]["B"] == pytest.approx(500 * 0.8 ** (4.25 / 5))
    assert flags.tolist() == ["", "", "created_after_2010"]
    later, flags = sdg.table_population(str(tmp_path / "pop.csv"), ids, ("2010", "2022Q1"), (2010.5, 2022.125),
                                        id_column="cvegeo")
    assert later["population_2022Q1"]["A"] == pytest.approx(4000 * 2 ** (1.625 / 5))
    assert flags.tolist() == ["population_extrapolated"] * 2 + ["created_after_2010"]  # C: one date, no rate
    pgr = sdg.indicator([1, 1, 1], [2, 2, 2], pop["population_2010"], pop["population_2019H2"], 9.25)
    assert pgr["flags"][2] == "no_population" and pgr["pgr"][0] == pytest.approx(math.log(2) / 5)


def test_the_default_region_reads_inegis_municipal_table(shared_data):
    cfg = config.load(REPO)
    wide = sdg.read_population_table(cfg.sdg.population.table, "cvegeo")
    assert list(wide.columns) == [2010, 2015, 2020] and wide.loc["09007"].tolist() == [1815786, 1827868, 1835486]
