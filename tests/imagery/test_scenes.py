"""Finding Landsat scenes (STAC catalog file, STAC API, folder; imagery/scenes.py) and
reading them warped onto the pixel lattice (imagery/warp.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject
from rasterio.windows import transform as window_transform

from helpers.landsat_factory import CLEAR_QA, item_for, pid, write_catalog, write_product
from urbanmap.core import config
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice
from urbanmap.imagery import landsat, scenes, warp

CELL, PATCH = 300, 10  # 300 m cells of 10 x 10 pixels of 30 m
COLS, ROWS = np.meshgrid(np.arange(9320, 9336), np.arange(2760, 2776))  # 16 x 16 cells
LATTICE = PixelLattice.from_cells(COLS.ravel(), ROWS.ravel(), CELL, PATCH, "EPSG:6372")
H, W = LATTICE.height, LATTICE.width  # 160 x 160 pixels


# --- finding scenes ---------------------------------------------------------------------------


def test_bands_are_found_by_sensor_in_folders(tmp_path):
    """Landsat 5 blue is SR_B1, Landsat 8 blue is SR_B2: each band reads its own file."""
    values = np.arange(1, 7, dtype=np.uint16)[:, None, None] * 1000 * np.ones((6, 8, 8), np.uint16)
    qa = np.full((8, 8), CLEAR_QA, np.uint16)
    for sensor in ("LT05", "LC08"):
        write_product(tmp_path, pid(sensor, dt.date(2019, 3, 1) if sensor == "LC08" else dt.date(2010, 3, 1)),
                      values, qa, "EPSG:6372", from_origin(LATTICE.bounds[0], LATTICE.bounds[3], 30, 30))
    (l8,) = scenes.from_folder(tmp_path, 2019)
    (l5,) = scenes.from_folder(tmp_path, 2010)
    assert l5.scene.bands["blue"].endswith("_SR_B1.TIF") and l5.scene.bands["swir2"].endswith("_SR_B7.TIF")
    assert l8.scene.bands["blue"].endswith("_SR_B2.TIF") and l8.scene.bands["swir1"].endswith("_SR_B6.TIF")
    for product in (l5, l8):
        datasets = warp.open_files(product)
        warped = warp.read_warped([(product, datasets)], LATTICE.crs, LATTICE.transform, (8, 8))
        [ds.close() for ds in datasets]
        assert warped.shape == (8, 8, 7, 1)  # (rows, cols, files, scenes)
        assert warped[0, 0, :6, 0].tolist() == [1000, 2000, 3000, 4000, 5000, 6000]  # blue .. swir2
        assert warped[0, 0, 6, 0] == CLEAR_QA


def test_stac_assets_are_matched_by_common_name_not_key(tmp_path):
    dn = np.ones((6, 8, 8), np.uint16) * np.arange(1, 7, dtype=np.uint16)[:, None, None]
    folder = write_product(tmp_path, pid("LC08", dt.date(2019, 5, 1)), dn, np.full((8, 8), CLEAR_QA, np.uint16),
                           "EPSG:32614", from_origin(480000, 2150000, 30, 30))
    item = item_for(folder)
    # keys as another catalog might name them, in another order
    item.assets = {f"B{i}": item.assets[k] for i, k in reversed(list(enumerate(item.assets)))}
    item.assets["qa_pixel"] = item.assets.pop("B6")
    (product,) = scenes.from_catalog(write_catalog(tmp_path / "stac", [item]), 2019)
    for band in landsat.BANDS:
        assert product.scene.bands[band].endswith(landsat.band_filename(folder.name, band))
    assert product.scale == (landsat.SR_SCALE,) * 6 and product.offset == (landsat.SR_OFFSET,) * 6


def test_year_and_month_filters(tmp_path):
    dn, qa = np.ones((6, 4, 4), np.uint16), np.full((4, 4), CLEAR_QA, np.uint16)
    tr = from_origin(480000, 2150000, 30, 30)
    items = [item_for(write_product(tmp_path, pid("LC08", d), dn, qa, "EPSG:32614", tr))
             for d in (dt.date(2018, 12, 30), dt.date(2019, 1, 15), dt.date(2019, 7, 2), dt.date(2019, 11, 20))]
    catalog = write_catalog(tmp_path / "stac", items)
    assert [p.scene.acquired.month for p in scenes.from_catalog(catalog, 2019)] == [1, 7, 11]
    assert [p.scene.acquired.month for p in scenes.from_catalog(catalog, 2019, months=[11, 12, 1])] == [1, 11]
    assert len(scenes.from_folder(tmp_path, 2018)) == 1
    with pytest.raises(InputError, match=r"catalog.json: no scene acquired in 2020; its 4 scene\(s\) are from 2018, 2019"):
        scenes.from_catalog(catalog, 2020)


def test_scene_source_reads_data_imagery(in_repo):
    source = scenes.SceneSource.from_config(config.load(".", ["out_dir=/x", "data.imagery.months=[1,2]"]), 2019)
    assert (source.kind, source.period.label, source.months) == ("stac", "2019", (1, 2))
    assert source.location == source.where == "/x/valle_de_mexico/scenes/2019/catalog.json"
    api = scenes.SceneSource.from_config(config.load(".", ["data.imagery.source=api"]), 2010)
    assert api.where == "https://landsatlook.usgs.gov/stac-server landsat-c2l2-sr" and api.months is None
    with pytest.raises(InputError, match=r"data.imagery.months: months are 1-12, got \[0, 13\]"):
        scenes.SceneSource.from_config(config.load(".", ["data.imagery.months=[0,13]"]), 2019)
    with pytest.raises(InputError, match="data.imagery.source: must be one of stac, api, folder, file, got 'ftp'"):
        scenes.SceneSource.from_config(config.load(".", ["data.imagery.source=ftp"]), 2019)


def test_stac_api_search_is_asked_for_the_region_and_year(monkeypatch, tmp_path):
    """The API path (no network here): pystac-client is asked for the collection, the
    region's lon/lat box and the year, and its items are read like a catalog's."""
    import pystac_client

    dn, qa = np.ones((6, 4, 4), np.uint16), np.full((4, 4), CLEAR_QA, np.uint16)
    folders = [write_product(tmp_path, pid("LC08", dt.date(2019, 1 + 2 * k, 10)), dn, qa, "EPSG:32614",
                             from_origin(480000, 2150000, 30, 30)) for k in range(5)]
    asked = {}

    class Search:
        def items(self):
            return iter([item_for(f) for f in folders])

    class Client:
        @staticmethod
        def open(url, timeout=None):
            asked.update(url=url, timeout=timeout)
            return Client()

        def search(self, **kw):
            asked.update(kw)
            return Search()

    monkeypatch.setattr(pystac_client, "Client", Client)
    products = scenes.from_api("https://example.test/stac", "landsat-c2l2-sr", 2019, months=[1, 3], bbox=(-99.2, 19.3, -99.1, 19.4))
    assert asked == {"url": "https://example.test/stac", "timeout": 60, "collections": ["landsat-c2l2-sr"], "bbox": [-99.2, 19.3, -99.1, 19.4],
                     "datetime": "2019-01-01T00:00:00Z/2019-12-31T23:59:59Z", "max_items": None}
    assert [p.scene.acquired.month for p in products] == [1, 3]


# --- reading them, warped -------------------------------------------------------------------


@pytest.mark.parametrize("epsg", [32614, 32615])
def test_warp_puts_each_source_pixel_where_it_belongs(tmp_path, epsg):
    """Every lattice pixel gets the value of the source pixel under its centre, from a
    scene in Mexico City's UTM zone (14) or the next one (15, 1,000 km off its meridian)."""
    to_utm = Transformer.from_crs(6372, epsg, always_xy=True)
    cx, cy = to_utm.transform(*LATTICE.transform @ (W / 2, H / 2))
    n = W + 80
    src_tr = from_origin(round(cx) - n * 15, round(cy) + n * 15, 30, 30)
    code = (np.arange(n * n, dtype=np.uint16) + 1).reshape(n, n)  # pixel (r, c) holds r * n + c + 1
    dn = np.repeat(code[None], 6, axis=0)
    product = scenes.Product(landsat.scene_from_folder(
        write_product(tmp_path, pid("LC08", dt.date(2019, 2, 1)), dn, np.full((n, n), CLEAR_QA, np.uint16), f"EPSG:{epsg}", src_tr)))
    datasets = warp.open_files(product)
    warped = warp.read_warped([(product, datasets)], LATTICE.crs, LATTICE.transform, (H, W)).transpose(3, 2, 0, 1)
    [ds.close() for ds in datasets]
    got = warped[0, 0].astype(np.int64) - 1
    assert (got >= 0).all() and (warped[0, :6] == warped[0, :1]).all()
    r, c = np.divmod(got, n)
    sx, sy = src_tr @ (c + 0.5, r + 0.5)  # centres of the source pixels used
    lx, ly = LATTICE.transform @ np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    ux, uy = to_utm.transform(lx, ly)  # lattice pixel centres in the scene's CRS
    # nearest neighbour: the source pixel contains the lattice pixel's centre (GDAL's
    # approximate transformer may be off by up to 0.125 pixel)
    assert np.abs(ux - sx).max() <= 15 + 30 * 0.125 and np.abs(uy - sy).max() <= 15 + 30 * 0.125
    assert np.mean((np.abs(ux - sx) <= 15) & (np.abs(uy - sy) <= 15)) > 0.99


def test_gathered_warp_equals_gdal_warping_every_band(tmp_path):
    """read_warped warps each grid's pixel indices once and gathers the bands through
    them: the same values, byte for byte, as GDAL warping every file itself, for scenes
    of two UTM zones given out of grid order, and 0 where a scene has no pixel."""
    rng = np.random.default_rng(11)
    chosen = []
    for k, epsg in enumerate([32614, 32615, 32614]):
        to_utm = Transformer.from_crs(6372, epsg, always_xy=True)
        cx, cy = to_utm.transform(*LATTICE.transform @ (W / 2, H / 2))
        n = W - 40  # smaller than the lattice: its edges have no source pixel
        dn = rng.integers(1, 60000, (6, n, n), dtype=np.uint16)
        qa = rng.integers(0, 2**16, (n, n), dtype=np.uint16)
        src_tr = from_origin(round(cx) - n * 15 + 7 * k, round(cy) + n * 15, 30, 30)
        folder = write_product(tmp_path, pid("LC08", dt.date(2019, 3 + k, 1), path=26 + k), dn, qa, f"EPSG:{epsg}", src_tr)
        product = scenes.Product(landsat.scene_from_folder(folder))
        chosen.append((product, warp.open_files(product)))
    got = warp.read_warped(chosen, LATTICE.crs, LATTICE.transform, (H, W)).transpose(3, 2, 0, 1)  # (scene, file, ...)
    # Some files of some scenes, without a margin: the same pixels
    groups = warp.warp_groups(chosen, LATTICE.crs, LATTICE.transform, (H, W))
    part = warp.gather(chosen, groups, ["red", "qa_pixel"], (H, W), which=[0, 2], crop=3)
    np.testing.assert_array_equal(part, got[[0, 2]][:, [2, 6], 3:H - 3, 3:W - 3].transpose(2, 3, 1, 0))
    for i, (_, datasets) in enumerate(chosen):
        grid = warp.grid_of(datasets)
        win = warp.source_window(grid, LATTICE.crs, LATTICE.bounds)
        for j, ds in enumerate(datasets):
            expected = np.zeros((H, W), np.uint16)
            reproject(ds.read(1, window=win), expected, src_transform=window_transform(win, grid.transform),
                      src_crs=grid.crs, dst_transform=LATTICE.transform, dst_crs=LATTICE.crs,
                      resampling=Resampling.nearest, dst_nodata=0)
            np.testing.assert_array_equal(got[i, j], expected)
        [ds.close() for ds in datasets]
    assert (got[:, :, 0] == 0).all() and (got[:, :, :, 0] == 0).all() and (got[:, :, H // 2, W // 2] > 0).all()


def test_a_stac_api_that_never_answers_fails_within_the_timeout(in_repo, tmp_path, capsys):
    """A server that accepts the connection and never answers: the mosaic stage stops
    after data.imagery.timeout_s with one line naming the API, not hanging."""
    import socket
    import threading
    import time

    from urbanmap.cli import main

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept_and_wait():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # never read, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_wait, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/stac"
    region = tmp_path / "valle_de_mexico"
    try:
        assert main(["grid", f"out_dir={tmp_path}"]) == 0
        start = time.monotonic()
        status = main(["mosaic", "period=2010", f"out_dir={tmp_path}", "data.imagery.source=api",
                       f"data.imagery.api={url}", "data.imagery.timeout_s=1"])
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    err = capsys.readouterr().err.strip()
    assert status == 2 and elapsed < 15, (status, elapsed)
    assert err == f"urbanmap mosaic: error: {url} (landsat-c2l2-sr): STAC API search failed: no answer within data.imagery.timeout_s=1 s"
    assert not (region / "mosaic_2010.tif").exists()
