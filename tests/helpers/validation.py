"""A small region with everything the validation steps and the web app read (grid,
predictions of the periods 2010 and 2019, the 2019 truth, change classes, the mosaics of both periods:
urbanmap.examples.tiny.write_validation_inputs), and the overrides that run on it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from urbanmap.examples.tiny import write_validation_inputs


def validation_region(root: Path, n_side: int = 20, name: str = "tiny") -> tuple[list[str], pd.DataFrame]:
    """Write the region `root/name/`; returns (overrides for it, its cells with `truth`,
    the true class of 2019)."""
    cells = write_validation_inputs(root, n_side, name)
    over = [f"out_dir={root}", f"data.name={name}", "validation.target_se=0.04", "validation.min_per_stratum=10",
            "periods.list=[2010,2019]", "periods.census=2010", "periods.target=2019"]
    return over, cells
