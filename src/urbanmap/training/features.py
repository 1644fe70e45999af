"""Features of image patches for scikit-learn models (Extra Trees and others): configurable groups.

``model.features.groups`` lists one or more of:

- ``flat``: the patch itself, flattened: b x p x p values (6 x 33 x 33 = 6,534; the
  pilot's choice). Keeps the spatial texture, but a tree sees each pixel position as an
  unrelated feature, so it is not invariant to shifts or rotations of the scene.
- ``band_stats``: per band, the mean, standard deviation and the percentiles
  ``model.features.percentiles`` of the patch's pixels (6 x (2 + len(percentiles))
  values): the cell's spectrum and its spread, invariant to where things sit in the cell.
- ``index_stats``: the same statistics of per-pixel spectral indices, each a normalised
  difference ``(sum(a) - sum(b)) / (sum(a) + sum(b))`` of reflectances:

  ======  ====================  ================================================
  index   a / b                 meaning
  ======  ====================  ================================================
  ndvi    nir / red             vegetation (Rouse et al., 1974)
  ndbi    swir1 / nir           built-up land (Zha et al., 2003)
  mndwi   green / swir1         open water (Xu, 2006)
  ui      swir2 / nir           urban index (Kawamura et al., 1996)
  bsi     swir1+red / nir+blue  bare soil (Rikimaru et al., 2002)
  ======  ====================  ================================================

  A pixel whose denominator is 0 gets index 0. Indices whose bands are not in the patch
  are left out.

- ``texture``: grey-level co-occurrence (GLCM) statistics of the patch on two bands,
  ``brightness`` (the mean of the visible bands present, the nearest thing to a
  panchromatic band among the six) and ``nir``: contrast, homogeneity, entropy and
  correlation, each the mean over 8 displacements (1 and 2 pixels, at 0, 45, 90 and 135
  degrees), and PanTex (Pesaresi et al., 2008, IEEE JSTARS 1(3):180-192), the minimum
  contrast over those displacements: built-up areas keep a high contrast in every
  direction, fields and roads in some only. 5 x 2 = 10 values. (scikit-image rounds
  each offset to whole pixels, so at 45 and 135 degrees distance 2 lands on the same
  neighbours as distance 1.) Reflectance is quantised to
  `TEXTURE_LEVELS` grey levels over the fixed range `TEXTURE_RANGE` (not per patch, so
  that contrasts compare across cells). PanTex took 10 displacement vectors inside a
  9 x 9 window of a 5 m panchromatic band; on 30 m pixels, the patch (a 1 km cell) is the
  window and the 8 vectors of scikit-image's distance x angle grid stand in for the 10.

Every feature belongs to a *group*: its band for ``flat`` and ``band_stats``, its index
for ``index_stats``, ``brightness_texture`` or ``nir_texture`` for ``texture``; feature
importances are summed per group for the evaluation plot.

The indices are five one-line formulas, written here rather than taken from a library
(spyndex has them, but is not a dependency and would add its data files for five lines).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from urbanmap.core.errors import InputError

GROUPS = ("flat", "band_stats", "index_stats", "texture")

#: Grey levels and reflectance range (lower, upper) of the texture group's quantisation.
TEXTURE_LEVELS = 32
TEXTURE_RANGE = (0.0, 0.5)
#: GLCM displacements of the texture group: distances (pixels) x angles (radians).
TEXTURE_DISTANCES = (1, 2)
TEXTURE_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
#: GLCM statistics averaged over the displacements (scikit-image's graycoprops names).
TEXTURE_STATS = ("contrast", "homogeneity", "entropy", "correlation")
VISIBLE = ("blue", "green", "red")

#: index -> (bands added, bands subtracted) of the normalised difference.
INDICES = {
    "ndvi": (("nir",), ("red",)),
    "ndbi": (("swir1",), ("nir",)),
    "mndwi": (("green",), ("swir1",)),
    "ui": (("swir2",), ("nir",)),
    "bsi": (("swir1", "red"), ("nir", "blue")),
}


@dataclass(frozen=True)
class Features:
    """A feature matrix and what each column is."""

    X: np.ndarray  # (n, f) float32
    names: list[str]  # (f,) e.g. "red[3,17]", "nir_mean", "ndvi_p50"
    groups: list[str]  # (f,) band or index of each feature


def spectral_indices(patches: np.ndarray, bands: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-pixel indices of `INDICES` whose bands are present.

    Args:
        patches: (n, b, p, p) reflectance.
        bands: the b band names.
    Returns:
        ((n, k, p, p) float32 indices in -1..1, the k index names).
    """
    pos = {b: i for i, b in enumerate(bands)}
    names = [k for k, (a, b) in INDICES.items() if all(x in pos for x in a + b)]
    out = np.empty((patches.shape[0], len(names), *patches.shape[2:]), np.float32)
    for j, name in enumerate(names):  # five indices, each vectorised over all pixels
        plus, minus = INDICES[name]
        a = patches[:, [pos[x] for x in plus]].sum(axis=1)
        b = patches[:, [pos[x] for x in minus]].sum(axis=1)
        den = a + b
        np.divide(a - b, den, out=out[:, j], where=den != 0)
        out[:, j][den == 0] = 0.0
    return out, names


def texture_bands(patches: np.ndarray, bands: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The texture group's bands of (n, b, p, p) reflectance: ((n, k, p, p), k names).

    ``brightness`` is the mean of the visible bands present, ``nir`` the near infrared;
    either is left out when its bands are not in the patch.
    """
    pos = {b: i for i, b in enumerate(bands)}
    cubes, names = [], []
    visible = [pos[b] for b in VISIBLE if b in pos]
    if visible:
        cubes.append(patches[:, visible].mean(axis=1))
        names.append("brightness")
    if "nir" in pos:
        cubes.append(patches[:, pos["nir"]])
        names.append("nir")
    if not cubes:
        return np.empty((patches.shape[0], 0, *patches.shape[2:]), np.float32), []
    return np.stack(cubes, axis=1), names


def glcm_texture(image: np.ndarray) -> np.ndarray:
    """GLCM statistics of one (p, p) reflectance image: `TEXTURE_STATS` averaged over the
    displacements, then PanTex (the minimum contrast over them); (5,) float64."""
    from skimage.feature import graycomatrix, graycoprops

    low, high = TEXTURE_RANGE
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0) * (TEXTURE_LEVELS - 1)
    grey = np.rint(scaled).astype(np.uint8)
    glcm = graycomatrix(grey, distances=TEXTURE_DISTANCES, angles=TEXTURE_ANGLES,
                        levels=TEXTURE_LEVELS, symmetric=True, normed=True)
    stats = {name: graycoprops(glcm, name) for name in TEXTURE_STATS}  # each (distances, angles)
    return np.array([*(stats[name].mean() for name in TEXTURE_STATS), stats["contrast"].min()])


def texture_features(patches: np.ndarray, bands: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """The texture group of (n, b, p, p) reflectance: ((n, 5 k) float32, names, groups).

    One scikit-image GLCM per patch and band (about 1 ms each on 33 x 33 pixels).
    """
    cube, names = texture_bands(patches, bands)
    labels = [*TEXTURE_STATS, "pantex"]
    X = np.full((cube.shape[0], len(names) * len(labels)), np.nan, np.float32)  # NaN stays NaN
    finite = np.isfinite(cube).all(axis=(1, 2, 3))
    for i in np.flatnonzero(finite) if names else []:
        X[i] = np.concatenate([glcm_texture(cube[i, k]) for k in range(len(names))])
    cols = [f"{n}_{s}" for n in names for s in labels]
    groups = [f"{n}_texture" for n in names for _ in labels]
    return X, cols, groups


def _stats(cube: np.ndarray, names: Sequence[str], percentiles: Sequence[float]) -> tuple[np.ndarray, list[str], list[str]]:
    """Mean, std and percentiles over the pixels of (n, k, p, p) -> (n, k * s)."""
    flat = cube.reshape(cube.shape[0], cube.shape[1], -1)
    stats = [flat.mean(axis=2), flat.std(axis=2)]
    labels = ["mean", "std"]
    if len(percentiles):
        q = np.percentile(flat, list(percentiles), axis=2)  # (len(percentiles), n, k)
        stats += list(q)
        labels += [f"p{float(p):g}" for p in percentiles]
    X = np.stack(stats, axis=2).reshape(cube.shape[0], -1)  # per name: its stats in order
    cols = [f"{n}_{s}" for n in names for s in labels]
    groups = [n for n in names for _ in labels]
    return X, cols, groups


def compute_features(
    patches: np.ndarray,
    bands: Sequence[str],
    groups: Sequence[str] = ("flat",),
    percentiles: Sequence[float] = (10, 25, 50, 75, 90),
    context: str = "features",
) -> Features:
    """Features of patches (see the module docstring).

    Args:
        patches: (n, b, p, p) float32 reflectance.
        bands: the b band names, in order.
        groups: feature groups to concatenate, in this order.
        percentiles: percentiles (0..100) for the *_stats groups.
        context: file or key named in errors.
    Raises:
        InputError: unknown group, or NaN / infinite values in the features.
    """
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise InputError(f"model.features.groups: {list(groups)} (choose from {', '.join(GROUPS)})")
    n, b, p, _ = patches.shape
    parts, names, owners = [], [], []
    for g in groups:
        if g == "flat":
            parts.append(patches.reshape(n, -1))
            names += [f"{band}[{r},{c}]" for band in bands for r in range(p) for c in range(p)]
            owners += [band for band in bands for _ in range(p * p)]
        elif g == "band_stats":
            X, cols, grp = _stats(patches, bands, percentiles)
            parts.append(X)
            names += cols
            owners += grp
        elif g == "index_stats":
            idx, idx_names = spectral_indices(patches, bands)
            X, cols, grp = _stats(idx, idx_names, percentiles)
            parts.append(X)
            names += cols
            owners += grp
        else:
            X, cols, grp = texture_features(patches, bands)
            parts.append(X)
            names += cols
            owners += grp
    X = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(f"{context}: NaN or infinite values in the features of {int(bad.sum()):,} of {n:,} patches")
    return Features(X, names, owners)
