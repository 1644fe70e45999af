"""Spatially coherent random fields: the texture of land cover, clouds and haze.

A field is white noise smoothed to a correlation length, drawn on a coarse lattice and
interpolated to the pixel grid (SciPy's Gaussian filter and spline interpolation), so
its cost does not grow with the length scale. Values are standardised to mean 0 and
standard deviation 1 over the array.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special

#: Coarse-lattice points per correlation length, and the coarse margin (points).
_PER_SCALE, _PAD = 2.0, 6


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """A Gaussian random field of correlation length about `scale_px` pixels.

    Args:
        rng: the random generator (the only source of randomness).
        shape: (rows, cols) of the output.
        scale_px: correlation length in pixels (> 0).
    Returns:
        float32 array of `shape`, mean 0, standard deviation 1.
    """
    step = max(float(scale_px) / _PER_SCALE, 1.0)
    coarse_shape = (int(np.ceil(shape[0] / step)) + 2 * _PAD, int(np.ceil(shape[1] / step)) + 2 * _PAD)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma=_PER_SCALE * 0.75, mode="wrap")
    field = ndimage.affine_transform(
        coarse, [1.0 / step, 1.0 / step], offset=[_PAD, _PAD], output_shape=tuple(shape),
        order=1, output=np.float32,
    )
    field -= field.mean(dtype=np.float64)
    std = field.std(dtype=np.float64)
    if std > 0:
        field /= std
    return field


def octaves(rng: np.random.Generator, shape: tuple[int, int], scales_px, weights) -> np.ndarray:
    """Weighted sum of fields of several correlation lengths, standardised (float32)."""
    total = np.zeros(shape, np.float32)
    for scale, weight in zip(scales_px, weights):
        total += np.float32(weight) * smooth_noise(rng, shape, scale)
    total -= total.mean(dtype=np.float64)
    std = total.std(dtype=np.float64)
    return total / std if std > 0 else total


def uniform(field: np.ndarray) -> np.ndarray:
    """Map a standard-normal field to (0, 1) by the normal CDF (float32)."""
    return special.ndtr(field).astype(np.float32)


def pick(u: np.ndarray, n: int) -> np.ndarray:
    """Index 0..n-1 from uniform values u in [0, 1] (uint16 array of u's shape)."""
    return np.minimum((u * n).astype(np.int64), n - 1).astype(np.uint16)
