"""Periods of imagery: the census period that trains the models and the periods mapped
with them (monitoring between censuses).

A period is written as a short label that also names its files and its DVC stages
(`mosaic@2019H1`, `mosaic_2019H1.tif`):

==================  =====================================  ========
label               window                                 kind
==================  =====================================  ========
``2015``            the calendar year                      year
``2019H1``          January-June (``H2``: July-December)   semester
``2019Q3``          July-September (``Q1``..``Q4``)        quarter
``2019M05``         May 2019                               months
``2019M03-08``      March to August 2019                   months
``2019M11-2020M02`` November 2019 to February 2020         months
==================  =====================================  ========

The config (conf/config.yaml)::

    periods:
      list: ['2010', '2015', '2019H1', '2019H2']   # DVC runs synth, mosaic, predict per item
      census: '2010'    # the period whose census labels train the models
      target: '2019H2'  # the period validated, and the end of change and SDG 11.3.1

`period=` (null: the census period) picks the period a per-period stage runs for. The
configs of before periods (`years.train`, `years.target`) are refused with a message
saying how to convert them (`periods.list=[T,Y] periods.census=T periods.target=Y`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from urbanmap.core.errors import InputError

KINDS = ("year", "semester", "quarter", "months")

_YEAR = re.compile(r"^(\d{4})$")
_SEMESTER = re.compile(r"^(\d{4})H([12])$")
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
_MONTHS = re.compile(r"^(\d{4})M(\d{2})(?:-(?:(\d{4})M)?(\d{2}))?$")

#: What a period label may look like, for error messages.
FORMS = "YYYY, YYYYH1|H2, YYYYQ1..Q4, YYYYMmm, YYYYMmm-mm or YYYYMmm-YYYYMmm"


@dataclass(frozen=True)
class Period:
    """A window of dates, both ends included.

    Attributes:
        label: the period as written (`2019H1`): names its stages and files.
        kind: year, semester, quarter or months.
        start, end: the first and the last day of the window.
    """

    label: str
    kind: str
    start: dt.date
    end: dt.date

    @property
    def months(self) -> int:
        """Whole months in the window (12 for a year, 6 for a semester)."""
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1

    @property
    def year(self) -> int:
        """The calendar year the window starts in (sensors, `{year}` in file templates)."""
        return self.start.year

    @property
    def middle(self) -> float:
        """The middle of the window as a decimal year counted in months (2010.5 for 2010;
        2019.25 for 2019H1; 2019.75 for 2019H2): the time at which growth, population and
        rates are reckoned."""
        return self.start.year + (self.start.month - 1) / 12 + self.months / 24

    def contains(self, date: dt.date) -> bool:
        """Whether `date` falls in the window."""
        return self.start <= date <= self.end

    def overlaps(self, other: Period) -> bool:
        """Whether the two windows share a day."""
        return self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:
        return self.label


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def parse(value: Any, key: str = "periods.list") -> Period:
    """The Period a label stands for (a whole number is a year); InputError naming `key`
    and the label when it does not parse."""
    label = str(value).strip()
    if isinstance(value, bool) or isinstance(value, float) or not label:
        raise InputError(f"{key}: period {value!r} does not parse (write {FORMS})")
    if m := _YEAR.match(label):
        y = int(m[1])
        return Period(label, "year", dt.date(y, 1, 1), dt.date(y, 12, 31))
    if m := _SEMESTER.match(label):
        y, h = int(m[1]), int(m[2])
        return Period(label, "semester", dt.date(y, 6 * h - 5, 1), _month_end(y, 6 * h))
    if m := _QUARTER.match(label):
        y, q = int(m[1]), int(m[2])
        return Period(label, "quarter", dt.date(y, 3 * q - 2, 1), _month_end(y, 3 * q))
    if m := _MONTHS.match(label):
        y1, m1 = int(m[1]), int(m[2])
        y2 = int(m[3]) if m[3] else y1
        m2 = int(m[4]) if m[4] else m1
        if not (1 <= m1 <= 12 and 1 <= m2 <= 12) or (y2, m2) < (y1, m1):
            raise InputError(f"{key}: period {label!r}: months must be 01-12, the last not before the first")
        return Period(label, "months", dt.date(y1, m1, 1), _month_end(y2, m2))
    raise InputError(f"{key}: period {label!r} does not parse (write {FORMS})")


def parse_list(values: Iterable[Any], key: str = "periods.list") -> tuple[Period, ...]:
    """The periods of a list, sorted by start; InputError naming the period that does not
    parse, or the two that overlap (a repeated label overlaps itself)."""
    if isinstance(values, (str, int)):
        raise InputError(f"{key}: expected a list of periods, got {values!r}")
    periods = sorted((parse(v, key) for v in values), key=lambda p: (p.start, -p.end.toordinal()))
    if not periods:
        raise InputError(f"{key}: no periods; list at least the census period")
    for a, b in zip(periods, periods[1:]):
        if a.overlaps(b):
            raise InputError(f"{key}: periods {a.label} and {b.label} overlap ({a.start}..{a.end} and {b.start}..{b.end})")
    return tuple(periods)


def _find(periods: Sequence[Period], value: Any, key: str) -> Period:
    wanted = parse(value, key)
    for p in periods:
        if p.label == wanted.label:
            return p
    raise InputError(f"{key}: period {wanted.label} is not in periods.list ({', '.join(p.label for p in periods)})")


LEGACY = ("years.train / years.target are replaced by periods: write periods.list=[T,Y] "
          "periods.census=T periods.target=Y (conf/config.yaml, docs/periods.md)")


@dataclass(frozen=True)
class PeriodSettings:
    """The `periods` config group, checked.

    Attributes:
        periods: every period, sorted by start, none overlapping.
        census: the census period (its labels train the models).
        target: the period validated, and the end of the change map and of SDG 11.3.1.
    """

    periods: tuple[Period, ...]
    census: Period
    target: Period

    @property
    def labels(self) -> list[str]:
        """The periods' labels in time order."""
        return [p.label for p in self.periods]

    def get(self, label: Any, key: str = "period") -> Period:
        """The listed period of `label`; InputError naming `key` if it is not listed."""
        return _find(self.periods, label, key)

    @classmethod
    def from_config(cls, cfg: Any) -> PeriodSettings:
        """Read `periods` (list, census, target); InputError naming the key and the period
        that is wrong, or saying how to convert an old `years` config."""
        p = cfg.get("periods") if hasattr(cfg, "get") else None
        if p is None:
            if hasattr(cfg, "get") and cfg.get("years") is not None:
                raise InputError(LEGACY)
            raise InputError("periods: missing; list the periods (periods.list) and name the census one (periods.census)")
        periods = parse_list(p.get("list") or [], "periods.list")
        if p.get("census") is None:
            raise InputError("periods.census: missing; name the census period, one of periods.list")
        census = _find(periods, p.census, "periods.census")
        target = _find(periods, p.target, "periods.target") if p.get("target") is not None else periods[-1]
        return cls(periods, census, target)


def stage_period(cfg: Any) -> Period:
    """The period a per-period stage (synth, mosaic, predict) runs for: `period=`, or the
    census period when it is null. Any period that parses will do, listed or not (a
    stage run by hand for a period to try); DVC runs the listed ones."""
    settings = PeriodSettings.from_config(cfg)
    value = cfg.get("period")
    if value is None:
        return settings.census
    wanted = parse(value, "period")
    for p in settings.periods:
        if p.label == wanted.label:
            return p
    return wanted


def as_period(value: Period | int | str, key: str = "period") -> Period:
    """`value` as a Period: a Period as it is, a year (2019) or a label parsed."""
    return value if isinstance(value, Period) else parse(value, key)
