"""The `synth` stage: synthetic Landsat C2 L2 products, their STAC catalog and the truth.

The stage runs once per year (2010, 2019) on a 6 km x 6 km window at the eastern edge of
Mexico City (urban, vegetation, cropland and fringe growth), with the real census and
spectra in ../shared/data; pure cores are tested on small arrays.
"""

from __future__ import annotations

import datetime as dt
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
from urbanmap.imagery.landsat import BANDS, QA, SR_SCALE, scene_from_folder, to_dn, to_reflectance
from urbanmap.imagery.synth import fields, landcover, scenes, schedule, truth
from urbanmap.imagery.synth import run as synth_run
from urbanmap.imagery.synth.endmembers import read_endmembers
from urbanmap.imagery.synth.fields import Win

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
        summaries = {year: synth_run(load_cfg(out, f"year={year}")) for year in (2010, 2019)}
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


def test_dn_scale_round_trip():
    r = np.random.default_rng(0).uniform(-0.199, 1.6, 100_000)  # DN 1 .. 65455
    back = to_reflectance(to_dn(r))
    assert np.abs(back - r).max() <= SR_SCALE / 2 + 1e-6
    assert to_dn(0.0) == 7273  # (0 + 0.2) / 0.0000275
    assert to_dn(np.nan) == 0 and np.isnan(to_reflectance(np.uint16(0)))
    assert to_dn(-0.5) == 1  # never the fill value for a valid pixel


def test_qa_bits_follow_the_sky_drawn():
    win = Win(100, -50, 300, 300)  # global pixel indices: any window, negative ones too

    def valid(w, stride=1):  # pixels of global column >= 200 are outside the footprint
        cols = w.c0 + stride * np.arange(w.w)
        return np.broadcast_to(cols < 200, (w.h, w.w)).copy()

    key, scales = (7, 404, 1), [60, 20]
    cut = scenes.cloud_cut(key, win, valid, 0.3, scales)
    sky = scenes.draw_sky(key, win, valid, 0.3, scales_px=scales, dilate_px=3, shadow_rc=(25, -40), cirrus=0.05, cut=cut)
    v = valid(win)
    water = np.zeros_like(v)
    water[:50, :50] = True
    for cirrus_band in (True, False):
        qa = scenes.qa_pixel(v, sky, water, cirrus_band)
        bit = lambda b: (qa >> b) & 1 == 1  # noqa: E731
        assert (qa[~v] == 1).all() and not bit(QA.FILL)[v].any()
        assert (bit(QA.CLOUD)[v] == sky.cloud[v]).all()
        assert (bit(QA.DILATED_CLOUD)[v] == sky.dilated[v]).all()
        assert (bit(QA.CLOUD_SHADOW)[v] == sky.shadow[v]).all()
        assert (bit(QA.CLEAR)[v] == ~(sky.cloud | sky.dilated)[v]).all()
        assert (bit(QA.WATER)[v] == (water & ~sky.cloud)[v]).all()
        assert ((qa[v & sky.cloud] >> QA.CLOUD_CONFIDENCE) & 3 == 3).all()
        assert ((qa[v & ~sky.cloud] >> QA.CLOUD_CONFIDENCE) & 3 == 1).all()
        assert (bit(QA.CIRRUS)[v] == (sky.cirrus[v] if cirrus_band else False)).all()
    assert abs(sky.cloud[v].mean() - 0.3) < 1e-3  # the cut measured on the scene's pixels
    assert sky.dilated.any() and sky.shadow.any() and sky.cirrus.any()
    assert not (sky.cloud & (sky.dilated | sky.shadow)).any()
    # the ring is within 3 pixels of a cloud and the shadow is the cloud displaced, clouds
    # in the halo around the window included: the sky of a part is that part of the sky
    from scipy import ndimage

    outer = win.grow(*scenes.sky_halo(3, (25, -40)))
    big = scenes.draw_sky(key, outer, valid, 0.3, scales_px=scales, dilate_px=3, shadow_rc=(25, -40), cirrus=0.05, cut=cut)
    inner = win.crop(outer)
    near = ndimage.binary_dilation(big.cloud, np.ones((3, 3), bool), iterations=3)[inner]
    assert (sky.dilated <= near).all()
    assert (sky.shadow <= scenes.shift(big.cloud, 25, -40)[inner]).all()
    for name in ("cloud", "dilated", "cirrus", "opacity", "cirrus_depth"):
        np.testing.assert_array_equal(getattr(sky, name), getattr(big, name)[inner])


def test_fields_are_pure_functions_of_global_pixel_coordinates():
    """Any window gives the same values where windows overlap; standardised analytically."""
    whole = Win(-1000, 2000, 1200, 900)
    parts = [Win(-1000, 2000, 517, 900), Win(-483, 2000, 683, 311), Win(-483, 2311, 683, 589)]
    for make in (
        lambda w: fields.field((1, 2), w, 133.0),
        lambda w: fields.field_octaves((1, 3), w, [133.0, 50.0, 15.0], [1.0, 0.5, 0.25]),
        lambda w: fields.pixel_noise((1, 4), w),
    ):
        full = make(whole)
        for part in parts:
            np.testing.assert_array_equal(make(part), full[part.crop(whole)])
    big = fields.field((5, 6), Win(0, 0, 3000, 3000), 20.0)
    assert abs(float(big.mean())) < 0.05 and 0.9 < float(big.std()) < 1.05
    assert abs((big >= fields.threshold(0.2)).mean() - 0.2) < 0.03  # shares by the normal quantile
    strided = fields.field((5, 6), Win(0, 0, 750, 750), 20.0, stride=4)
    np.testing.assert_array_equal(strided, big[::4, ::4])


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


def test_truth_reflectance_is_the_median_over_the_dates(shared_data):
    """Reflectance is affine in the seasonal state, so truth = reflectance at the median
    states; check it against the stack of every date on a small landscape."""
    cfg = config.load(REPO)
    em = read_endmembers(shared_data / "spectra" / "landsat_spectra.csv", {k: list(v) for k, v in cfg.synth.endmembers.items()}, 0.6)
    settlement = np.zeros((60, 80), np.float32)
    settlement[10:40, 20:50] = 0.6
    lc = cfg.synth.landcover
    land = landcover.build_landscape(
        (3, 101), Win(-500, 700, 60, 80), settlement, em, 30.0, water=0.05, soil=0.1, vegetation=0.4, terrain_m=900,
        patch_m=300, parcel_m=[240, 360], fallow=float(lc.fallow), texture=0.12, park_fraction=0.08,
    )
    dates = [dt.date(2019, 1, 15) + dt.timedelta(days=23 * k) for k in range(14)]
    states = [landcover.seasonal_state(d, 250, 245, 200) for d in dates]
    stack = np.stack([landcover.reflectance(land, em, *s) for s in states])
    expected = np.median(stack, axis=0)
    med = [float(np.median([s[k] for s in states])) for k in (0, 1)]
    np.testing.assert_allclose(landcover.reflectance(land, em, *med), expected, atol=2e-6)
    classes = set(np.unique(land.classes(0.5)).tolist())
    assert {landcover.URBAN, landcover.VEGETATION, landcover.CROPLAND} <= classes


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
        for b in range(len(BANDS)):
            diff = np.median(composite[b][m]) - np.median(truth_refl[b][m])
            assert abs(diff) < 0.02, (landcover.CLASS_NAMES[code], BANDS[b], diff)


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


def test_fringe_growth_is_nested_across_years():
    urban = np.zeros((9, 9), bool)
    urban[3:6, 3:6] = True
    priority = np.random.default_rng(0).random(urban.shape)
    args = (np.ones_like(urban), np.zeros(urban.shape))
    early = truth.fringe_growth(urban, *args, priority, 0.2, 3)
    late = truth.fringe_growth(urban, *args, priority, 0.6, 3)
    assert (early <= late).all() and late.sum() > early.sum()
    assert not (late & urban).any()
    assert late[2:7, 2:7].sum() == late.sum()  # only the ring around the city


# --- schedule ---------------------------------------------------------------------------


def test_schedule_follows_the_wrs2_calendar():
    table = config.load(REPO).synth.sensors
    assert schedule.sensors_for_year(2010, table) == ["LT05", "LE07"]
    assert schedule.sensors_for_year(2019, table) == ["LC08"]
    passes = schedule.overpasses(2010, 26, ["LT05", "LE07"])
    by_sensor = {s: [d for d, x in passes if x == s] for s in ("LT05", "LE07")}
    for dates in by_sensor.values():
        assert {(b - a).days for a, b in zip(dates, dates[1:])} == {16}
    assert (by_sensor["LE07"][0] - by_sensor["LT05"][0]).days % 16 == 8
    west = schedule.overpasses(2010, 27, ["LT05"])
    assert (west[0][0] - by_sensor["LT05"][0]).days % 16 == 7  # the adjacent path, 7 days later
    picked = schedule.pick_evenly(passes, 8)
    assert len(picked) == 8 and picked == sorted(picked)
    assert picked[0][0].month <= 2 and picked[-1][0].month >= 11
    acq = schedule.Acquisition("LC08", schedule.Footprint(26, 47, (0, 0), (0, 1), (1, 0)), dt.date(2019, 3, 15))
    fields = acq.product_id.split("_")
    assert fields[:4] == ["LC08", "L2SP", "026047", "20190315"] and fields[4] > fields[3]
    assert schedule.utm_crs(-99.13, 19.43).to_epsg() == 32614


def test_slc_off_gaps_lose_about_a_fifth_of_a_scene():
    along = np.arange(-90_000, 90_000, 30.0)[:, None]
    across = np.arange(-92_500, 92_500, 30.0)[None, :]
    gaps = scenes.slc_off_gaps(along, across, 30.0)
    assert 0.17 < gaps.mean() < 0.25
    assert not gaps[:, np.abs(across[0]) < 10_000].any()  # none near the ground track


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
        synth_run(config.load(REPO, ["out_dir=out", WINDOW, f"year={year}", *inputs]))
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
            assert main(["synth", f"out_dir={out}", WINDOW, "year=2019", *extra]) == 0
            for part in ("scenes", "truth"):
                assert digest(out / "valle_de_mexico" / part / "2019") == digest(region_dir / part / "2019"), (name, part)
            assert sorted(p.name for p in (out / "valle_de_mexico" / "scenes").iterdir()) == ["2019"]  # no parts left


def test_a_failed_run_leaves_the_previous_outputs(region, tmp_path, monkeypatch, capsys):
    _, region_dir, _ = region
    monkeypatch.chdir(REPO)
    before = digest(region_dir)
    out = f"out_dir={region_dir.parent}"
    # the footprints miss the region: found only after scenes are being written
    assert main(["synth", out, WINDOW, "year=2010", "synth.footprints.0.edge=9", "synth.footprints.1.edge=9"]) == 2
    assert "does not overlap the region" in capsys.readouterr().err
    assert digest(region_dir) == before
    assert not [p for p in region_dir.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("year=1970", ["year=1970", "no Landsat sensor"]),
        ("synth.spectra=/nonexistent/spectra.csv", ["/nonexistent/spectra.csv", "not found"]),
        ("data.census.path=/nonexistent/census.parquet", ["/nonexistent/census.parquet", "not found"]),
        ("synth.sensors=[[2000,2030,[LX99]]]", ["LX99", "unknown sensor"]),
        ("year=soon", ["year='soon'", "not a year"]),
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


def test_spectra_without_a_group_or_a_band_are_refused():
    import pandas as pd

    from urbanmap.core.errors import InputError
    from urbanmap.imagery.synth.endmembers import group_spectra

    cfg = config.load(REPO)
    prefixes = {k: list(v) for k, v in cfg.synth.endmembers.items()}
    rows = pd.DataFrame([[0.1] * 6 + [c] for c in ("impervious/built/road", "vegetation", "pervious/npv/litter", "pervious/bare/soil")],
                        columns=[*BANDS, "class"])
    with pytest.raises(InputError, match="no usable spectrum for end-member group 'water'"):
        group_spectra(rows, prefixes, 0.6)
    with pytest.raises(InputError, match="lacks column.*swir2"):
        group_spectra(rows.drop(columns="swir2"), prefixes, 0.6)
    rows.loc[4] = [0.02] * 6 + ["water"]
    assert len(group_spectra(rows, prefixes, 0.6).water) == 1


def test_synth_is_a_stage_of_the_cli(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "synth" in capsys.readouterr().out


def test_tasks_read_their_tiles_polygons_in_painting_order(tmp_path):
    """write_polygons reorders rows for spatial reads; _polygons_in gives back exactly the
    polygons meeting a tile, in the order they were written (the painting order)."""
    import shapely

    from urbanmap.imagery.synth import tiles

    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 100_000, (2000, 2))
    polygons = shapely.buffer(shapely.points(centres), rng.uniform(50, 2000, 2000))
    frame = gpd.GeoDataFrame({"target": np.arange(2000.0)}, geometry=polygons, crs="EPSG:32614")
    tiles.write_polygons(frame, tmp_path / "p.parquet")
    for bounds in ((0, 0, 16_000, 16_000), (40_000, 52_000, 56_000, 68_000), (200_000, 0, 216_000, 16_000)):
        got, cols = tiles._polygons_in(str(tmp_path / "p.parquet"), bounds, ["target"])
        b = shapely.bounds(polygons)
        meets = (b[:, 0] <= bounds[2]) & (b[:, 2] >= bounds[0]) & (b[:, 1] <= bounds[3]) & (b[:, 3] >= bounds[1])
        np.testing.assert_array_equal(cols["target"], np.flatnonzero(meets).astype(float))
        assert all(shapely.equals(g, polygons[i]) for g, i in zip(got, np.flatnonzero(meets)))
