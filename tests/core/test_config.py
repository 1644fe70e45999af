
import pytest
import yaml

from helpers.project import REPO
from urbanmap.core import config
from urbanmap.core.errors import InputError


def test_committed_params_equal_what_dvc_composes(tmp_path):
    """DVC composes conf/ into params.yaml on `dvc exp run` only; `dvc repro` reads the
    committed file, so it must equal the composed defaults, byte for byte."""
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(REPO / "conf"), None, "config", str(REPO), [])
    assert (REPO / "params.yaml").read_text() == out.read_text(), "run `make params`"


@pytest.mark.parametrize(
    "group", [p.parent.name + "=" + p.stem for p in sorted((REPO / "conf").glob("*/*.yaml"))]
)
def test_every_group_option_composes(group):
    cfg = config.compose(REPO / "conf", [group])
    key, option = group.split("=")
    assert cfg[key].name == option


def test_overrides_on_top_of_params(in_repo):
    cfg = config.load(".", ["data=mexico", "labels.rule=population_density", "+extra.flag=true"])
    assert cfg.data.name == "mexico" and cfg.data.window is None
    assert cfg.labels.rule == "population_density"
    assert cfg.extra.flag is True
    assert cfg.model.name == "extra_trees"  # untouched groups keep params.yaml's values


def test_params_yaml_is_the_base_not_conf(tmp_path, monkeypatch):
    (tmp_path / "conf").symlink_to(REPO / "conf")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["labels"]["urban_fraction"]["urban_min"] = 0.7  # as `dvc exp run -S` would leave it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert config.load(tmp_path, ["data.cell_size=500"]).labels.urban_fraction.urban_min == 0.7


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=naive_bayes", "no config 'naive_bayes' in .*conf/model .*choose from .*extra_trees"),
        ("labels.nope=1", "no key 'labels.nope'"),
        ("data.cell_size", "override 'data.cell_size' cannot be parsed"),
    ],
)
def test_bad_overrides_are_clear(in_repo, override, message):
    with pytest.raises(InputError, match=message):
        config.load(".", [override])


def test_missing_params_file(tmp_path):
    with pytest.raises(InputError, match="params.yaml: not found"):
        config.load(tmp_path, [])
