"""Features of patches for tree models."""

import numpy as np
import pytest

from urbanmap.core.errors import InputError
from urbanmap.imagery.landsat import BANDS
from urbanmap.training.features import compute_features, spectral_indices


@pytest.fixture
def patches():
    return np.random.default_rng(0).uniform(0.01, 0.5, (4, 6, 33, 33)).astype(np.float32)


def test_flat_is_the_pilots_6534_values_in_band_row_col_order(patches):
    f = compute_features(patches, BANDS, ["flat"])
    assert f.X.shape == (4, 6534) and len(f.names) == 6534
    k = f.names.index("red[3,17]")
    np.testing.assert_array_equal(f.X[:, k], patches[:, 2, 3, 17])
    assert f.groups[k] == "red" and f.groups.count("swir2") == 33 * 33


def test_band_stats(patches):
    f = compute_features(patches, BANDS, ["band_stats"], percentiles=[10, 50])
    assert f.X.shape == (4, 6 * 4)
    nir = patches[2, 3].ravel()
    row = dict(zip(f.names, f.X[2]))
    assert row["nir_mean"] == pytest.approx(nir.mean(), rel=1e-6)
    assert row["nir_std"] == pytest.approx(nir.std(), rel=1e-5)
    assert row["nir_p10"] == pytest.approx(np.percentile(nir, 10), rel=1e-6)
    assert row["nir_p50"] == pytest.approx(np.median(nir), rel=1e-6)
    assert set(f.groups) == set(BANDS)


def test_index_stats_of_a_known_spectrum():
    vegetation = np.array([0.03, 0.06, 0.04, 0.35, 0.20, 0.10], np.float32)
    p = np.broadcast_to(vegetation[None, :, None, None], (2, 6, 33, 33)).copy()
    p[1] = 0.0  # all-zero reflectance: every denominator is 0 -> index 0
    f = compute_features(p, BANDS, ["index_stats"], percentiles=[50])
    row = dict(zip(f.names, f.X[0]))
    assert row["ndvi_mean"] == pytest.approx((0.35 - 0.04) / (0.35 + 0.04), rel=1e-5)
    assert row["ndbi_p50"] == pytest.approx((0.20 - 0.35) / (0.20 + 0.35), rel=1e-5)
    assert row["mndwi_mean"] == pytest.approx((0.06 - 0.20) / (0.06 + 0.20), rel=1e-5)
    assert row["bsi_mean"] == pytest.approx((0.20 + 0.04 - 0.35 - 0.03) / (0.20 + 0.04 + 0.35 + 0.03), rel=1e-5)
    assert row["ndvi_std"] == pytest.approx(0, abs=1e-6)
    assert (f.X[1] == 0).all()


def test_indices_need_their_bands(patches):
    _, names = spectral_indices(patches[:, :4], BANDS[:4])  # no swir: only NDVI
    assert names == ["ndvi"]


def test_groups_concatenate(patches):
    f = compute_features(patches, BANDS, ["band_stats", "index_stats", "flat"])
    assert f.X.shape[1] == 6 * 7 + 5 * 7 + 6534 == len(f.names) == len(f.groups)


def test_nan_and_unknown_groups_are_input_errors(patches):
    patches[1, 0, 5, 5] = np.nan
    with pytest.raises(InputError, match=r"patches.npz: NaN or infinite values in the features of 1 of 4 patches"):
        compute_features(patches, BANDS, ["band_stats"], context="patches.npz")
    with pytest.raises(InputError, match=r"patches.npz: NaN or infinite values in the features of 1 of 4 patches"):
        compute_features(patches, BANDS, ["texture"], context="patches.npz")
    with pytest.raises(InputError, match="model.features.groups"):
        compute_features(patches, BANDS, ["glcm"])


def _texture(image: np.ndarray) -> dict[str, float]:
    """The texture features of one patch whose six bands all equal `image` (p, p)."""
    patch = np.repeat(image[None, None].astype(np.float32), 6, axis=1)
    f = compute_features(patch, BANDS, ["texture"])
    return dict(zip(f.names, f.X[0].tolist()))


def test_texture_of_a_uniform_patch_has_no_contrast():
    row = _texture(np.full((33, 33), 0.2))
    assert row["nir_contrast"] == 0 and row["nir_pantex"] == 0 and row["nir_entropy"] == 0
    assert row["brightness_homogeneity"] == 1


def test_pantex_is_the_contrast_of_the_smoothest_direction():
    """Stripes (a field, a road) have contrast across them and none along them, so PanTex
    is 0; a built-up speckle keeps contrast in every direction."""
    stripes = np.tile(np.where(np.arange(33) % 2, 0.4, 0.05), (33, 1))  # columns alternate
    speckle = np.random.default_rng(1).uniform(0.05, 0.4, (33, 33))
    row = _texture(stripes)
    assert row["nir_contrast"] > 10 and row["nir_pantex"] == 0
    # grey levels 3 and 25 of 32 (0.05 and 0.4 of 0..0.5) differ by 22: contrast 22^2 = 484
    # across the stripes (0 degrees at distance 1, and both diagonals, which scikit-image
    # rounds to the (1, 1) offsets at distance 2 as well), 0 along them and at (0, 2)
    assert row["nir_contrast"] == pytest.approx(484 * 5 / 8)
    assert _texture(speckle)["nir_pantex"] > 10


def test_texture_names_and_groups(patches):
    f = compute_features(patches, BANDS, ["band_stats", "texture"], percentiles=[50])
    assert f.X.shape == (4, 6 * 3 + 10)
    assert f.names[-10:] == [f"{b}_{s}" for b in ("brightness", "nir")
                             for s in ("contrast", "homogeneity", "entropy", "correlation", "pantex")]
    assert f.groups[-10:] == ["brightness_texture"] * 5 + ["nir_texture"] * 5
