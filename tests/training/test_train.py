"""The train stage: CV predictions, final model, both CV schemes, determinism, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.core import config, paths
from urbanmap.core.errors import InputError
from urbanmap.training import evaluate, patchset, train
from urbanmap.training.cv import spatial_blocks


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """A synthetic region with its patches (100 per class) cut once."""
    return synthetic.patched_region(tmp_path_factory.mktemp("train"))


def cfg_for(root, model="extra_trees", *extra):
    return config.load(REPO, synthetic.overrides(root, "tiny", *synthetic.FAST[model], *extra))


def test_extra_trees_cv_predicts_every_cell_once_then_saves_the_final_model(region):
    cfg = cfg_for(region)
    train.run(cfg)
    pred = pd.read_parquet(paths.cv_predictions(cfg))
    ps = patchset.load_patches(paths.patches(cfg))
    assert sorted(pred["cell_id"]) == sorted(ps.cell_id)
    assert sorted(pred["fold"].unique()) == [0, 1, 2]
    assert pred.groupby("fold")["y_true"].mean().between(0.45, 0.55).all()  # stratified
    assert pred["p_urban"].between(0, 1).all()
    assert (pred["y_pred"] == (pred["p_urban"] >= 0.5)).all()
    assert (pred["y_pred"] == pred["y_true"]).mean() > 0.9  # the synthetic city is easy to see
    card = (paths.model_dir(cfg) / "model_card.json").read_text()
    assert '"name": "extra_trees"' in card and '"patch_size": 33' in card
    assert (paths.model_dir(cfg) / "model.skops").is_file()


def test_spatial_cv_keeps_blocks_on_one_side(region):
    cfg = cfg_for(region, "extra_trees", "cv=spatial", "cv.n_splits=3", "cv.block_size=4000")
    train.run(cfg)
    pred = pd.read_parquet(paths.cv_predictions(cfg))
    blocks = spatial_blocks(pred["x"], pred["y"], 4000)
    assert (pd.Series(pred["fold"].to_numpy()).groupby(blocks).nunique() == 1).all()
    assert pred["fold"].nunique() == 3


@pytest.mark.parametrize("model", ["extra_trees", "lenet", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_same_seed_gives_identical_metrics_and_model_files(region, tmp_path, model):
    outputs = []
    for _ in range(2):
        cfg = cfg_for(region, model)
        train.run(cfg)
        evaluate.run(cfg)
        files = {f.name: f.read_bytes() for f in sorted(paths.model_dir(cfg).iterdir())}
        outputs.append((paths.metrics(cfg).read_bytes(), pd.read_parquet(paths.cv_predictions(cfg)), files))
    assert outputs[0][0] == outputs[1][0]
    pd.testing.assert_frame_equal(outputs[0][1], outputs[1][1])
    # Every file of the model folder is the same bytes: DVC sees an unchanged model.
    assert outputs[0][2].keys() == outputs[1][2].keys() and len(outputs[0][2]) >= 2
    for name, data in outputs[0][2].items():
        assert data == outputs[1][2][name], name


def write_patches(root, ps):
    folder = root / "bad"
    folder.mkdir(exist_ok=True)
    patchset.save_patches(folder / "patches.npz", ps)
    return ["out_dir=" + str(root), "data.name=bad", "cv.n_splits=3", *synthetic.FAST["extra_trees"]]


@pytest.mark.parametrize(
    "change, fragment",
    [
        ("one_class", "one class only (urban)"),
        ("few", "2 urban and 2 non_urban cells are fewer than cv.n_splits=3 per class"),
        ("nan", "NaN or infinite values in 1 of 200 patches"),
    ],
)
def test_bad_patches_fail_cleanly(region, tmp_path, capsys, in_repo, change, fragment):
    ps = patchset.load_patches(region / "tiny" / "patches.npz")
    if change == "one_class":
        ps = ps.subset(ps.label == 1)
    elif change == "few":
        ps = ps.subset(np.r_[np.flatnonzero(ps.label == 1)[:2], np.flatnonzero(ps.label == 0)[:2]])
    else:
        ps.patches[17, 2, 4, 4] = np.nan
    args = write_patches(tmp_path, ps)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "patches.npz" in err, err
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == ["patches.npz"]  # nothing written


def test_unknown_model_is_refused(region, capsys, in_repo):
    assert main(["train", *synthetic.overrides(region), "model=naive_bayes"]) == 2
    err = capsys.readouterr().err
    assert "no config 'naive_bayes'" in err and "extra_trees, hist_gradient_boosting, lenet" in err


def test_a_train_stopped_between_its_outputs_is_refused_by_evaluate(region, tmp_path, capsys, in_repo, monkeypatch):
    """Train writes model/ and then cv_predictions.parquet, both stamped with its run: a
    run stopped between the two (Ctrl-C, a full disk) leaves the new model beside the
    previous predictions, and evaluate refuses the pair instead of reporting a mix."""
    args = [*synthetic.overrides(region, "tiny", *synthetic.FAST["extra_trees"])]
    assert main(["train", *args]) == 0
    assert main(["evaluate", *args]) == 0
    capsys.readouterr()

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "write_predictions", stopped)
    assert main(["train", *args, "seed=7"]) == 130  # the new model is written, then the run stops
    monkeypatch.undo()
    assert main(["evaluate", *args, "seed=7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0] == "urbanmap train: interrupted; outputs left as they were"
    assert "cv_predictions.parquet (run " in err[1] and "model_card.json (run " in err[1]
    assert err[1].endswith("come from different train runs (one was stopped or failed); run train again")
    assert main(["train", *args, "seed=7"]) == 0 and main(["evaluate", *args, "seed=7"]) == 0  # a rerun mends it


def test_the_run_stamp_is_the_inputs_not_the_time(region):
    md5 = train.file_md5(paths.patches(cfg_for(region)))
    stamps = [train.run_stamp(md5, train.TrainSettings.from_config(cfg_for(region, "extra_trees", *extra)))
              for extra in ([], [], ["seed=1"], ["cv=spatial", "cv.n_splits=3"], ["cv.repeats=2"])]
    assert stamps[0] == stamps[1] and len(set(stamps)) == 4
    assert train.run_stamp("0" * 32, train.TrainSettings.from_config(cfg_for(region))) != stamps[0]


@pytest.mark.parametrize("scheme", [["cv=kfold"], ["cv=spatial", "cv.n_splits=3", "cv.block_size=4000"]])
def test_repeated_cv_draws_a_new_split_per_repeat(region, scheme):
    cfg = cfg_for(region, "extra_trees", *scheme, "cv.n_splits=3", "cv.repeats=3")
    train.run(cfg)
    evaluate.run(cfg)
    pred = pd.read_parquet(paths.cv_predictions(cfg))
    ps = patchset.load_patches(paths.patches(cfg))
    assert sorted(pred["repeat"].unique()) == [0, 1, 2] and len(pred) == 3 * len(ps)
    assert (pred.groupby("repeat")["cell_id"].apply(lambda c: sorted(c) == sorted(ps.cell_id))).all()
    folds = pred.pivot(index="cell_id", columns="repeat", values="fold")
    assert (folds[0] != folds[1]).any() and (folds[1] != folds[2]).any()  # each repeat its own split
    per_fold = pd.read_csv(paths.evaluation_dir(cfg) / "per_fold.csv")
    assert list(per_fold.columns[:2]) == ["repeat", "fold"] and len(per_fold) == 9
    metrics = json.loads(paths.metrics(cfg).read_text())
    assert (metrics["folds"], metrics["repeats"], metrics["samples"]) == (3, 3, len(ps))
    single = cfg_for(region, "extra_trees", *scheme, "cv.n_splits=3")
    train.run(single)  # repeat 0 is the split of a run without repeats
    one = pd.read_parquet(paths.cv_predictions(single)).set_index("cell_id")["fold"]
    assert (one.loc[folds.index] == folds[0]).all()


def test_repeats_are_checked(region):
    for bad in ("cv.repeats=0", "cv.repeats=1.5"):
        with pytest.raises(InputError, match="cv.repeats"):
            train.TrainSettings.from_config(cfg_for(region, "extra_trees", bad))
