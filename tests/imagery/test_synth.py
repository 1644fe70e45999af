"""The `synth` stage: synthetic Landsat C2 L2 products, their STAC catalog and the truth.

The stage runs once per year (2010, 2019) on a 6 km x 6 km window at the eastern edge of
Mexico City (urban, vegetation, cropland and fringe growth), with the real census and
spectra in ../shared/data; its parts on small arrays: test_synth_parts.py.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import Resampling, reproject

from helpers.project import REPO
from urbanmap.census import grid
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.imagery.landsat import BANDS, QA, scene_from_folder, to_reflectance
from urbanmap.imagery.synth import landcover, truth
from urbanmap.imagery.synth import run as synth_run

WINDOW = "data.window=[2820000,830000,2826000,836000]"
TM_FILES = {"SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7", "QA_PIXEL"}
OLI_FILES = {"SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL"}
MASKED = (1 << QA.FILL) | (1 << QA.DILATED_CLOUD) | (1 << QA.CIRRUS) | (1 << QA.CLOUD) | (1 << QA.CLOUD_SHADOW)


def load_cfg(out: Path, *extra: str):
    return config.load(REPO, [f"out_dir={out}", WINDOW, *extra])


@pytest.fixture(scope="module")
def region(tmp_path_factory, shared_data):
    """Grid + synth 2010 and 2019 on the window; returns (cfg, region_dir, summaries)."""
    out = tmp_path_factory.mktemp("synth")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        cfg = load_cfg(out)
        grid.run(cfg)
        summaries = {year: synth_run(load_cfg(out, f"period={year}")) for year in (2010, 2019)}
    return cfg, paths.region_dir(cfg), summaries


def products(region_dir: Path, year: int):
    return [scene_from_folder(f) for f in sorted((region_dir / "scenes" / str(year)).iterdir()) if f.is_dir()]


def read(path):
    with rasterio.open(path) as src:
        return src.read(1)


# --- products on disk -------------------------------------------------------------------


def test_products_are_named_and_banded_by_sensor(region):
    cfg, region_dir, _ = region
    for year, sensors, files in ((2010, {"LT05", "LE07"}, TM_FILES), (2019, {"LC08"}, OLI_FILES)):
        found = products(region_dir, year)
        assert len(found) == 2 * cfg.synth.scenes_per_footprint
        assert {s.sensor for s in found} == sensors
        assert {s.product_id[10:16] for s in found} == {"026047", "027047"}  # two WRS-2 path/rows
        for s in found:
            assert s.acquired.year == year
            names = {p.name for p in (region_dir / "scenes" / str(year) / s.product_id).glob("*.TIF")}
            assert names == {f"{s.product_id}_{suffix}.TIF" for suffix in files}
        blue = found[0].bands["blue"]
        assert blue.endswith("_SR_B1.TIF" if year == 2010 else "_SR_B2.TIF")


def test_band_files_are_30m_utm_cogs_with_fill_0(region):
    _, region_dir, _ = region
    scene = products(region_dir, 2019)[0]
    for band, path in [*scene.bands.items(), ("qa_pixel", scene.qa_pixel)]:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32614
            assert src.res == (30.0, 30.0)
            assert src.dtypes[0] == "uint16" and src.count == 1
            assert src.nodata == (1 if band == "qa_pixel" else 0)
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
            assert src.compression.name == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            # pixel centres on multiples of 30 m, as in USGS's products
            assert src.transform.c % 30 == 15 and src.transform.f % 30 == 15


def test_scene_files_agree_with_their_qa(region):
    _, region_dir, summaries = region
    for year in (2010, 2019):
        for scene in products(region_dir, year):
            qa = read(scene.qa_pixel)
            fill = qa & 1 == 1
            assert (qa[fill] == 1).all()
            blue = read(scene.bands["blue"])
            for band in BANDS:
                dn = read(scene.bands[band])
                assert ((dn == 0) == fill).all(), (scene.product_id, band)
            assert fill.any() and not fill.all()  # a footprint edge crosses the window
            refl = to_reflectance(blue)
            cloud = (qa >> QA.CLOUD) & 1 == 1
            clear = (qa & MASKED) == 0
            assert np.median(refl[cloud]) > np.median(refl[clear]) + 0.15  # clouds are bright


def test_cloud_cover_of_every_scene_is_in_range(region):
    cfg, region_dir, summaries = region
    dry = cfg.synth.clouds.dry_cover
    for year in (2010, 2019):
        for scene in products(region_dir, year):
            qa = read(scene.qa_pixel)
            valid = qa & 1 == 0
            cloud = ((qa >> QA.CLOUD) & 1 == 1)[valid].mean()
            assert 0.10 - 0.005 <= cloud <= 0.60 + 0.005, scene.product_id
            if scene.acquired.month not in cfg.synth.clouds.wet_months:
                assert cloud <= dry[1] + 0.005
            masked = ((qa & MASKED) != 0)[valid].mean()
            assert masked > cloud  # rings and shadows on top of the clouds
            item = pystac.Item.from_file(str(region_dir / "scenes" / str(year) / scene.product_id / f"{scene.product_id}.json"))
            assert item.properties["eo:cloud_cover"] == pytest.approx(100 * cloud, abs=0.01)


def test_landsat7_scenes_have_slc_off_gaps(region):
    _, region_dir, _ = region
    fill = {"LT05": [], "LE07": []}
    for scene in products(region_dir, 2010):
        fill[scene.sensor].append((read(scene.qa_pixel) == 1).mean())
    # LT05 loses only what lies outside its footprint; LE07 loses its gaps too
    assert min(fill["LE07"]) > max(fill["LT05"]) - 0.2 and np.mean(fill["LE07"]) > np.mean(fill["LT05"]) + 0.1


# --- STAC -------------------------------------------------------------------------------


def test_stac_catalog_is_valid_self_contained_and_points_at_the_files(region):
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    _, region_dir, _ = region
    root = region_dir / "scenes" / "2010"
    validator = JsonSchemaSTACValidator()  # core schemas ship with pystac: no network
    for path in [root / "catalog.json", *root.glob("*/*.json")]:
        obj = json.loads(path.read_text())
        kind = pystac.STACObjectType.CATALOG if obj["type"] == "Catalog" else pystac.STACObjectType.ITEM
        validator.validate_core(obj, kind, obj["stac_version"])
        assert str(root) not in path.read_text() and '"href": "/' not in path.read_text()  # relative hrefs only

    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    items = list(catalog.get_items())
    found = {s.product_id: s for s in products(region_dir, 2010)}
    assert sorted(i.id for i in items) == sorted(found)
    for item in items:
        scene = found[item.id]
        assert item.datetime.date() == scene.acquired
        assert item.properties["platform"] == {"LT05": "landsat-5", "LE07": "landsat-7"}[scene.sensor]
        assert item.properties["instruments"] == (["tm"] if scene.sensor == "LT05" else ["etm"])
        assert set(item.assets) == {"blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel"}
        for key, band in zip(("blue", "green", "red", "nir08", "swir16", "swir22"), BANDS):
            asset = item.assets[key]
            assert Path(asset.get_absolute_href()).resolve() == Path(scene.bands[band]).resolve()
            assert asset.extra_fields["eo:bands"][0]["common_name"] == key
            assert asset.extra_fields["eo:bands"][0]["name"] == "_".join(Path(scene.bands[band]).stem.split("_")[-2:])
            raster = asset.extra_fields["raster:bands"][0]
            assert (raster["scale"], raster["offset"], raster["nodata"], raster["data_type"]) == (2.75e-05, -0.2, 0, "uint16")
        assert Path(item.assets["qa_pixel"].get_absolute_href()).resolve() == Path(scene.qa_pixel).resolve()
        with rasterio.open(scene.qa_pixel) as src:
            assert item.properties["proj:code"] == "EPSG:32614"
            assert item.properties["proj:shape"] == [src.height, src.width]
            assert item.properties["proj:transform"] == pytest.approx(list(src.transform)[:6])
            lon0, lat0, lon1, lat1 = item.bbox
            # the region's window lies around Mexico City; the item's footprint is in lon/lat
            assert -99.2 < lon0 < lon1 < -98.8 and 19.3 < lat0 < lat1 < 19.7


# --- truth ------------------------------------------------------------------------------


def naive_composite(region_dir: Path, year: int):
    """Per-band median of each lattice pixel's clear observations (scenes sampled onto
    the lattice by nearest neighbour, masked with QA bits 0-4): the mosaic's quality
    target, computed the simplest way."""
    with rasterio.open(region_dir / "truth" / str(year) / "reflectance.tif") as src:
        truth_refl, transform, crs = src.read(), src.transform, src.crs
    shape = truth_refl.shape[1:]
    found = products(region_dir, year)
    stack = np.full((len(found), len(BANDS), *shape), np.nan, np.float32)
    for i, scene in enumerate(found):
        with rasterio.open(scene.qa_pixel) as src:
            qa = np.full(shape, 1, np.uint16)
            reproject(src.read(1), qa, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                      dst_crs=crs, resampling=Resampling.nearest, src_nodata=None, dst_nodata=1)
        for b, band in enumerate(BANDS):
            with rasterio.open(scene.bands[band]) as src:
                dn = np.zeros(shape, np.uint16)
                reproject(src.read(1), dn, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                          dst_crs=crs, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
            r = to_reflectance(dn)
            r[(qa & MASKED) != 0] = np.nan
            stack[i, b] = r
    clear = np.isfinite(stack[:, 0]).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no clear observation
        composite = np.nanmedian(stack, axis=0)
    return composite, truth_refl, clear


@pytest.mark.parametrize("year", [2010, 2019])
def test_clear_observations_give_the_truth_per_class(region, year):
    _, region_dir, summaries = region
    composite, truth_refl, clear = naive_composite(region_dir, year)
    classes = read(region_dir / "truth" / str(year) / "landcover.tif")
    assert (clear == read(region_dir / "truth" / str(year) / "clear_observations.tif")).all()
    assert (clear >= 1).mean() >= 0.995
    assert summaries[year]["clear_observations"]["share_at_least_1"] == pytest.approx((clear >= 1).mean())
    for code in np.unique(classes):
        m = (classes == code) & (clear >= 1)
        if m.sum() < 500:
            continue
        # Cropland's annual median rides on its calendar, so it moves with the dates that
        # are clear; which parcels the window holds shifts it by about 0.01.
        tolerance = 0.03 if code == landcover.CROPLAND else 0.02
        for b in range(len(BANDS)):
            diff = np.median(composite[b][m]) - np.median(truth_refl[b][m])
            assert abs(diff) < tolerance, (landcover.CLASS_NAMES[code], BANDS[b], diff)


def test_urban_pixels_are_brighter_in_swir_and_less_green_than_vegetation(region):
    _, region_dir, _ = region
    composite, truth_refl, clear = naive_composite(region_dir, 2010)
    classes = read(region_dir / "truth" / "2010" / "landcover.tif")
    urban, veg = classes == landcover.URBAN, classes == landcover.VEGETATION
    assert urban.sum() > 1000 and veg.sum() > 1000
    for refl in (truth_refl, composite):  # the truth, and what the scenes show
        red, nir, swir1 = refl[2], refl[3], refl[4]
        ndvi = (nir - red) / (nir + red)
        assert np.nanmedian(ndvi[urban]) < np.nanmedian(ndvi[veg]) - 0.2
        assert np.nanmedian(swir1[urban]) > np.nanmedian(swir1[veg]) + 0.01


def test_truth_cells_and_fringe_growth(region):
    cfg, region_dir, summaries = region
    t10 = gpd.read_parquet(region_dir / "truth" / "2010" / "cells.parquet")
    t19 = gpd.read_parquet(region_dir / "truth" / "2019" / "cells.parquet")
    grid_cells = gpd.read_parquet(region_dir / "grid.parquet")
    assert t10["cell_id"].tolist() == t19["cell_id"].tolist() == grid_cells["cell_id"].tolist()
    assert t10.crs.to_epsg() == 6372 and "new_urban" not in t10 and t19["new_urban"].dtype == bool
    assert ((t10["true_class"] == "urban") == (t10["urban_fraction"] >= 0.5)).all()
    assert set(t10["true_class"]) == {"urban", "non_urban"}

    new = t19["new_urban"].to_numpy()
    assert new.any()
    assert (t10.loc[new, "true_class"] == "non_urban").all() and (t19.loc[new, "true_class"] == "urban").all()
    assert (t19["new_urban"] == ((t19["true_class"] == "urban") & (t10["true_class"] == "non_urban"))).all()
    # growth happens at the fringe: each new cell touches at least min_neighbours urban cells of 2010
    urban10 = set(zip(t10.loc[t10["true_class"] == "urban", "col"], t10.loc[t10["true_class"] == "urban", "row"]))
    for c, r in zip(t19.loc[new, "col"], t19.loc[new, "row"]):
        n = sum((c + dc, r + dr) in urban10 for dc in (-1, 0, 1) for dr in (-1, 0, 1) if dc or dr)
        assert n >= cfg.synth.growth.min_neighbours
    # nothing else changes (up to the one-pixel seams of nearest-neighbour resampling)
    assert np.abs(t19.loc[~new, "urban_fraction"].to_numpy() - t10.loc[~new, "urban_fraction"].to_numpy()).max() < 0.1
    assert summaries[2019]["cells"]["new_urban"] == int(new.sum())
    # and the scenes see it: the new cells' truth is less green in 2019
    r10 = rasterio.open(region_dir / "truth" / "2010" / "reflectance.tif").read()
    r19 = rasterio.open(region_dir / "truth" / "2019" / "reflectance.tif").read()
    ndvi = lambda r: (r[3] - r[2]) / (r[3] + r[2])  # noqa: E731
    from urbanmap.core.lattice import PixelLattice

    lattice = PixelLattice.from_cells(t10["col"], t10["row"], 1000.0, 33, "EPSG:6372")
    i, j = truth.cell_index(lattice, t19.loc[new, "col"], t19.loc[new, "row"])
    change = truth.cell_means(ndvi(r19) - ndvi(r10), lattice)[i, j]
    assert (change < -0.05).all()


def test_the_urban_fringe_drawn_after_2010_is_built_between_the_years(region, in_repo):
    """synth.realism.vintage: the polygons are of 2015, so the 2010 truth leaves the ring
    inside the urban area's edge unbuilt (though the census labels it urban), and 2019
    has built it (the pass that grows the fringe cells starts from 2010's classes)."""
    from urbanmap.census import labels
    from urbanmap.imagery.synth import stage, zones
    from urbanmap.imagery.synth.settings import SynthSettings

    cfg, region_dir, _ = region
    s = SynthSettings.from_config(load_cfg(region_dir.parent, "period=2010"))
    _, lattice = stage.read_lattice(s)
    places = stage.settlements(s, stage.scene_world(s, lattice), lattice)
    parts, _ = stage.urban_zones(s, places)
    share = zones.unbuilt_share(2010, s.realism.vintage, s.realism.growth_rate)
    ring = gpd.GeoSeries(zones.young_fringe(parts, share), crs=places.crs).to_crs(lattice.crs)
    inside = landcover.polygon_mask(list(ring), lattice.transform, (lattice.height, lattice.width))
    polygons, kind, _, _ = labels.read_census(s.census, lattice.bounds, lattice.crs)
    urban_polygons = landcover.polygon_mask(list(polygons[kind == "urban"]), lattice.transform, (lattice.height, lattice.width))
    assert inside.sum() > 500 and urban_polygons[inside].mean() > 0.95  # the census's urban land
    built = {year: read(region_dir / "truth" / str(year) / "landcover.tif")[inside] == landcover.URBAN for year in (2010, 2019)}
    # the ring is a pixel or three wide, and the truth is the world's 30 m pixels sampled
    # onto the lattice by nearest neighbour: some of its lattice pixels fall beside it
    assert built[2010].mean() < 0.2 and built[2019].mean() > 0.5, (built[2010].mean(), built[2019].mean())


# --- determinism, atomicity, bad input -------------------------------------------------


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_config_gives_byte_identical_files(region, tmp_path, monkeypatch, shared_data):
    """Also with a relative out_dir (as `urbanmap synth` runs from the project root)."""
    _, region_dir, _ = region
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "valle_de_mexico").mkdir(parents=True)
    (tmp_path / "out" / "valle_de_mexico" / "grid.parquet").write_bytes((region_dir / "grid.parquet").read_bytes())
    inputs = [f"synth.spectra={shared_data / 'spectra' / 'landsat_spectra.csv'}",
              f"data.census.path={shared_data / 'mexico' / 'inegi_localities.parquet'}"]
    for year in (2010, 2019):
        synth_run(config.load(REPO, ["out_dir=out", WINDOW, f"period={year}", *inputs]))
        for part in ("scenes", "truth"):
            again = digest(tmp_path / "out" / "valle_de_mexico" / part / str(year))
            assert again == digest(region_dir / part / str(year))
            assert len(again) == (16 * 8 + 1 if part == "scenes" else 5)  # 7 TIFs + item JSON per product; catalog
    for part in ("scenes", "truth"):  # nothing beside the year folders
        assert sorted(p.name for p in (tmp_path / "out" / "valle_de_mexico" / part).iterdir()) == ["2010", "2019"]


@pytest.mark.slow
def test_same_bytes_whatever_the_tiles_and_executor(region, tmp_path, monkeypatch):
    """2019 (two passes: the census year's classes, then the growth) on tiles of 2 cells
    in this process and of 3 cells on a 2-worker Dask LocalCluster: the same files as in
    one tile. Memory per task is bounded by the tile: the tasks' parts cover the world
    tile by tile."""
    from distributed import LocalCluster

    _, region_dir, _ = region
    monkeypatch.chdir(REPO)
    small = ["mosaic.block_cells=1", "predict.block_cells=1"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      memory_limit="2GiB") as cluster:
        runs = {"local": ["compute.tile_size=2", *small],
                "dask": ["compute=dask", f"compute.address={cluster.scheduler_address}", "compute.tile_size=3", *small]}
        for name, extra in runs.items():
            out = tmp_path / name
            (out / "valle_de_mexico").mkdir(parents=True)
            (out / "valle_de_mexico" / "grid.parquet").write_bytes((region_dir / "grid.parquet").read_bytes())
            assert main(["synth", f"out_dir={out}", WINDOW, "period=2019", *extra]) == 0
            for part in ("scenes", "truth"):
                assert digest(out / "valle_de_mexico" / part / "2019") == digest(region_dir / part / "2019"), (name, part)
            assert sorted(p.name for p in (out / "valle_de_mexico" / "scenes").iterdir()) == ["2019"]  # no parts left


def test_a_failed_run_leaves_the_previous_outputs(region, tmp_path, monkeypatch, capsys):
    _, region_dir, _ = region
    monkeypatch.chdir(REPO)
    before = digest(region_dir)
    out = f"out_dir={region_dir.parent}"
    # the footprints miss the region: found only after scenes are being written
    assert main(["synth", out, WINDOW, "period=2010", "synth.footprints.0.edge=9", "synth.footprints.1.edge=9"]) == 2
    assert "does not overlap the region" in capsys.readouterr().err
    assert digest(region_dir) == before
    assert not [p for p in region_dir.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("period=1970", ["period=1970", "no Landsat sensor"]),
        ("synth.spectra=/nonexistent/spectra.csv", ["/nonexistent/spectra.csv", "not found"]),
        ("data.census.path=/nonexistent/census.parquet", ["/nonexistent/census.parquet", "not found"]),
        ("synth.sensors=[[2000,2030,[LX99]]]", ["LX99", "unknown sensor"]),
        ("period=soon", ["period 'soon'", "does not parse"]),
    ],
)
def test_bad_input_is_one_clear_line(region, tmp_path, monkeypatch, capsys, override, fragments):
    _, region_dir, _ = region
    monkeypatch.chdir(REPO)
    (tmp_path / "valle_de_mexico").mkdir()
    (tmp_path / "valle_de_mexico" / "grid.parquet").write_bytes((region_dir / "grid.parquet").read_bytes())
    assert main(["synth", f"out_dir={tmp_path}", WINDOW, override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for fragment in fragments:
        assert fragment in err, err
    assert sorted(p.name for p in (tmp_path / "valle_de_mexico").iterdir()) == ["grid.parquet"]


def test_synth_is_a_stage_of_the_cli(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "synth" in capsys.readouterr().out


