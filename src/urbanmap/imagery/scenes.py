"""Landsat Collection 2 Level-2 scenes for the mosaic: finding them (a STAC catalog
file, a STAC API, a folder) and selecting the period's (core/periods.py).

Where scenes come from (`data.imagery.source`):

- ``stac``: a STAC catalog file on disk (a Catalog or Collection, searched recursively,
  or an ItemCollection such as a saved pystac-client search). The embedded default
  reads the catalog that the `synth` stage writes beside its products.
- ``api``: a STAC API searched with pystac-client: the region's lon/lat bounding box,
  the collection (USGS: ``landsat-c2l2-sr``) and the period's dates.
- ``folder``: a folder holding one sub-folder per product, files named as USGS names
  them (landsat.band_filename).

Bands are found by name, never by position: in a catalog by the asset's eo:bands
common name (blue, green, red, nir08, swir16, swir22; the asset key when an asset has no
eo:bands), QA_PIXEL by the key ``qa_pixel``; in a folder by the sensor's band numbers
(SR_B1..B7 differ between Landsat 4-7 and 8-9). An asset whose file is named after a
band number that does not match the sensor (``..._SR_B2.TIF`` as red of an LC08 scene)
is refused. Scale and offset come from the asset's raster:bands when given, else
Collection 2's (2.75e-5, -0.2).

Reading them, warped onto the region's pixel lattice, is warp.py's part.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac
import pystac_client
import requests

from urbanmap.core import paths
from urbanmap.core.errors import InputError
from urbanmap.core.periods import Period, as_period
from urbanmap.imagery import landsat

#: Files read per scene, in this order: the six bands (landsat.BANDS), then QA_PIXEL.
FILES = (*landsat.BANDS, "qa_pixel")
#: STAC `platform` -> sensor code, for items whose id is not a product id.
_PLATFORM_SENSOR = {v: k for k, v in landsat.PLATFORMS.items()}
_BAND_FILE = re.compile(r"_(SR_B\d)\.TIF$", re.IGNORECASE)


@dataclass(frozen=True)
class Product:
    """One scene to read: its files and how to turn its DN into reflectance.

    `scale` and `offset` are per band (landsat.BANDS order):
    reflectance = DN * scale + offset, DN 0 being fill.
    """

    scene: landsat.Scene
    scale: tuple[float, ...] = (landsat.SR_SCALE,) * len(landsat.BANDS)
    offset: tuple[float, ...] = (landsat.SR_OFFSET,) * len(landsat.BANDS)

    @property
    def product_id(self) -> str:
        """The Collection 2 product id (landsat.Scene.product_id)."""
        return self.scene.product_id

    def href(self, name: str) -> str:
        """Path or URL of a band (landsat.BANDS) or of "qa_pixel"."""
        return self.scene.qa_pixel if name == "qa_pixel" else self.scene.bands[name]

# --- finding scenes ------------------------------------------------------------------------


def _in_period(date: dt.date, period: Period, months: Sequence[int] | None) -> bool:
    return period.contains(date) and (not months or date.month in months)


def select(products: Iterable[Product], period: Period | int, months: Sequence[int] | None, where: str) -> list[Product]:
    """The products acquired in `period` (a Period or a year; and `months`, 1-12, when
    given), sorted by date and id. InputError naming `where` and the period if there are none."""
    period = as_period(period)
    products = list(products)
    if not products:
        raise InputError(f"{where}: no Landsat scene found")
    chosen = [p for p in products if _in_period(p.scene.acquired, period, months)]
    if not chosen:
        years = sorted({p.scene.acquired.year for p in products})
        name = (period.label if period.kind == "year" else f"{period.label} ({period.start}..{period.end})") + (
            f" (months {', '.join(map(str, months))})" if months else "")
        raise InputError(
            f"{where}: no scene acquired in {name}; its {len(products)} scene(s) are from "
            f"{', '.join(map(str, years))}"
        )
    return sorted(chosen, key=lambda p: (p.scene.acquired, p.product_id))


def _asset_common_name(asset: Any) -> str | None:
    """eo:bands[0].common_name (STAC eo v1), or bands[0]["eo:common_name"] (STAC 1.1)."""
    fields = asset.extra_fields
    for key, name_key in (("eo:bands", "common_name"), ("bands", "eo:common_name")):
        bands = fields.get(key)
        if bands:
            return bands[0].get(name_key)
    return None


def _asset_scale_offset(asset: Any) -> tuple[float, float]:
    fields = asset.extra_fields
    rb = (fields.get("raster:bands") or [{}])[0]
    b = (fields.get("bands") or [{}])[0]
    scale = rb.get("scale", b.get("raster:scale", landsat.SR_SCALE))
    offset = rb.get("offset", b.get("raster:offset", landsat.SR_OFFSET))
    return float(scale), float(offset)


def _item_sensor(item: Any) -> str:
    sensor = item.id[:4]
    if sensor in landsat.SENSOR_BANDS:
        return sensor
    platform = str(item.properties.get("platform", "")).lower()
    if platform in _PLATFORM_SENSOR:
        return _PLATFORM_SENSOR[platform]
    raise InputError(f"item {item.id}: cannot tell the Landsat sensor (id prefix or platform)")


def product_from_item(item: Any, where: str) -> Product:
    """A Product from a STAC Item of Collection 2 Level-2 surface reflectance.

    Bands are matched by eo:bands common name (or asset key when an asset has no
    eo:bands); InputError names the catalog and item when one is missing, ambiguous, or
    its file is named after another band number than the sensor's.
    """
    sensor = _item_sensor(item)
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InputError(f"{where}: item {item.id} has no datetime")
    by_name: dict[str, list[str]] = {}
    for key, asset in item.assets.items():
        by_name.setdefault(_asset_common_name(asset) or key, []).append(key)
    bands: dict[str, str] = {}
    scale: list[float] = []
    offset: list[float] = []
    for band in landsat.BANDS:
        common = landsat.COMMON_NAMES[band]
        keys = by_name.get(common, [])
        if len(keys) != 1:
            problem = "no asset" if not keys else f"{len(keys)} assets ({', '.join(keys)})"
            raise InputError(f"{where}: item {item.id} has {problem} for band {band} (eo:common_name {common})")
        asset = item.assets[keys[0]]
        href = asset.get_absolute_href() or asset.href
        found = _BAND_FILE.search(href)
        expected = landsat.SENSOR_BANDS[sensor][band]
        if found and found.group(1).upper() != expected:
            raise InputError(
                f"{href}: asset {keys[0]!r} of {item.id} is {found.group(1)}, but {band} of {sensor} is {expected}"
            )
        bands[band] = href
        s, o = _asset_scale_offset(asset)
        scale.append(s)
        offset.append(o)
    qa = item.assets.get("qa_pixel")
    if qa is None:
        raise InputError(f"{where}: item {item.id} has no qa_pixel asset")
    scene = landsat.Scene(item.id, sensor, when.date(), bands, qa.get_absolute_href() or qa.href)
    return Product(scene, tuple(scale), tuple(offset))


def _bbox_overlaps(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    return a is None or b is None or not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def from_catalog(path: str | Path, period: Period | int, months: Sequence[int] | None = None,
                 bbox: Sequence[float] | None = None) -> list[Product]:
    """Products of a STAC catalog file (Catalog / Collection, searched recursively, or an
    ItemCollection) in `period` (and `months`) whose bbox overlaps `bbox` (lon/lat)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: STAC catalog not found (run `urbanmap synth` for the embedded default)")
    try:
        obj: Any = pystac.read_file(str(path))  # a Catalog, Collection, ItemCollection or Item
        if isinstance(obj, pystac.ItemCollection):
            items = list(obj)
        elif isinstance(obj, pystac.Item):
            items = [obj]
        else:
            items = list(obj.get_items(recursive=True))
    except InputError:
        raise
    except Exception as exc:  # pystac raises JSON, schema and I/O errors of many types
        raise InputError(f"{path}: cannot read STAC catalog: {exc}".splitlines()[0]) from exc
    products = [product_from_item(item, str(path)) for item in items if _bbox_overlaps(item.bbox, bbox)]
    if items and not products:
        raise InputError(f"{path}: none of its {len(items)} scene(s) overlaps the region")
    return select(products, period, months, str(path))


def from_api(url: str, collection: str, period: Period | int, months: Sequence[int] | None = None,
             bbox: Sequence[float] | None = None, max_items: int | None = None, timeout_s: float = 60) -> list[Product]:
    """Products found by a STAC API search (pystac-client): `collection`, the lon/lat
    `bbox`, the period's dates (then filtered by `months`). Each request may take
    `timeout_s` seconds to connect and as long again for each read: a server that never
    answers fails the search then, instead of stalling the stage."""
    where = f"{url} ({collection})"
    period = as_period(period)
    try:
        search = pystac_client.Client.open(url, timeout=timeout_s).search(
            collections=[collection], bbox=list(bbox) if bbox is not None else None,
            datetime=f"{period.start}T00:00:00Z/{period.end}T23:59:59Z", max_items=max_items,
        )
        items = list(search.items())
    except Exception as exc:  # network, HTTP and API errors of many types
        reason = f"no answer within data.imagery.timeout_s={timeout_s:g} s" if _timed_out(exc) else str(exc)
        raise InputError(f"{where}: STAC API search failed: {reason}".splitlines()[0]) from exc
    return select((product_from_item(item, where) for item in items), period, months, where)


def _timed_out(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from) is a timeout of requests or sockets."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.Timeout | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "timed out" in str(exc)


def from_folder(folder: str | Path, period: Period | int, months: Sequence[int] | None = None) -> list[Product]:
    """Products in the sub-folders of `folder` (one product per folder with a
    *_QA_PIXEL.TIF), named and banded as USGS distributes them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: scene folder not found")
    dirs = sorted({p.parent for p in folder.rglob("*_QA_PIXEL.TIF")})
    return select((Product(landsat.scene_from_folder(d)) for d in dirs), period, months, str(folder))


#: data.imagery.source: scenes from a STAC catalog, a STAC API, a folder of Collection 2
#: Level-2 files, or `file`, an existing composite (imagery/composite.py, not scenes).
SOURCES = ("stac", "api", "folder", "file")


@dataclass(frozen=True)
class SceneSource:
    """Where a period's scenes are found: the `data.imagery` config group, checked (for
    `source: file`, an existing composite, see composite.CompositeSettings).

    Attributes:
        kind: data.imagery.source: "stac" (a catalog file), "api" (a STAC API) or
            "folder" (one sub-folder per product).
        location: the catalog file (data.imagery.catalog) or the folder
            (data.imagery.folder), `{region_dir}`, `{period}`, `{year}`, `{out_dir}`, `{name}` filled
            in; the API's URL (data.imagery.api).
        collection: the API's collection (data.imagery.collection); "" unless kind is api.
        period: the window of acquisition dates.
        months: the months (1-12) kept (data.imagery.months), or None: the whole window.
        timeout_s: seconds the API may take per request (data.imagery.timeout_s, > 0).
    """

    kind: str
    location: str
    collection: str
    period: Period
    months: tuple[int, ...] | None
    timeout_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: Any, period: Period | int) -> SceneSource:
        """Read `cfg.data.imagery` for `period` (or a year); InputError naming the key that is wrong."""
        period = as_period(period)
        im = cfg.data.get("imagery")
        if im is None:
            raise InputError("data.imagery: not configured (source, catalog / folder / api)")
        fill = {"region_dir": str(paths.region_dir(cfg)), "period": period.label, "year": period.year,
                "out_dir": str(cfg.out_dir), "name": cfg.data.name}
        months = [int(m) for m in im.months] if im.get("months") else None
        if months and not all(1 <= m <= 12 for m in months):
            raise InputError(f"data.imagery.months: months are 1-12, got {months}")
        source, collection = str(im.source), ""
        if source == "stac":
            location = str(im.catalog).format(**fill)
        elif source == "folder":
            location = str(im.folder).format(**fill)
        elif source == "api":
            location, collection = str(im.api), str(im.collection)
        else:
            raise InputError(f"data.imagery.source: must be one of {', '.join(SOURCES)}, got {source!r}")
        timeout = im.get("timeout_s", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InputError(f"data.imagery.timeout_s: expected a positive number of seconds, got {timeout!r}")
        return cls(source, location, collection, period, tuple(months) if months else None, float(timeout))

    @property
    def where(self) -> str:
        """The source as the mosaic's summary names it: the catalog file, the folder, or
        "<API URL> <collection>"."""
        return f"{self.location} {self.collection}" if self.kind == "api" else self.location

    def find(self, bbox: Sequence[float]) -> list[Product]:
        """The products of the period (and months) from this source, sorted by date and id;
        `bbox` (lon/lat: west, south, east, north) is the region's, for a catalog or an
        API search. InputError names the source when none is found."""
        if self.kind == "stac":
            return from_catalog(self.location, self.period, self.months, bbox)
        if self.kind == "folder":
            return from_folder(self.location, self.period, self.months)
        return from_api(self.location, self.collection, self.period, self.months, bbox, timeout_s=self.timeout_s)
