"""The bring-your-own example: another office's inputs, generated deterministically.

`python -m urbanmap.examples.byo <dir> [--km 30] [--seed 8]` writes what an office
outside Mexico typically has, none of it in the grid's CRS (`conf/data/byo_example.yaml`
grids it in WGS 84 / UTM zone 33N, EPSG:32633, with 300 m cells):

- `boundary.gpkg`: the region's outline (a lobed polygon), EPSG:4326;
- `districts.gpkg`: four administrative units (columns `cvegeo`, `nom_mun`: the key and
  name columns the change and sdg stages read by default), EPSG:4326;
- `landcover.tif`: a categorical land-cover map with ESA WorldCover's codes (10 tree
  cover, 30 grassland, 40 cropland, 50 built-up, 60 bare, 80 water; 0 no data), uint8,
  EPSG:4326, 0.0001° pixels (about 7.4 m x 11.1 m at 48° N), of the census year
  2010, with the errors of a real map (in clumps over ~5% of the area, built-up and
  crops or grass are swapped);
- `composite_<year>.tif` for 2010 and 2019: an annual composite as a data cube
  publishes it: int16 surface reflectance x 10,000 (nodata -9999) in ETRS89-LAEA
  (EPSG:3035) at 30 m, bands `SR_B2 .. SR_B7` (blue .. swir2, so bands are mapped by
  index in the config), then geomad-like spread bands `smad emad bcmad` stored with
  their own scale in the band metadata; a few small holes of nodata (cloud remnants).

The landscape is drawn at 10 m in the grid's CRS: a city and towns whose built-up
density falls off from their centres, parks, and outside them water, bare soil, forest,
grassland and crop parcels from smooth random fields (synth.fields). Each 10 m pixel
takes a measured spectrum (../shared/data/spectra, grouped as the synth stage groups
them, synth.endmembers) of its class; the composite is that reflectance averaged over
each 30 m pixel (GDAL's area-weighted average: mixed pixels, as in reality) plus sensor
noise. By 2019 the city has grown into its fringe. Everything follows from the seed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from urbanmap.core.io import atomic_output
from urbanmap.imagery.synth import fields
from urbanmap.imagery.synth.endmembers import read_endmembers

#: Grid CRS and the region's centre (E, N metres; near 16.4° E 48.2° N).
GRID_CRS = "EPSG:32633"
CENTRE = (600_000.0, 5_340_000.0)
COMPOSITE_CRS, LANDCOVER_CRS = "EPSG:3035", "EPSG:4326"
YEARS = (2010, 2019)
TREE, GRASS, CROP, BUILT, BARE, WATER = 10, 30, 40, 50, 60, 80
#: End-member groups by class prefix of the spectra table (as conf/config.yaml's synth).
PREFIXES = {
    "impervious": ["impervious/built/"], "vegetation": ["vegetation"], "npv": ["pervious/npv/"],
    "soil": ["pervious/bare/"], "water": ["water"],
}
DEFAULT_SPECTRA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "spectra" / "landsat_spectra.csv"
#: Geomad-like spread of each class (emad, reflectance units) and the spread bands' scales.
EMAD = {TREE: 0.08, GRASS: 0.10, CROP: 0.16, BUILT: 0.04, BARE: 0.05, WATER: 0.03}
SPREAD_SCALE = {"smad": 1e-6, "emad": 1e-4, "bcmad": 1e-5}
PIXEL = 10.0


def landscape(rng: np.random.Generator, n: int, growth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Land-cover codes (uint8 (n, n)) at 10 m, and the settlement density (float32):
    `growth` builds over the fringe (density 0.40..0.5) as by a later year."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    towns = [(0.5, 0.5, 0.22)] + [(rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.04, 0.08)) for _ in range(5)]
    density = np.zeros((n, n), np.float32)
    for cy, cx, radius in towns:
        density = np.maximum(density, np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)))
    density += 0.12 * fields.smooth_noise(rng, (n, n), 40)
    terrain = fields.uniform(fields.octaves(rng, (n, n), [600, 150], [1.0, 0.4]))
    parcels = fields.pick(fields.uniform(fields.smooth_noise(rng, (n, n), 12)), 4)
    parks = fields.uniform(fields.smooth_noise(rng, (n, n), 15)) < 0.12
    codes = np.full((n, n), CROP, np.uint8)
    codes[parcels == 0] = GRASS
    codes[terrain > 0.68] = TREE
    codes[(terrain > 0.45) & (terrain < 0.47)] = BARE
    codes[terrain < 0.02] = WATER
    built_min = 0.40 if growth else 0.5
    codes[(density >= built_min) & ~parks & (codes != WATER)] = BUILT
    codes[(density >= built_min) & parks & (codes != WATER)] = GRASS
    return codes, density


def reflectance(rng: np.random.Generator, codes: np.ndarray, em: Any) -> tuple[np.ndarray, np.ndarray]:
    """Six-band reflectance (float32 (6, n, n)) and emad (float32 (n, n)) of the classes."""
    n = codes.shape[0]

    def draw(table: np.ndarray, scale_px: float) -> np.ndarray:
        drawn: np.ndarray = table[fields.pick(fields.uniform(fields.smooth_noise(rng, (n, n), scale_px)), len(table))]
        return drawn

    veg, imp, soil, npv, water = draw(em.vegetation, 8), draw(em.impervious, 2), draw(em.soil, 20), draw(em.npv, 10), draw(em.water, 30)
    mix = fields.uniform(fields.smooth_noise(rng, (n, n), 6))[..., None]
    out = np.empty((n, n, 6), np.float32)
    for code, value in (
        (TREE, veg),
        (GRASS, 0.65 * veg + 0.35 * npv),
        (CROP, (0.3 + 0.4 * mix) * veg + (0.7 - 0.4 * mix) * soil),  # annual median of a green and a bare season
        (BUILT, (0.65 + 0.3 * mix) * imp + (0.35 - 0.3 * mix) * veg),  # street trees and gardens
        (BARE, soil),
        (WATER, water),
    ):
        sel = codes == code
        out[sel] = value[sel]
    emad = np.zeros((n, n), np.float32)
    for code, value in EMAD.items():
        emad[codes == code] = value
    emad *= 1 + 0.3 * fields.smooth_noise(rng, (n, n), 5)
    return np.moveaxis(out, -1, 0), np.clip(emad, 0.005, None)


def _write(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata: float | None,
           descriptions: Sequence[str] | None = None, scales: Sequence[float] | None = None, **extra: Any) -> None:
    """A tiled, deflate-compressed GeoTIFF of (bands, rows, cols) `data`, written atomically."""
    profile = {"driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2], "count": data.shape[0],
               "dtype": data.dtype, "crs": crs, "transform": transform, "nodata": nodata, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", **extra}
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if descriptions:
                dst.descriptions = tuple(descriptions)
            if scales:
                dst.scales = tuple(scales)


def _target(src_transform: Affine, n: int, dst_crs: str, res: tuple[float, float]) -> tuple[Affine, int, int]:
    """The transform, width and height of the n x n 10 m landscape reprojected to
    `dst_crs` at resolution `res` (GDAL's default extent)."""
    bounds = (src_transform.c, src_transform.f - n * PIXEL, src_transform.c + n * PIXEL, src_transform.f)
    target: tuple[Affine, int, int] = calculate_default_transform(GRID_CRS, dst_crs, n, n, *bounds, resolution=res)
    return target


def _write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    """`frame` as a GeoPackage layer, written beside `path` and renamed into place (GDAL
    wants the .gpkg extension, so atomic_output's temporary name does not do)."""
    tmp = path.parent / f".{path.stem}-{os.getpid()}.gpkg"
    try:
        frame.to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def boundary_outline(km: float, seed: int) -> shapely.Polygon:
    """The region's outline in the grid's CRS: a lobed polygon within the central
    `km` x `km` (m) around CENTRE, its lobes' phase drawn from [seed, 0]."""
    rng = np.random.default_rng([seed, 0])
    angles = np.linspace(0, 2 * np.pi, 181)[:-1]
    radius = km * 1000 / 2 * (0.85 + 0.1 * np.sin(3 * angles + rng.uniform(0, 6)) + 0.04 * np.cos(7 * angles))
    return shapely.Polygon(np.column_stack([CENTRE[0] + radius * np.cos(angles), CENTRE[1] + radius * np.sin(angles)]))


def districts_of(outline: shapely.Polygon, km: float) -> gpd.GeoDataFrame:
    """Administrative units: `outline` cut into four quadrants around CENTRE, with key and
    name columns named as conf/data/byo_example.yaml names them, in lon/lat."""
    cx, cy = CENTRE
    big = km * 1000
    quadrants = [shapely.box(cx - big, cy, cx, cy + big), shapely.box(cx, cy, cx + big, cy + big),
                 shapely.box(cx - big, cy - big, cx, cy), shapely.box(cx, cy - big, cx + big, cy)]
    return gpd.GeoDataFrame(
        {"cvegeo": ["D01", "D02", "D03", "D04"], "nom_mun": ["North-West", "North-East", "South-West", "South-East"]},
        geometry=shapely.intersection(outline, quadrants), crs=GRID_CRS,
    ).to_crs(LANDCOVER_CRS)


def write_landcover(path: Path, codes: np.ndarray, transform: Affine, seed: int) -> None:
    """The land-cover map of the census year (uint8 (n, n) `codes` at 10 m on `transform`)
    in lon/lat at 0.0001°, nearest neighbour, with a real map's errors: in clumps over ~5%
    of the area (drawn from [seed, 4]), built-up and crops/grass swap."""
    n = codes.shape[0]
    lc_t, w, h = _target(transform, n, LANDCOVER_CRS, (1e-4, 1e-4))
    wrong = fields.uniform(fields.smooth_noise(np.random.default_rng([seed, 4]), (n, n), 8)) < 0.05
    mapped = codes.copy()
    mapped[wrong & (codes == BUILT)] = CROP
    mapped[wrong & np.isin(codes, (CROP, GRASS))] = BUILT
    lc = np.zeros((1, h, w), np.uint8)
    reproject(mapped, lc[0], src_transform=transform, src_crs=GRID_CRS, dst_transform=lc_t,
              dst_crs=LANDCOVER_CRS, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    _write(path, lc, LANDCOVER_CRS, lc_t, 0, ["landcover"])


def write_composite(path: Path, refl: np.ndarray, emad: np.ndarray, transform: Affine, seed: int, year: int) -> None:
    """A year's composite: (6, n, n) reflectance and (n, n) emad at 10 m on `transform`,
    area-weighted mean over 30 m LAEA pixels, sensor noise and small holes (from [seed, 3,
    year]), as int16 DN (x 10,000; spread bands with their own scale; nodata -9999)."""
    n = refl.shape[-1]
    layers = np.concatenate([refl, emad[None], (0.3 * emad**2)[None], (1.5 * emad)[None]])
    c_t, w, h = _target(transform, n, COMPOSITE_CRS, (30.0, 30.0))
    comp = np.full((len(layers), h, w), np.nan, np.float32)
    reproject(layers, comp, src_transform=transform, src_crs=GRID_CRS, dst_transform=c_t, dst_crs=COMPOSITE_CRS,
              resampling=Resampling.average, src_nodata=np.nan, dst_nodata=np.nan)
    noise_rng = np.random.default_rng([seed, 3, year])
    comp[:6] += noise_rng.normal(0, 0.004, comp[:6].shape).astype(np.float32)
    holes = fields.smooth_noise(noise_rng, (h, w), 4) > 3.0  # ~0.1% of pixels, in small clumps
    comp[:, holes] = np.nan
    scales = [1e-4] * 6 + [SPREAD_SCALE[b] for b in ("smad", "emad", "bcmad")]
    dn = np.round(comp / np.asarray(scales, np.float32)[:, None, None])
    dn = np.where(np.isnan(dn), -9999, np.clip(dn, -9998, 32767)).astype(np.int16)
    _write(path, dn, COMPOSITE_CRS, c_t, -9999, ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "smad", "emad", "bcmad"],
           scales, predictor=2)


def generate(out: str | Path, km: float = 30.0, seed: int = 8, spectra: str | Path = DEFAULT_SPECTRA) -> dict[str, Path]:
    """Write the example's inputs under `out` (see the module docstring); return their paths.

    The drawn landscape is a square of `km` + 2 km side (10 m pixels) centred on CENTRE;
    the boundary fits inside the central `km` x `km`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    em = read_endmembers(spectra, PREFIXES, 0.6)
    side = (km + 2) * 1000
    n = int(round(side / PIXEL))
    transform = Affine(PIXEL, 0, CENTRE[0] - side / 2, 0, -PIXEL, CENTRE[1] + side / 2)
    written = {"boundary": out / "boundary.gpkg", "districts": out / "districts.gpkg"}
    outline = boundary_outline(km, seed)
    boundary = gpd.GeoDataFrame({"name": ["example region"]}, geometry=[outline], crs=GRID_CRS).to_crs(LANDCOVER_CRS)
    _write_gpkg(boundary, written["boundary"], "boundary")
    _write_gpkg(districts_of(outline, km), written["districts"], "districts")
    for y, year in enumerate(YEARS):
        rng = np.random.default_rng([seed, 1])  # the same landscape every year ...
        codes, _ = landscape(rng, n, growth=y > 0)  # ... grown by the later year
        rng = np.random.default_rng([seed, 2])
        refl, emad = reflectance(rng, codes, em)
        if y == 0:
            written["landcover"] = out / "landcover.tif"
            write_landcover(written["landcover"], codes, transform, seed)
        written[f"composite_{year}"] = out / f"composite_{year}.tif"
        write_composite(written[f"composite_{year}"], refl, emad, transform, seed, year)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m urbanmap.examples.byo <dir> [--km] [--seed] [--spectra]`: write the example."""
    parser = argparse.ArgumentParser(prog="python -m urbanmap.examples.byo", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (conf/data/byo_example.yaml reads data/examples/byo)")
    parser.add_argument("--km", type=float, default=30.0, help="side of the region, km (default 30)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--spectra", default=str(DEFAULT_SPECTRA), help="measured spectra CSV")
    args = parser.parse_args(argv)
    for name, path in generate(args.out, args.km, args.seed, args.spectra).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
