"""Tiny Landsat Collection 2 Level-2 products for the mosaic tests: real file names
(landsat.band_filename), uint16 DN, QA_PIXEL bits, tiled deflate GeoTIFFs, and a STAC
catalog shaped like USGS's (assets keyed by eo common name, eo:bands, raster:bands)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.warp import transform_bounds

from urbanmap.imagery import landsat

CLEAR_QA = 1 << landsat.QA.CLEAR


def pid(sensor: str, acquired: dt.date, path: int = 26, row: int = 47) -> str:
    return landsat.product_id(sensor, path, row, acquired, acquired + dt.timedelta(days=20))


def write_product(root: Path, product_id: str, dn: np.ndarray, qa: np.ndarray, crs, transform, skip=()) -> Path:
    """Write uint16 `dn` (6, rows, cols) in landsat.BANDS order and `qa` (rows, cols) as
    the product's GeoTIFFs in `root/product_id/`; bands in `skip` are not written."""
    folder = Path(root) / product_id
    folder.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", count=1, dtype="uint16", width=qa.shape[1], height=qa.shape[0], crs=crs,
                   transform=transform, tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    for name, data, nodata in [*((b, dn[i], 0) for i, b in enumerate(landsat.BANDS)), ("qa_pixel", qa, 1)]:
        if name in skip:
            continue
        with rasterio.open(folder / landsat.band_filename(product_id, name), "w", nodata=nodata, **profile) as dst:
            dst.write(np.asarray(data, np.uint16), 1)
    return folder


def item_for(folder: Path) -> pystac.Item:
    """A STAC Item for a product folder written by write_product (absolute hrefs)."""
    folder = Path(folder)
    product_id = folder.name
    fields = landsat.parse_product_id(product_id)
    with rasterio.open(folder / landsat.band_filename(product_id, "qa_pixel")) as ds:
        bbox = list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    west, south, east, north = bbox
    geometry = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]}
    when = dt.datetime.combine(fields["acquired"], dt.time(17), tzinfo=dt.UTC)
    item = pystac.Item(product_id, geometry, bbox, when, {"platform": landsat.PLATFORMS[fields["sensor"]]})
    for band in landsat.BANDS:
        item.add_asset(landsat.COMMON_NAMES[band], pystac.Asset(
            str(folder / landsat.band_filename(product_id, band)), roles=["data"],
            extra_fields={
                "eo:bands": [{"name": landsat.SENSOR_BANDS[fields["sensor"]][band], "common_name": landsat.COMMON_NAMES[band]}],
                "raster:bands": [{"data_type": "uint16", "nodata": 0, "scale": landsat.SR_SCALE, "offset": landsat.SR_OFFSET}],
            },
        ))
    item.add_asset("qa_pixel", pystac.Asset(str(folder / landsat.band_filename(product_id, "qa_pixel")), roles=["cloud"]))
    return item


def write_catalog(root: Path, items: list[pystac.Item]) -> Path:
    """A self-contained catalog of `items` at root/catalog.json."""
    catalog = pystac.Catalog("scenes", "test scenes")
    for item in items:
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return Path(root) / "catalog.json"
