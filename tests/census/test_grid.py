import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import CRS

from helpers.grids import brute_force
from helpers.project import REPO
from urbanmap.census.grid import GridSettings, build_grid, cell_ids, cell_polygons, check_projected, parse_cell_ids
from urbanmap.core import config
from urbanmap.core.errors import InputError


def as_set(cells: pd.DataFrame):
    return set(zip(cells["col"].tolist(), cells["row"].tolist()))


def test_aligned_square_gives_exactly_its_cells_and_not_the_touching_neighbours():
    cells = build_grid(shapely.box(2000, 5000, 4000, 7000), 1000)
    assert as_set(cells) == {(2, 5), (3, 5), (2, 6), (3, 6)}
    assert sorted(cells["cell_id"]) == ["E0002N0005", "E0002N0006", "E0003N0005", "E0003N0006"]


def test_irregular_region_with_hole_matches_brute_force():
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 60))
    radius = rng.uniform(20_000, 45_000, 60)
    outer = shapely.Polygon(np.c_[2_800_000 + radius * np.cos(angles), 830_000 + radius * np.sin(angles)])
    region = outer.difference(shapely.Point(2_800_000, 830_000).buffer(8_000)).union(
        shapely.box(2_900_000, 830_000, 2_900_500, 830_500)  # a sub-cell island
    )
    cells = build_grid(region, 1000)
    assert as_set(cells) == brute_force(region, 1000)
    assert cells["cell_id"].is_unique
    assert (2_900, 830) in as_set(cells)  # the island's cell is kept
    assert (2_800, 830) not in as_set(cells)  # inside the hole


def test_cell_id_round_trips_to_its_polygon():
    cols, rows = np.array([2786, -3, 0]), np.array([812, 45, -1])
    ids = cell_ids(cols, rows, 1000)
    assert list(ids) == ["E2786N0812", "W0003N0045", "E0000S0001"]
    back_cols, back_rows = parse_cell_ids(ids, 1000)
    assert shapely.equals(
        cell_polygons(back_cols, back_rows, 1000), shapely.box(cols * 1000, rows * 1000, cols * 1000 + 1000, rows * 1000 + 1000)
    ).all()


def test_non_kilometre_cells_use_metre_ids():
    ids = cell_ids(np.array([1707]), np.array([14707]), 300)
    assert list(ids) == ["E00512100N04412100"]
    assert [int(v[0]) for v in parse_cell_ids(ids, 300)] == [1707, 14707]


def test_bad_cell_id_is_refused():
    with pytest.raises(InputError, match="E<digits>N<digits>"):
        parse_cell_ids(["X12"], 1000)


def test_geographic_crs_is_refused():
    with pytest.raises(InputError, match="not projected"):
        check_projected(CRS.from_epsg(4326), "data.crs")
    check_projected(CRS.from_epsg(6372), "data.crs")


def test_grid_settings_are_read_once_and_checked():
    settings = GridSettings.from_config(config.load(REPO))
    assert settings.crs.to_epsg() == 6372 and settings.cell_size == 1000.0
    assert settings.window == (2770000, 799000, 2830000, 859000) and settings.mosaic_file is None
    assert settings.out.name == "grid.parquet"
    for override, message in (("data.crs=EPSG:4326", "data.crs: the grid CRS EPSG:4326 is not projected"),
                              ("data.crs=nonsense", "data.crs: 'nonsense' is not a CRS"),
                              ("data.cell_size=-5", "data.cell_size: must be positive"),
                              ("data.cell_size=50", "smaller than two pixels")):
        with pytest.raises(InputError, match=message):
            GridSettings.from_config(config.load(REPO, [override]))
