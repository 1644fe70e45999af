"""Models: Extra Trees (skops) and torch nets (safetensors) round trips, safe loading,
augmentation, normalisation, ResNet-18 with local weights."""

import json

import numpy as np
import pytest
import rasterio

from helpers import synthetic
from helpers.project import REPO
from urbanmap.core import config
from urbanmap.core.errors import InputError
from urbanmap.examples.tiny import BANDS, labelled_cells, lattice_of, write_mosaic
from urbanmap.training import models
from urbanmap.training.sampler import extract


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """120 patches (60 per class) of a synthetic scene."""
    root = tmp_path_factory.mktemp("tiny")
    cells = labelled_cells(16, 16)
    write_mosaic(root / "m.tif", cells)
    with rasterio.open(root / "m.tif") as src:
        return extract(cells, lattice_of(cells), src, BANDS, 60, seed=0, year=2010)


def model_cfg(name, *extra):
    return config.load(REPO, [*synthetic.FAST[name], *extra]).model


def round_trip(clf, ps, tmp_path):
    card = {"name": "x", "kind": clf.__class__.__name__.startswith("Torch") and "torch" or "sklearn",
            "bands": list(ps.bands), "patch_size": ps.patch_size, "seed": 0}
    models.save(clf, tmp_path / "model", card)
    loaded, read = models.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(ps.patches), clf.predict_proba(ps.patches))
    return loaded, read


def test_extra_trees_fits_and_round_trips_through_skops(tiny, tmp_path):
    clf = models.build(model_cfg("extra_trees"), tiny.bands, 33, seed=0).fit(tiny.patches, tiny.label)
    assert clf.estimator.random_state == 0 and clf.estimator.n_estimators == 20
    p = clf.predict_proba(tiny.patches)
    assert p.shape == (120,) and ((p >= 0.5) == tiny.label).mean() > 0.95
    loaded, card = round_trip(clf, tiny, tmp_path)
    assert card["files"] == ["model.skops"] and card["features"]["groups"] == ["flat"]
    assert card["features"]["n_features"] == 6534
    assert not (tmp_path / "model" / "model.skops").read_bytes().startswith(b"\x80")  # not a pickle
    names, groups, values = loaded.importances()
    assert len(names) == len(values) == 6534 and values.sum() == pytest.approx(1)


def test_extra_trees_on_statistics_features(tiny):
    cfg = model_cfg("extra_trees", "model.features.groups=[band_stats,index_stats]")
    clf = models.build(cfg, tiny.bands, 33, seed=0).fit(tiny.patches, tiny.label)
    assert len(clf.feature_names) == 6 * 7 + 5 * 7


def test_skops_file_with_untrusted_types_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    (tmp_path / "model").mkdir()
    sio.dump(FunctionTransformer(func=print), tmp_path / "model" / "model.skops")
    (tmp_path / "model" / "model_card.json").write_text(json.dumps({"kind": "sklearn", "bands": ["a"], "patch_size": 3}))
    with pytest.raises(InputError, match="refusing to load untrusted type"):
        models.load(tmp_path / "model")


def test_lenet_fits_and_round_trips_through_safetensors(tiny, tmp_path):
    clf = models.build(model_cfg("lenet"), tiny.bands, 33, seed=0, threads=2).fit(tiny.patches, tiny.label)
    assert clf.epochs == 1
    _, card = round_trip(clf, tiny, tmp_path)
    assert card["files"] == ["model.safetensors", "model.json"]
    assert len(card["normalisation"]["mean"]) == 6
    raw = (tmp_path / "model" / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors: tensors only
    assert "features.0.weight" in header and header["features.0.weight"]["shape"] == [32, 6, 5, 5]


def test_torch_model_naming_arbitrary_code_is_refused(tiny, tmp_path):
    clf = models.build(model_cfg("lenet"), tiny.bands, 33, seed=0).fit(tiny.patches[:40], tiny.label[:40])
    models.save(clf, tmp_path / "model", {"kind": "torch", "bands": list(tiny.bands), "patch_size": 33})
    conf = json.loads((tmp_path / "model" / "model.json").read_text())
    conf["net"]["_target_"] = "os.system"
    (tmp_path / "model" / "model.json").write_text(json.dumps(conf))
    with pytest.raises(InputError, match="'os.system' is not a known network"):
        models.load(tmp_path / "model")


def test_normalisation_comes_from_the_fit_part_only(tiny):
    from urbanmap.training.models.datamodule import PatchDataModule, band_stats, stratified_split

    dm = PatchDataModule(tiny.patches, tiny.label, 32, 0.25, seed=5)
    fit, val = stratified_split(tiny.label, 0.25, 5)
    assert len(val) == 30 and not set(fit) & set(val)
    np.testing.assert_allclose(dm.mean, band_stats(tiny.patches[fit])[0])
    assert not np.allclose(dm.mean, band_stats(tiny.patches)[0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(dm.x_fit.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)


def test_augmentation_applies_one_dihedral_transform_per_sample():
    import torch

    from urbanmap.training.models.datamodule import RandomDihedral

    torch.manual_seed(0)
    x = torch.arange(64 * 2 * 5 * 5, dtype=torch.float32).reshape(64, 2, 5, 5)
    out = RandomDihedral()(x.clone())
    group = lambda s: [torch.rot90(t, k, (-2, -1)) for t in (s, s.flip(-1)) for k in range(4)]  # noqa: E731
    which = [next(i for i, g in enumerate(group(x[n])) if torch.equal(g, out[n])) for n in range(64)]
    assert len(set(which)) == 8  # all eight orientations occur, drawn per sample


def test_resnet18_trains_and_loads_local_imagenet_style_weights(tiny, tmp_path):
    import torch
    from safetensors.torch import save_file
    from torchvision.models import resnet18 as tv_resnet18

    from urbanmap.training.models.resnet import resnet18

    torch.manual_seed(0)
    rgb = tv_resnet18(weights=None).state_dict()  # stands for ImageNet weights (nothing downloaded)
    save_file(rgb, tmp_path / "resnet18.safetensors")
    net = resnet18(6, 33, 2, weights=str(tmp_path / "resnet18.safetensors"), bands=BANDS)
    w, old = net.conv1.weight.detach(), rgb["conv1.weight"]
    torch.testing.assert_close(w[:, 2], old[:, 0] * 0.5)  # red <- R
    torch.testing.assert_close(w[:, 0], old[:, 2] * 0.5)  # blue <- B
    torch.testing.assert_close(w[:, 3], old.mean(dim=1) * 0.5)  # nir <- mean RGB
    torch.testing.assert_close(net.layer1[0].conv1.weight, rgb["layer1.0.conv1.weight"])
    assert net.fc.out_features == 2
    with pytest.raises(InputError, match="model.net.weights not found"):
        resnet18(weights=str(tmp_path / "missing.pth"))

    cfg = model_cfg("resnet18", f"model.net.weights={tmp_path / 'resnet18.safetensors'}")
    few = tiny.subset(np.r_[0:20, 100:120])
    clf = models.build(cfg, tiny.bands, 33, seed=0, threads=2).fit(few.patches, few.label)
    _, card = round_trip(clf, few, tmp_path)
    assert "weights" not in json.loads((tmp_path / "model" / "model.json").read_text())["net"]


@pytest.mark.parametrize("name, estimator", [
    ("random_forest", "RandomForestClassifier"),
    ("hist_gradient_boosting", "HistGradientBoostingClassifier"),
    ("logistic_regression", "Pipeline"),  # StandardScaler, then LogisticRegression
])
def test_zoo_models_fit_round_trip_and_save_the_same_bytes(tiny, tmp_path, name, estimator):
    """Every scikit-learn model of conf/model/ trains on the configured features, loads
    back from skops without untrusted types, and two fits with one seed save one file."""
    cfg = model_cfg(name, "model.features.groups=[band_stats,texture]")
    fits = [models.build(cfg, tiny.bands, 33, seed=3).fit(tiny.patches, tiny.label) for _ in range(2)]
    assert type(fits[0].estimator).__name__ == estimator
    assert ((fits[0].predict_proba(tiny.patches) >= 0.5) == tiny.label).mean() > 0.9
    _, card = round_trip(fits[0], tiny, tmp_path / "a")
    round_trip(fits[1], tiny, tmp_path / "b")
    assert card["features"]["n_features"] == 6 * 7 + 10
    assert (tmp_path / "a/model/model.skops").read_bytes() == (tmp_path / "b/model/model.skops").read_bytes()


def saved_extra_trees(tiny, folder, *overrides):
    clf = models.build(model_cfg("extra_trees", *overrides), tiny.bands, 33, seed=0).fit(tiny.patches, tiny.label)
    round_trip(clf, tiny, folder)
    return folder / "model"


def test_a_model_file_and_a_card_of_different_runs_are_refused(tiny, tmp_path):
    flat = saved_extra_trees(tiny, tmp_path / "flat")
    stats = saved_extra_trees(tiny, tmp_path / "stats", "model.features.groups=[band_stats]")
    (flat / "model_card.json").write_bytes((stats / "model_card.json").read_bytes())  # the card of another run
    with pytest.raises(InputError, match=r"model.skops: the model takes 6,534 features, but its card's features "
                                         r"\(band_stats of 6 bands, 33 x 33 px\) make 42: .* different runs"):
        models.load(flat)


@pytest.mark.parametrize("field, value, message", [
    ("patch_size", "abc", "patch_size: expected a whole number of pixels >= 2, got 'abc'"),
    ("bands", "red", "bands: expected a list of band names, got 'red'"),
    ("cell_size", -1, "cell_size: expected a positive number of metres, got -1"),
])
def test_a_card_with_wrong_fields_is_refused(tiny, tmp_path, field, value, message):
    folder = saved_extra_trees(tiny, tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    card[field] = value
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match=f"model_card.json: {message}"):
        models.load(folder)


def test_an_object_array_in_the_model_file_is_refused_in_one_line(tiny, tmp_path):
    """Numpy would unpickle an object array: skops' loader refuses it, and so do we."""
    import io as bytes_io
    import zipfile

    folder = saved_extra_trees(tiny, tmp_path)
    path = folder / "model.skops"
    with zipfile.ZipFile(path) as src:
        members = {name: src.read(name) for name in src.namelist()}
    name = next(n for n in members if n.endswith(".npy"))
    buffer = bytes_io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    members[name] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as dst:
        for n, data in members.items():
            dst.writestr(n, data)
    with pytest.raises(InputError, match=r"model.skops: cannot load the model: ValueError: Object arrays cannot be loaded"):
        models.load(folder)
