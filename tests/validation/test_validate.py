"""Validation: sample design, the Olofsson et al. (2014) estimators against the paper's
worked example, bad input, coverage of the truth, and the sample -> interpret ->
estimate stages on a small region."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.cli import expect_error, heavy_imports_after
from helpers.project import REPO
from helpers.validation import validation_region
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.core.errors import InputError
from urbanmap.examples.tiny import CELL, CRS
from urbanmap.validation import estimate
from urbanmap.validation.interpret import simulate_interpreter
from urbanmap.validation.sample import MAP_CLASSES, allocate, draw_sample, sample_design, sample_size
from urbanmap.validation.settings import ValidationSettings

# --- Olofsson, Foody, Herold, Stehman, Woodcock & Wulder (2014), Good practices for
# estimating area and assessing accuracy of land change, Remote Sensing of Environment
# 148: 42-57, section 5 (the deforestation example). Inputs from Table 8 (p. 55):
# sample counts (rows map = stratum, columns reference) and mapped area in 30 m
# pixels (0.09 ha each). Expected values as published in section 5.2 (p. 54) and
# Table 9 (p. 55), to the digits printed there.
CLASSES = ["deforestation", "forest_gain", "stable_forest", "stable_non_forest"]
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
TABLE9 = np.array([[0.0176, 0, 0.0013, 0.0011], [0, 0.0110, 0.0016, 0.0024],
                   [0.0019, 0, 0.2967, 0.0213], [0.0040, 0.0020, 0.0179, 0.6212]])
USERS = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
# Producer's intervals: the paper prints ±0.21, ±0.23, ±0.03, ±0.01; its own eq. 7 gives
# 0.254 and 0.018 for forest gain and stable non-forest (the printed 0.23 and 0.01 are
# slips, as other implementations, e.g. R's mapaccuracy, also find): asserted at eq. 7.
PRODUCERS = [(0.75, 0.21), (0.85, 0.25), (0.93, 0.03), (0.96, 0.02)]
OVERALL = (0.95, 0.02)
AREA_HA = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]


def olofsson_files(tmp_path, stratum_column=False):
    """The worked example as a sample CSV (640 rows) and a strata CSV (hectares)."""
    i, j = np.nonzero(COUNTS)
    rows = np.repeat(np.arange(i.size), COUNTS[i, j])
    sample = pd.DataFrame({"map_class": np.array(CLASSES)[i[rows]], "ref_class": np.array(CLASSES)[j[rows]]})
    if stratum_column:
        sample["stratum"] = sample["map_class"]
    sample = sample.sample(frac=1.0, random_state=0)  # row order must not matter
    sample.to_csv(tmp_path / "sample.csv", index=False)
    pd.DataFrame({"class": CLASSES, "area": PIXELS * 0.09, "unit": "ha"}).to_csv(tmp_path / "strata.csv", index=False)
    return tmp_path / "sample.csv", tmp_path / "strata.csv"


def test_olofsson_2014_worked_example(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a user's own files: no params.yaml needed
    sample, strata = olofsson_files(tmp_path)
    out = tmp_path / "estimate.json"
    assert main(["validate", "estimate", "--sample", str(sample), "--strata", str(strata), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "overall accuracy 0.947" in printed and "deforestation" in printed
    r = json.loads(out.read_text())
    assert r["area_unit"] == "ha" and r["n"] == 640 and r["classes"] == CLASSES
    assert np.round(r["error_matrix"]["proportions"], 4).tolist() == TABLE9.tolist()
    assert round(r["overall_accuracy"]["estimate"], 2) == OVERALL[0]
    assert round(r["overall_accuracy"]["ci95"], 2) == OVERALL[1]
    for k, c in enumerate(CLASSES):
        assert (round(r["users_accuracy"][c]["estimate"], 2), round(r["users_accuracy"][c]["ci95"], 2)) == USERS[k]
        assert (round(r["producers_accuracy"][c]["estimate"], 2), round(r["producers_accuracy"][c]["ci95"], 2)) == PRODUCERS[k]
        assert (round(r["area"][c]["estimate"]), round(r["area"][c]["ci95"])) == AREA_HA[k]
        assert r["mapped_area"][c] == pytest.approx(PIXELS[k] * 0.09)
    # The same sample with an explicit stratum column (= map class) gives the same answer.
    sample2, _ = olofsson_files(tmp_path, stratum_column=True)
    r2 = estimate.estimate_files(sample2, strata)
    assert r2["area"] == r["area"] and r2["producers_accuracy"] == r["producers_accuracy"]


def test_sample_size_and_allocation_of_the_paper():
    """Section 5.1.1 / Table 5: target SE 0.01 of overall accuracy and anticipated user's
    accuracies 0.7, 0.6, 0.9, 0.95 give n = 641; proportional allocation 13/10/205/413."""
    weights = PIXELS / PIXELS.sum()
    n = sample_size(weights, [0.70, 0.60, 0.90, 0.95], 0.01)
    assert n == 641
    big = [10**9] * 4
    assert allocate(n, weights, 0, big).tolist() == [13, 10, 205, 413]
    # 75 for the rare strata, the remainder proportional to area (the paper's rule).
    assert allocate(n, weights, 75, big).tolist() == [75, 75, 163, 328]
    # A stratum with fewer cells than its share gives all of them; the rest goes elsewhere.
    got = allocate(100, [0.5, 0.5], 10, [20, 1000])
    assert got.tolist() == [20, 80]
    assert allocate(100, [0.0, 1.0], 10, [50, 1000]).tolist() == [0, 100]


def test_census_of_every_unit_gives_the_population_values():
    """With every unit sampled, the stratified estimators return the population's own
    areas and accuracies, whether the strata are the map classes or not."""
    rng = np.random.default_rng(3)
    n = 500
    truth = np.where(rng.random(n) < 0.4, "urban", "non_urban")
    mapped = np.where(rng.random(n) < 0.1, np.where(truth == "urban", "non_urban", "urban"), truth)
    zone = np.where(rng.random(n) < 0.3, "zone_a", "zone_b")  # strata that are not map classes
    for stratum in (None, zone):
        s = pd.Series(mapped if stratum is None else stratum).value_counts().astype(float)
        r = estimate.stratified_estimates(mapped, truth, s, stratum=stratum)
        assert r["area"]["urban"]["estimate"] == pytest.approx((truth == "urban").sum())
        assert r["overall_accuracy"]["estimate"] == pytest.approx((mapped == truth).mean())
        u = (mapped == "urban")
        assert r["users_accuracy"]["urban"]["estimate"] == pytest.approx((truth[u] == "urban").mean())
        assert r["producers_accuracy"]["urban"]["estimate"] == pytest.approx((mapped[truth == "urban"] == "urban").mean())


def test_undefined_accuracies_are_null_with_a_note():
    r = estimate.stratified_estimates(["a", "a", "b", "b"], ["a", "a", "a", "a"], pd.Series({"a": 10.0, "b": 30.0}))
    assert r["producers_accuracy"]["b"] == {"estimate": None, "ci95": None}
    assert r["area"]["b"] == {"estimate": 0.0, "ci95": 0.0}
    assert r["area"]["a"]["estimate"] == pytest.approx(40.0)
    assert any("b: never in the reference" in note for note in r["notes"])
    # A stratum of area 0 without units is ignored.
    r0 = estimate.stratified_estimates(["a", "a"], ["a", "a"], pd.Series({"a": 10.0, "b": 0.0}))
    assert list(r0["strata"]) == ["a"]


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda s, t: s.assign(ref_class=s["ref_class"].replace("forest_gain", "forest_gian")), ["sample.csv", "'forest_gian'", "not a known class"]),
        (lambda s, t: s.assign(map_class=s["map_class"].replace("forest_gain", "gain")), ["sample.csv", "'gain'", "not a class of the strata"]),
        (lambda s, t: s.drop(columns="ref_class"), ["sample.csv", "lacks column(s) ref_class"]),
        (lambda s, t: s.assign(ref_class=""), ["sample.csv", "empty ref_class", "not interpreted yet"]),
        (lambda s, t: s[s["map_class"] != "forest_gain"], ["strata.csv", "'forest_gain'", "no sampled unit"]),
        (lambda s, t: pd.concat([s[s["map_class"] != "forest_gain"], s[s["map_class"] == "forest_gain"].head(1)]),
         ["sample.csv", "'forest_gain' has 1 sampled unit", "undefined"]),
        (lambda s, t: t.drop(columns="area"), ["strata.csv", "lacks column(s) area"]),
        (lambda s, t: t.assign(area=[1, -2, 3, 4]), ["strata.csv", "not a number >= 0"]),
    ],
    ids=["unknown-ref-class", "unknown-map-class", "missing-column", "not-interpreted", "stratum-without-sample",
         "stratum-with-one-unit", "strata-without-area", "negative-area"],
)
def test_bad_sample_or_strata(tmp_path, capsys, edit, fragments):
    sample_path, strata_path = olofsson_files(tmp_path)
    sample, strata = pd.read_csv(sample_path), pd.read_csv(strata_path)
    edited = edit(sample, strata)
    if "class" in edited.columns:
        edited.to_csv(strata_path, index=False)
    else:
        edited.to_csv(sample_path, index=False)
    out = tmp_path / "estimate.json"
    expect_error(capsys, tmp_path, ["validate", "estimate", "--sample", str(sample_path), "--strata", str(strata_path),
                                    "--out", str(out)], *fragments)


def test_missing_sample_file(tmp_path, capsys):
    expect_error(capsys, tmp_path, ["validate", "estimate", "--sample", str(tmp_path / "nope.csv"), "--strata",
                                    str(tmp_path / "nope2.csv")], "nope.csv", "not found")


# --- the loop on frames: coverage of the truth ---------------------------------------------


def synthetic_map(seed: int, n_side: int = 60):
    """A 60 x 60 region: true urban where a smooth field is high, mapped with omission
    (12%) and commission (6%) errors that cluster at the urban edge."""
    from scipy import ndimage

    rng = np.random.default_rng([seed, 1])
    field = ndimage.gaussian_filter(rng.normal(size=(n_side, n_side)), 6)
    field = (field - field.mean()) / field.std()
    truth = np.where(field > 0.3, "urban", "non_urban").ravel()
    edge = np.abs(field.ravel() - 0.3) < 0.6
    flip = rng.random(truth.size) < np.where(truth == "urban", 0.12, 0.06) * np.where(edge, 1.6, 0.4)
    mapped = np.where(flip, np.where(truth == "urban", "non_urban", "urban"), truth)
    return truth, mapped


def test_interval_of_urban_area_covers_the_truth_in_most_repetitions():
    """20 seeded repetitions of sample -> interpret (error-free) -> estimate on a mapped
    region with errors: the 95% interval of the error-adjusted urban area covers the
    true urban area in at least 17 (expected 19; 17 or more has probability 0.92 for a
    correct 95% interval), and the estimates' mean error is within 3 standard errors of 0."""
    covered, errors = 0, []
    for seed in range(20):
        truth, mapped = synthetic_map(seed)
        design = sample_design(mapped, {"urban": 0.85, "non_urban": 0.9}, 0.02, 50, 1.0, MAP_CLASSES)
        picked = draw_sample(mapped, design, seed)
        ref = simulate_interpreter(truth[picked], 0.0, MAP_CLASSES, seed)
        r = estimate.stratified_estimates(mapped[picked], ref, design.set_index("class")["area"])
        est = r["area"]["urban"]
        true_area = (truth == "urban").sum()
        covered += abs(est["estimate"] - true_area) <= est["ci95"]
        errors.append(est["estimate"] - true_area)
    assert covered >= 17, covered
    assert abs(np.mean(errors)) < 3 * np.std(errors) / np.sqrt(len(errors)), errors


def test_draws_are_deterministic_and_exact():
    strata = np.array(["urban"] * 300 + ["non_urban"] * 700, dtype=object)
    design = sample_design(strata, {"urban": 0.85, "non_urban": 0.9}, 0.03, 40, 1.0, MAP_CLASSES)
    assert design["class"].tolist() == ["urban", "non_urban"]
    assert design["n_sample"].sum() >= 40 * 2
    a, b = draw_sample(strata, design, 7), draw_sample(strata, design, 7)
    assert a.tolist() == b.tolist() and len(set(a)) == len(a)
    assert a.tolist() != draw_sample(strata, design, 8).tolist()
    assert (strata[a] == "urban").sum() == design.set_index("class").loc["urban", "n_sample"]
    truth = strata[a]
    ref = simulate_interpreter(truth, 0.1, MAP_CLASSES, 7)
    assert (ref != truth).sum() == round(0.1 * len(a))
    assert ref.tolist() == simulate_interpreter(truth, 0.1, MAP_CLASSES, 7).tolist()
    with pytest.raises(InputError, match="anticipated_accuracy"):
        sample_design(strata, {"urban": 0.85}, 0.03, 40)


@pytest.mark.parametrize(
    "override, message",
    [
        ("validation.strata=grid", "validation.strata: 'grid' is not map or change"),
        ("validation.target_se=0", "validation.target_se: 0.0 is not in (0, 1)"),
        ("validation.min_per_stratum=1", "validation.min_per_stratum: 1 is below 2"),
        ("validation.interpreter_error=1.5", "validation.interpreter_error: 1.5 is not in [0, 1]"),
        ("validation.anticipated_accuracy.urban=1.2", "validation.anticipated_accuracy: accuracies must be in [0, 1], got urban: 1.2"),
        ("validation.chips.true_colour=[red,green]", "validation.chips: true_colour and false_colour need 3 band names each"),
    ],
)
def test_settings_name_the_bad_key(override, message):
    with pytest.raises(InputError) as err:
        ValidationSettings.from_config(config.load(REPO, [override]))
    assert str(err.value).startswith(message), err.value


# --- the stages on a small region ----------------------------------------------------------


@pytest.fixture
def region(tmp_path):
    """A 20 x 20 region: grid, predictions of 2010 and 2019 (a few nodata), mosaics of
    2010 and 2019, truth of 2019 and change classes; returns (cfg overrides, cells)."""
    return validation_region(tmp_path / "out")


def test_sample_interpret_estimate_stages(in_repo, region, capsys):
    over, cells = region
    assert main(["validate", "sample", *over]) == 0
    cfg = config.load(REPO, over)
    sample = pd.read_csv(paths.validation_sample(cfg), dtype={"ref_class": str}, keep_default_na=False)
    strata = pd.read_csv(paths.validation_strata(cfg))
    assert strata["class"].tolist() == ["urban", "non_urban"]
    assert strata["cells"].sum() == len(cells) - 5 and (strata["unit"] == "km2").all()
    assert len(sample) == strata["n_sample"].sum() and (sample["ref_class"] == "").all()
    assert sample["cell_id"].is_unique and not sample["cell_id"].isin(cells["cell_id"][:5]).any()
    assert (sample["stratum"] == sample["map_class"]).all()
    gpkg = gpd.read_file(paths.validation_sample_gpkg(cfg), layer="sample")
    assert len(gpkg) == len(sample) and gpkg.crs == CRS and gpkg.geometry.area.round().eq(CELL**2).all()
    chips = sorted(paths.validation_chips(cfg).glob("*.png"))
    assert [paths.validation_dir(cfg) / c for c in sorted(sample["chip"])] == chips
    layout = json.loads((paths.validation_chips(cfg) / "layout.json").read_text())
    assert layout["periods"] == ["2019", "2010"] and layout["composites"]["false"] == ["swir1", "nir", "red"]
    with Image.open(chips[0]) as png:
        # 2 x 2 views of 3 x 3 cells magnified 3 times: 2019 above 2010, true | false colour
        assert png.mode == "RGB" and png.size == (2 * 99 * 3 + 6, 2 * (99 * 3 + 16) + 6) == (layout["width"], layout["height"])
    before = {p.name: p.read_bytes() for p in paths.validation_chips(cfg).iterdir()}

    assert main(["validate", "sample", *over]) == 0  # deterministic from the seed, chips byte for byte
    assert pd.read_csv(paths.validation_sample(cfg))["cell_id"].tolist() == sample["cell_id"].tolist()
    assert {p.name: p.read_bytes() for p in paths.validation_chips(cfg).iterdir()} == before

    assert main(["validate", "interpret", *over, "validation.interpreter_error=0.1"]) == 0
    done = pd.read_csv(paths.validation_interpreted(cfg))
    truth = done["cell_id"].map(dict(zip(cells["cell_id"], np.where(cells["label"] == "non_urban", "non_urban", "urban"))))
    assert (done["ref_class"] != truth).sum() == round(0.1 * len(done))

    assert main(["validate", "estimate", *over]) == 0
    est = json.loads(paths.validation_estimate(cfg).read_text())
    assert est["area_unit"] == "km2" and est["n"] == len(done)
    assert est["area"]["urban"]["estimate"] + est["area"]["non_urban"]["estimate"] == pytest.approx(len(cells) - 5)
    assert 0.5 < est["overall_accuracy"]["estimate"] <= 1


def test_change_strata(in_repo, region):
    over, cells = region
    over = [*over, "validation.strata=change"]
    assert main(["validate", "sample", *over]) == 0
    cfg = config.load(REPO, over)
    strata = pd.read_csv(paths.validation_strata(cfg))
    assert set(strata["class"]) <= {"new_urban", "urban_lost", "stable_urban", "stable_non_urban"}
    assert (strata["n_sample"] >= np.minimum(10, strata["cells"])).all()
    assert main(["validate", "interpret", *over]) == 0
    assert main(["validate", "estimate", *over]) == 0
    est = json.loads(paths.validation_estimate(cfg).read_text())
    assert set(est["strata"]) == set(strata["class"]) and est["classes"] == ["non_urban", "urban"]


def test_interpret_without_truth_and_sample_without_predictions(in_repo, region, capsys):
    over, _ = region
    cfg = config.load(REPO, over)
    paths.truth_cells(cfg, 2019).unlink()
    assert main(["validate", "sample", *over]) == 0
    assert main(["validate", "interpret", *over]) == 2
    assert "synthetic truth" in capsys.readouterr().err
    paths.predictions(cfg, 2019).unlink()
    assert main(["validate", "sample", *over]) == 2
    assert "predictions of 2019" in capsys.readouterr().err


@pytest.mark.slow
def test_estimate_needs_no_heavy_library(tmp_path):
    sample, strata = olofsson_files(tmp_path)
    assert heavy_imports_after(["validate", "estimate", "--sample", str(sample), "--strata", str(strata)]) == (0, [])


def test_the_sample_geopackage_is_the_same_bytes_whenever_it_is_written(tmp_path):
    """GDAL stamps a GeoPackage with the time now; write_gpkg fixes the date, so DVC sees
    the same sample.gpkg from the same sample (and it reads back unchanged)."""
    import time

    import shapely

    from urbanmap.validation.sample import write_gpkg

    frame = gpd.GeoDataFrame({"cell_id": ["E1N1", "E2N2"], "stratum": ["urban", "non_urban"]},
                             geometry=[shapely.box(0, 0, 1000, 1000), shapely.box(1000, 1000, 2000, 2000)], crs=CRS)
    written = []
    for k in range(2):
        write_gpkg(frame, tmp_path / f"s{k}.gpkg", "sample")
        written.append((tmp_path / f"s{k}.gpkg").read_bytes())
        time.sleep(1.1)  # GDAL's own stamps have a resolution of one second
    assert written[0] == written[1]
    back = gpd.read_file(tmp_path / "s0.gpkg", layer="sample")
    assert back["cell_id"].tolist() == ["E1N1", "E2N2"] and back.crs == frame.crs
