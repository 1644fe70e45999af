"""Config values of the wrong kind or out of range: one line naming the key, exit 2,
nothing written (a good output already there is left as it was)."""

import pytest

from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config
from urbanmap.core.errors import InputError

GOOD = b"a good output of an earlier run"


@pytest.fixture
def region_dir(tmp_path):
    """A region folder whose grid.parquet, labels.parquet and patches.npz hold `GOOD`."""
    folder = tmp_path / "valle_de_mexico"
    folder.mkdir()
    for name in ("grid.parquet", "labels.parquet", "patches.npz"):
        (folder / name).write_bytes(GOOD)
    return folder


def run_cli(capsys, region_dir, *args):
    status = main([*args, f"out_dir={region_dir.parent}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert all(p.read_bytes() == GOOD for p in region_dir.iterdir())
    assert sorted(p.name for p in region_dir.iterdir()) == ["grid.parquet", "labels.parquet", "patches.npz"]
    return err


@pytest.mark.parametrize("window, message", [
    ("[2770000,2830000,799000,859000]", "data.window: expected [xmin, ymin, xmax, ymax] with xmin < xmax and ymin < ymax"),
    ("[2770000,799000,2770000,859000]", "(width 0, height 60000)"),
    ("[1,2,3]", "data.window: expected four numbers [xmin, ymin, xmax, ymax]"),
    ("[a,b,c,d]", "data.window takes a list of whole numbers"),
    ("5", "data.window takes a list"),
])
def test_a_bad_window_is_refused_before_the_grid_is_written(in_repo, capsys, region_dir, window, message):
    assert message in run_cli(capsys, region_dir, "grid", f"data.window={window}")


@pytest.mark.parametrize("stage, override, message", [
    ("grid", "data.cell_size=abc", "data.cell_size=abc: data.cell_size takes a whole number (like 1000), got 'abc'"),
    ("labels", "labels.urban_fraction.urban_min=high", "labels.urban_fraction.urban_min takes a number"),
    ("labels", "labels.urban_fraction.urban_min=5", "labels.urban_fraction.urban_min: a fraction of the cell's area from 0 to 1, got 5"),
    ("train", "cv.n_splits=abc", "cv.n_splits takes a whole number"),
    ("train", "cv.n_splits=2.7", "cv.n_splits=2.7: cv.n_splits takes a whole number (like 10), got 2.7"),
    ("mosaic", "mosaic.block_cells=abc", "mosaic.block_cells takes a whole number"),
    ("mosaic", "mosaic.block_cells=0", "mosaic.block_cells: must be at least 1, got 0"),
    ("validate", "validation.target_se=abc", "validation.target_se takes a number"),
    ("sdg", "sdg.population.growth_rate=abc", "sdg.population.growth_rate takes a number"),
    ("grid", "compute.threads=abc", "compute.threads takes a whole number"),
    ("grid", "~data.crs", "~data.crs: the stages read data.crs; set it (or data.crs=null) instead of deleting it"),
    ("plan", "plan.workers=[0]", "plan.workers: every cluster size must be >= 1"),
    ("train", "model.estimator.n_estimators=-1", "model.estimator (sklearn.ensemble.ExtraTreesClassifier): The 'n_estimators' parameter"),
    ("train", "model.estimator._target_=sklearn.ensemble.NoSuchClassifier",
     "model.estimator: cannot build sklearn.ensemble.NoSuchClassifier: Error locating target"),
    ("mosaic", "data.imagery.source=ftp", "data.imagery.source: must be one of stac, api, folder, file, got 'ftp'"),
    ("grid", "data.name=méxico", "quote the value: \"data.name='méxico'\""),
])
def test_wrong_values_are_one_line_errors_naming_the_key(in_repo, capsys, region_dir, stage, override, message):
    args = ["validate", "sample"] if stage == "validate" else [stage]
    if stage == "mosaic":
        args.append("period=2010")
    err = run_cli(capsys, region_dir, *args, override)
    assert message in err and "Traceback" not in err


def test_a_folder_as_the_boundary_is_named_a_folder(in_repo, capsys, region_dir, tmp_path):
    assert f"{tmp_path}: boundary is a folder, not a file" in run_cli(capsys, region_dir, "grid", f"data.boundary={tmp_path}")


def test_an_override_keeps_the_kind_of_the_value_it_replaces():
    for good in ("data.cell_size=500", "data.cell_size=500.0", "labels.urban_fraction.urban_min=1",
                 "data.name=2020", "data.window=null", "plan.workers=[4]"):
        config.load(REPO, [good])
    with pytest.raises(InputError, match=r"model.features.groups takes a list of texts .* got True"):
        config.load(REPO, ["model.features.groups=[true]"])
