"""The change stage: classes from known maps, the COG's codes on the grid, the table per
municipality (cells by centre, reprojected boundaries) summing to the region's, bad input."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.transform import rowcol
from shapely.geometry import box

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, io
from urbanmap.core.errors import InputError
from urbanmap.mapping.change import CODES, ChangeSettings, change_classes

COL0, ROW0, N = 2790, 820, 8  # an 8 x 8 region of 1 km cells, EPSG:6372


def test_change_classes_from_known_maps():
    first = ["urban", "urban", "non_urban", "non_urban", "nodata", "urban", "nodata", "non_urban"]
    second = ["urban", "non_urban", "urban", "non_urban", "urban", "nodata", "nodata", "nodata"]
    assert change_classes(first, second).tolist() == [
        "stable_urban", "urban_lost", "new_urban", "stable_non_urban", "nodata", "nodata", "nodata", "nodata"]


def _maps(seed=0):
    """Two years' classes on the 8 x 8 cells: a city that grows, one lost cell, nodata."""
    cc, rr = np.meshgrid(np.arange(N), np.arange(N))
    cols, rows = (cc.ravel() + COL0).astype(np.int64), (rr.ravel() + ROW0).astype(np.int64)
    d = np.hypot(cc.ravel() - 3.5, rr.ravel() - 3.5)
    first = np.where(d < 2.2, "urban", "non_urban").astype(object)
    second = np.where(d < 3.2, "urban", "non_urban").astype(object)
    first[0], second[1] = "nodata", "nodata"
    second[np.flatnonzero(first == "urban")[0]] = "non_urban"  # urban lost
    ids = np.array([f"E{c:04d}N{r:04d}" for c, r in zip(cols, rows)])
    return cols, rows, ids, first, second


def _write_predictions(folder, year, cols, rows, ids, cls, order=None):
    p = np.where(cls == "urban", 0.9, np.where(cls == "non_urban", 0.1, np.nan)).astype(np.float32)
    table = pd.DataFrame({"cell_id": ids, "col": cols, "row": rows, "p_urban": p, "class": cls})
    io.write_cells(folder / "predictions" / f"{year}.parquet", table.iloc[order] if order is not None else table, 1000.0, "EPSG:6372")


@pytest.fixture
def region(tmp_path):
    """Predictions of 2010 and 2019 and three municipalities: west (columns 0-2), east
    (columns 3-7, rows 0-6: the top row is in none) and one far away; stored in
    geographic coordinates so the stage must reproject them."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    cols, rows, ids, first, second = _maps()
    _write_predictions(folder, 2010, cols, rows, ids, first)
    _write_predictions(folder, 2019, cols, rows, ids, second, order=np.random.default_rng(1).permutation(len(ids)))
    x0, y0 = COL0 * 1000, ROW0 * 1000
    munis = gpd.GeoDataFrame(
        {"cvegeo": ["15002", "15001", "07001"], "nom_mun": ["Este", "Oeste", "Lejos"], "pob": [1, 2, 3]},
        geometry=[box(x0 + 3000, y0 - 5000, x0 + 20000, y0 + 7000), box(x0 - 5000, y0 - 5000, x0 + 3000, y0 + 20000),
                  box(x0 + 500000, y0, x0 + 510000, y0 + 10000)],
        crs="EPSG:6372",
    ).to_crs("EPSG:4326")
    munis.to_parquet(tmp_path / "munis.parquet")
    expected_key = np.where(cols - COL0 < 3, "15001", np.where(rows - ROW0 < 7, "15002", ""))
    return tmp_path, (cols, rows, ids, first, second), expected_key


def run_cli(monkeypatch, root, *extra):
    monkeypatch.chdir(REPO)
    return main(["change", f"out_dir={root}", "data.name=tiny", f"data.municipalities={root / 'munis.parquet'}",
                 "periods.list=[2010,2019]", "periods.target=2019", *extra])


def test_change_stage_writes_cells_cog_and_tables_that_agree(region, monkeypatch):
    root, (cols, rows, ids, first, second), key = region
    assert run_cli(monkeypatch, root) == 0
    out = root / "tiny" / "change"
    change, cell_size, crs = io.read_cells(out / "change.parquet", "change")
    assert crs.to_epsg() == 6372 and cell_size == 1000.0
    assert {"cell_id", "class_2010", "class_2019", "change", "likely_error"} <= set(change.columns)
    by_id = change.set_index("cell_id").loc[ids]
    np.testing.assert_array_equal(by_id["class_2010"], first)
    np.testing.assert_array_equal(by_id["class_2019"], second)  # joined by cell_id, not row order
    expected = change_classes(first, second)
    np.testing.assert_array_equal(by_id["change"], expected)
    assert by_id["likely_error"].sum() == 1 == (expected == "urban_lost").sum()
    assert set(expected) == set(CODES)  # the data exercise every class

    with rasterio.open(out / "change.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.dtypes[0] == "uint8"
        assert src.transform == Affine(1000.0, 0.0, COL0 * 1000.0, 0.0, -1000.0, (ROW0 + N) * 1000.0)
        assert src.crs.to_epsg() == 6372 and src.nodata == 255
        assert "3 new_urban" in src.descriptions[0] and "4 urban_lost" in src.tags()["CHANGE_CODES"]
        r, c = rowcol(src.transform, (cols + 0.5) * 1000.0, (rows + 0.5) * 1000.0)
        codes = src.read(1)[r, c]
    np.testing.assert_array_equal(codes, [CODES[e] for e in expected])

    region = json.loads((out / "region.json").read_text())
    table = pd.read_csv(out / "municipalities.csv", dtype={"cvegeo": str}, keep_default_na=False)
    # a cell belongs to the municipality holding its centre; the far one has none
    assert table["cvegeo"].tolist() == ["", "15001", "15002"]
    assert table["name"].tolist() == ["(none)", "Oeste", "Este"]
    for k in ("", "15001", "15002"):
        row = table.set_index("cvegeo").loc[k]
        for c in CODES:
            assert row[f"cells_{c}"] == ((key == k) & (expected == c)).sum()
        assert row["urban_km2_2019"] == ((key == k) & (second == "urban")).sum()
    # the municipalities add up to the region
    for c in CODES:
        assert table[f"cells_{c}"].sum() == region["cells_per_change"][c] == (expected == c).sum()
        assert table[f"km2_{c}"].sum() == pytest.approx(region["km2_per_change"][c])
    assert table["cells_total"].sum() == region["cells"] == N * N
    assert region["urban_km2_2010"] == (first == "urban").sum() and region["urban_km2_2019"] == (second == "urban").sum()
    assert region["cells_outside_municipalities"] == (key == "").sum() == N - 3
    assert (out / "change.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_maps_of_other_cells_are_refused(region, monkeypatch, capsys):
    root, (cols, rows, ids, first, second), _ = region
    _write_predictions(root / "tiny", 2019, cols[1:], rows[1:], ids[1:], second[1:])
    assert run_cli(monkeypatch, root) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2019.parquet: predicted on other cells" in err
    assert "(1 cells only in 2010's map, 0 only in 2019's)" in err  # the second year has fewer cells
    assert not (root / "tiny" / "change").exists()


def test_a_missing_map_is_a_one_line_error(region, monkeypatch, capsys):
    root, _, _ = region
    (root / "tiny" / "predictions" / "2010.parquet").unlink()
    assert run_cli(monkeypatch, root) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "predictions/2010.parquet: predictions of 2010 not found" in err
    assert not (root / "tiny" / "change").exists()


def test_municipalities_without_the_key_column_are_refused(region, monkeypatch, capsys):
    root, _, _ = region
    assert run_cli(monkeypatch, root, "data.municipality_id=CVEGEO") == 2
    assert "lacks column(s) CVEGEO" in capsys.readouterr().err
    assert not (root / "tiny" / "change" / "change.parquet").exists()


def test_without_municipalities_the_table_is_the_region(region, monkeypatch):
    root, (_, _, _, first, second), _ = region
    monkeypatch.chdir(REPO)
    assert main(["change", f"out_dir={root}", "data.name=tiny", "data.municipalities=null",
                 "periods.list=[2010,2019]", "periods.target=2019"]) == 0
    table = pd.read_csv(root / "tiny" / "change" / "municipalities.csv", keep_default_na=False)
    assert table["name"].tolist() == ["(none)"]
    expected = change_classes(first, second)
    assert [table.loc[0, f"cells_{c}"] for c in CODES] == [(expected == c).sum() for c in CODES]


def test_change_settings_refuse_one_period_twice():
    settings = ChangeSettings.from_config(config.load(REPO, ["data.municipalities=null"]))
    assert settings.years == ("2010", "2019H2") and settings.municipalities is None
    assert [p.name for p in settings.predictions] == ["2010.parquet", "2019H2.parquet"]
    with pytest.raises(InputError, match="periods: census and target are both 2019H2"):
        ChangeSettings.from_config(config.load(REPO, ["periods.census=2019H2"]))
