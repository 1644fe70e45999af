"""Label rules: a census or land-cover measure per cell -> urban / non-urban / excluded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from urbanmap.core.errors import InputError

#: The labels a rule gives, in the order summaries list them.
LABELS = ("urban", "non_urban", "excluded")


@dataclass(frozen=True)
class RuleThresholds:
    """The two thresholds of a label rule (`labels.<rule>` in the config), checked.

    Attributes:
        urban_min: a cell is "urban" when its measure is >= urban_min (the measure's unit:
            a fraction 0..1 for urban_fraction, inhabitants per km² for population_density).
        non_urban_max: a cell is "non_urban" when its measure is < non_urban_max (same
            unit); cells in between are "excluded". Never above urban_min.
    """

    urban_min: float
    non_urban_max: float

    @classmethod
    def from_config(cls, section: Any, key: str) -> RuleThresholds:
        """Read `section` (the config node at `key`, e.g. labels.urban_fraction);
        InputError naming the key that is wrong."""
        values = []
        for name in ("urban_min", "non_urban_max"):
            value: Any = section.get(name) if section is not None else None
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                raise InputError(f"{key}.{name}: expected a number, got {value!r}") from None
        urban_min, non_urban_max = values
        if key.endswith("urban_fraction"):  # a share of the cell's area
            for name, value in zip(("urban_min", "non_urban_max"), values, strict=True):
                if not 0 <= value <= 1:
                    raise InputError(f"{key}.{name}: a fraction of the cell's area from 0 to 1, got {value:g}")
        elif min(values) < 0:
            raise InputError(f"{key}: thresholds must not be negative, got urban_min {urban_min:g}, non_urban_max {non_urban_max:g}")
        if non_urban_max > urban_min:
            raise InputError(f"{key}: non_urban_max ({non_urban_max}) must not exceed urban_min ({urban_min})")
        return cls(urban_min, non_urban_max)


def apply_rule(values: ArrayLike, urban_min: float, non_urban_max: float) -> np.ndarray:
    """Label cells: "urban" if value >= urban_min, "non_urban" if < non_urban_max, else
    "excluded" (ambiguous cells kept out of training).

    Args:
        values: (n,) the rule's measure per cell (NaN: "excluded").
        urban_min, non_urban_max: the thresholds, in the measure's unit.
    Returns:
        (n,) str array of labels.
    """
    if non_urban_max > urban_min:
        raise InputError(
            f"labels: non_urban_max ({non_urban_max}) must not exceed urban_min ({urban_min})"
        )
    values = np.asarray(values, dtype=np.float64)
    return np.where(
        values >= urban_min, "urban", np.where(values < non_urban_max, "non_urban", "excluded")
    )


def label_counts(labels: pd.Series) -> dict[str, int]:
    """Cells per label, in the order of LABELS (every label, 0 when absent)."""
    return {name: int((labels == name).sum()) for name in LABELS}
