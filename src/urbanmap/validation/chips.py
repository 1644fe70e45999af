"""Image chips for visual interpretation: the mosaics around a sampled cell as one PNG.

A chip (a sheet) holds one row of panels per period, the validated period (periods.target)
on top and the census period (periods.census) below, and one column per composite: true
colour (red, green, blue) and false colour (by default swir1, nir, red: vegetation green,
built-up magenta, water dark). Each panel shows the cell and `context` cells on every
side ((2 context + 1) x patch_size mosaic pixels square, north up, in the grid's CRS),
magnified `scale` times, with the cell outlined in yellow; a caption line below each row
names the cell and the period. Every panel of a sample uses the same linear stretch per
composite (per band, percentiles of all chips' valid pixels of both periods), so
brightness means the same thing from chip to chip and from period to period. Pixels
without data are black. The map class is not shown, nor the sample id: interpretation
stays blind to the map, and a gold-standard cell's chip looks like any other.

`layout.json` beside the chips records where each panel lies in a sheet, the centre
cell's box in a panel and the stretch, so the web app can show each panel on its own
(and zoom them together), and render chips of other cells (gold-standard cells) that
look the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw
from rasterio.windows import Window
from tqdm import tqdm

from urbanmap.core.lattice import PixelLattice


def read_windows(src: Any, lattice: PixelLattice, cols: ArrayLike, rows: ArrayLike, indexes: Sequence[int],
                 context: int) -> np.ndarray:
    """The mosaic around each cell: (n, b, s, s) float32, s = (2 context + 1) patch_size,
    row 0 north; NaN outside the raster or where it has no data.

    One windowed read per cell: a sample is a few hundred scattered cells, so reading
    whole blocks (as patchset.read_patches does for dense samples) would read more."""
    p = lattice.patch_size
    side = (2 * context + 1) * p
    row_off, col_off = lattice.cell_offsets(cols, rows)
    out = np.full((len(row_off), len(indexes), side, side), np.nan, np.float32)
    nodata = src.nodata
    r0, c0 = row_off - context * p, col_off - context * p
    # The window clipped to the raster, read into its place in the NaN-filled chip
    # (rasterio's boundless reads build a VRT per call: ~20 times slower).
    rr0, cc0 = np.maximum(r0, 0), np.maximum(c0, 0)
    rr1, cc1 = np.minimum(r0 + side, src.height), np.minimum(c0 + side, src.width)
    for k in tqdm(range(len(row_off)), desc="chips: read", unit="cell", disable=None, leave=False):
        if rr1[k] <= rr0[k] or cc1[k] <= cc0[k]:
            continue
        window = Window(int(cc0[k]), int(rr0[k]), int(cc1[k] - cc0[k]), int(rr1[k] - rr0[k]))
        data = src.read(list(indexes), window=window, out_dtype="float32")
        if nodata is not None and not np.isnan(nodata):
            data[data == nodata] = np.nan
        out[k, :, rr0[k] - r0[k]: rr1[k] - r0[k], cc0[k] - c0[k]: cc1[k] - c0[k]] = data
    return out


def stretch_limits(windows: np.ndarray, percentiles: Sequence[float] = (2, 98)) -> np.ndarray:
    """(b, 2) low and high values per band over all windows ((n, b, s, s)), ignoring NaN."""
    bands = np.moveaxis(windows, 1, 0).reshape(windows.shape[1], -1)
    lims = np.nanpercentile(bands, list(percentiles), axis=1).T if np.isfinite(bands).any() else np.zeros((bands.shape[0], 2))
    lims = np.nan_to_num(lims)
    lims[:, 1] = np.maximum(lims[:, 1], lims[:, 0] + 1e-6)
    return lims


def to_rgb(window: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """(3, s, s) reflectance -> (s, s, 3) uint8 by the linear stretch `limits` ((3, 2));
    NaN -> black."""
    lo, hi = limits[:, 0, None, None], limits[:, 1, None, None]
    scaled = np.clip((window - lo) / (hi - lo), 0, 1)
    rgb: np.ndarray = np.moveaxis(np.nan_to_num(scaled) * 255 + 0.5, 0, -1).astype(np.uint8)
    return rgb


#: Composites of a sheet, left to right.
COMPOSITES = ("true", "false")
#: The file beside the chips that describes their layout.
LAYOUT_FILE = "layout.json"


@dataclass(frozen=True)
class SheetLayout:
    """Where the panels of a chip sheet lie, in sheet pixels.

    Attributes:
        periods: one row of panels per period (its label), top first.
        side: a panel's side, (2 context + 1) x patch_size x scale.
        cell: (first, last) pixel of the centre cell in a panel, both axes.
        gap: pixels between panels, and between a row's caption and the next row.
        caption: height of the caption line below each row.
    """

    periods: tuple[str, ...]
    side: int
    cell: tuple[int, int]
    gap: int = 6
    caption: int = 16

    @classmethod
    def of(cls, periods: Sequence[str], context: int, patch: int, scale: int) -> SheetLayout:
        """The layout of sheets of `periods` with `context` cells around the cell."""
        return cls(tuple(str(p) for p in periods), (2 * context + 1) * patch * scale,
                   (context * patch * scale, (context + 1) * patch * scale - 1))

    @property
    def width(self) -> int:
        """The sheet's width in pixels."""
        return len(COMPOSITES) * self.side + (len(COMPOSITES) - 1) * self.gap

    @property
    def height(self) -> int:
        """The sheet's height in pixels."""
        return len(self.periods) * (self.side + self.caption) + (len(self.periods) - 1) * self.gap

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """(x, y) of the upper-left pixel of the panel of period row `row`, composite `column`."""
        return column * (self.side + self.gap), row * (self.side + self.caption + self.gap)

    def to_dict(self) -> dict[str, object]:
        """The layout as layout.json records it (panels listed with their origins)."""
        panels = [{"period": y, "composite": c, "x": self.origin(i, j)[0], "y": self.origin(i, j)[1]}
                  for i, y in enumerate(self.periods) for j, c in enumerate(COMPOSITES)]
        return {"width": self.width, "height": self.height, "side": self.side, "cell": list(self.cell),
                "gap": self.gap, "caption": self.caption, "periods": list(self.periods), "panels": panels}


def render_sheet(layout: SheetLayout, panels: Sequence[Sequence[np.ndarray]], scale: int,
                 captions: Sequence[str]) -> Image.Image:
    """One sheet: `panels[row][column]` ((s, s, 3) uint8, one row per layout period, one
    column per composite) magnified `scale` times (nearest), the centre cell outlined in
    yellow, `captions[row]` below each row. Returns a PIL image."""
    image = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    lo, hi = layout.cell
    for i, row in enumerate(panels):
        for j, rgb in enumerate(row):
            x0, y0 = layout.origin(i, j)
            image.paste(Image.fromarray(rgb).resize((layout.side, layout.side), Image.Resampling.NEAREST), (x0, y0))
            draw.rectangle([x0 + lo - 1, y0 + lo - 1, x0 + hi + 1, y0 + hi + 1], outline=(255, 230, 0), width=2)
        draw.text((2, layout.origin(i, 0)[1] + layout.side + 2), captions[i], fill=(0, 0, 0))
    return image


def caption(cell_id: str, period: str, false_colour: Sequence[str]) -> str:
    """The caption of a sheet's row: the cell, the period and the composites (no sample id,
    no map class)."""
    return f"{cell_id}  {period}   true colour | false colour ({'/'.join(false_colour)})"


def sheet_panels(windows: Sequence[np.ndarray], k: int, true_bands: Sequence[int], false_bands: Sequence[int],
                 limits: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """The panels of cell `k`: for each period's windows ((n, b, s, s)), its true- and
    false-colour RGB by the stretch `limits` ({"true": (3, 2), "false": (3, 2)})."""
    return [[to_rgb(w[k, list(true_bands)], limits["true"]), to_rgb(w[k, list(false_bands)], limits["false"])]
            for w in windows]


def write_sheets(folder: Path, names: Sequence[str], cell_ids: Sequence[str], periods: Sequence[str],
                 windows: Sequence[np.ndarray], bands: Sequence[str], true_colour: Sequence[str],
                 false_colour: Sequence[str], context: int, patch: int, scale: int,
                 percentiles: Sequence[float] = (2, 98)) -> list[Path]:
    """Write one sheet per cell to `folder/<name>.png`, and `folder/layout.json`.

    Args:
        periods: the sheets' rows, top first; windows: each period's (n, b, s, s) from
            read_windows, bands named by `bands`.
        true_colour, false_colour: 3 band names each (R, G, B).
    Returns:
        the sheets written, in order.
    """
    true_bands = [list(bands).index(b) for b in true_colour]
    false_bands = [list(bands).index(b) for b in false_colour]
    limits = {"true": stretch_limits(np.concatenate([w[:, true_bands] for w in windows]), percentiles),
              "false": stretch_limits(np.concatenate([w[:, false_bands] for w in windows]), percentiles)}
    layout = SheetLayout.of(periods, context, patch, scale)
    written = []
    for k in tqdm(range(len(names)), desc="chips: write", unit="chip", disable=None, leave=False):
        image = render_sheet(layout, sheet_panels(windows, k, true_bands, false_bands, limits), scale,
                             [caption(cell_ids[k], y, false_colour) for y in layout.periods])
        path = Path(folder) / f"{names[k]}.png"
        image.save(path, compress_level=1)  # fast zlib: chips are photos, not line art
        written.append(path)
    record = {**layout.to_dict(), "context": int(context), "patch": int(patch), "scale": int(scale),
              "composites": {"true": list(true_colour), "false": list(false_colour)},
              "stretch": {name: [[float(v) for v in pair] for pair in lim] for name, lim in limits.items()}}
    (Path(folder) / LAYOUT_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return written
