"""Image chips for visual interpretation: the mosaic around a sampled cell as PNG.

Each chip shows the cell and `context` cells on every side ((2 context + 1) x
patch_size mosaic pixels square, north up, in the grid's CRS), twice side by side: a
true-colour composite (red, green, blue) and a false-colour one (nir, red, green:
vegetation red, built-up grey-blue), with the cell outlined. Every chip of a sample uses
the same linear stretch (per band, percentiles of all chips' valid pixels), so
brightness means the same thing from chip to chip. Pixels without data are black.
The map class is not shown: interpretation stays blind to the map.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def render(true_rgb: np.ndarray, false_rgb: np.ndarray, context: int, patch: int, scale: int,
           caption: str) -> Image.Image:
    """One chip: the two composites side by side, magnified `scale` times (nearest),
    the centre cell outlined in yellow, a caption line below. Returns a PIL image."""
    gap, caption_h = 6, 16
    side = true_rgb.shape[0] * scale
    image = Image.new("RGB", (2 * side + gap, side + caption_h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    lo, hi = context * patch * scale, (context + 1) * patch * scale - 1
    for k, rgb in enumerate((true_rgb, false_rgb)):
        x0 = k * (side + gap)
        image.paste(Image.fromarray(rgb).resize((side, side), Image.Resampling.NEAREST), (x0, 0))
        draw.rectangle([x0 + lo - 1, lo - 1, x0 + hi + 1, hi + 1], outline=(255, 230, 0), width=2)
    draw.text((2, side + 2), caption, fill=(0, 0, 0))
    return image


def write_chips(folder: Path, names: Sequence[str], captions: Sequence[str], windows: np.ndarray,
                true_bands: Sequence[int], false_bands: Sequence[int], context: int, patch: int, scale: int,
                percentiles: Sequence[float] = (2, 98)) -> list[Path]:
    """Write one PNG per window to `folder/<name>.png`.

    Args:
        windows: (n, b, s, s) from read_windows.
        true_bands, false_bands: 3 positions each in the windows' band axis (R, G, B).
    Returns:
        the paths written, in order.
    """
    t_lim = stretch_limits(windows[:, list(true_bands)], percentiles)
    f_lim = stretch_limits(windows[:, list(false_bands)], percentiles)
    written = []
    for k in tqdm(range(len(names)), desc="chips: write", unit="chip", disable=None, leave=False):
        image = render(to_rgb(windows[k, list(true_bands)], t_lim), to_rgb(windows[k, list(false_bands)], f_lim),
                       context, patch, scale, captions[k])
        path = Path(folder) / f"{names[k]}.png"
        image.save(path, compress_level=1)  # fast zlib: chips are photos, not line art
        written.append(path)
    return written
