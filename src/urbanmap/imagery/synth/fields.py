"""Random fields that are pure functions of (key, global pixel coordinates): the texture
of land cover, clouds and haze, computable for any window independently.

Pixels are addressed by global indices on the scene CRS's 30 m grid (`Win`): pixel
(r, c) has its centre at x = c * pixel, y = -r * pixel, so a window of a region and the
same window of a larger region get the same values, whatever the tiles.

- `field`: white noise on a coarse lattice anchored to the CRS's origin (step
  `scale / 2` pixels), drawn in fixed chunks of `CHUNK` x `CHUNK` coarse points, each
  from its own generator keyed by (key, chunk row, chunk column); smoothed by a Gaussian
  kernel over the window's coarse points plus a pad wider than the kernel; linearly
  interpolated to the window's pixels. Standardised analytically: the smoothed noise's
  standard deviation is the square root of the sum of the squared 2-D kernel weights, so
  no statistic of the array is used. (Linear interpolation between coarse points lowers
  the variance between them by at most ~5%: shares cut by normal quantiles are
  approximate, not exact.)
- `pixel_noise`: standard-normal noise per pixel, in fixed `PIXEL_CHUNK`-pixel chunks,
  each keyed by its chunk index.

SciPy has no windowed, coordinate-keyed random field, hence the chunked draws by hand;
the smoothing is SciPy's (ndimage.correlate1d).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

#: Coarse-lattice points per correlation length; Gaussian sigma in coarse points; the
#: kernel's radius (points); coarse points per random chunk; pixels per noise chunk.
_PER_SCALE, _SIGMA, _RADIUS = 2.0, 1.5, 6
CHUNK, PIXEL_CHUNK = 64, 256
#: Added to (possibly negative) chunk indices: generator seeds must be non-negative.
OFFSET = 1 << 31
_KERNEL = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / _SIGMA) ** 2)
_KERNEL /= _KERNEL.sum()
#: Standard deviation of unit white noise smoothed by the 2-D kernel (outer product).
_SMOOTH_STD = float(np.sum(_KERNEL**2))


@dataclass(frozen=True)
class Win:
    """A window of the global pixel grid: first row and column, height and width."""

    r0: int
    c0: int
    h: int
    w: int

    def grow(self, dr: int, dc: int) -> Win:
        """The window with `dr` more rows and `dc` more columns on every side."""
        return Win(self.r0 - dr, self.c0 - dc, self.h + 2 * dr, self.w + 2 * dc)

    def crop(self, outer: Win) -> tuple[slice, slice]:
        """Slices of an array over `outer` that give this window."""
        return slice(self.r0 - outer.r0, self.r0 - outer.r0 + self.h), slice(self.c0 - outer.c0, self.c0 - outer.c0 + self.w)

    def intersect(self, other: Win) -> Win | None:
        """The window both windows cover, or None if they do not overlap."""
        r0, c0 = max(self.r0, other.r0), max(self.c0, other.c0)
        r1, c1 = min(self.r0 + self.h, other.r0 + other.h), min(self.c0 + self.w, other.c0 + other.w)
        return Win(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def _rng(key: Sequence[int], *idx: int) -> np.random.Generator:
    return np.random.default_rng([*(int(k) for k in key), *(int(i) + OFFSET for i in idx)])


def chunked(key: Sequence[int], r0: int, c0: int, h: int, w: int, chunk: int,
            draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]) -> np.ndarray:
    """Values on rows r0..r0+h-1, cols c0..c0+w-1 of a global lattice filled chunk by
    chunk: chunk (i, j) (rows i*chunk .. (i+1)*chunk - 1) is `draw(rng, (chunk, chunk))`
    with rng keyed by (key, i, j)."""
    i0, i1 = r0 // chunk, (r0 + h - 1) // chunk
    j0, j1 = c0 // chunk, (c0 + w - 1) // chunk
    blocks = [[draw(_rng(key, i, j), (chunk, chunk)) for j in range(j0, j1 + 1)] for i in range(i0, i1 + 1)]
    full = np.block(blocks)
    return full[r0 - i0 * chunk: r0 - i0 * chunk + h, c0 - j0 * chunk: c0 - j0 * chunk + w]


def pixel_noise(key: Sequence[int], win: Win) -> np.ndarray:
    """Standard-normal noise (float32, (h, w)) of the window's pixels."""
    return chunked(key, win.r0, win.c0, win.h, win.w, PIXEL_CHUNK,
                   lambda rng, shape: rng.standard_normal(shape, dtype=np.float32))


def pixel_uniform(key: Sequence[int], win: Win) -> np.ndarray:
    """Uniform [0, 1) values (float32, (h, w)) of the window's pixels."""
    return chunked(key, win.r0, win.c0, win.h, win.w, PIXEL_CHUNK, lambda rng, shape: rng.random(shape, dtype=np.float32))


def _axis_weights(start: int, n: int, step: float, k0: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """For pixels start, start + stride, ... (n of them): the coarse index (relative to
    k0) left of each pixel and the linear weight of the next one."""
    pos = (start + stride * np.arange(n, dtype=np.int64)).astype(np.float64) / step
    k = np.floor(pos)
    return (k - k0).astype(np.int64), (pos - k).astype(np.float32)


def field(key: Sequence[int], win: Win, scale_px: float, stride: int = 1) -> np.ndarray:
    """A Gaussian random field of correlation length about `scale_px` pixels.

    Args:
        key: integers naming the field (seed, stream tag, ...): the only randomness.
        win: the window of the global pixel grid to compute.
        scale_px: correlation length in pixels (> 0).
        stride: sample every `stride`-th pixel: win.h x win.w samples from (r0, c0)
            (a cheap preview of a large window; the same values at the same pixels).
    Returns:
        float32 (win.h, win.w), mean 0 and standard deviation about 1 (analytic, see the
        module docstring), the same values for a pixel whatever the window.
    """
    step = max(float(scale_px) / _PER_SCALE, 1.0)
    pad = _RADIUS + 1
    last_r, last_c = win.r0 + stride * (win.h - 1), win.c0 + stride * (win.w - 1)
    kr0, kr1 = int(np.floor(win.r0 / step)) - pad, int(np.floor(last_r / step)) + 1 + pad
    kc0, kc1 = int(np.floor(win.c0 / step)) - pad, int(np.floor(last_c / step)) + 1 + pad
    white = chunked(key, kr0, kc0, kr1 - kr0 + 1, kc1 - kc0 + 1, CHUNK, lambda rng, shape: rng.standard_normal(shape))
    coarse = ndimage.correlate1d(ndimage.correlate1d(white, _KERNEL, axis=0), _KERNEL, axis=1)
    coarse = (coarse / _SMOOTH_STD).astype(np.float32)
    ri, rf = _axis_weights(win.r0, win.h, step, kr0, stride)
    ci, cf = _axis_weights(win.c0, win.w, step, kc0, stride)
    rows = coarse[ri] * (1 - rf)[:, None] + coarse[ri + 1] * rf[:, None]  # (h, coarse cols)
    return rows[:, ci] * (1 - cf)[None, :] + rows[:, ci + 1] * cf[None, :]


def field_octaves(key: Sequence[int], win: Win, scales_px: Sequence[float], weights: Sequence[float],
                  stride: int = 1) -> np.ndarray:
    """Weighted sum of independent fields of several correlation lengths (field k keyed
    by (*key, k)), divided by the root of the summed squared weights (float32)."""
    total = np.zeros((win.h, win.w), np.float32)
    for k, (scale, weight) in enumerate(zip(scales_px, weights)):
        total += np.float32(weight) * field((*key, k), win, scale, stride)
    return total / np.float32(np.sqrt(np.sum(np.square(weights))))


def threshold(share: float) -> float:
    """The value a standard-normal field exceeds on about the share `share` of pixels."""
    return float(special.ndtri(1.0 - float(share))) if 0 < share < 1 else (np.inf if share <= 0 else -np.inf)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """A Gaussian random field of correlation length about `scale_px` pixels over a whole
    array, standardised by the array's own mean and standard deviation (float32 of
    `shape`). For whole arrays only (examples/byo.py); the synth stage uses `field`,
    which is computable window by window."""
    step = max(float(scale_px) / _PER_SCALE, 1.0)
    pad = 6
    coarse_shape = (int(np.ceil(shape[0] / step)) + 2 * pad, int(np.ceil(shape[1] / step)) + 2 * pad)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma=_PER_SCALE * 0.75, mode="wrap")
    out = ndimage.affine_transform(
        coarse, [1.0 / step, 1.0 / step], offset=[pad, pad], output_shape=tuple(shape), order=1, output=np.float32,
    )
    return _standardised(out)


def octaves(rng: np.random.Generator, shape: tuple[int, int], scales_px: Sequence[float],
            weights: Sequence[float]) -> np.ndarray:
    """Weighted sum of `smooth_noise` fields, standardised over the array (float32)."""
    total = np.zeros(shape, np.float32)
    for scale, weight in zip(scales_px, weights):
        total += np.float32(weight) * smooth_noise(rng, shape, scale)
    return _standardised(total)


def _standardised(a: np.ndarray) -> np.ndarray:
    a -= a.mean(dtype=np.float64)
    std = a.std(dtype=np.float64)
    if std > 0:
        a /= std
    return a


def uniform(values: np.ndarray) -> np.ndarray:
    """Map a standard-normal field to (0, 1) by the normal CDF (float32)."""
    return special.ndtr(values).astype(np.float32)


def pick(u: np.ndarray, n: int) -> np.ndarray:
    """Index 0..n-1 from uniform values u in [0, 1] (uint16 array of u's shape)."""
    return np.minimum((u * n).astype(np.int64), n - 1).astype(np.uint16)
