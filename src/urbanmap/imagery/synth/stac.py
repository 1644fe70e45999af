"""A self-contained STAC catalog of the synthetic products, shaped like USGS's
Collection 2 Level-2 catalog (landsat-c2-l2).

`<scenes_dir>/catalog.json` links one Item per product, saved beside the product's
files (`<product id>/<product id>.json`); every href is relative, so the folder can be
moved or copied. An Item has the product id, the acquisition datetime, its footprint
(the valid data of the files) in lon/lat, platform / instruments / eo:cloud_cover /
view sun angles / landsat:wrs_path and wrs_row, the projection (code, shape,
transform), and assets keyed as USGS keys them (blue, green, red, nir08, swir16,
swir22, qa_pixel) with eo:bands and raster:bands (scale, offset, nodata, data type).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pystac
import shapely
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.view import ViewExtension

from urbanmap.imagery.landsat import (
    BANDS,
    COMMON_NAMES,
    INSTRUMENTS,
    PLATFORMS,
    QA_FILL,
    SENSOR_BANDS,
    SR_FILL,
    SR_OFFSET,
    SR_SCALE,
)

LANDSAT_EXTENSION = "https://stac-extensions.github.io/landsat/v2.0.0/schema.json"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Centre wavelengths (µm) of the six bands by instrument family.
_WAVELENGTHS = {
    "tm": dict(zip(BANDS, (0.49, 0.56, 0.66, 0.83, 1.65, 2.22))),
    "oli": dict(zip(BANDS, (0.48, 0.56, 0.65, 0.86, 1.61, 2.20))),
}


@dataclass(frozen=True)
class Product:
    """What the catalog says about one written product."""

    product_id: str
    sensor: str
    datetime: dt.datetime  # UTC
    footprint: shapely.Geometry  # valid data, lon/lat (EPSG:4326)
    epsg: int
    shape: tuple[int, int]  # rows, cols
    transform: tuple[float, ...]  # affine coefficients a, b, c, d, e, f
    cloud_cover: float  # percent of valid pixels flagged cloud
    sun_azimuth: float
    sun_elevation: float
    wrs_path: int
    wrs_row: int
    files: dict[str, str]  # band name (BANDS, "qa_pixel") -> path (made relative to the item on saving)


def _item(p: Product) -> pystac.Item:
    """The STAC Item of one product (assets' hrefs absolute until the catalog is saved)."""
    geometry = shapely.geometry.mapping(p.footprint)
    item = pystac.Item(
        id=p.product_id, geometry=geometry, bbox=list(p.footprint.bounds), datetime=p.datetime,
        properties={
            "platform": PLATFORMS[p.sensor],
            "instruments": list(INSTRUMENTS[p.sensor]),
            "landsat:wrs_path": f"{p.wrs_path:03d}",
            "landsat:wrs_row": f"{p.wrs_row:03d}",
            "landsat:collection_category": p.product_id.split("_")[-1],
            "landsat:collection_number": "02",
            "landsat:correction": "L2SP",
        },
    )
    _add_item_extensions(item, p)
    family = "oli" if p.sensor in ("LC08", "LC09") else "tm"
    for band in BANDS:
        _add_band_asset(item, p, band, family)
    qa = pystac.Asset(
        href=str(Path(p.files["qa_pixel"]).resolve()), media_type=COG_MEDIA_TYPE,
        roles=["cloud", "cloud-shadow", "snow-ice", "water-mask"], title="Pixel Quality Assessment Band (QA_PIXEL)",
    )
    item.add_asset("qa_pixel", qa)
    RasterExtension.ext(qa).bands = [RasterBand.create(data_type=DataType.UINT16, nodata=QA_FILL, spatial_resolution=30.0, unit="bit index")]
    return item


def _add_item_extensions(item: pystac.Item, p: Product) -> None:
    """The item's landsat, eo (cloud cover), view (sun angles), projection and raster
    extensions."""
    item.stac_extensions.append(LANDSAT_EXTENSION)
    eo = EOExtension.ext(item, add_if_missing=True)
    eo.cloud_cover = round(float(p.cloud_cover), 2)
    view = ViewExtension.ext(item, add_if_missing=True)
    view.sun_azimuth, view.sun_elevation = round(p.sun_azimuth, 4), round(p.sun_elevation, 4)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{p.epsg}"
    proj.shape = list(p.shape)
    proj.transform = [float(v) for v in p.transform]
    RasterExtension.add_to(item)


def _add_band_asset(item: pystac.Item, p: Product, band: str, family: str) -> None:
    """The asset of one of the six bands, keyed by its common name, with its eo:bands
    (name, common name, centre wavelength of the instrument `family`) and raster:bands."""
    asset = pystac.Asset(
        href=str(Path(p.files[band]).resolve()), media_type=COG_MEDIA_TYPE, roles=["data", "reflectance"],
        title=f"{COMMON_NAMES[band]} ({SENSOR_BANDS[p.sensor][band]})",
    )
    item.add_asset(COMMON_NAMES[band], asset)
    EOExtension.ext(asset).bands = [
        Band.create(name=SENSOR_BANDS[p.sensor][band], common_name=COMMON_NAMES[band],
                    center_wavelength=_WAVELENGTHS[family][band])
    ]
    RasterExtension.ext(asset).bands = [
        RasterBand.create(data_type=DataType.UINT16, nodata=SR_FILL, scale=SR_SCALE, offset=SR_OFFSET,
                          spatial_resolution=30.0)
    ]


def write_catalog(root: Path, catalog_id: str, description: str, products: list[Product]) -> Path:
    """Write `root/catalog.json` and one Item per product (`root/<id>/<id>.json`), every
    href relative (a self-contained catalog). Returns the catalog path."""
    catalog = pystac.Catalog(id=catalog_id, description=description, title=catalog_id)
    for p in products:
        catalog.add_item(_item(p))
    # Absolute, with a trailing slash: pystac takes a relative root, or one with a dot in
    # its name (the temporary folder), for a file and would write beside it.
    catalog.normalize_hrefs(str(Path(root).resolve()) + "/")
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
