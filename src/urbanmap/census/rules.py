"""Label rules: a census or land-cover measure per cell -> urban / non-urban / excluded."""

from __future__ import annotations

import numpy as np

from urbanmap.core.errors import InputError

#: The labels a rule gives, in the order summaries list them.
LABELS = ("urban", "non_urban", "excluded")


def apply_rule(values: np.ndarray, urban_min: float, non_urban_max: float) -> np.ndarray:
    """Label cells: "urban" if value >= urban_min, "non_urban" if < non_urban_max, else
    "excluded" (ambiguous cells kept out of training). Returns a str array."""
    if non_urban_max > urban_min:
        raise InputError(
            f"labels: non_urban_max ({non_urban_max}) must not exceed urban_min ({urban_min})"
        )
    values = np.asarray(values, dtype=np.float64)
    return np.where(
        values >= urban_min, "urban", np.where(values < non_urban_max, "non_urban", "excluded")
    )
