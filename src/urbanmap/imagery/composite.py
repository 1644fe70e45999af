"""`data.imagery.source: file`: an existing annual composite instead of Landsat scenes.

Many offices already have a composite (INEGI's data cube publishes Landsat geomedians;
others use Sentinel-2 or GHSL layers). This module aligns such a multi-band GeoTIFF
(any CRS, any pixel size) to the region's pixel lattice (lattice.py) and writes it as
the `mosaic` stage does: `<region_dir>/mosaic_<period>.tif`, a float32 COG (cog.py) with
band descriptions `blue green red nir swir1 swir2`, then the optional extra bands
(`data.imagery.extra_bands`, e.g. geomad's `smad emad bcmad`) that the file has, nodata
NaN; and `mosaic_<period>.json` (DVC metrics). Everything after the mosaic is unchanged.

Config (`data.imagery`):

- `file`: the GeoTIFF; `{period}`, `{year}`, `{region_dir}`, `{out_dir}`, `{name}` are filled in, so
  one file per period (`composite_{period}.tif`) or one for all periods;
- `bands`: null to match bands by their description (case-insensitive; the STAC common
  names `nir08 swir16 swir22` are accepted too), or an explicit mapping
  `{blue: 1, green: 2, ...}` of band names to 1-based band indexes; a file with fewer
  than six mappable bands is refused;
- `extra_bands`: names of further bands carried to the mosaic (and to patches and
  features) when the file has them;
- `scale`, `offset`: reflectance = value x scale + offset (e.g. 0.0001 and 0 for DN of
  Sentinel-2 L2A or DEA; Landsat C2: 2.75e-5 and -0.2); null takes the file's own band
  scale/offset metadata (1 and 0 when it has none). They apply to the six bands; extra
  bands always use the file's own scale/offset metadata;
- `nodata`: overrides the file's nodata value (null: the file's);
- `resampling`: a rasterio Resampling name, or null: `average` when the file's pixels are
  at least 1.5 times finer than the lattice's (each lattice pixel is the area-weighted
  mean of the pixels it covers), else `nearest` (as the mosaic stage warps scenes:
  no spectrum is invented by interpolation).

Warping is done by GDAL (rasterio.warp.reproject), one block of cells at a time, so
memory does not grow with the region.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.warp import Resampling, reproject
from tqdm import tqdm

from urbanmap.core import cog, io, paths, rasters
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, block_transform, patch_size, plan_blocks
from urbanmap.core.periods import Period
from urbanmap.imagery.landsat import BANDS, COMMON_NAMES

#: Cells per block side when warping (bounded further so a block is <= 2048 px a side).
BLOCK_PX = 2048
#: Band descriptions accepted for each of the six bands, besides its own name.
ALIASES = {name: {name, COMMON_NAMES[name]} for name in BANDS}
#: How errors name the file.
MOSAIC_FILE = "mosaic file (data.imagery.file)"


def match_bands(
    descriptions: Sequence[str | None], count: int, mapping: Mapping[str, Any] | None = None, extra: Sequence[str] = (),
    where: str = "mosaic",
) -> dict[str, int]:
    """Band name -> 1-based band index of the six bands, then of the `extra` bands present.

    Args:
        descriptions: the file's band descriptions (None where unset), `count` of them.
        mapping: explicit {name: index} (indexes 1..count); bands it leaves out (or all,
            when None) are matched by description.
        extra: optional band names, kept when the file (or the mapping) has them.
    Raises InputError if one of the six bands cannot be mapped.
    """
    found: dict[str, int] = {}
    for name, index in dict(mapping or {}).items():
        if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= count:
            raise InputError(f"data.imagery.bands: {name}: {index!r} is not a band index 1..{count} of {where}")
        found[str(name)] = index
    # Bands the mapping leaves out are matched by description.
    norm = [(d or "").strip().lower() for d in descriptions]
    for name in (*BANDS, *extra):
        if name not in found:
            hits = [i + 1 for i, d in enumerate(norm) if d in ALIASES.get(name, {name})]
            if hits:
                found[name] = hits[0]
    missing = [b for b in BANDS if b not in found]
    if missing:
        how = "data.imagery.bands" if mapping else "band descriptions " + ", ".join(repr(d) for d in descriptions)
        raise InputError(
            f"{where}: fewer than six mappable bands: no {', '.join(missing)} ({how}); "
            "set data.imagery.bands to {blue: 1, green: 2, ...}"
        )
    return {name: found[name] for name in (*BANDS, *[e for e in extra if e in found])}


def auto_resampling(src_pixel_m: float, lattice_pixel_m: float) -> str:
    """`average` when the source is >= 1.5x finer than the lattice, else `nearest`."""
    return "average" if src_pixel_m * 1.5 <= lattice_pixel_m else "nearest"


def calibration(src: Any, indexes: Sequence[int], scale: float | None, offset: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (scale, offset) as float32 arrays: the config's, else the file's metadata."""
    n = len(indexes)
    s = np.full(n, float(scale), np.float32) if scale is not None else np.array([src.scales[i - 1] for i in indexes], np.float32)
    o = np.full(n, float(offset), np.float32) if offset is not None else np.array([src.offsets[i - 1] for i in indexes], np.float32)
    return s, o


def align_block(src: Any, indexes: Sequence[int], scale: np.ndarray, offset: np.ndarray, nodata: float | None, crs: Any,
                transform: Any, shape: tuple[int, int], resampling: str, threads: int = 1) -> np.ndarray:
    """Warp bands of an open raster onto one block of the lattice.

    Args:
        src: open rasterio dataset (any CRS).
        indexes: 1-based band indexes (b of them), in output order.
        scale, offset: float32 (b,): value x scale + offset.
        nodata: source nodata value or None.
        crs, transform, shape: the block's CRS, affine transform and (rows, cols).
        resampling: rasterio Resampling name.
    Returns:
        float32 (b, rows, cols), NaN where the source has no data.
    """
    out = np.full((len(indexes), *shape), np.nan, np.float32)
    reproject(
        source=rasterio.band(src, list(indexes)), destination=out, src_nodata=nodata, dst_transform=transform,
        dst_crs=crs, dst_nodata=np.nan, resampling=Resampling[resampling], num_threads=max(1, int(threads)),
    )
    out *= np.asarray(scale, np.float32)[:, None, None]
    out += np.asarray(offset, np.float32)[:, None, None]
    return out


@dataclass(frozen=True)
class CompositeSettings:
    """What the `mosaic` stage reads from the config for `data.imagery.source: file`
    (see the module docstring), checked.

    Attributes:
        period: the period (period=, else periods.census).
        file: the composite's path, data.imagery.file with `{period}`, `{year}`,
            `{region_dir}`, `{out_dir}`, `{name}` filled in.
        grid: the region's grid.parquet.
        pixel_size: data.pixel_size, metres; patch_size: data.patch_size or None.
        bands: data.imagery.bands, band name -> 1-based index, or None: by description.
        extra_bands: data.imagery.extra_bands.
        scale, offset: data.imagery.scale and offset for the six bands, or None: the
            file's own metadata.
        nodata: data.imagery.nodata, or None: the file's.
        resampling: data.imagery.resampling (a rasterio Resampling name), or None: by
            the pixel sizes (auto_resampling).
        threads: GDAL's warp and COG threads (compute.threads).
        cog: the output COG's options (mosaic.cog).
        out: `<region_dir>/mosaic_<period>.tif`; summary: `<region_dir>/mosaic_<period>.json`.
    """

    period: Period
    file: str
    grid: Path
    pixel_size: float
    patch_size: int | None
    bands: dict[str, Any] | None
    extra_bands: tuple[str, ...]
    scale: float | None
    offset: float | None
    nodata: float | None
    resampling: str | None
    threads: int
    cog: dict[str, Any]
    out: Path
    summary: Path
    timings: Path

    @classmethod
    def from_config(cls, cfg: Any) -> CompositeSettings:
        """Read `cfg.data.imagery` (and the grid, compute.threads, mosaic.cog); InputError
        naming the config key that is wrong."""
        period = paths.stage_period(cfg)
        im = cfg.data.imagery
        if not im.get("file"):
            raise InputError("data.imagery.file: source is file but no file is given")
        resampling = im.get("resampling")
        if resampling is not None and str(resampling) not in Resampling.__members__:
            raise InputError(f"data.imagery.resampling: unknown {resampling!r} (e.g. nearest, bilinear, average)")
        mapping, patch = im.get("bands"), cfg.data.get("patch_size")
        scale, offset, nodata = im.get("scale"), im.get("offset"), im.get("nodata")
        return cls(
            period=period, file=paths.fill_path(im.file, cfg, period), grid=paths.grid(cfg), pixel_size=float(cfg.data.pixel_size),
            patch_size=int(patch) if patch else None,
            bands={str(k): v for k, v in mapping.items()} if mapping is not None else None,
            extra_bands=tuple(str(b) for b in (im.get("extra_bands") or [])),
            scale=float(scale) if scale is not None else None, offset=float(offset) if offset is not None else None,
            nodata=float(nodata) if nodata is not None else None,
            resampling=str(resampling) if resampling is not None else None,
            threads=int(cfg.compute.get("threads", 1) or 1),
            cog=dict(cfg.mosaic.cog) if cfg.get("mosaic") and cfg.mosaic.get("cog") else {},
            out=paths.mosaic(cfg, period), summary=paths.mosaic_summary(cfg, period), timings=paths.timings_log(cfg),
        )


@dataclass(frozen=True)
class Spec:
    """What to read from the file (from the config and the file's metadata).

    Attributes:
        path: the file.
        bands: band name -> 1-based index: the six bands, then the extra bands present.
        scale, offset: float32 (b,): value x scale + offset, in `bands` order.
        nodata: the source's nodata value, or None.
        resampling: a rasterio Resampling name.
    """

    path: str
    bands: dict[str, int]
    scale: np.ndarray
    offset: np.ndarray
    nodata: float | None
    resampling: str


def spec(src: Any, settings: CompositeSettings, lattice: PixelLattice) -> Spec:
    """The Spec of the open file settings.file, checked (bands, reflectance)."""
    path = settings.file
    bands = match_bands(list(src.descriptions), src.count, settings.bands, settings.extra_bands, path)
    six = [bands[b] for b in BANDS]
    s6, o6 = calibration(src, six, settings.scale, settings.offset)
    # Extra bands (e.g. spread bands stored as scaled integers) use the file's own
    # scale/offset metadata (1 and 0 when it has none).
    se, oe = calibration(src, [bands[b] for b in list(bands)[6:]], None, None)
    scale, offset = np.concatenate([s6, se]), np.concatenate([o6, oe])
    nodata = settings.nodata if settings.nodata is not None else src.nodata
    rasters.check_reflectance(src, six, path, "set data.imagery.scale and data.imagery.offset", s6, o6, nodata)
    resampling = settings.resampling
    if resampling is None:
        resampling = auto_resampling(rasters.source_pixel_m(src, lattice.crs), lattice.pixel_size)
    return Spec(path, bands, scale, offset, nodata, resampling)


def write_composite(src: Any, sp: Spec, settings: CompositeSettings, cells: pd.DataFrame,
                    lattice: PixelLattice) -> tuple[int, int]:
    """Warp the open file onto the lattice block by block into the COG settings.out
    (written atomically). Returns (pixels in the grid's cells, those with no data in one
    of the six bands); InputError if every pixel has no data."""
    names = list(sp.bands)
    indexes = list(sp.bands.values())
    size = lattice.patch_size
    block_cells = max(1, BLOCK_PX // size)
    blocks = plan_blocks(lattice, cells["col"].to_numpy(), cells["row"].to_numpy(), block_cells)
    profile = {"width": lattice.width, "height": lattice.height, "count": len(names), "crs": lattice.crs,
               "transform": lattice.transform, "nodata": float("nan")}
    average = str(settings.cog.get("overview_resampling", "average")).lower() == "average"
    pixels = no_data = 0
    out = settings.out
    out.parent.mkdir(parents=True, exist_ok=True)
    io.remove_stale_temporaries(out)  # a killed run's blocks file and parts, before this run's
    with cog.BlockWriter(
        out.with_name(f".{out.stem}.blocks-{os.getpid()}"), profile, names,
        int(settings.cog.get("blocksize", cog.DEFAULTS["blocksize"])), block_cells * size if average else None,
    ) as writer:
        for block in tqdm(blocks, desc="mosaic (file)", unit="block", disable=None, leave=False):
            data = align_block(src, indexes, sp.scale, sp.offset, sp.nodata, lattice.crs,
                               block_transform(lattice, block), (block.height, block.width), sp.resampling, settings.threads)
            writer.write(data, block.row_off, block.col_off)
            inside = block.in_cells
            pixels += int(inside.sum())
            no_data += int((np.isnan(data[:6]).any(axis=0) & inside).sum())
        if pixels and no_data == pixels:
            raise InputError(f"{sp.path}: the mosaic file has no data over the grid's cells")
        with io.atomic_output(out) as tmp:
            writer.to_cog(tmp, threads=settings.threads, **settings.cog)
    return pixels, no_data


def run(cfg: Any) -> None:
    """Stage `mosaic` for `source: file`: the period's file -> mosaic_<period>.tif (COG), .json."""
    start = time.perf_counter()
    settings = CompositeSettings.from_config(cfg)
    path = settings.file
    if "://" not in path and not Path(path).is_file():
        raise InputError(f"period {settings.period.label}: no composite file {path} (data.imagery.file)")
    cells, cell_size, crs = io.read_cells(settings.grid, "grid", columns=["col", "row"])
    size = patch_size(cell_size, settings.pixel_size, settings.patch_size)
    lattice = PixelLattice.from_cells(cells["col"], cells["row"], cell_size, size, crs)
    with rasters.open_raster(path, MOSAIC_FILE) as src:
        if not rasters.footprint(src, crs).intersects(shapely.box(*lattice.bounds)):
            raise InputError(f"{path}: the mosaic file does not overlap the grid")
        sp = spec(src, settings, lattice)
        pixels, no_data = write_composite(src, sp, settings, cells, lattice)
    names = list(sp.bands)
    summary = {
        "period": settings.period.label,
        "source": f"file {path}",
        "bands": names,
        "band_indexes": dict(sp.bands),
        "scale": [float(f"{v:.7g}") for v in sp.scale[:6]],
        "offset": [float(f"{v:.7g}") for v in sp.offset[:6]],
        "resampling": sp.resampling,
        "pixels": pixels,
        "pixels_no_data": no_data,
        "valid_fraction": round(1 - no_data / max(pixels, 1), 6),
    }
    io.write_json(settings.summary, summary)
    io.log_timing(settings.timings, {"stage": "mosaic", "period": settings.period.label, "source": "file",
                                     "seconds": round(time.perf_counter() - start, 2), "pixels": pixels})
    print(
        f"mosaic {settings.period}: {path} ({', '.join(names)}; {sp.resampling}) aligned to {lattice.width} x "
        f"{lattice.height} px of {lattice.pixel_size:.2f} m; {no_data:,} of {pixels:,} pixels nodata -> {settings.out}"
    )
