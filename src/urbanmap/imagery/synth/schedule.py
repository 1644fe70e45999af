"""When and where the synthetic Landsat scenes are acquired.

- Sensors by year follow the configured table (`synth.sensors`: real mission periods);
  a year no sensor covers is an error.
- Each satellite revisits a WRS-2 path every 16 days; the two satellites of a pair
  (Landsat 5/7, 8/9) are 8 days apart and the adjacent path to the west is imaged 7
  days later. The absolute phase is arbitrary (a synthetic calendar), the spacing real.
- A footprint is a WRS-2 scene: a 185 km x 180 km rectangle whose long edges run along
  the ground track, at `bearing` degrees clockwise from grid north (about 12° for
  Landsat's descending pass at 19° N). It is placed so that one of its long edges
  crosses the region's centre line at a given fraction of the region's width: each
  footprint covers part of the region and the two overlap in the middle.
- Sun angles come from the date and Landsat's 10:30 local-solar-time overpass (NOAA's
  approximate solar position; good to about a degree, enough for shadow geometry).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import shapely
from pyproj import CRS

from urbanmap.core.errors import InputError
from urbanmap.core.periods import Period, as_period
from urbanmap.imagery.landsat import SENSOR_BANDS, product_id

#: Days between a satellite's revisits of one path, and between adjacent paths.
CYCLE_DAYS, ADJACENT_PATH_DAYS = 16, 7
#: Day of the 16-day cycle at which each satellite images path 0 (synthetic calendar;
#: the members of a pair are 8 days apart, as in orbit).
PHASE = {"LT04": 0, "LT05": 0, "LE07": 8, "LC08": 0, "LC09": 8}
#: WRS-2 scene size in metres: across track (swath) and along track.
SWATH_M, SCENE_LENGTH_M = 185_000.0, 180_000.0
#: Local solar time of the overpass, hours.
OVERPASS_LOCAL_HOURS = 10.5


def sensors_for_year(year: int, table: Sequence[Sequence[Any]]) -> list[str]:
    """Sensors acquiring in `year` from rows [first_year, last_year, [sensors]].

    InputError if no row covers the year or a sensor is unknown.
    """
    for row in table:
        first, last, sensors = int(row[0]), int(row[1]), [str(s) for s in row[2]]
        unknown = [s for s in sensors if s not in SENSOR_BANDS or s not in PHASE]
        if unknown:
            raise InputError(
                f"synth.sensors: unknown sensor {unknown[0]!r} (known: {', '.join(sorted(SENSOR_BANDS))})"
            )
        if first <= year <= last and sensors:
            return sensors
    covered = ", ".join(f"{int(r[0])}-{int(r[1])}" for r in table)
    raise InputError(f"period={year}: no Landsat sensor is configured for this year (synth.sensors covers {covered})")


def per_period(per_year: int, period: Period) -> int:
    """Acquisitions per footprint in `period` from `per_year`: its share of the months,
    rounded, at least 1 (8 a year: 4 a semester, 2 a quarter)."""
    return max(1, int(np.floor(per_year * period.months / 12 + 0.5)))


def overpasses(period: Period | int, path: int, sensors: Sequence[str]) -> list[tuple[dt.date, str]]:
    """All (date, sensor) overpasses of WRS-2 `path` in `period` (or a year), sorted by date."""
    period = as_period(period)
    start = period.start.toordinal()
    days = np.arange(start, period.end.toordinal() + 1)
    out = []
    for sensor in sensors:
        hit = (days - PHASE[sensor] - ADJACENT_PATH_DAYS * int(path)) % CYCLE_DAYS == 0
        out += [(dt.date.fromordinal(int(d)), sensor) for d in days[hit]]
    return sorted(out)


#: Any item type (pick_evenly keeps the items' type).
T = TypeVar("T")


def pick_evenly(items: list[T], n: int) -> list[T]:
    """`n` items spread evenly over the list (the middle of n equal parts), in order."""
    if n < 1:
        raise InputError(f"synth.scenes_per_footprint: must be at least 1, got {n}")
    if n > len(items):
        raise InputError(f"synth.scenes_per_footprint: {n} scenes asked, only {len(items)} overpasses in the period")
    idx = np.floor((np.arange(n) + 0.5) * len(items) / n).astype(int)
    return [items[i] for i in idx]


def processed_date(acquired: dt.date) -> dt.date:
    """Processing date of a Collection 2 product: scenes acquired before Collection 2
    began were reprocessed between August and December 2020; later ones are processed
    within a few weeks. Deterministic from the acquisition date."""
    if acquired < dt.date(2020, 8, 1):
        return dt.date(2020, 8, 1) + dt.timedelta(days=acquired.toordinal() * 37 % 150)
    return acquired + dt.timedelta(days=8 + acquired.toordinal() % 13)


def utm_crs(lon: float, lat: float) -> CRS:
    """WGS 84 / UTM zone of a point (Landsat products use the zone of the scene centre)."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def solar_angles(date: dt.date, lon: float, lat: float) -> tuple[float, float, dt.datetime]:
    """(sun azimuth, sun elevation) in degrees and the UTC time of the overpass.

    Azimuth is clockwise from north. NOAA's low-precision solar position (declination
    from the day of year, no equation of time).
    """
    doy = date.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    hour_angle = math.radians(15.0 * (OVERPASS_LOCAL_HOURS - 12.0))
    phi = math.radians(lat)
    sin_e = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    elevation = math.asin(sin_e)
    azimuth = math.atan2(
        math.sin(hour_angle), math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi)
    ) + math.pi
    utc_hours = OVERPASS_LOCAL_HOURS - lon / 15.0
    when = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC) + dt.timedelta(
        seconds=round(utc_hours * 3600)
    )
    return math.degrees(azimuth) % 360.0, math.degrees(elevation), when


@dataclass(frozen=True)
class Footprint:
    """A WRS-2 scene footprint in the scene CRS (metres).

    `centre` is the scene centre; `along` and `across` are unit vectors along the ground
    track and across it (pointing to the east side).
    """

    path: int
    row: int
    centre: tuple[float, float]
    along: tuple[float, float]
    across: tuple[float, float]

    @classmethod
    def crossing(cls, path: int, row: int, bounds: Sequence[float], side: str, edge: float, bearing_deg: float) -> Footprint:
        """The footprint covering the `side` ("east" or "west") of the region `bounds`
        (xmin, ymin, xmax, ymax), whose long edge crosses the region's centre line at
        `edge` (fraction of its width from the west)."""
        if side not in ("east", "west"):
            raise InputError(f"synth.footprints: side must be east or west, got {side!r}")
        xmin, ymin, xmax, ymax = bounds
        theta = math.radians(bearing_deg)
        along = (math.sin(theta), math.cos(theta))
        across = (math.cos(theta), -math.sin(theta))
        px, py = xmin + float(edge) * (xmax - xmin), (ymin + ymax) / 2
        sign = 1.0 if side == "east" else -1.0
        centre = (px + sign * across[0] * SWATH_M / 2, py + sign * across[1] * SWATH_M / 2)
        return cls(int(path), int(row), centre, along, across)

    def polygon(self) -> shapely.Polygon:
        """The 185 km x 180 km rectangle."""
        (cx, cy), (ax, ay), (nx, ny) = self.centre, self.along, self.across
        h, w = SCENE_LENGTH_M / 2, SWATH_M / 2
        corners = [(cx + sa * h * ax + sn * w * nx, cy + sa * h * ay + sn * w * ny) for sa, sn in ((1, -1), (1, 1), (-1, 1), (-1, -1))]
        return shapely.Polygon(corners)

    def coordinates(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Along- and across-track distances (m) from the centre of the pixel centres
        (xs: (w,), ys: (h,)); float64 arrays of shape (h, w)."""
        (cx, cy), (ax, ay), (nx, ny) = self.centre, self.along, self.across
        dx, dy = (np.asarray(xs, np.float64) - cx)[None, :], (np.asarray(ys, np.float64) - cy)[:, None]
        return dx * ax + dy * ay, dx * nx + dy * ny

    def inside(self, along: np.ndarray, across: np.ndarray) -> np.ndarray:
        """Whether points with these track coordinates are in the footprint (bool)."""
        return (np.abs(along) <= SCENE_LENGTH_M / 2) & (np.abs(across) <= SWATH_M / 2)


@dataclass(frozen=True)
class Acquisition:
    """One product to write: sensor, footprint and date."""

    sensor: str
    footprint: Footprint
    acquired: dt.date

    @property
    def product_id(self) -> str:
        """The Collection 2 Level-2 product id (processed_date from the acquisition date)."""
        fp = self.footprint
        return product_id(self.sensor, fp.path, fp.row, self.acquired, processed_date(self.acquired))


def acquisitions(period: Period | int, sensors: Sequence[str], footprints: list[Footprint],
                 per_footprint: int) -> list[Acquisition]:
    """`per_footprint` acquisitions of each footprint spread over `period` (or a year),
    sorted by date."""
    out = []
    for fp in footprints:
        chosen = pick_evenly(overpasses(period, fp.path, sensors), per_footprint)
        out += [Acquisition(sensor, fp, date) for date, sensor in chosen]
    return sorted(out, key=lambda a: (a.acquired, a.product_id))
