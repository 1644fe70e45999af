"""End-member spectra of the synthetic scenes, from measured surface reflectance.

`../shared/data/spectra/landsat_spectra.csv` holds 5,381 measured spectra in the six
bands (blue .. swir2, unitless reflectance) with a `class` column. They are grouped
into five end-member tables by class prefix (configurable, `synth.endmembers`):

- impervious: built surfaces (roofs, roads, concrete, asphalt, ...);
- vegetation: green vegetation (Landsat 8 surface-reflectance samples);
- npv: non-photosynthetic vegetation (litter, bark, dry grass);
- soil: bare soil, sand, dirt, gravel;
- water.

Each table is sorted by brightness (sum over bands), so that a smooth random field
mapped to table indices (fields.pick) gives neighbouring pixels similar materials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.imagery.landsat import BANDS

GROUPS = ("impervious", "vegetation", "npv", "soil", "water")


@dataclass(frozen=True)
class Endmembers:
    """Spectra per group: float32 arrays of shape (n_group, 6), bands in landsat.BANDS
    order, sorted by brightness."""

    impervious: np.ndarray
    vegetation: np.ndarray
    npv: np.ndarray
    soil: np.ndarray
    water: np.ndarray

    @property
    def dry(self) -> np.ndarray:
        """The tables whose spectra fill a pixel's non-green background, stacked:
        npv, then soil, then water (see `dry_offsets`)."""
        return np.concatenate([self.npv, self.soil, self.water])

    @property
    def dry_offsets(self) -> dict[str, tuple[int, int]]:
        """(first row, number of rows) of npv, soil and water in `dry`."""
        n_npv, n_soil = len(self.npv), len(self.soil)
        return {"npv": (0, n_npv), "soil": (n_npv, n_soil), "water": (n_npv + n_soil, len(self.water))}

    def soil_near_built(self, share: float) -> np.ndarray:
        """Rows of `soil` nearest the built surfaces: the share `share` of the table (at
        least one row) whose Euclidean distance over the six bands to the nearest
        `impervious` spectrum is smallest, in table (brightness) order (uint16)."""
        distance, _ = cKDTree(self.impervious.astype(np.float64)).query(self.soil.astype(np.float64))
        n = min(max(int(round(float(share) * len(self.soil))), 1), len(self.soil))
        return np.sort(np.argsort(distance, kind="stable")[:n]).astype(np.uint16)


def group_spectra(table: pd.DataFrame, prefixes: dict[str, list[str]], max_reflectance: float,
                  where: str = "spectra") -> Endmembers:
    """Group measured spectra into end-member tables.

    Args:
        table: one spectrum per row, columns landsat.BANDS (reflectance) and `class`.
        prefixes: group name -> list of class prefixes (a class belongs to the first
            group with a matching prefix).
        max_reflectance: spectra with a band above this (or below 0, or not finite) are
            left out (e.g. glass and bright paints, which no 30 m pixel shows pure).
    """
    missing = [c for c in (*BANDS, "class") if c not in table.columns]
    if missing:
        raise InputError(f"{where}: lacks column(s) {', '.join(missing)}")
    unknown = sorted(set(prefixes) - set(GROUPS))
    if unknown or set(GROUPS) - set(prefixes):
        raise InputError(f"synth.endmembers: needs exactly the groups {', '.join(GROUPS)}")
    values = table[list(BANDS)].to_numpy(np.float64)
    ok = np.isfinite(values).all(axis=1) & (values.min(axis=1) >= 0) & (values.max(axis=1) <= max_reflectance)
    klass = table["class"].astype("string").fillna("")
    taken = np.zeros(len(table), bool)
    groups = {}
    for name in GROUPS:
        member = np.zeros(len(table), bool)
        for prefix in prefixes[name]:
            member |= klass.str.startswith(str(prefix)).to_numpy(bool)
        member &= ~taken
        taken |= member
        rows = values[member & ok]
        if len(rows) == 0:
            raise InputError(f"{where}: no usable spectrum for end-member group {name!r} (classes {list(prefixes[name])})")
        groups[name] = rows[np.argsort(rows.sum(axis=1), kind="stable")].astype(np.float32)
    return Endmembers(**groups)


def read_endmembers(path: str | os.PathLike[str], prefixes: dict[str, list[str]], max_reflectance: float) -> Endmembers:
    """Read the spectra CSV and group it (see `group_spectra`); InputError names the file."""
    path = io.require_file(path, "spectra")
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types; the user needs the file name
        raise InputError(f"{path}: cannot read spectra: {exc}".splitlines()[0]) from exc
    return group_spectra(table, prefixes, max_reflectance, where=str(path))
