"""The mosaic stage: QA bits and scale, masking with a buffer, agreement with geomad,
the COG, and bad input (finding and warping scenes: test_scenes.py)."""

from __future__ import annotations

import datetime as dt
import json

import geomad
import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from scipy import ndimage

from helpers.landsat_factory import CLEAR_QA, item_for, pid, write_catalog, write_product
from urbanmap.cli import main
from urbanmap.core import cog, io
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice
from urbanmap.imagery import blocks, geomedian, landsat

QA = landsat.QA
CLOUD = (1 << QA.CLOUD) | (1 << QA.DILATED_CLOUD)
SHADOW = (1 << QA.CLOUD_SHADOW) | CLEAR_QA
CELL, PATCH = 300, 10  # 300 m cells of 10 x 10 pixels of 30 m
COLS, ROWS = np.meshgrid(np.arange(9320, 9336), np.arange(2760, 2776))  # 16 x 16 cells
LATTICE = PixelLattice.from_cells(COLS.ravel(), ROWS.ravel(), CELL, PATCH, "EPSG:6372")
H, W = LATTICE.height, LATTICE.width  # 160 x 160 pixels


def dn_of(reflectance) -> np.ndarray:
    return landsat.to_dn(reflectance)


def test_scale_to_reflectance_and_fill():
    dn = np.array([0, 7273, 18182], np.uint16)[None, :, None, None].repeat(6, axis=2)  # (1 row, 3 cols, 6 bands, obs 1)
    clear = np.array([[[True], [True], [False]]])  # (1 row, 3 cols, obs 1)
    x = geomedian.to_stack(dn, clear, np.full((1, 6), landsat.SR_SCALE), np.full((1, 6), landsat.SR_OFFSET))
    assert x.shape == (1, 3, 6, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, :, 0], [[-0.2] * 6, [7273 * 2.75e-5 - 0.2] * 6, [np.nan] * 6], atol=1e-7)


def test_scale_per_band_and_observation():
    """Each observation's band is scaled by its own (scale, offset), float32 as numpy
    computes it: the same values whether all calibrations are equal (one fused pass) or
    not."""
    rng = np.random.default_rng(3)
    dn = rng.integers(1, 40000, (5, 4, 6, 3), dtype=np.uint16)
    clear = rng.random((5, 4, 3)) > 0.3
    scale = np.full((3, 6), landsat.SR_SCALE, np.float32)
    offset = np.full((3, 6), landsat.SR_OFFSET, np.float32)
    varied_scale, varied_offset = scale * np.linspace(1, 2, 18, dtype=np.float32).reshape(3, 6), offset + 0.01
    for s, o in ((scale, offset), (varied_scale, varied_offset)):
        expected = dn.astype(np.float32) * s.T[None, None] + o.T[None, None]
        expected[~np.broadcast_to(clear[:, :, None, :], dn.shape)] = np.nan
        got = geomedian.to_stack(dn, clear, s, o)
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    # A block that no scene covers: no observation at all.
    assert geomedian.to_stack(dn[..., :0], clear[..., :0], scale[:0], offset[:0]).shape == (5, 4, 6, 0)


# --- masking ----------------------------------------------------------------------------------


def test_qa_bits_make_the_mask():
    values = {
        "clear": CLEAR_QA, "water": CLEAR_QA | (1 << QA.WATER), "cloud": (1 << QA.CLOUD) | (3 << QA.CLOUD_CONFIDENCE),
        "dilated": 1 << QA.DILATED_CLOUD, "cirrus": (1 << QA.CIRRUS) | CLEAR_QA, "shadow": SHADOW,
        "snow": (1 << QA.SNOW) | CLEAR_QA, "fill": 1,
    }
    qa = np.array([list(values.values())], np.uint16)
    dn = np.full((1, qa.shape[1], 6), 9000, np.uint16)  # (rows, cols, bands)
    default = geomedian.flag_bits(["dilated_cloud", "cirrus", "cloud", "cloud_shadow"])
    got = dict(zip(values, geomedian.clear_mask(qa, dn, default)[0]))
    assert got == {"clear": True, "water": True, "cloud": False, "dilated": False, "cirrus": False,
                   "shadow": False, "snow": True, "fill": False}
    with_snow = geomedian.clear_mask(qa, dn, default | geomedian.flag_bits(["snow"]))[0]
    assert not with_snow[list(values).index("snow")]
    dn[0, 0, 2] = 0  # a DN of 0 in any band is fill too
    assert not geomedian.clear_mask(qa, dn, default)[0, 0]
    with pytest.raises(InputError, match="mosaic.mask: unknown QA flag 'haze'"):
        geomedian.flag_bits(["haze"])


def test_buffer_grows_the_flagged_pixels_by_a_square():
    qa = np.full((9, 9, 2), CLEAR_QA, np.uint16)  # (rows, cols, obs)
    qa[4, 4, 0] = CLOUD
    qa[0, 8, 1] = SHADOW
    dn = np.full((9, 9, 6, 2), 9000, np.uint16)
    bits = geomedian.flag_bits(["cloud", "cloud_shadow"])
    clear = geomedian.clear_mask(qa, dn, bits, buffer_px=2)
    expected = np.ones((9, 9, 2), bool)
    expected[2:7, 2:7, 0] = False
    expected[0:3, 6:9, 1] = False
    np.testing.assert_array_equal(clear, expected)
    # From QA alone, cropped as a block's halo is: the same buffer inside
    np.testing.assert_array_equal(geomedian.qa_clear(qa, bits, buffer_px=2, crop=2), expected[2:7, 2:7])


def test_qa_clear_skips_no_observation_that_the_bands_would_keep():
    """qa_clear (which decides whose bands are read) holds every observation that
    clear_mask, with the bands, finds clear."""
    rng = np.random.default_rng(3)
    qa = rng.choice(np.array([CLEAR_QA, CLOUD, SHADOW, 1, CLEAR_QA | (1 << QA.SNOW)], np.uint16), (20, 20, 5),
                    p=[0.7, 0.1, 0.1, 0.05, 0.05])
    dn = rng.integers(0, 3, (20, 20, 6, 5)).astype(np.uint16)  # many fill DN
    bits = geomedian.flag_bits(["dilated_cloud", "cirrus", "cloud", "cloud_shadow"])
    full, from_qa = geomedian.clear_mask(qa, dn, bits, buffer_px=1), geomedian.qa_clear(qa, bits, buffer_px=1)
    assert full.any() and not (full & ~from_qa).any() and (from_qa & ~full).any()


def test_buffer_in_metres_rounds_up_to_pixels(in_repo):
    from urbanmap.core import config

    cfg = config.load(".", ["mosaic.buffer=45", "mosaic.buffer_unit=m"])
    assert blocks.MosaicSettings.from_config(cfg, 1000 / 33).buffer_px == 2  # 45 m / 30.3 m -> 2 pixels
    cfg = config.load(".", ["mosaic.buffer=3"])
    assert blocks.MosaicSettings.from_config(cfg, 1000 / 33).buffer_px == 3
    with pytest.raises(InputError, match="mosaic.buffer_unit: must be px or m"):
        blocks.MosaicSettings.from_config(config.load(".", ["mosaic.buffer_unit=km"]), 30)


# --- warping -----------------------------------------------------------------------------------


def test_square_buffer_equals_a_maximum_filter():
    rng = np.random.default_rng(5)
    for shape in [(3, 31, 17), (2, 2, 12, 40), (1, 2, 2)]:
        flagged = rng.random(shape) < 0.04
        for radius in (1, 2, 4):
            size = (1,) * (len(shape) - 2) + (2 * radius + 1,) * 2
            np.testing.assert_array_equal(geomedian.dilate_square(flagged, radius), ndimage.maximum_filter(flagged, size=size))
            last = np.moveaxis(flagged, (-2, -1), (0, 1))  # (rows, cols, ...): the pixel-major layout
            np.testing.assert_array_equal(geomedian.dilate_square(last, radius, axes=(0, 1)),
                                          np.moveaxis(ndimage.maximum_filter(flagged, size=size), (-2, -1), (0, 1)))


def test_overviews_summed_level_by_level_equal_direct_means():
    """mean_pools builds 4 x 4 and 8 x 8 means from the 2 x 2 sums: the same float32
    values as each mean taken directly (NaN ignored, NaN where a group has none)."""
    rng = np.random.default_rng(9)
    block = rng.uniform(-0.2, 1.2, (3, 45, 37)).astype(np.float32)
    block[rng.random(block.shape) < 0.3] = np.nan
    block[:, :8, :8] = np.nan  # groups with no value at every level
    for f, got in zip((2, 4, 8), cog.mean_pools(block, [2, 4, 8])):
        h, w = -(-45 // f) * f, -(-37 // f) * f
        padded = np.full((3, h, w), np.nan)
        padded[:, :45, :37] = block
        groups = padded.reshape(3, h // f, f, w // f, f)
        n = (~np.isnan(groups)).sum(axis=(2, 4))
        with np.errstate(invalid="ignore"):
            expected = (np.nansum(groups, axis=(2, 4)) / n).astype(np.float32)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(cog.mean_pool(block, f), expected)


# --- the stage end to end -----------------------------------------------------------------------


def _grid(out_dir, name="t", drop=()):
    cells = pd.DataFrame({"col": COLS.ravel(), "row": ROWS.ravel()})
    cells = cells[~cells.apply(lambda r: (r.col, r.row) in drop, axis=1)]
    cells.insert(0, "cell_id", [f"c{c}_{r}" for c, r in zip(cells.col, cells.row)])
    io.write_cells(out_dir / name / "grid.parquet", cells, CELL, "EPSG:6372")


def _args(tmp_path, catalog, *extra):
    return [f"out_dir={tmp_path / 'out'}", "data.name=t", f"data.cell_size={CELL}", "period=2019",
            f"data.imagery.catalog={catalog}", "mosaic.block_cells=3", "mosaic.buffer=1",
            "mosaic.cog.blocksize=128", "compute.threads=2", *extra]


@pytest.fixture
def lattice_scenes(tmp_path):
    """Five LC08 scenes on the lattice's own grid: noisy reflectance around a per-pixel
    truth, clouds and shadows in different places, and a 3 x 3 patch cloudy every time."""
    rng = np.random.default_rng(7)
    truth = rng.uniform(0.02, 0.45, (6, H, W)).astype(np.float32)
    folders = []
    for k in range(5):
        qa = np.full((H, W), CLEAR_QA, np.uint16)
        field = ndimage.gaussian_filter(rng.random((H, W)), 3)
        qa[field > np.quantile(field, 0.8)] = CLOUD
        qa[(field < np.quantile(field, 0.1))] = SHADOW
        qa[30:33, 5:8] = CLOUD
        if k == 0:
            qa[:, :4] = 1  # fill: outside this scene's footprint
        reflectance = truth + rng.normal(0, 0.01, truth.shape).astype(np.float32)
        dn = np.where(qa == 1, 0, dn_of(reflectance))
        folders.append(write_product(tmp_path / "scenes", pid("LC08", dt.date(2019, 1 + 2 * k, 10)), dn, qa,
                                     LATTICE.crs, LATTICE.transform))
    _grid(tmp_path / "out")
    return write_catalog(tmp_path / "scenes", [item_for(f) for f in folders]), folders


def reference(folders, bits, buffer_px):
    """The masked stack built independently (files read whole, binary dilation) and
    geomad's kernels on it: (10, H, W)."""
    obs = []
    for folder in folders:
        p = folder.name
        dn = np.stack([rasterio.open(folder / landsat.band_filename(p, b)).read(1) for b in landsat.BANDS])
        qa = rasterio.open(folder / landsat.band_filename(p, "qa_pixel")).read(1)
        bad = ndimage.binary_dilation((qa & bits) != 0, structure=np.ones((3, 3), bool), iterations=buffer_px)
        bad |= (qa & 1).astype(bool) | (dn == 0).any(axis=0)
        refl = dn.astype(np.float32) * np.float32(landsat.SR_SCALE) + np.float32(landsat.SR_OFFSET)
        obs.append(np.where(bad, np.nan, refl))
    x = np.ascontiguousarray(np.stack(obs, axis=-1).transpose(1, 2, 0, 3))  # (H, W, 6, obs)
    gm = geomad.nangeomedian_pcm(x.reshape(H * W, 1, 6, -1), num_threads=1).reshape(H, W, 6)  # seeded per pixel
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        spread = [getattr(geomad, f"{n}_pcm")(x, gm, num_threads=1) for n in ("smad", "emad", "bcmad")]
    count = (~np.isnan(x[:, :, 0, :])).sum(axis=-1)
    return np.concatenate([gm.transpose(2, 0, 1), np.stack(spread), count[None]]).astype(np.float32)


def test_stage_equals_geomad_on_the_masked_stack(in_repo, tmp_path, lattice_scenes, capsys):
    catalog, folders = lattice_scenes
    assert main(["mosaic", *_args(tmp_path, catalog)]) == 0
    out = tmp_path / "out" / "t" / "mosaic_2019.tif"
    with rasterio.open(out) as src:
        got = src.read()
        assert src.descriptions == ("blue", "green", "red", "nir", "swir1", "swir2", "smad", "emad", "bcmad", "count")
        assert LATTICE.same_pixels(src.crs, src.transform, src.width, src.height)
        assert np.isnan(src.nodata) and src.dtypes == ("float32",) * 10
        # a COG: tiled, compressed, overviews, header first
        assert src.block_shapes[0] == (128, 128) and src.overviews(1) == [2]
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.compression is not None
    with rasterio.open(out, overview_level=0) as ovr:  # the mean of the valid pixels of each 2 x 2
        assert ovr.shape == (H // 2, W // 2)
        np.testing.assert_allclose(ovr.read(), cog.mean_pool(got, 2), rtol=1e-6, equal_nan=True)
        assert np.isnan(ovr.read(1)).sum() < np.isnan(got[0]).sum() / 4 + 1
    bits = geomedian.flag_bits(["dilated_cloud", "cirrus", "cloud", "cloud_shadow"])
    ref = reference(folders, bits, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.nanmax(np.abs(got - ref)) <= 1e-6
    # the patch cloudy on every date is nodata, counted and reported
    assert np.isnan(got[:6, 30:33, 5:8]).all() and (got[9, 30:33, 5:8] == 0).all()
    summary = json.loads((tmp_path / "out" / "t" / "mosaic_2019.json").read_text())
    assert summary["pixels"] == H * W and summary["pixels_no_clear"] == int((ref[9] == 0).sum()) >= 9
    assert summary["observations"] == int(ref[9].sum()) and summary["scenes_used"] == 5
    assert "with no clear observation" in capsys.readouterr().out
    # nothing else is left beside the outputs; the run's seconds are in the timing log,
    # not in the summary DVC tracks
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.parquet", "logs", "mosaic_2019.json", "mosaic_2019.tif"]
    assert "seconds" not in summary
    timing = json.loads((out.parent / "logs" / "timings.jsonl").read_text())
    assert timing["stage"] == "mosaic" and timing["period"] == "2019" and timing["seconds"] > 0


def test_geomedian_only_runs_on_dn_and_agrees(in_repo, tmp_path, lattice_scenes):
    """Without spread bands the stage reduces uint16 DN (geomad's nodata 0 path): same
    geomedian and count as the float reference."""
    catalog, folders = lattice_scenes
    assert main(["mosaic", *_args(tmp_path, catalog, "mosaic.spread=[]")]) == 0
    with rasterio.open(tmp_path / "out" / "t" / "mosaic_2019.tif") as src:
        assert src.descriptions == ("blue", "green", "red", "nir", "swir1", "swir2", "count")
        got = src.read()
    ref = reference(folders, geomedian.flag_bits(["dilated_cloud", "cirrus", "cloud", "cloud_shadow"]), 1)
    np.testing.assert_array_equal(np.isnan(got[:6]), np.isnan(ref[:6]))
    assert np.nanmax(np.abs(got[:6] - ref[:6])) <= 1e-5
    np.testing.assert_array_equal(got[6], ref[9])


def test_only_configured_bands_and_cells_outside_the_grid(in_repo, tmp_path, lattice_scenes):
    catalog, folders = lattice_scenes
    _grid(tmp_path / "out", drop={(c, r) for c in range(9332, 9336) for r in range(2760, 2764)})  # the SE block
    args = _args(tmp_path, catalog, "mosaic.spread=[emad]", "mosaic.count=false", "mosaic.block_cells=4")
    assert main(["mosaic", *args]) == 0
    with rasterio.open(tmp_path / "out" / "t" / "mosaic_2019.tif") as src:
        assert src.descriptions == ("blue", "green", "red", "nir", "swir1", "swir2", "emad")
        got = src.read()
    assert np.isnan(got[:, 120:, 120:]).all() and not np.isnan(got[:, :120, 120:]).all()
    summary = json.loads((tmp_path / "out" / "t" / "mosaic_2019.json").read_text())
    assert summary["pixels"] == (256 - 16) * PATCH * PATCH


def test_scenes_of_two_utm_zones_are_warped_and_combined(in_repo, tmp_path):
    """Two scenes in UTM 14 with reflectance A and one in UTM 15 with B: every pixel has
    three clear observations, and their geomedian is A."""
    a, b = np.linspace(0.05, 0.30, 6), np.linspace(0.30, 0.05, 6)
    items = []
    for k, (epsg, value) in enumerate([(32614, a), (32615, b), (32614, a)]):
        to_utm = Transformer.from_crs(6372, epsg, always_xy=True)
        cx, cy = to_utm.transform(*LATTICE.transform @ (W / 2, H / 2))
        n = W + 60
        dn = np.broadcast_to(dn_of(value)[:, None, None], (6, n, n))
        folder = write_product(tmp_path / "scenes", pid("LC08", dt.date(2019, 3 + k, 1), path=26 + k % 2), dn,
                               np.full((n, n), CLEAR_QA, np.uint16), f"EPSG:{epsg}",
                               from_origin(round(cx) - n * 15, round(cy) + n * 15, 30, 30))
        items.append(item_for(folder))
    _grid(tmp_path / "out")
    assert main(["mosaic", *_args(tmp_path, write_catalog(tmp_path / "scenes", items))]) == 0
    with rasterio.open(tmp_path / "out" / "t" / "mosaic_2019.tif") as src:
        got = src.read()
    assert (got[9] == 3).all()
    np.testing.assert_allclose(got[:6], np.broadcast_to(a[:, None, None], (6, H, W)), atol=2e-4)


# --- bad input -----------------------------------------------------------------------------------


def expect_error(capsys, root, args, *fragments):
    """Exit 2, one error line with the fragments (after the progress bar, if the error
    came up while reading blocks), nothing new written under `root/out/t`."""
    before = set((root / "out" / "t").rglob("*"))
    assert main(args) == 2
    *bar, err = capsys.readouterr().err.strip().split("\n")
    assert all(line.startswith("mosaic:") for line in bar), bar
    assert err.startswith("urbanmap mosaic: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert set((root / "out" / "t").rglob("*")) == before
    return err


def test_missing_band(in_repo, tmp_path, lattice_scenes, capsys):
    catalog, folders = lattice_scenes
    swir2 = folders[2] / landsat.band_filename(folders[2].name, "swir2")
    swir2.unlink()
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, tmp_path / "scenes", "data.imagery.source=folder",
                                                     f"data.imagery.folder={tmp_path / 'scenes'}")],
                 folders[2].name, "lacks band swir2")
    item = item_for(folders[1])
    del item.assets["swir22"]
    other = write_catalog(tmp_path / "other", [item])
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, other)], str(other), "no asset for band swir2")
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog)], str(swir2), "cannot read GeoTIFF")


def test_band_named_differently(in_repo, tmp_path, lattice_scenes, capsys):
    _, folders = lattice_scenes
    item = item_for(folders[0])
    item.assets["red"].href = item.assets["blue"].href  # red pointing at SR_B2 of an LC08 scene
    catalog = write_catalog(tmp_path / "other", [item])
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog)], "_SR_B2.TIF", "is SR_B2, but red of LC08 is SR_B4")
    item = item_for(folders[0])
    item.assets["nir08"].extra_fields["eo:bands"][0]["common_name"] = "nir"
    catalog = write_catalog(tmp_path / "other2", [item])
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog)], "no asset for band nir (eo:common_name nir08)")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_geotiff(in_repo, tmp_path, lattice_scenes, capsys, damage):
    catalog, folders = lattice_scenes
    path = folders[3] / landsat.band_filename(folders[3].name, "green")
    data = path.read_bytes()
    path.write_bytes(b"II*\x00 not a tiff at all" if damage == "garbage" else data[: len(data) * 2 // 3])
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog)], str(path), "cannot read GeoTIFF")
    assert not list((tmp_path / "out" / "t").glob(".*"))  # no temporary file left


def test_a_period_with_no_clear_observation(in_repo, tmp_path, capsys):
    """Scenes cloudy over the whole region on every date: the period is named, and no
    mosaic is left behind."""
    folders = []
    for k in range(2):
        qa = np.full((H, W), CLOUD, np.uint16)
        dn = np.full((6, H, W), 9000, np.uint16)
        folders.append(write_product(tmp_path / "cloudy", pid("LC08", dt.date(2019, 2 + 3 * k, 10)), dn, qa,
                                     LATTICE.crs, LATTICE.transform))
    _grid(tmp_path / "out")
    catalog = write_catalog(tmp_path / "cloudy", [item_for(f) for f in folders])
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog)],
                 "period 2019: its 2 scene(s) have no clear observation over the region", "not written")


def test_empty_catalog_and_no_scene_in_the_year(in_repo, tmp_path, lattice_scenes, capsys):
    catalog, folders = lattice_scenes
    empty = write_catalog(tmp_path / "empty", [])
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, empty)], str(empty), "no Landsat scene found")
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog), "period=2011"], "no scene acquired in 2011")
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, catalog), "data.imagery.months=[12]"],
                 "no scene acquired in 2019 (months 12)")
    missing = tmp_path / "nope" / "catalog.json"
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, missing)], str(missing), "STAC catalog not found")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    expect_error(capsys, tmp_path, ["mosaic", *_args(tmp_path, bad)], str(bad), "cannot read STAC catalog")
