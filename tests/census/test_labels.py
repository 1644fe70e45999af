import numpy as np
import pandas as pd
import pytest
import shapely

from helpers.project import REPO
from urbanmap.census.labels import LabelSettings, apply_rule, census_measures
from urbanmap.core import config
from urbanmap.core.errors import InputError


def grid_of(cols, rows):
    cc, rr = np.meshgrid(cols, rows)
    return pd.DataFrame({"col": cc.ravel(), "row": rr.ravel()})


def test_locality_covering_two_and_a_half_cells():
    cells = grid_of([0, 1, 2, 3], [0])
    locality = shapely.box(0, 0, 2500, 1000)
    out = census_measures(cells, 1000.0, np.array([locality]), np.array(["urban"]), np.array([250.0]))
    np.testing.assert_allclose(out["urban_fraction"], [1, 1, 0.5, 0])
    np.testing.assert_allclose(out["population"], [100, 100, 50, 0])
    np.testing.assert_allclose(out["population_density"], [100, 100, 50, 0])
    assert out["n_localities"].tolist() == [1, 1, 1, 0]
    assert apply_rule(out["urban_fraction"], 0.5, 0.1).tolist() == ["urban", "urban", "urban", "non_urban"]


def test_classes_are_kept_apart_and_overlaps_clip_the_fraction():
    cells = grid_of([0, 1], [0, 1])
    polygons = np.array(
        [
            shapely.box(0, 0, 1000, 1000),  # urban, whole cell (0, 0)
            shapely.box(0, 0, 1000, 500),  # urban, overlapping the first
            shapely.box(1000, 0, 2000, 300),  # rural, 30% of (1, 0)
            shapely.box(0, 1000, 1000, 1200),  # unclassified, 20% of (0, 1)
        ]
    )
    kind = np.array(["urban", "urban", "rural", "unclassified"])
    out = census_measures(cells, 1000.0, polygons, kind, np.array([1000.0, np.nan, 30.0, np.nan]))
    assert out["urban_fraction"].tolist() == [1.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(out["urban_area"], [1.5e6, 0, 0, 0])
    np.testing.assert_allclose(out["rural_area"], [0, 3e5, 0, 0])
    np.testing.assert_allclose(out["unclassified_area"], [0, 0, 2e5, 0])
    np.testing.assert_allclose(out["population"], [1000, 30, 0, 0])  # NaN population counts as 0
    assert out["n_localities"].tolist() == [2, 1, 1, 0]


def test_polygon_larger_than_many_cells_and_outside_the_grid():
    cells = grid_of(np.arange(10), np.arange(10))
    disc = shapely.Point(5000, 5000).buffer(3000, quad_segs=64)
    far = shapely.box(50_000, 50_000, 51_000, 51_000)  # no grid cell there
    out = census_measures(cells, 1000.0, np.array([disc, far]), np.array(["urban", "urban"]), np.array([9.0, 5.0]))
    assert out["urban_area"].sum() == pytest.approx(disc.area, rel=1e-9)
    assert out["population"].sum() == pytest.approx(9.0)
    inner = (cells["col"].between(3, 6)) & (cells["row"].between(3, 6))
    assert (out.loc[inner & cells["col"].between(4, 5) & cells["row"].between(4, 5), "urban_fraction"] == 1).all()


def test_density_rule_and_excluded_band():
    assert apply_rule(np.array([2000, 1500, 1499, 300, 299]), 1500, 300).tolist() == [
        "urban", "urban", "excluded", "excluded", "non_urban",
    ]
    with pytest.raises(InputError, match="must not exceed"):
        apply_rule(np.array([0.3]), 0.1, 0.5)


def test_label_settings_name_the_config_key_that_is_wrong():
    settings = LabelSettings.from_config(config.load(REPO, ["labels.rule=population_density"]))
    assert settings.rule == "population_density"
    assert (settings.thresholds.urban_min, settings.thresholds.non_urban_max) == (1500.0, 300.0)
    assert settings.census.class_column == "ambito" and settings.census.urban_values == ("URBANO",)
    for overrides, message in ((["labels.rule=density"], "labels.rule: unknown rule 'density'"),
                               (["labels.urban_fraction.non_urban_max=0.9"],
                                r"labels.urban_fraction: non_urban_max \(0.9\) must not exceed urban_min \(0.5\)"),
                               (["labels.urban_fraction.urban_min=half"], "labels.urban_fraction.urban_min takes a number"),
                               (["data.census=null"], "data.census: null")):
        with pytest.raises(InputError, match=message):
            LabelSettings.from_config(config.load(REPO, overrides))
