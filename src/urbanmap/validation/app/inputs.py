"""What the web app reads besides its database: the sample, the gold cells, the chips'
layout, the gold cells' chips and the maps, each checked with a one-line InputError
naming the file.

- The sample (`validation/sample.csv`): its cells in order, with their chips; a chip path
  must be relative and stay inside the validation folder (no `..`, no absolute path).
- The gold cells (validation.app.gold): a CSV with columns `cell_id` and `answer`
  (urban or non_urban), cells of the grid outside the sample. Their chips are rendered
  when the database is made, from the same mosaics with the sample's stretch
  (chips/layout.json), so that they look like any other cell's, and kept in the database.
- The maps: the period's map (predictions of periods.target, and of periods.census) and the
  change map, one pixel per cell scaled up, rendered here from the per-cell tables so
  that the sample cells can be drawn over them exactly.
"""

from __future__ import annotations

import io as bytes_io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.validation import chips
from urbanmap.validation.app.quality import double_coded
from urbanmap.validation.sample import chip_lattice, read_chip_windows
from urbanmap.validation.settings import ValidationSettings

#: sample.csv's columns the app reads.
SAMPLE_COLUMNS = ["sample_id", "cell_id", "col", "row", "lon", "lat", "stratum", "map_class", "chip"]
#: Answers a gold cell may have (a gold cell is meant to be clear).
GOLD_ANSWERS = ("urban", "non_urban")


def safe_relative(text: str) -> PurePosixPath | None:
    """`text` as a relative path that stays inside its folder (no `..`, not absolute, no
    drive or backslash), or None."""
    if not text or "\\" in text or "\x00" in text or ":" in text:
        return None
    path = PurePosixPath(text)
    if path.is_absolute() or any(part in ("..", "") for part in text.split("/")):
        return None
    return path


def read_sample(path: Path) -> pd.DataFrame:
    """sample.csv's rows (SAMPLE_COLUMNS, as strings but col and row); InputError naming
    the file for a missing column, a repeated cell or a chip path outside the folder."""
    path = io.require_file(path, "validation sample")
    try:
        sample = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read the sample: {exc}".splitlines()[0]) from None
    missing = [c for c in SAMPLE_COLUMNS if c not in sample.columns]
    if missing:
        raise InputError(f"{path}: sample lacks column(s) {', '.join(missing)}")
    if sample.empty:
        raise InputError(f"{path}: the sample has no cell")
    repeated = sample["cell_id"][sample["cell_id"].duplicated()]
    if len(repeated):
        raise InputError(f"{path}: cell {repeated.iloc[0]} appears twice in the sample")
    for sid, chip in zip(sample["sample_id"], sample["chip"]):
        if safe_relative(chip) is None:
            raise InputError(f"{path}: {sid}'s chip {chip!r} is not a relative path inside the validation folder")
    try:
        sample["col"], sample["row"] = sample["col"].astype(np.int64), sample["row"].astype(np.int64)
    except ValueError:
        raise InputError(f"{path}: col and row must be whole numbers") from None
    return sample[SAMPLE_COLUMNS]


def read_gold(path: Path, sample: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    """The gold cells: cell_id, answer, col, row; InputError naming the file for a
    missing column, an answer other than GOLD_ANSWERS, a repeated cell, a cell outside the
    grid or a cell of the sample."""
    path = io.require_file(path, "gold-standard cells (validation.app.gold)")
    try:
        gold = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read the gold cells: {exc}".splitlines()[0]) from None
    missing = [c for c in ("cell_id", "answer") if c not in gold.columns]
    if missing:
        raise InputError(f"{path}: gold cells lack column(s) {', '.join(missing)}")
    gold = gold[["cell_id", "answer"]].apply(lambda s: s.str.strip())
    bad = gold[~gold["answer"].isin(GOLD_ANSWERS)]
    if len(bad):
        raise InputError(f"{path}: gold cell {bad['cell_id'].iloc[0]}'s answer {bad['answer'].iloc[0]!r} is not "
                         f"{' or '.join(GOLD_ANSWERS)}")
    repeated = gold["cell_id"][gold["cell_id"].duplicated()]
    if len(repeated):
        raise InputError(f"{path}: gold cell {repeated.iloc[0]} appears twice")
    in_sample = gold["cell_id"][gold["cell_id"].isin(sample["cell_id"])]
    if len(in_sample):
        raise InputError(f"{path}: gold cell {in_sample.iloc[0]} is a sample cell; gold cells lie outside the sample")
    located = gold.merge(grid[["cell_id", "col", "row"]], on="cell_id", how="left")
    unknown = located["cell_id"][located["col"].isna()]
    if len(unknown):
        raise InputError(f"{path}: gold cell {unknown.iloc[0]} is not a cell of the grid")
    return located.astype({"col": np.int64, "row": np.int64})


def read_layout(folder: Path) -> dict[str, Any]:
    """chips/layout.json; InputError naming it when it is missing (chips of an earlier
    version: run `urbanmap validate sample` again) or unreadable."""
    path = Path(folder) / chips.LAYOUT_FILE
    if not path.is_file():
        raise InputError(f"{path}: not found; the chips predate the web app: run `urbanmap validate sample` again")
    try:
        layout: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        _ = layout["panels"], layout["side"], layout["cell"], layout["stretch"], layout["periods"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a chips layout ({exc})") from None
    return layout


def gold_chips(settings: ValidationSettings, layout: dict[str, Any], gold: pd.DataFrame) -> list[bytes]:
    """The gold cells' chips as PNG bytes, in order: the same mosaics, layout and stretch
    as the sample's chips. InputError when the chips were made for other periods."""
    periods = tuple(str(p) for p in layout["periods"])
    if periods != settings.chip_periods:
        raise InputError(f"{settings.chips_dir / chips.LAYOUT_FILE}: chips of periods {', '.join(periods)}, but the "
                         f"config's are {', '.join(settings.chip_periods)}: run `urbanmap validate sample` again")
    if gold.empty:
        return []
    _, cell_size, crs = io.read_cells(settings.grid, "grid", ["cell_id"])
    lattice = chip_lattice(settings, cell_size, crs)
    comps = layout["composites"]  # the sample's chips' bands, whatever the config says now
    bands = list(dict.fromkeys([*comps["true"], *comps["false"]]))
    true_bands, false_bands = [bands.index(b) for b in comps["true"]], [bands.index(b) for b in comps["false"]]
    limits = {k: np.asarray(v, float) for k, v in layout["stretch"].items()}
    sheet = chips.SheetLayout(periods, int(layout["side"]), (int(layout["cell"][0]), int(layout["cell"][1])),
                              int(layout["gap"]), int(layout["caption"]))
    windows = [read_chip_windows(settings, settings.chip_mosaics[k], period, lattice, gold, bands)
               for k, period in enumerate(periods)]
    out = []
    for k, cell in enumerate(gold["cell_id"]):
        image = chips.render_sheet(sheet, chips.sheet_panels(windows, k, true_bands, false_bands, limits),
                                   int(layout["scale"]), [chips.caption(cell, y, comps["false"]) for y in periods])
        buffer = bytes_io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        out.append(buffer.getvalue())
    return out


def items_table(sample: pd.DataFrame, gold: pd.DataFrame, gold_pngs: Sequence[bytes], share: float,
                seed: int) -> pd.DataFrame:
    """The database's items: the sample's cells in order (copies 2 for the double-coded
    share, drawn from the seed, else 1), then the gold cells (copies 0: every
    interpreter gets each once)."""
    double = double_coded(len(sample), share, seed)
    first = pd.DataFrame({
        "cell_id": sample["cell_id"], "sample_id": sample["sample_id"], "copies": np.where(double, 2, 1),
        "gold_answer": None, "chip": sample["chip"], "chip_png": None, "col": sample["col"], "row": sample["row"],
        "lon": sample["lon"], "lat": sample["lat"], "stratum": sample["stratum"], "map_class": sample["map_class"],
    })
    second = pd.DataFrame({
        "cell_id": gold["cell_id"], "sample_id": None, "copies": 0, "gold_answer": gold["answer"], "chip": None,
        "chip_png": list(gold_pngs), "col": gold["col"], "row": gold["row"], "lon": None, "lat": None,
        "stratum": None, "map_class": None,
    })
    return pd.concat([first, second], ignore_index=True).astype(object).where(lambda f: f.notna(), None)


# --- maps ---------------------------------------------------------------------------------

#: Colours of the classes on the maps (RGB); cells of no class are white.
COLOURS = {
    "urban": (200, 40, 30), "non_urban": (236, 226, 196), "nodata": (160, 160, 160),
    "new_urban": (230, 60, 20), "urban_lost": (40, 110, 190), "stable_urban": (120, 60, 60),
    "stable_non_urban": (236, 226, 196),
}


@dataclass(frozen=True)
class CellMap:
    """A map of one value per cell, one square of `scale` pixels per cell, north up.

    Attributes:
        png: the image.
        col0, row1: the westernmost column and northernmost row of the map's cells: a
            cell (col, row) is at x = col - col0, y = row1 - row in cell units.
        width, height: the map's size in cells; scale: pixels per cell.
        legend: (class, "#rrggbb", cells) of each class shown.
    """

    png: bytes
    col0: int
    row1: int
    width: int
    height: int
    scale: int
    legend: list[tuple[str, str, int]]


def cell_map(cols: np.ndarray, rows: np.ndarray, values: np.ndarray, max_side: int = 640) -> CellMap:
    """Render one class per cell (COLOURS) as a PNG at most `max_side` pixels wide or
    high (at least one pixel per cell)."""
    col0, row0 = int(cols.min()), int(rows.min())
    width, height = int(cols.max()) - col0 + 1, int(rows.max()) - row0 + 1
    scale = max(1, max_side // max(width, height))
    rgb = np.full((height, width, 3), 255, np.uint8)
    legend = []
    values = np.asarray(values, dtype=object)
    for name, colour in COLOURS.items():
        hit = values == name
        if hit.any():
            rgb[int(rows.max()) - rows[hit], cols[hit] - col0] = colour
            legend.append((name, "#{:02x}{:02x}{:02x}".format(*colour), int(hit.sum())))
    image = Image.fromarray(rgb).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    buffer = bytes_io.BytesIO()
    image.save(buffer, format="PNG")
    return CellMap(buffer.getvalue(), col0, int(rows.max()), width, height, scale, legend)


def read_cell_map(path: Path, what: str, column: str) -> CellMap:
    """`cell_map` of `column` of the per-cell table at `path`; InputError naming it."""
    table, _, _ = io.read_cells(path, what, [column])
    if table.empty:
        raise InputError(f"{path}: {what} has no cell")
    return cell_map(table["col"].to_numpy(np.int64), table["row"].to_numpy(np.int64), table[column].to_numpy())
