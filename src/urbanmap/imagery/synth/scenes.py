"""One acquisition: sky (clouds, dilated-cloud rings, shadows, cirrus), Landsat 7's
SLC-off gaps, sensor noise, and the product written as USGS distributes it.

Everything here works on a window of one scene (rows x cols of the scene's 30 m UTM
grid, global pixel indices: fields.Win), and gives the same pixels whatever the window:

- `draw_sky`: clouds are where a multi-scale random field is above its normal quantile
  for the scene's `cover` (so a scene's cloud fraction is about `cover`); their opacity
  rises from 0.5 at the edge to 1 inside. Pixels within `dilate_px` of a cloud are the
  dilated-cloud ring (thin, hazy cloud edges). The shadow is the cloud mask displaced
  away from the sun by the cloud height over the tangent of the sun's elevation. Thin
  cirrus (Landsat 8-9 only, which have a cirrus band) is a separate large-scale layer.
- `slc_off_gaps`: the wedge-shaped gaps between scans of ETM+ after 2003-05-31: none
  within ~11 km of the ground track, widening to `max_gap_px` of every `period_px` rows
  along track at the swath edges (about 22% of a full scene).
- `observe`: the at-surface signal through the sky, plus Gaussian sensor noise, as
  Collection 2 DN (landsat.to_dn); fill (0) outside the valid pixels.
- `qa_pixel`: QA_PIXEL with USGS's bit meanings (landsat.QA).
- `write_product`: one Cloud-Optimized GeoTIFF per band (deflate, 256 px tiles,
  nodata 0; QA_PIXEL nodata 1), named as USGS names them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from urbanmap.imagery.landsat import BANDS, QA, QA_FILL, SR_FILL, band_filename, to_dn
from urbanmap.imagery.synth.fields import Win, field, field_octaves, pixel_noise, threshold

#: Reflectance of an optically thick cloud (blue .. swir2) and the share of surface
#: reflectance left in cloud shadow (diffuse light; more in the blue).
CLOUD_REFLECTANCE = np.array([0.55, 0.53, 0.52, 0.55, 0.40, 0.28], np.float32)
SHADOW_TRANSMISSION = np.array([0.50, 0.42, 0.38, 0.30, 0.26, 0.26], np.float32)
#: Opacity of the dilated ring (haze at cloud edges) and added reflectance of cirrus.
RING_OPACITY, CIRRUS_REFLECTANCE = 0.12, 0.03


@dataclass(frozen=True)
class Sky:
    """Masks and opacities of one scene; every array has the scene's (rows, cols)."""

    cloud: np.ndarray  # bool
    dilated: np.ndarray  # bool, ring around clouds, not cloud
    shadow: np.ndarray  # bool, not cloud
    cirrus: np.ndarray  # bool
    opacity: np.ndarray  # float32 0..1 (cloud and ring)
    cirrus_depth: np.ndarray  # float32 0..1


def shift(mask: np.ndarray, drow: int, dcol: int) -> np.ndarray:
    """`mask` moved by (drow, dcol) pixels, False where nothing moved in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(drow) >= h or abs(dcol) >= w:
        return out
    out[max(drow, 0): h + min(drow, 0), max(dcol, 0): w + min(dcol, 0)] = mask[
        max(-drow, 0): h - max(drow, 0), max(-dcol, 0): w - max(dcol, 0)
    ]
    return out


def shadow_offset(cloud_height_m: float, sun_azimuth_deg: float, sun_elevation_deg: float, pixel_size: float) -> tuple[int, int]:
    """(rows, cols) by which a cloud's shadow is displaced on a north-up raster."""
    d = cloud_height_m / np.tan(np.radians(sun_elevation_deg)) / pixel_size
    az = np.radians(sun_azimuth_deg)
    # The shadow lies away from the sun: east -sin(az) * d, north -cos(az) * d; rows grow southwards.
    return int(round(d * np.cos(az))), int(round(-d * np.sin(az)))


#: Sub-streams of a scene's key: cloud field, cirrus layer, sensor noise (+ band).
_CLOUD, _CIRRUS, _NOISE = 1, 2, 10


def sky_halo(dilate_px: int, shadow_rc: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of margin around a window that its sky depends on: clouds within
    `dilate_px` make the ring, clouds `shadow_rc` away cast the shadow."""
    return int(dilate_px) + abs(int(shadow_rc[0])), int(dilate_px) + abs(int(shadow_rc[1]))


def cloud_field(key: Sequence[int], win: Win, scales_px: Sequence[float], stride: int = 1) -> np.ndarray:
    """A scene's cloud field over a window (fields.field_octaves, weights 1, 0.5, 0.25)."""
    return field_octaves((*tuple(int(k) for k in key), _CLOUD), win, scales_px, [1.0, 0.5, 0.25][: len(scales_px)], stride)


def cloud_cut(key: Sequence[int], scene: Win, valid: Callable[[Win, int], np.ndarray], cover: float,
              scales_px: Sequence[float], samples: int = 250_000) -> float:
    """The cloud field's value above which lies the share `cover` of the scene's valid
    pixels, measured on a regular sample of about `samples` of its pixels (every one
    in a small scene): the realised cloud cover is then `cover` to within the sample's
    error (about 1% of the scene), whatever the tiles.

    Args:
        key, scales_px: the scene's cloud field (cloud_field).
        scene: the product's window; valid: function (Win, stride) -> bool samples.
    """
    if cover <= 0:
        return float("inf")
    stride = max(int(np.sqrt(scene.h * scene.w / samples)), 1)
    sample = Win(scene.r0, scene.c0, -(-scene.h // stride), -(-scene.w // stride))
    values = cloud_field(key, sample, scales_px, stride)[valid(sample, stride)]
    return float(np.quantile(values, 1.0 - cover)) if values.size else float("inf")


def draw_sky(
    key: Sequence[int], win: Win, valid: Callable[[Win], np.ndarray], cover: float, *, scales_px: Sequence[float],
    dilate_px: int, shadow_rc: tuple[int, int],
    cirrus: float = 0.0, cirrus_scale_px: float = 150.0, cut: float | None = None,
) -> Sky:
    """The sky of one scene over a window of the global pixel grid.

    Clouds are where the scene's cloud field (`cloud_field`) is at least `cut`, on valid
    pixels; by default `cut` is the field's normal quantile for `cover`, which gives
    about the share `cover` of a large area (the field's statistics over a finite scene
    vary around the analytic ones: `cloud_cut` measures the cut of a scene on a sample of
    its pixels instead, as the stage does). The ring and the shadow are
    computed over the window plus the halo (`sky_halo`) and cropped, so they do not
    depend on the window. Cirrus covers about the share `cirrus` of valid pixels (0: none).

    Args:
        key: integers naming the scene (the only randomness).
        win: the window (fields.Win).
        valid: function Win -> bool (h, w): pixels with data (footprint, SLC-off gaps).
    Returns:
        Sky over `win`.
    """
    key = tuple(int(k) for k in key)
    hr, hc = sky_halo(dilate_px, shadow_rc)
    outer = win.grow(hr, hc)
    inner = win.crop(outer)
    valid_o = valid(outer)
    cloud_o, opacity = draw_clouds(key, win, outer, valid_o, cover, scales_px, cut)
    cloud = cloud_o[inner]
    valid_w = valid_o[inner]
    ring = ndimage.binary_dilation(cloud_o, structure=np.ones((3, 3), bool), iterations=int(dilate_px))[inner] & ~cloud & valid_w
    opacity[ring] = RING_OPACITY
    shadow = shift(cloud_o, *shadow_rc)[inner] & ~cloud & valid_w
    cirrus_mask, depth = draw_cirrus(key, win, valid_w, cirrus, cirrus_scale_px)
    return Sky(cloud, ring, shadow, cirrus_mask, opacity, depth)


def draw_clouds(key: Sequence[int], win: Win, outer: Win, valid_o: np.ndarray, cover: float, scales_px: Sequence[float],
                cut: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The clouds of a scene (draw_sky) over `outer` (win plus the sky's halo).

    Returns (bool (outer.h, outer.w): cloud, on the valid pixels `valid_o`; float32
    (win.h, win.w): their opacity over `win`, 0.5 at the edge rising to 1 inside).
    """
    cloud_o = np.zeros((outer.h, outer.w), bool)
    opacity = np.zeros((win.h, win.w), np.float32)
    if cover > 0:
        inner = win.crop(outer)
        values = cloud_field(key, outer, scales_px)
        level = np.float32(threshold(cover) if cut is None else cut)
        cloud_o = valid_o & (values >= level)
        cloud = cloud_o[inner]
        opacity[cloud] = np.clip(0.5 + 1.5 * (values[inner][cloud] - level), 0.0, 1.0)
    return cloud_o, opacity


def draw_cirrus(key: Sequence[int], win: Win, valid: np.ndarray, cirrus: float,
                scale_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Thin cirrus over about the share `cirrus` of the `valid` pixels of `win` (0: none).

    Returns (bool (win.h, win.w) cirrus, float32 (win.h, win.w) its depth 0..1).
    """
    cirrus_mask = np.zeros((win.h, win.w), bool)
    depth = np.zeros((win.h, win.w), np.float32)
    if cirrus > 0:
        layer = field((*key, _CIRRUS), win, scale_px)
        level = np.float32(threshold(cirrus))
        cirrus_mask = valid & (layer >= level)
        depth[cirrus_mask] = np.clip(0.3 + (layer[cirrus_mask] - level), 0.0, 1.0)
    return cirrus_mask, depth


def slc_off_gaps(along_m: np.ndarray, across_m: np.ndarray, pixel_size: float, phase_px: float = 0.0, *,
                 period_px: float = 32.0, max_gap_px: float = 14.0, nadir_m: float = 11_000.0,
                 half_swath_m: float = 92_500.0) -> np.ndarray:
    """Pixels lost to ETM+'s scan-line-corrector failure (bool, shape of the inputs).

    Gaps repeat every `period_px` pixels along track (one forward and one reverse scan
    of 16 lines), starting `phase_px` into the period (it differs between acquisitions,
    which is why other dates fill the gaps); their width grows linearly from 0 at
    `nadir_m` from the ground track to `max_gap_px` at the swath edge, about 22% of a
    whole scene.
    """
    width = max_gap_px * np.clip((np.abs(across_m) - nadir_m) / (half_swath_m - nadir_m), 0.0, 1.0)
    phase = np.mod(along_m / pixel_size + phase_px, period_px)
    return phase < width


def observe(clean: np.ndarray, sky: Sky, valid: np.ndarray, noise_sigma: Sequence[float], key: Sequence[int],
            win: Win) -> np.ndarray:
    """What the sensor records: surface reflectance through the sky, plus noise.

    Args:
        clean: float32 (6, rows, cols) noise-free, cloud-free reflectance on this date.
        sky: the scene's sky.
        valid: bool (rows, cols), pixels with data (fill elsewhere).
        noise_sigma: (6,) standard deviation of the additive sensor noise, reflectance.
        key, win: the scene's key and the window (global pixel grid): band b's noise is
            fields.pixel_noise((*key, 10 + b), win).
    Returns:
        uint16 (6, rows, cols) Collection 2 DN, 0 where not valid.
    """
    out = np.empty(clean.shape, np.uint16)
    sigma = np.asarray(noise_sigma, np.float32)
    for b in range(clean.shape[0]):
        r = clean[b].copy()
        r[sky.shadow] *= SHADOW_TRANSMISSION[b]
        r += sky.cirrus_depth * np.float32(CIRRUS_REFLECTANCE)
        r += sky.opacity * (CLOUD_REFLECTANCE[b] - r)
        r += sigma[b] * pixel_noise((*key, _NOISE + b), win)
        r[~valid] = np.nan
        out[b] = to_dn(r)
    return out


def qa_pixel(valid: np.ndarray, sky: Sky, water: np.ndarray, cirrus_band: bool) -> np.ndarray:
    """QA_PIXEL (uint16, rows x cols) consistent with the sky drawn.

    Bits: 0 fill (alone, value 1, outside `valid`), 1 dilated cloud, 2 cirrus (only with
    `cirrus_band`), 3 cloud, 4 cloud shadow, 6 clear (neither cloud nor dilated cloud,
    as USGS defines it), 7 water (not under cloud); confidence pairs: cloud high (3) on
    cloud pixels else low (1), shadow high on shadow pixels else low, snow/ice low,
    cirrus high/low with a cirrus band, else 0.
    """
    u16 = np.uint16
    qa = np.zeros(valid.shape, u16)
    qa |= sky.dilated.astype(u16) << QA.DILATED_CLOUD
    qa |= sky.cloud.astype(u16) << QA.CLOUD
    qa |= sky.shadow.astype(u16) << QA.CLOUD_SHADOW
    qa |= (~sky.cloud & ~sky.dilated).astype(u16) << QA.CLEAR
    qa |= (water & ~sky.cloud).astype(u16) << QA.WATER
    qa |= np.where(sky.cloud, u16(3), u16(1)) << QA.CLOUD_CONFIDENCE
    qa |= np.where(sky.shadow, u16(3), u16(1)) << QA.SHADOW_CONFIDENCE
    qa |= u16(1) << QA.SNOW_CONFIDENCE
    if cirrus_band:
        qa |= sky.cirrus.astype(u16) << QA.CIRRUS
        qa |= np.where(sky.cirrus, u16(3), u16(1)) << QA.CIRRUS_CONFIDENCE
    qa[~valid] = QA_FILL
    return qa


#: GeoTIFF layout of every band file: USGS distributes Collection 2 as COGs.
COG_PROFILE = {"driver": "COG", "compress": "deflate", "predictor": 2, "blocksize": 256, "overviews": "NONE"}


def write_product(folder: Path, pid: str, dn: np.ndarray, qa: np.ndarray, crs: Any, transform: Affine,
                  threads: int = 1) -> dict[str, Path]:
    """Write the six SR bands and QA_PIXEL of product `pid` into `folder`.

    Args:
        dn: uint16 (6, rows, cols) in landsat.BANDS order; files are named by the
            sensor's band numbers (landsat.band_filename).
        qa: uint16 (rows, cols).
        crs, transform: the scene's UTM CRS and 30 m north-up transform.
    Returns:
        band name (BANDS, and "qa_pixel") -> file path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = {"count": 1, "dtype": "uint16", "width": qa.shape[1], "height": qa.shape[0], "crs": crs, "transform": transform}
    files = {}
    for name, data, nodata in [*((b, dn[i], SR_FILL) for i, b in enumerate(BANDS)), ("qa_pixel", qa, QA_FILL)]:
        path = folder / band_filename(pid, name)
        with rasterio.open(path, "w", **base, **COG_PROFILE, nodata=nodata, num_threads=str(threads)) as dst:
            dst.write(data, 1)
        files[name] = path
    return files
