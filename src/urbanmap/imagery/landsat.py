"""Landsat Collection 2 Level-2 products as they are on disk: names, bands, scale, QA bits.

This is the one place that knows the product conventions; the `synth` stage writes them
and the `mosaic` stage reads them, so the embedded default runs the real-data path.

A product is a folder of single-band GeoTIFFs named after its product id::

    LC08_L2SP_026047_20190315_20200829_02_T1/
        LC08_L2SP_026047_20190315_20200829_02_T1_SR_B2.TIF   (blue)  ... _SR_B7.TIF (swir2)
        LC08_L2SP_026047_20190315_20200829_02_T1_QA_PIXEL.TIF

Surface reflectance is stored as uint16 digital numbers:
``reflectance = DN * 0.0000275 - 0.2``, with 0 as fill. Bands are found by sensor (the
band numbers of Landsat 4-7 and 8-9 differ), never by position.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from urbanmap.core.errors import InputError

#: The six bands of the pilot, in the order every array of this project uses.
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")

#: Surface-reflectance file suffix of each band, by sensor (the product id's first 4 chars).
_TM_ETM = dict(zip(BANDS, ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")))
_OLI = dict(zip(BANDS, ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")))
SENSOR_BANDS = {"LT04": _TM_ETM, "LT05": _TM_ETM, "LE07": _TM_ETM, "LC08": _OLI, "LC09": _OLI}

#: STAC common names (eo extension) of the six bands, as in USGS's Collection 2 catalog.
COMMON_NAMES = dict(zip(BANDS, ("blue", "green", "red", "nir08", "swir16", "swir22")))

SR_SCALE = 2.75e-5
SR_OFFSET = -0.2
SR_FILL = 0
#: QA_PIXEL's fill value (bit 0 set, nothing else), also its GeoTIFF nodata.
QA_FILL = 1

#: STAC `platform` and `instruments` of each sensor, as in USGS's Collection 2 catalog.
PLATFORMS = {"LT04": "landsat-4", "LT05": "landsat-5", "LE07": "landsat-7", "LC08": "landsat-8", "LC09": "landsat-9"}
INSTRUMENTS = {"LT04": ("tm",), "LT05": ("tm",), "LE07": ("etm",), "LC08": ("oli", "tirs"), "LC09": ("oli", "tirs")}
#: Sensors with a cirrus band: only their QA_PIXEL uses bit 2 and bits 14-15.
CIRRUS_SENSORS = ("LC08", "LC09")
#: Landsat 7's scan line corrector failed on 2003-05-31: later ETM+ products have
#: wedge-shaped gaps of fill between scans (about 22% of a scene).
SLC_OFF_SINCE = dt.date(2003, 5, 31)


def to_dn(reflectance: npt.ArrayLike) -> np.ndarray:
    """Surface reflectance (any shape, unitless) -> uint16 DN of Collection 2 Level-2.

    DN = round((reflectance - SR_OFFSET) / SR_SCALE), clipped to 1..65535 so that no
    valid pixel takes the fill value 0. NaN becomes fill (0). float32 input is computed
    in float32 (within 1 DN of float64, for values within rounding of a half DN),
    anything else in float64.
    """
    r = np.asarray(reflectance)
    r = r if r.dtype == np.float32 else r.astype(np.float64)
    dn = np.asarray(np.rint((r - r.dtype.type(SR_OFFSET)) / r.dtype.type(SR_SCALE)))
    np.clip(dn, 1, 65535, out=dn)
    dn[np.isnan(r)] = SR_FILL
    return dn.astype(np.uint16)


def to_reflectance(dn: npt.ArrayLike) -> np.ndarray:
    """uint16 DN (any shape) -> float32 surface reflectance; fill (0) becomes NaN."""
    dn = np.asarray(dn)
    r = (dn.astype(np.float32) * np.float32(SR_SCALE) + np.float32(SR_OFFSET)).astype(np.float32)
    return np.where(dn == SR_FILL, np.float32(np.nan), r)


class QA:
    """Bit positions of QA_PIXEL (Collection 2). Bits 8-15 hold confidence pairs:
    8-9 cloud, 10-11 cloud shadow, 12-13 snow/ice, 14-15 cirrus (0 none .. 3 high).

    As in USGS's products, CLEAR (bit 6) means "neither CLOUD nor DILATED_CLOUD": it is
    also set on cloud-shadow and cirrus pixels, so a clear-sky mask must test bits 1-4
    (and 0), not bit 6 alone. Cirrus bits exist for Landsat 8-9 only (CIRRUS_SENSORS).
    Typical values: 21824 clear land (L8-9), 21952 clear water, 5440 clear land (L4-7),
    22280 high-confidence cloud, 23888 cloud shadow, 1 fill.
    """

    FILL = 0
    DILATED_CLOUD = 1
    CIRRUS = 2
    CLOUD = 3
    CLOUD_SHADOW = 4
    SNOW = 5
    CLEAR = 6
    WATER = 7
    CLOUD_CONFIDENCE = 8
    SHADOW_CONFIDENCE = 10
    SNOW_CONFIDENCE = 12
    CIRRUS_CONFIDENCE = 14


_PRODUCT_ID = re.compile(
    r"^(?P<sensor>L[CTEO]0[4-9])_L2S[PR]_(?P<path>\d{3})(?P<row>\d{3})_"
    r"(?P<acquired>\d{8})_(?P<processed>\d{8})_02_(?P<tier>T1|T2|RT)$"
)


@dataclass(frozen=True)
class Scene:
    """One Collection 2 Level-2 product: its id, date and the files of its bands."""

    product_id: str
    sensor: str
    acquired: dt.date
    bands: dict[str, str] = field(compare=False)  # band name (BANDS) -> path or URL
    qa_pixel: str = field(compare=False)

    @property
    def year(self) -> int:
        """The calendar year of acquisition."""
        return self.acquired.year


def parse_product_id(product_id: str) -> dict[str, Any]:
    """Fields of a product id (sensor, path, row, acquired, processed, tier); InputError
    if it is not a Collection 2 Level-2 id or its sensor is unknown."""
    m = _PRODUCT_ID.match(product_id)
    if not m:
        raise InputError(f"{product_id}: not a Landsat Collection 2 Level-2 product id")
    fields = m.groupdict()
    if fields["sensor"] not in SENSOR_BANDS:
        raise InputError(f"{product_id}: sensor {fields['sensor']} has no surface-reflectance bands")
    fields["acquired"] = dt.datetime.strptime(fields["acquired"], "%Y%m%d").date()
    fields["processed"] = dt.datetime.strptime(fields["processed"], "%Y%m%d").date()
    return fields


def product_id(sensor: str, path: int, row: int, acquired: dt.date, processed: dt.date, tier: str = "T1") -> str:
    """A Collection 2 Level-2 product id, e.g. LC08_L2SP_026047_20190315_20200829_02_T1."""
    return f"{sensor}_L2SP_{path:03d}{row:03d}_{acquired:%Y%m%d}_{processed:%Y%m%d}_02_{tier}"


def band_filename(pid: str, band: str) -> str:
    """File name of one of the six bands (by name) or of "qa_pixel" for product `pid`."""
    if band == "qa_pixel":
        return f"{pid}_QA_PIXEL.TIF"
    return f"{pid}_{SENSOR_BANDS[pid[:4]][band]}.TIF"


def scene_from_folder(folder: str | Path) -> Scene:
    """The Scene whose files are in `folder` (named after its product id, or holding one
    product's files). InputError names the folder and the first missing band."""
    folder = Path(folder)
    qa = sorted(folder.glob("*_QA_PIXEL.TIF"))
    if len(qa) != 1:
        raise InputError(f"{folder}: expected one *_QA_PIXEL.TIF, found {len(qa)}")
    pid = qa[0].name[: -len("_QA_PIXEL.TIF")]
    fields = parse_product_id(pid)
    bands = {}
    for band in BANDS:
        path = folder / band_filename(pid, band)
        if not path.is_file():
            raise InputError(f"{folder}: scene {pid} lacks band {band} ({path.name})")
        bands[band] = str(path)
    return Scene(pid, fields["sensor"], fields["acquired"], bands, str(qa[0]))
