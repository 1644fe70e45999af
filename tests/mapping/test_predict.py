"""The predict stage: the model on every grid cell, streamed in blocks; COG on the grid;
nodata cells; bad inputs (missing mosaic, model bands or patch size unlike the mosaic)."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import rowcol

from helpers import synthetic
from helpers.cli import heavy_imports_after
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, io, paths
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice
from urbanmap.examples import tiny
from urbanmap.mapping import predict_tiles
from urbanmap.mapping.classify import classes, predict_cells
from urbanmap.mapping.predict import PredictSettings
from urbanmap.training import models
from urbanmap.training.patchset import load_patches

OUTPUTS = ("predictions/{}.parquet", "predictions/{}.tif", "predictions/{}.png", "predictions/{}.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny region (20 x 20 cells) with its mosaic, patches, Extra Trees model and the
    grid (every cell, excluded ones too), predicted for 2010."""
    root = tmp_path_factory.mktemp("predict")
    cfg = synthetic.trained_region(root)
    labels, _, _ = io.read_cells(paths.labels(cfg), "labels", ["cell_id", "label", "urban_fraction"])
    io.write_cells(paths.grid(cfg), labels[["col", "row", "cell_id"]], tiny.CELL, tiny.CRS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        assert main(["predict", *synthetic.overrides(root), "period=2010"]) == 0
    return root, cfg, labels


def overrides(root, *extra):
    return [*synthetic.overrides(root), *extra]


def run_cli(monkeypatch, root, *extra) -> int:
    monkeypatch.chdir(REPO)
    return main(["predict", *overrides(root, *extra)])


def copy_region(trained, tmp_path):
    root, _, labels = trained
    shutil.copytree(root / "tiny", tmp_path / "tiny", ignore=shutil.ignore_patterns("predictions"))
    return tmp_path, labels


def outputs(folder, year):
    return [folder / name.format(year) for name in OUTPUTS]


def test_every_cell_gets_the_models_prediction_on_the_patch_that_patches_cuts(trained):
    root, cfg, labels = trained
    pred, cell_size, crs = io.read_cells(root / "tiny" / "predictions" / "2010.parquet", "predictions", ["cell_id", "p_urban", "class"])
    # every grid cell once, excluded ones too, with a prediction
    assert sorted(pred["cell_id"]) == sorted(labels["cell_id"]) and len(pred) == 400
    assert (labels["label"] == "excluded").sum() > 0
    assert np.isfinite(pred["p_urban"]).all() and pred["p_urban"].dtype == np.float32
    # the same numbers as the model on the patches the `patches` stage cut from this mosaic
    ps = load_patches(paths.patches(cfg))
    clf, _ = models.load(paths.model_dir(cfg))
    expected = clf.predict_proba(ps.patches).astype(np.float32)
    got = pred.set_index("cell_id").loc[ps.cell_id, "p_urban"].to_numpy()
    np.testing.assert_array_equal(got, expected)
    # classes at the threshold; the model separates the synthetic city
    np.testing.assert_array_equal(pred["class"], np.where(pred["p_urban"] >= 0.5, "urban", "non_urban"))
    truth = labels.set_index("cell_id").loc[pred["cell_id"], "label"].to_numpy()
    assert (pred["class"].to_numpy()[truth == "urban"] == "urban").mean() > 0.9
    summary = json.loads((root / "tiny" / "predictions" / "2010.json").read_text())
    assert summary["cells"] == 400 and summary["model"] == "extra_trees" and summary["threshold"] == 0.5
    assert summary["cells_per_class"] == {c: int((pred["class"] == c).sum()) for c in ("urban", "non_urban", "nodata")}
    assert (root / "tiny" / "predictions" / "2010.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_lenet_predicts_the_patches_as_it_does_in_memory(trained, tmp_path, monkeypatch):
    from urbanmap.training import train

    root, _ = copy_region(trained, tmp_path)
    cfg = config.load(REPO, overrides(root, *synthetic.FAST["lenet"]))
    train.run(cfg)
    assert run_cli(monkeypatch, root, "period=2010", *synthetic.FAST["lenet"]) == 0
    pred, _, _ = io.read_cells(root / "tiny" / "predictions" / "2010.parquet", "predictions", ["cell_id", "p_urban"])
    ps = load_patches(paths.patches(cfg))
    clf, card = models.load(paths.model_dir(cfg))
    assert card["name"] == "lenet"
    got = pred.set_index("cell_id").loc[ps.cell_id, "p_urban"].to_numpy()
    np.testing.assert_allclose(got, clf.predict_proba(ps.patches), rtol=1e-5, atol=1e-6)
    assert json.loads((root / "tiny" / "predictions" / "2010.json").read_text())["model"] == "lenet"


def test_blocks_do_not_change_the_result(trained):
    root, cfg, labels = trained
    lattice = tiny.lattice_of(labels)
    clf, _ = models.load(paths.model_dir(cfg))
    shuffled = labels.sample(frac=1, random_state=3)
    with rasterio.open(root / "tiny" / "mosaic_2010.tif") as src:
        whole = predict_cells(clf, src, lattice, shuffled["col"], shuffled["row"], [1, 2, 3, 4, 5, 6], 64, progress=False)
        small = predict_cells(clf, src, lattice, shuffled["col"], shuffled["row"], [1, 2, 3, 4, 5, 6], 3, progress=False)
    np.testing.assert_array_equal(whole, small)
    pred, _, _ = io.read_cells(root / "tiny" / "predictions" / "2010.parquet", "predictions", ["cell_id", "p_urban"])
    np.testing.assert_array_equal(whole, pred.set_index("cell_id").loc[shuffled["cell_id"], "p_urban"].to_numpy())


def test_p_urban_cog_has_one_pixel_per_grid_cell(trained):
    root, _, labels = trained
    pred, _, _ = io.read_cells(root / "tiny" / "predictions" / "2010.parquet", "predictions", ["p_urban"])
    with rasterio.open(root / "tiny" / "predictions" / "2010.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.crs.to_epsg() == 6372 and src.count == 1 and src.dtypes[0] == "float32"
        col0, row0 = labels["col"].min(), labels["row"].min()
        assert src.transform == Affine(1000.0, 0.0, col0 * 1000.0, 0.0, -1000.0, (row0 + 20) * 1000.0)
        assert (src.width, src.height) == (20, 20) and np.isnan(src.nodata)
        image = src.read(1)
        # the pixel under each cell's centre (rasterio's own rowcol) holds its p_urban
        r, c = rowcol(src.transform, (pred["col"] + 0.5) * 1000.0, (pred["row"] + 0.5) * 1000.0)
    np.testing.assert_array_equal(image[r, c], pred["p_urban"].to_numpy())


def test_cells_with_nodata_are_classed_nodata(trained, tmp_path, monkeypatch):
    root, labels = copy_region(trained, tmp_path)
    cells = labels.set_index("cell_id")
    img = tiny.scene(labels, seed=5)
    lattice = tiny.lattice_of(labels)
    holed = ["E2795N0823", "E2800N0830", "E2790N0820"]
    r, c = lattice.cell_offsets(cells.loc[holed, "col"], cells.loc[holed, "row"])
    img[4, r[0] + 10, c[0] + 7] = np.nan  # one pixel of one band
    img[:, r[1] : r[1] + 33, c[1] : c[1] + 33] = np.nan  # the whole patch
    img[0, r[2] + 32, c[2] + 32] = np.nan  # the last pixel
    tiny.write_mosaic(root / "tiny" / "mosaic_2019.tif", labels, image=img)
    assert run_cli(monkeypatch, root, "period=2019", "predict.block_cells=4") == 0
    pred, _, _ = io.read_cells(root / "tiny" / "predictions" / "2019.parquet", "predictions", ["cell_id", "p_urban", "class"])
    nodata = pred[pred["class"] == "nodata"]
    assert sorted(nodata["cell_id"]) == sorted(holed) and nodata["p_urban"].isna().all()
    assert pred.loc[pred["class"] != "nodata", "p_urban"].notna().all()
    summary = json.loads((root / "tiny" / "predictions" / "2019.json").read_text())
    assert summary["cells_per_class"]["nodata"] == 3 and summary["period"] == "2019"
    assert not (root / "tiny" / "predictions" / "2010.parquet").exists()  # only the year asked


def test_clear_observations_per_cell_flag_low_quality_cells(trained, tmp_path, monkeypatch):
    """A semester's mosaic: the count band gives each cell's clear observations (the
    median over its pixels), read block by block; cells below predict.min_clear are
    classified all the same and flagged low_quality, counted in the summary."""
    root, labels = copy_region(trained, tmp_path)
    cells = labels.set_index("cell_id")
    img = np.concatenate([tiny.scene(labels, seed=5), np.ones((3, *tiny.scene(labels).shape[1:]), np.float32)])
    count = np.full(img.shape[1:], 4.0, np.float32)
    lattice = tiny.lattice_of(labels)
    low, edge = ["E2795N0823", "E2790N0820"], "E2800N0830"
    for cell in low:
        r, c = lattice.cell_offsets(cells.loc[[cell], "col"], cells.loc[[cell], "row"])
        count[r[0]:r[0] + 33, c[0]:c[0] + 33] = 1.0
    r, c = lattice.cell_offsets(cells.loc[[edge], "col"], cells.loc[[edge], "row"])
    count[r[0]:r[0] + 33, c[0]:c[0] + 16] = 0.0  # under half of its pixels: its median stays 4
    img = np.concatenate([img, count[None]])
    profile = dict(driver="GTiff", width=img.shape[2], height=img.shape[1], count=img.shape[0], dtype="float32",
                   crs=tiny.CRS, transform=lattice.transform, nodata=np.nan)
    with rasterio.open(root / "tiny" / "mosaic_2019H1.tif", "w", **profile) as dst:
        dst.write(img)
        dst.descriptions = (*tiny.BANDS, "smad", "emad", "bcmad", "count")
    assert run_cli(monkeypatch, root, "period=2019H1", "predict.block_cells=4", "predict.min_clear=2") == 0
    pred, _, _ = io.read_cells(root / "tiny" / "predictions" / "2019H1.parquet", "predictions",
                               ["cell_id", "class", "clear", "low_quality"])
    pred = pred.set_index("cell_id")
    assert sorted(pred.index[pred["low_quality"]]) == sorted(low) and (pred.loc[low, "clear"] == 1).all()
    assert pred.loc[edge, "clear"] == 4 and (pred.drop(index=low)["clear"] == 4).all()
    assert (pred["class"] != "nodata").all()  # flagged, still classified
    summary = json.loads((root / "tiny" / "predictions" / "2019H1.json").read_text())
    assert summary["period"] == "2019H1" and (summary["start"], summary["end"]) == ("2019-01-01", "2019-06-30")
    assert summary["low_quality_cells"] == 2 and summary["min_clear"] == 2 and summary["median_clear"] == 4
    urban_low = int((pred.loc[low, "class"] == "urban").sum())
    assert summary["low_quality_urban_km2"] == pytest.approx(urban_low * tiny.CELL**2 / 1e6)


def test_a_mosaic_without_a_count_band_flags_nothing(trained):
    root, _, _ = trained
    pred, _, _ = io.read_cells(root / "tiny" / "predictions" / "2010.parquet", "predictions", ["clear", "low_quality"])
    assert pred["clear"].isna().all() and not pred["low_quality"].any()


def test_threshold_is_configurable():
    p = np.array([0.1, 0.5, 0.69, 0.7, np.nan], np.float32)
    assert classes(p, 0.5).tolist() == ["non_urban", "urban", "urban", "urban", "nodata"]
    assert classes(p, 0.7).tolist() == ["non_urban", "non_urban", "non_urban", "urban", "nodata"]


def test_a_period_without_mosaic_is_a_one_line_error(trained, tmp_path, monkeypatch, capsys):
    root, _ = copy_region(trained, tmp_path)
    assert run_cli(monkeypatch, root, "period=2031") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mosaic_2031.tif: mosaic of period 2031 not found" in err
    assert not any(p.exists() for p in outputs(root / "tiny", 2031))


def test_a_mosaic_without_the_models_bands_is_refused(trained, tmp_path, monkeypatch, capsys):
    root, labels = copy_region(trained, tmp_path)
    img = tiny.scene(labels)[:5]  # no swir2
    lattice = tiny.lattice_of(labels)
    profile = dict(driver="GTiff", width=img.shape[2], height=img.shape[1], count=5, dtype="float32",
                   crs=tiny.CRS, transform=lattice.transform, nodata=np.nan)
    with rasterio.open(root / "tiny" / "mosaic_2019.tif", "w", **profile) as dst:
        dst.write(img)
        dst.descriptions = ("blue", "green", "red", "nir", "swir1")
    assert run_cli(monkeypatch, root, "period=2019") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_card.json: model trained on bands" in err and "missing: swir2" in err
    assert not any(p.exists() for p in outputs(root / "tiny", 2019))


def test_a_mosaic_of_another_patch_size_is_refused(trained, tmp_path, monkeypatch, capsys):
    root, labels = copy_region(trained, tmp_path)
    coarse = PixelLattice.from_cells(labels["col"], labels["row"], 1000.0, 11, tiny.CRS)  # 90.9 m pixels
    img = tiny.scene(labels)[:, 1::3, 1::3]
    assert img.shape[1:] == (coarse.height, coarse.width)
    tiny.write_mosaic(root / "tiny" / "mosaic_2019.tif", labels, image=img, transform=coarse.transform)
    assert run_cli(monkeypatch, root, "period=2019", "data.patch_size=11") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model trained on 33 x 33 px patches" in err and "11 px per 1000 m cell" in err
    assert not any(p.exists() for p in outputs(root / "tiny", 2019))


def test_config_has_the_predict_section():
    cfg = config.load(REPO)
    assert cfg.predict.threshold == 0.5 and cfg.predict.block_cells >= 1


def test_predict_settings_are_read_once_and_checked():
    settings = PredictSettings.from_config(config.load(REPO, ["period=2019"]))
    assert (settings.period.label, settings.threshold, settings.block_cells, settings.min_clear) == ("2019", 0.5, 32, 2)
    assert settings.mosaic.name == "mosaic_2019.tif" and settings.predictions.name == "2019.parquet"
    assert settings.compute.mode == "local"
    for override, message in (("predict.threshold=1.5", "predict.threshold: expected a number between 0 and 1"),
                              ("predict.block_cells=2.5", "predict.block_cells takes a whole number"),
                              ("predict.min_clear=-1", "predict.min_clear: expected a number >= 0"),
                              ("period=soon", "period: period 'soon' does not parse")):
        with pytest.raises(InputError, match=message):
            PredictSettings.from_config(config.load(REPO, [override]))


# --- start-up: what a process (the stage's, a Dask worker) loads ----------------------------


@pytest.mark.slow
def test_predict_with_extra_trees_imports_no_torch(trained, tmp_path):
    """Skops lists scikit-learn's estimators by importing every package of it, torch's
    array-API wrapper included; models.extra_trees.skops_io keeps torch out."""
    root, _ = copy_region(trained, tmp_path)
    assert heavy_imports_after(["predict", *overrides(root, "period=2010")]) == (0, [])
    assert (root / "tiny" / "predictions" / "2010.parquet").is_file()


@pytest.mark.slow
def test_skops_trusts_the_same_types_when_imported_without_torch():
    """Skops' default trusted types do not depend on the wrappers left out, and a later
    import of the torch wrapper still works (nothing is left half-imported)."""
    import subprocess
    import sys

    code = (
        "import sys; from urbanmap.training.models.extra_trees import skops_io; sio = skops_io(); "
        "without_torch = 'torch' not in sys.modules; "
        "from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES as names; "
        "import sklearn.externals.array_api_compat.torch as xp; "
        "from sklearn.utils import all_estimators; from skops.io._utils import get_type_name; "
        "full = [get_type_name(c) for _, c in all_estimators() if get_type_name(c).startswith('sklearn.')]; "
        "print(without_torch, 'torch' in sys.modules, hasattr(xp, 'asarray'), sorted(names) == sorted(full), len(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    without_torch, torch_later, wrapper_works, same, n = out.stdout.split()
    assert (without_torch, torch_later, wrapper_works, same) == ("True", "True", "True", "True") and int(n) > 100


def test_the_model_is_loaded_once_per_process_and_again_when_its_files_change(trained, tmp_path):
    """A process (a persistent Dask worker) keeps the model between tasks and stages, and
    loads it again when the model is retrained in the same folder."""
    root, _ = copy_region(trained, tmp_path)
    _, cfg, _ = trained
    folder = root / "tiny" / "model"
    first = predict_tiles.model(folder, 1)
    assert predict_tiles.model(folder, 1) is first
    ps = load_patches(paths.patches(cfg))
    retrained, card = models.load(folder)
    retrained.estimator.set_params(n_estimators=3, random_state=7)
    retrained.fit(ps.patches[::3], ps.label[::3])
    models.save(retrained, folder, {k: v for k, v in card.items() if k != "files"})
    second = predict_tiles.model(folder, 1)
    assert second is not first
    np.testing.assert_array_equal(second.predict_proba(ps.patches), retrained.predict_proba(ps.patches))
    assert not np.array_equal(second.predict_proba(ps.patches), first.predict_proba(ps.patches))


@pytest.mark.slow
def test_dask_predictions_are_the_same_bytes_as_local(trained, tmp_path, monkeypatch):
    """compute=dask on a LocalCluster the stage starts (2 process workers, each loading
    the model once; the cluster shut down while the outputs are written) writes the same
    table and COG as compute=local."""
    root, _ = copy_region(trained, tmp_path)
    tiles = ["period=2010", "compute.tile_size=8", "predict.block_cells=4"]  # 3 x 3 tiles of 4 blocks
    assert run_cli(monkeypatch, root, *tiles) == 0
    local = [(root / "tiny" / name).read_bytes() for name in ("predictions/2010.parquet", "predictions/2010.tif")]
    assert run_cli(monkeypatch, root, *tiles, "compute=dask", "compute.n_workers=2", "compute.threads_per_worker=1",
                   "compute.memory_limit=1GiB") == 0
    assert [(root / "tiny" / name).read_bytes() for name in ("predictions/2010.parquet", "predictions/2010.tif")] == local


def test_a_rerun_writes_the_same_bytes_and_logs_its_timing_apart(trained, tmp_path, monkeypatch):
    """The outputs DVC tracks hold no timing: a second run writes the same bytes of all
    four; seconds and cells/s go to logs/timings.jsonl, one line per run."""
    root, _ = copy_region(trained, tmp_path)
    shutil.rmtree(root / "tiny" / "logs")  # the fixture's own run
    runs = []
    for _ in range(2):
        assert run_cli(monkeypatch, root, "period=2010") == 0
        runs.append([f.read_bytes() for f in outputs(root / "tiny", 2010)])
    assert runs[0] == runs[1]
    summary = json.loads((root / "tiny" / "predictions" / "2010.json").read_text())
    assert not {"seconds", "cells_per_second"} & set(summary)
    log = [json.loads(line) for line in (root / "tiny" / "logs" / "timings.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["period"]) for r in log] == [("predict", "2010")] * 2
    assert all(r["seconds"] > 0 and r["cells_per_second"] > 0 for r in log)


def damage(path, how):
    """Rewrite the COG at `path`: truncated to half, bytes scrambled in its tiles, its
    reflectance x 10,000 (unscaled digital numbers), or every pixel NaN."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "corrupt":
        for i in range(len(data) // 3, len(data) - 64, 5):
            data[i] = (data[i] * 31 + 7) % 256
        path.write_bytes(data)
    else:
        with rasterio.open(path) as src:
            img, profile, names = src.read(), src.profile, src.descriptions
        img = img * 10_000 if how == "unscaled" else np.full_like(img, np.nan)
        profile.update(driver="GTiff")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(img)
            dst.descriptions = names


@pytest.mark.parametrize("how, fragment", [
    ("truncated", "cannot read"),  # the file's directory, or a tile, whichever GDAL meets first
    ("corrupt", "cannot read"),
    ("unscaled", "is not a surface reflectance (0..1); the mosaic looks like unscaled digital numbers"),
    ("nan", "no valid pixel in the mosaic"),
])
def test_a_damaged_or_unscaled_mosaic_is_one_line_naming_it(trained, tmp_path, monkeypatch, capsys, how, fragment):
    root, _ = copy_region(trained, tmp_path)
    mosaic = root / "tiny" / "mosaic_2010.tif"
    damage(mosaic, how)
    assert run_cli(monkeypatch, root, "period=2010") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"urbanmap predict: error: {mosaic}: ") and fragment in err, err
    assert not any(p.exists() for p in outputs(root / "tiny", 2010))
    before = (root / "tiny" / "patches.npz").read_bytes()
    assert main(["patches", *overrides(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{mosaic}: " in err and fragment in err, err
    assert (root / "tiny" / "patches.npz").read_bytes() == before
