"""The patches stage: cells cut on the lattice, balanced sample, nodata, bad mosaics."""

import logging

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import from_bounds

from helpers import synthetic
from helpers.cli import heavy_imports_after
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.core.errors import InputError
from urbanmap.examples import tiny
from urbanmap.training.patches import PatchSettings, run
from urbanmap.training.patchset import CLASSES, load_patches, read_patches
from urbanmap.training.sampler import balanced_sample, extract


@pytest.fixture
def region(tmp_path):
    cells, img = tiny.make_region(tmp_path)
    return tmp_path, cells, img


def cfg_for(root, *extra):
    return config.load(REPO, synthetic.overrides(root, "tiny", *extra))


def test_a_cells_patch_is_exactly_its_window(region):
    root, cells, img = region
    lattice = tiny.lattice_of(cells)
    pick = cells.sample(25, random_state=1)
    with rasterio.open(root / "tiny" / "mosaic_2010.tif") as src:
        got = read_patches(src, lattice, pick["col"], pick["row"], [1, 2, 3, 4, 5, 6], block_cells=4)
        for k, (col, row) in enumerate(zip(pick["col"], pick["row"])):
            # independently: the window of the cell's bounds under the file's transform
            win = from_bounds(col * 1000, row * 1000, (col + 1) * 1000, (row + 1) * 1000, src.transform)
            assert (win.width, win.height) == pytest.approx((33, 33))
            r0, c0 = round(win.row_off), round(win.col_off)
            np.testing.assert_array_equal(got[k], img[:, r0 : r0 + 33, c0 : c0 + 33])
    assert got.shape == (25, 6, 33, 33) and got.dtype == np.float32


def test_stage_writes_a_balanced_npz_readable_without_pickle(region):
    root, cells, _ = region
    run(cfg_for(root))
    with np.load(root / "tiny" / "patches.npz", allow_pickle=False) as npz:
        assert npz["patches"].shape == (200, 6, 33, 33)
        assert int(npz["year"]) == 2010 and list(npz["bands"]) == ["blue", "green", "red", "nir", "swir1", "swir2"]
    ps = load_patches(root / "tiny" / "patches.npz")
    assert np.bincount(ps.label).tolist() == [100, 100]
    assert len(set(ps.cell_id)) == 200
    by_id = cells.set_index("cell_id")
    truth = by_id.loc[ps.cell_id]
    assert set(truth["label"]) == {"urban", "non_urban"}  # excluded cells are never sampled
    np.testing.assert_array_equal(ps.label, (truth["label"] == "urban").to_numpy())
    np.testing.assert_array_equal(ps.x, (truth["col"].to_numpy() + 0.5) * 1000)
    np.testing.assert_array_equal(ps.y, (truth["row"].to_numpy() + 0.5) * 1000)
    assert ps.label[:20].min() == 0 and ps.label[:20].max() == 1  # classes interleaved


def test_sample_is_capped_to_the_rarer_class_with_a_warning(region, caplog):
    root, cells, _ = region
    with caplog.at_level(logging.WARNING):
        run(cfg_for(root, "patches.n_per_class=5000"))
    urban = int((cells["label"] == "urban").sum())
    ps = load_patches(root / "tiny" / "patches.npz")
    assert np.bincount(ps.label).tolist() == [urban, urban]
    assert any("capped to 112" in r.getMessage() for r in caplog.records)


def test_same_seed_same_sample_other_seed_other_sample(region):
    root, _, _ = region
    run(cfg_for(root))
    first = load_patches(root / "tiny" / "patches.npz").cell_id
    run(cfg_for(root))
    np.testing.assert_array_equal(first, load_patches(root / "tiny" / "patches.npz").cell_id)
    run(cfg_for(root, "seed=7"))
    assert set(first) != set(load_patches(root / "tiny" / "patches.npz").cell_id)


def test_patches_with_nodata_are_dropped_counted_and_replaced(tmp_path):
    cells = tiny.labelled_cells(20, 20)
    img = tiny.scene(cells)
    lattice = tiny.lattice_of(cells)
    urban = cells[cells["label"] == "urban"]
    holed = urban.iloc[:5]
    row_off, col_off = lattice.cell_offsets(holed["col"], holed["row"])
    img[3, row_off + 7, col_off + 11] = np.nan  # one pixel of one band per cell
    tiny.write_mosaic(tmp_path / "m.tif", cells, img)
    n = len(urban) - 5  # every valid urban cell is needed, so every holed one is drawn
    with rasterio.open(tmp_path / "m.tif") as src:
        ps = extract(cells, lattice, src, tiny.BANDS, n, seed=3, year=2010)
    assert ps.nodata_dropped == 5
    assert np.bincount(ps.label).tolist() == [n, n]
    assert not set(holed["cell_id"]) & set(ps.cell_id)
    assert np.isfinite(ps.patches).all()


def test_extra_mosaic_bands_are_ignored(tmp_path):
    cells, img = tiny.make_region(tmp_path, extra_bands=True)
    run(cfg_for(tmp_path))
    ps = load_patches(tmp_path / "tiny" / "patches.npz")
    assert ps.patches.shape[1] == 6 and ps.patches.max() < 1  # not the constant count band


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("crs", "mosaic CRS EPSG:32614 is not the grid's EPSG:6372"),
        ("shift", "mosaic pixel grid"),
        ("pixel", "mosaic pixel grid"),
        ("band", "mosaic lacks band(s) swir2"),
    ],
)
def test_a_mosaic_off_the_grid_is_refused(tmp_path, capsys, kind, fragment, in_repo):
    cells = tiny.labelled_cells(20, 20)
    folder = tmp_path / "tiny"
    folder.mkdir()
    tiny.write_labels(folder / "labels.parquet", cells)
    t = tiny.lattice_of(cells).transform
    kwargs = {
        "crs": {"crs": "EPSG:32614"},
        "shift": {"transform": t @ Affine.translation(0.5, 0)},
        "pixel": {"transform": Affine(30.0, 0, t.c, 0, -30.0, t.f)},
        "band": {},
    }[kind]
    image = tiny.scene(cells)
    if kind == "band":
        image = image[:5]
    with rasterio.open(
        folder / "mosaic_2010.tif", "w", driver="GTiff", width=image.shape[2], height=image.shape[1],
        count=len(image), dtype="float32", crs=kwargs.get("crs", "EPSG:6372"), transform=kwargs.get("transform", t),
    ) as dst:
        dst.write(image)
        dst.descriptions = tuple(tiny.BANDS[: len(image)])
    assert main(["patches", *synthetic.overrides(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "mosaic_2010.tif" in err, err
    assert not (folder / "patches.npz").exists()
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("invalid_share", [0.0, 0.03, 0.2, 0.6, 1.0])
def test_balanced_sample_is_the_first_valid_cells_of_each_random_order_in_few_rounds(invalid_share):
    """The sample is, per class, the first n cells of its seeded random order whose patch
    is valid, and nodata_dropped counts the invalid ones before them, however many rounds
    the cutting takes; a fifth of the cells invalid (a mosaic the scenes cover in part)
    costs three rounds at most, not one per replacement of a replacement."""
    rng = np.random.default_rng(7)
    label = rng.choice(np.array(["urban", "non_urban", "excluded"]), 5000, p=[0.2, 0.7, 0.1])
    bad = rng.random(len(label)) < invalid_share
    rounds, cut = [], []

    def read(batch):
        rounds.append(len(batch))
        cut.extend(batch.tolist())
        return np.asarray(batch, np.float32).reshape(-1, 1, 1, 1), ~bad[batch]

    n = 600
    if invalid_share == 1.0:
        with pytest.raises(InputError, match="no valid patch"):
            balanced_sample(label, n, 11, read)
        return
    index, patches, dropped = balanced_sample(label, n, 11, read)

    order = np.random.default_rng(11)
    queues = [order.permutation(np.flatnonzero(label == c)) for c in CLASSES]
    valid = [np.flatnonzero(~bad[q])[:n] for q in queues]  # positions of the first n valid cells
    n_valid = min(len(v) for v in valid)  # a class short of valid cells caps both
    expected = np.concatenate([q[v[:n_valid]] for q, v in zip(queues, valid)])
    # invalid cells cut: those before a class's n-th valid cell, or all of a class short of them
    before = sum(int(bad[q[: v[-1] + 1] if len(v) == n else q].sum()) for q, v in zip(queues, valid))
    assert sorted(index.tolist()) == sorted(expected.tolist())
    assert dropped == before
    assert np.array_equal(patches[:, 0, 0, 0], index.astype(np.float32))  # each cell keeps its own patch
    assert len(set(cut)) == len(cut)  # no cell is cut twice
    assert len(rounds) <= (1 if invalid_share == 0 else 3)
    if invalid_share == 0:
        assert rounds == [2 * n]  # nothing cut beyond the sample


def test_missing_mosaic_and_corrupt_patches_file(tmp_path, capsys, in_repo):
    folder = tmp_path / "tiny"
    folder.mkdir()
    tiny.write_labels(folder / "labels.parquet", tiny.labelled_cells(20, 20))
    assert main(["patches", *synthetic.overrides(tmp_path)]) == 2
    assert "mosaic_2010.tif: mosaic of 2010 not found" in capsys.readouterr().err
    (folder / "patches.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read patches file"):
        load_patches(folder / "patches.npz")


@pytest.mark.slow
def test_patches_stage_does_not_import_torch(region):
    root, _, _ = region
    assert heavy_imports_after(["patches", *synthetic.overrides(root)]) == (0, [])
    assert paths.patches(cfg_for(root)).is_file()


def test_labels_without_urban_cells_are_refused(tmp_path, capsys, in_repo):
    cells = tiny.labelled_cells(20, 20)
    tiny.make_region(tmp_path)
    cells["label"] = cells["label"].replace("urban", "excluded")
    tiny.write_labels(tmp_path / "tiny" / "labels.parquet", cells)
    assert main(["patches", *synthetic.overrides(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("labels.parquet: no cell labelled urban; training needs urban and non_urban cells"), err
    assert main(["patches", *synthetic.overrides(tmp_path), "patches.n_per_class=0"]) == 2
    assert "patches.n_per_class: expected a positive whole number, got 0" in capsys.readouterr().err
    assert not (tmp_path / "tiny" / "patches.npz").exists()


def test_settings_are_read_once_and_checked(tmp_path):
    settings = PatchSettings.from_config(cfg_for(tmp_path, "compute.tile_size=5"))
    assert settings.bands == tuple(tiny.BANDS) and settings.n_per_class == 100 and settings.year == 2010
    assert settings.mosaic == tmp_path / "tiny" / "mosaic_2010.tif" and settings.compute.tile_size >= 5
    with pytest.raises(InputError, match=r"patches.bands: expected a list of band names, got \[\]"):
        PatchSettings.from_config(cfg_for(tmp_path, "patches.bands=[]"))


def test_a_corrupt_tile_is_named_when_its_patches_are_read(region, tmp_path):
    """A COG whose header is intact but whose tiles are scrambled opens, and fails only
    when a tile is decoded: one InputError naming the file and where it was reading."""
    root, cells, _ = region
    cog = tmp_path / "cog.tif"
    with rasterio.open(root / "tiny" / "mosaic_2010.tif") as src:
        profile = {**src.profile, "driver": "COG", "compress": "deflate", "blocksize": 256}
        with rasterio.open(cog, "w", **profile) as dst:
            dst.write(src.read())
    data = bytearray(cog.read_bytes())
    for i in range(len(data) // 2, len(data), 3):
        data[i] ^= 0x5A
    cog.write_bytes(data)
    lattice = tiny.lattice_of(cells)
    with rasterio.open(cog) as src, pytest.raises(InputError, match=rf"{cog}: cannot read the pixels at column \d+, row \d+: .*"
                                                                    r"the file is damaged or truncated"):
        read_patches(src, lattice, cells["col"], cells["row"], [1, 2, 3, 4, 5, 6])
