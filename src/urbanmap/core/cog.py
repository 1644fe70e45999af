"""Cloud-Optimized GeoTIFFs written block by block.

A raster computed in blocks is written into a temporary band-interleaved GeoTIFF and,
as each block comes, into temporary GeoTIFFs of its overviews (the NaN-ignoring mean of
2 x 2, 4 x 4, ... pixels, computed from the block in NumPy). GDAL's COG driver then
copies them into one COG (tiles, overviews, header first) through a VRT that declares
the overviews, as rio-cogeo does with existing overviews. Averaging in NumPy per block
is written by hand because GDAL's own overview pass re-reads the whole raster after the
fact: measured on a 10-band 1980 x 1980 float32 mosaic, it triples the COG step's CPU
time (3.1-3.5 s against 1.1 s). When the blocks are not aligned with every overview
level (block side not divisible by the coarsest factor), GDAL computes the overviews.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

#: Creation options of every COG this project writes; see GDAL's COG driver.
DEFAULTS = {
    "compress": "zstd",  # fast to write and read; DEFLATE for older readers
    "level": 1,  # ZSTD level: 1 is ~3x faster than 9 and ~5% larger on reflectance
    "predictor": "yes",  # floating-point predictor for float32 (3), horizontal for ints (2)
    "blocksize": 512,
    "overview_resampling": "average",  # the mean of valid pixels (nodata ignored)
}


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """The COG driver's overview factors: halving until the image fits in one tile."""
    factors, f = [], 1
    while max(width, height) / f > blocksize:
        f *= 2
        factors.append(f)
    return factors


def mean_pool(block: np.ndarray, f: int) -> np.ndarray:
    """Mean of the non-NaN values of each f x f group of pixels (NaN where none).

    block: float32 (bands, rows, cols); rows and cols that are not multiples of f (the
    raster's last row and column of blocks) are padded with NaN. Returns float32
    (bands, ceil(rows / f), ceil(cols / f)).
    """
    return mean_pools(block, [f])[0]


def mean_pools(block: np.ndarray, factors: Sequence[int]) -> list[np.ndarray]:
    """mean_pool(block, f) for each of `factors` (increasing, each a multiple of the one
    before, as overview_factors' powers of two are), each level summed from the one
    before, ~5x faster than pooling each level from the block (measured: 3.8 ms against
    19.5 ms for a 10-band 264 x 264 block, levels 2 and 4). Sums are float64 of float32
    values, so summing in another order moves a sum by float64 rounding at most, far
    below float32's: the means are those of a direct f x f pooling (tested, and the
    default mosaic's COG is the same byte for byte).
    """
    b, h, w = block.shape
    top = int(factors[-1]) if len(factors) else 1
    hh, ww = -(-h // top) * top, -(-w // top) * top
    valid = ~np.isnan(block)
    total = np.zeros((b, hh, ww), np.float64)  # NaN padding: adds nothing to sum or count
    np.copyto(total[:, :h, :w], block, where=valid)
    n = np.zeros((b, hh, ww), np.int32)
    n[:, :h, :w] = valid
    out, prev = [], 1
    for f in factors:
        r = int(f) // prev
        if r * prev != int(f):
            raise ValueError(f"overview factors must be multiples of each other, got {list(factors)}")
        total, n = _sum_groups(total, r), _sum_groups(n, r)
        prev = int(f)
        k, m = -(-h // f), -(-w // f)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(n[:, :k, :m] > 0, total[:, :k, :m] / n[:, :k, :m], np.nan).astype(np.float32))
    return out


def _sum_groups(a: np.ndarray, r: int) -> np.ndarray:
    """Sums of r x r groups of (bands, rows, cols), rows and cols multiples of r: strided
    slices added in place (a reshape's small inner axes make NumPy's sum ~5x slower)."""
    if r == 1:
        return a
    rows = a[:, 0::r].copy()
    for k in range(1, r):
        rows += a[:, k::r]
    out = rows[:, :, 0::r].copy()
    for k in range(1, r):
        out += rows[:, :, k::r]
    return out


class BlockWriter:
    """Write a float32 raster block by block, then copy it into a COG.

    Args:
        base: path prefix of the temporary files (removed by `close`).
        profile: rasterio profile of the full raster (width, height, count, crs,
            transform, nodata); written float32, band-interleaved, uncompressed.
        names: band descriptions.
        blocksize: the COG's tile size (also decides the overview levels).
        block_px: side of the blocks `write` will receive (offsets are multiples of it),
            or None: overviews are then left to GDAL.
    """

    def __init__(self, base: Path, profile: dict[str, Any], names: Sequence[str], blocksize: int, block_px: int | None):
        self.base = Path(base)
        self.names = list(names)
        self.profile = {**profile, "driver": "GTiff", "dtype": "float32", "tiled": True, "blockxsize": 256,
                        "blockysize": 256, "interleave": "band", "compress": "none", "BIGTIFF": "IF_SAFER"}
        factors = overview_factors(profile["width"], profile["height"], int(blocksize))
        self.factors = factors if block_px and all(block_px % f == 0 for f in factors) else []
        self.paths = [self.base.with_name(self.base.name + ".tif")]
        self.paths += [self.base.with_name(f"{self.base.name}.ovr{f}.tif") for f in self.factors]
        self.datasets = []
        try:
            for path, f in zip(self.paths, [1, *self.factors]):
                t = profile["transform"] * rasterio.Affine.scale(f)
                w, h = -(-profile["width"] // f), -(-profile["height"] // f)
                ds = rasterio.open(path, "w", **{**self.profile, "width": w, "height": h, "transform": t})
                ds.descriptions = tuple(self.names)
                self.datasets.append(ds)
        except BaseException:
            self.close()
            raise

    def write(self, block: np.ndarray, row_off: int, col_off: int) -> None:
        """Write float32 (bands, rows, cols) at pixel offsets, and its overviews."""
        b, h, w = block.shape
        self.datasets[0].write(block, window=Window(col_off, row_off, w, h))
        for f, ds, pooled in zip(self.factors, self.datasets[1:], mean_pools(block, self.factors)):
            ds.write(pooled, window=Window(col_off // f, row_off // f, pooled.shape[2], pooled.shape[1]))

    def _vrt(self) -> Path:
        """A VRT of the full raster declaring the overview files as its overviews."""
        p = self.profile
        t = p["transform"]
        bands = []
        for i, name in enumerate(self.names, start=1):
            overviews = "".join(
                f"<Overview><SourceFilename relativeToVRT=\"0\">{escape(str(p))}</SourceFilename>"
                f"<SourceBand>{i}</SourceBand></Overview>" for p in self.paths[1:]
            )
            bands.append(
                f"<VRTRasterBand dataType=\"Float32\" band=\"{i}\"><Description>{escape(name)}</Description>"
                f"<NoDataValue>{p['nodata']}</NoDataValue><SimpleSource><SourceFilename relativeToVRT=\"0\">"
                f"{escape(str(self.paths[0]))}</SourceFilename><SourceBand>{i}</SourceBand></SimpleSource>"
                f"{overviews}</VRTRasterBand>"
            )
        xml = (
            f"<VRTDataset rasterXSize=\"{p['width']}\" rasterYSize=\"{p['height']}\">"
            f"<SRS>{escape(rasterio.crs.CRS.from_user_input(p['crs']).to_wkt())}</SRS>"
            f"<GeoTransform>{t.c!r},{t.a!r},{t.b!r},{t.f!r},{t.d!r},{t.e!r}</GeoTransform>{''.join(bands)}</VRTDataset>"
        )
        path = self.base.with_name(self.base.name + ".vrt")
        path.write_text(xml)
        self.paths.append(path)
        return path

    def to_cog(self, dst: str | os.PathLike[str], threads: int = 1, **options: Any) -> None:
        """Close the temporary files and copy them into the COG `dst` (written in place:
        callers wrap it in io.atomic_output). Options override DEFAULTS."""
        for ds in self.datasets:
            ds.close()
        self.datasets = []
        src = self._vrt() if self.factors else self.paths[0]
        copy_to_cog(src, dst, threads, existing_overviews=bool(self.factors), **options)

    def close(self) -> None:
        """Close and remove the temporary files."""
        for ds in self.datasets:
            ds.close()
        self.datasets = []
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_to_cog(src: str | os.PathLike[str], dst: str | os.PathLike[str], threads: int = 1, existing_overviews: bool = False,
                **options: Any) -> None:
    """Copy the raster `src` to `dst` as a COG: tiled (`blocksize`), compressed, with
    overviews down to one tile (`src`'s own when `existing_overviews`), band
    descriptions, nodata and tags kept. Options override DEFAULTS (keys as in DEFAULTS).
    """
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    creation = {
        "COMPRESS": str(opts["compress"]).upper(),
        "PREDICTOR": str(opts["predictor"]).upper(),
        "BLOCKSIZE": int(opts["blocksize"]),
        "RESAMPLING": str(opts["overview_resampling"]).upper(),
        "NUM_THREADS": int(threads),
        "BIGTIFF": "IF_SAFER",
    }
    if existing_overviews:
        creation["OVERVIEWS"] = "FORCE_USE_EXISTING"
    if opts.get("level") is not None and creation["COMPRESS"] in ("ZSTD", "DEFLATE", "LZMA"):
        creation["LEVEL"] = int(opts["level"])
    rasterio.shutil.copy(str(src), str(dst), driver="COG", **creation)
