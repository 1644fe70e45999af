"""Bring your own data: any projected CRS and cell size, an existing composite
(`data.imagery.source: file`), labels from a land-cover raster, and the worked example
of conf/data/byo_example.yaml run end to end through the CLI."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from omegaconf import OmegaConf
from pyproj import Transformer

from helpers.cli import expect_error
from helpers.grids import brute_force
from urbanmap.census import labels, landcover
from urbanmap.cli import main
from urbanmap.core import rasters
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, patch_size
from urbanmap.examples import byo
from urbanmap.imagery import composite


@pytest.fixture(scope="module")
def example(tmp_path_factory, shared_data):
    """The generated example's inputs (8 km region) in a temporary folder."""
    folder = tmp_path_factory.mktemp("byo_inputs")
    byo.generate(folder, km=8, seed=8)
    return folder


def cli_args(example, out, *extra):
    return [
        "data=byo_example", f"out_dir={out}", f"data.boundary={example / 'boundary.gpkg'}",
        f"data.landcover.path={example / 'landcover.tif'}", f"data.imagery.file='{example}/composite_{{year}}.tif'",
        *extra,
    ]


# --- the worked example, end to end -------------------------------------------------------


@pytest.mark.slow
def test_example_runs_grid_to_evaluate_through_the_cli(in_repo, example, tmp_path, capsys):
    fast = ["tracking.enabled=false", "model.estimator.n_estimators=30", "cv.n_splits=3"]
    for stage in ("grid", "labels", "mosaic", "patches", "train", "evaluate"):
        assert main([stage, *cli_args(example, tmp_path, *fast)]) == 0, capsys.readouterr().err
    region = tmp_path / "byo_example"

    grid = gpd.read_parquet(region / "grid.parquet")
    assert grid.crs.to_epsg() == 32633
    # The cells are the 300 m lattice cells overlapping the (lon/lat) boundary, in UTM 33N.
    outline = gpd.read_file(example / "boundary.gpkg").to_crs(32633).union_all()
    assert set(zip(grid["col"], grid["row"])) == brute_force(outline, 300)
    assert grid["cell_id"].str.match(r"^E\d{8}N\d{8}$").all()

    lab = gpd.read_parquet(region / "labels.parquet")
    assert {"urban", "non_urban"} <= set(lab["label"])
    fraction = lab["urban_fraction"].to_numpy()
    assert ((lab["label"] == "urban") == (fraction >= 0.5)).all()
    assert ((lab["label"] == "non_urban") == (fraction < 0.1)).all()

    with rasterio.open(region / "mosaic_2010.tif") as src:
        assert src.descriptions == ("blue", "green", "red", "nir", "swir1", "swir2", "smad", "emad", "bcmad")
        assert src.crs.to_epsg() == 32633 and src.res == (30.0, 30.0)  # 300 m / 10 pixels
        assert np.isnan(src.nodata) and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        blue = src.read(1)
    assert 0.0 < np.nanmedian(blue) < 0.3  # reflectance, scaled from int16 DN

    with np.load(region / "patches.npz", allow_pickle=False) as npz:
        assert npz["patches"].shape[1:] == (9, 10, 10)  # the extra bands are carried
        assert list(npz["bands"][6:]) == ["smad", "emad", "bcmad"]

    metrics = json.loads((region / "metrics.json").read_text())
    assert metrics["region"] == "byo_example" and metrics["folds"] == 3
    # The measured spectra keep built-up and the rest apart, as in reality.
    assert metrics["pooled"]["overall_accuracy"] > 0.9


def test_region_is_the_mosaic_extent_without_boundary(in_repo, example, tmp_path, capsys):
    assert main(["grid", *cli_args(example, tmp_path, "data.boundary=null")]) == 0, capsys.readouterr().err
    grid = gpd.read_parquet(tmp_path / "byo_example" / "grid.parquet")
    with rasterio.open(example / "composite_2010.tif") as src:
        extent = rasters.footprint(src, "EPSG:32633")
    assert set(zip(grid["col"], grid["row"])) == brute_force(extent, 300)


# --- bad input: one line, exit 2, nothing written -------------------------------------------


def test_geographic_grid_crs(in_repo, example, tmp_path, capsys):
    expect_error(capsys, tmp_path, ["grid", *cli_args(example, tmp_path, "data.crs=EPSG:4326")], "not projected")


def test_cell_smaller_than_two_pixels(in_repo, example, tmp_path, capsys):
    expect_error(capsys, tmp_path, ["grid", *cli_args(example, tmp_path, "data.cell_size=50")], "smaller than two pixels")


def test_mosaic_and_boundary_do_not_overlap(in_repo, example, tmp_path, capsys):
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(2.0, 41.0, 2.2, 41.2)], crs=4326).to_file(far, layer="far")
    expect_error(capsys, tmp_path / "out", ["grid", *cli_args(example, tmp_path / "out", f"data.boundary={far}")],
                 "composite_2010.tif", "does not overlap")


@pytest.fixture
def gridded(in_repo, example, tmp_path, capsys):
    """A grid of the example in tmp_path (for the labels and mosaic failures)."""
    assert main(["grid", *cli_args(example, tmp_path)]) == 0, capsys.readouterr().err
    return tmp_path


def test_label_raster_without_the_urban_codes(gridded, example, capsys):
    expect_error(capsys, gridded, ["labels", *cli_args(example, gridded, "data.landcover.urban_codes=[190]")],
                 "none of the urban codes [190]", "codes found: [10, 30, 40, 50")


def test_mosaic_with_fewer_than_six_bands(gridded, example, tmp_path_factory, capsys):
    five = tmp_path_factory.mktemp("five") / "composite_{year}.tif"
    with rasterio.open(example / "composite_2010.tif") as src:
        profile = {**src.profile, "count": 5}
        data = src.read([1, 2, 3, 4, 5])
    with rasterio.open(str(five).format(year=2010), "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("blue", "green", "red", "nir", "swir1")
    args = cli_args(example, gridded, "data.imagery.bands=null", f"data.imagery.file='{five}'")
    expect_error(capsys, gridded, ["mosaic", *args], "fewer than six mappable bands: no swir2")


def test_a_period_without_its_composite_file(gridded, example, capsys):
    """`{period}` in data.imagery.file names one composite per period: a period whose
    file is missing is named, with the file."""
    args = cli_args(example, gridded, f"data.imagery.file='{example}/composite_{{period}}.tif'",
                    "periods.list=[2010,2019H1]", "periods.target=2019H1", "period=2019H1")
    expect_error(capsys, gridded, ["mosaic", *args], "period 2019H1: no composite file",
                 str(example / "composite_2019H1.tif"))


def test_mosaic_dn_without_scale(gridded, example, capsys):
    expect_error(capsys, gridded, ["mosaic", *cli_args(example, gridded, "data.imagery.scale=1")],
                 "not a surface reflectance", "data.imagery.scale")


# --- pure cores -------------------------------------------------------------------------------


def test_patch_size_rounding():
    assert patch_size(1000, 30) == 33  # 33.3 -> 30.30 m pixels
    assert patch_size(300, 28.5) == 11  # 10.53 -> 27.27 m pixels
    assert patch_size(315, 30) == 11  # an exact tie rounds up: the finer lattice
    assert patch_size(300, 30) == 10 and patch_size(300, 30, 12) == 12
    with pytest.raises(InputError, match="smaller than two pixels"):
        patch_size(50, 30)  # would round to 2, but the cell is under two pixels


def test_bands_by_description_mapping_or_both():
    desc = ["SR_B2", "Green", "red", "nir08", "swir16", "swir22", "smad", None]
    mapped = composite.match_bands(desc, 8, {"blue": 1}, extra=["smad", "emad"])
    assert mapped == {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6, "smad": 7}
    assert composite.match_bands([None] * 6, 6, dict(zip(["blue", "green", "red", "nir", "swir1", "swir2"], range(6, 0, -1))))["blue"] == 6
    with pytest.raises(InputError, match="fewer than six mappable bands: no blue"):
        composite.match_bands(desc, 8)
    with pytest.raises(InputError, match="not a band index 1..8"):
        composite.match_bands(desc, 8, {"blue": 9})


def test_file_on_the_lattice_is_copied_scaled():
    lattice = PixelLattice.from_cells([10, 11], [20, 21], 300, 10, "EPSG:32633")
    dn = np.random.default_rng(0).integers(100, 3000, (6, lattice.height, lattice.width)).astype(np.int16)
    dn[:, 0, 0] = -9999
    profile = {"driver": "GTiff", "width": lattice.width, "height": lattice.height, "count": 6, "dtype": "int16",
               "crs": "EPSG:32633", "transform": lattice.transform, "nodata": -9999}
    with rasterio.MemoryFile() as mem, mem.open(**profile) as src:
        src.write(dn)
        out = composite.align_block(src, range(1, 7), np.full(6, 1e-4, np.float32), np.zeros(6, np.float32), -9999,
                                      lattice.crs, lattice.transform, (lattice.height, lattice.width), "nearest")
    assert np.isnan(out[:, 0, 0]).all()
    np.testing.assert_allclose(out[:, 1:, 1:], dn[:, 1:, 1:] * np.float32(1e-4), rtol=1e-6)


def _exact_urban_area(urban: np.ndarray, transform: Affine, src_crs, cells: shapely.Geometry, grid_crs):
    """Reference: each urban pixel's polygon projected to the grid CRS, clipped to each cell."""
    r, c = np.nonzero(urban)
    x0, y0 = transform * (c, r)
    x1, y1 = transform * (c + 1, r + 1)
    pixels = shapely.box(x0, y1, x1, y0)
    to_grid = Transformer.from_crs(src_crs, grid_crs, always_xy=True)
    pixels = shapely.transform(pixels, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
    return np.array([shapely.area(shapely.intersection(pixels, cell)).sum() for cell in cells])


@pytest.mark.parametrize("src_crs, res", [("EPSG:32633", 7.0), ("EPSG:4326", 1e-4)])
def test_landcover_area_matches_exact_clipping(src_crs, res):
    cols, rows = np.meshgrid(np.arange(2000, 2004), np.arange(17800, 17803))
    cols, rows, size = cols.ravel(), rows.ravel(), 300.0
    x_min, y_max = 2000 * size - 40, 17803 * size + 40
    if src_crs == "EPSG:4326":
        x_min, y_max = Transformer.from_crs("EPSG:32633", src_crs, always_xy=True).transform(x_min, y_max)
        x_min, y_max = x_min - 0.001, y_max + 0.001
    transform = Affine(res, 0, x_min, 0, -res, y_max)
    n = int(1400 / 7) if src_crs == "EPSG:32633" else 220
    rng = np.random.default_rng(1)
    r, c = np.mgrid[0:n, 0:int(n * 1.4)]
    blocks = (r // 20 + c // 20) % 2 == 0  # edges that cross cells, and speckle
    codes = np.where(blocks | (rng.random(r.shape) < 0.3), 50, 40).astype(np.uint8)
    codes[:5] = 0  # nodata rows
    profile = {"driver": "GTiff", "width": codes.shape[1], "height": codes.shape[0], "count": 1, "dtype": "uint8",
               "crs": src_crs, "transform": transform, "nodata": 0}
    with rasterio.MemoryFile() as mem, mem.open(**profile) as src:
        src.write(codes[None])
        urban, valid, k = landcover.landcover_areas(src, cols, rows, size, "EPSG:32633", [50], progress=False)
    boxes = shapely.box(cols * size, rows * size, (cols + 1) * size, (rows + 1) * size)
    expected = _exact_urban_area(codes == 50, transform, src_crs, boxes, "EPSG:32633")
    assert k == landcover.MAX_SUBPIXELS
    assert 0.2 * size**2 < expected.min()
    # Within 0.2% of a cell (measured: 0.00% in UTM, 0.09% in lon/lat); warping straight
    # onto the cells (k = 1) errs by 0.39% in lon/lat.
    np.testing.assert_allclose(urban, expected, atol=0.002 * size**2)
    np.testing.assert_allclose(valid, size**2, rtol=1e-6)


def test_indicators_of_signed_and_float_maps():
    codes = np.array([[-5, 50, 0], [190, -5, 50]], np.int16)
    urban, valid = landcover.indicators(codes, [50, -5], nodata=0)
    assert urban.tolist() == [[True, True, False], [False, True, True]]
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    urban, valid = landcover.indicators(codes.astype(np.float32), [50.0], nodata=None)
    assert urban.sum() == 2 and valid.all()


def test_census_with_any_class_column_and_no_population(tmp_path):
    """Polygons from a cadastre: another class column, several urban values, no population."""
    parcels = gpd.GeoDataFrame(
        {"landuse": ["residential", "commercial", "forest", None]},
        geometry=[shapely.box(0, 0, 300, 150), shapely.box(0, 150, 150, 300), shapely.box(300, 0, 600, 300),
                  shapely.box(150, 150, 300, 300)],
        crs="EPSG:32633",
    )
    parcels.to_file(tmp_path / "cadastre.gpkg", layer="cadastre")
    census = OmegaConf.create({"path": str(tmp_path / "cadastre.gpkg"), "class_column": "landuse",
                               "urban_values": ["residential", "commercial"], "rural_values": ["forest"],
                               "population_column": None})
    polygons, kind, population, report = labels.read_census(census, (0, 0, 600, 300), parcels.crs)
    cells = pd.DataFrame({"col": [0, 1], "row": [0, 0]})
    measures = labels.census_measures(cells, 300.0, polygons, kind, population)
    assert measures["urban_fraction"].tolist() == [0.75, 0.0]
    assert measures["population"].tolist() == [0.0, 0.0] and report["unclassified"] == 1
