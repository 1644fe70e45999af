"""End to end on small real windows of ../shared/data, and dvc.yaml <-> code agreement."""

import json
import subprocess
import sys

import geopandas as gpd
import pytest
import shapely
import yaml

from helpers.grids import brute_force
from helpers.project import REPO
from urbanmap.core import config, paths

pytestmark = pytest.mark.slow  # DVC and end-to-end runs: `make test` only


def run_stage(*args):
    result = subprocess.run(
        [sys.executable, "-m", "urbanmap", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grid_and_labels_on_a_real_window(tmp_path, shared_data):
    window = [2790000, 819000, 2810000, 839000]  # 20 km x 20 km on Mexico City
    args = [f"out_dir={tmp_path}", "data.name=cdmx", f"data.window=[{','.join(map(str, window))}]"]
    run_stage("grid", *args)
    stdout = run_stage("labels", *args)

    grid = gpd.read_parquet(tmp_path / "cdmx" / "grid.parquet")
    labels = gpd.read_parquet(tmp_path / "cdmx" / "labels.parquet")
    assert len(grid) == 400 and grid["cell_id"].is_unique
    assert labels["cell_id"].tolist() == grid["cell_id"].tolist()
    assert set(labels["label"]) <= {"urban", "non_urban", "excluded"}

    # Independent check: urban area = INEGI urban localities clipped to the window.
    census = gpd.read_parquet(shared_data / "mexico" / "inegi_localities.parquet")
    urban = census[census["ambito"] == "URBANO"].to_crs(6372)
    urban = urban.set_geometry(shapely.make_valid(urban.geometry.values))
    clipped = urban.clip(shapely.box(*window)).area.sum()
    assert labels["urban_area"].sum() == pytest.approx(clipped, rel=1e-6)
    # central Mexico City is overwhelmingly urban
    assert (labels["label"] == "urban").mean() > 0.8

    summary = json.loads((tmp_path / "cdmx" / "label_summary.json").read_text())
    assert summary["urban_cells"] + summary["non_urban_cells"] + summary["excluded_cells"] == 400
    assert f"urban {summary['urban_cells']:,}" in stdout


def test_coastal_window_is_clipped_to_the_boundary(tmp_path, shared_data):
    window = [3100000, 795000, 3130000, 825000]  # the Gulf coast at the port of Veracruz
    run_stage("grid", f"out_dir={tmp_path}", "data.name=coast", f"data.window=[{','.join(map(str, window))}]")
    grid = gpd.read_parquet(tmp_path / "coast" / "grid.parquet")
    boundary = gpd.read_file(shared_data / "mexico" / "mexico_boundary_ne10m.gpkg").to_crs(6372)
    region = shapely.intersection(boundary.union_all(), shapely.box(*window))
    assert 0 < len(grid) < 900
    assert set(zip(grid["col"], grid["row"])) == brute_force(region, 1000)


def test_population_density_rule_is_one_override_away(tmp_path, shared_data):
    args = [f"out_dir={tmp_path}", "data.window=[2795000,824000,2805000,834000]"]
    run_stage("grid", *args)
    run_stage("labels", *args, "labels.rule=population_density")
    labels = gpd.read_parquet(tmp_path / "valle_de_mexico" / "labels.parquet")
    density = labels["population_density"].to_numpy()
    assert ((labels["label"] == "urban") == (density >= 1500)).all()
    assert ((labels["label"] == "non_urban") == (density < 300)).all()


def test_dvc_yaml_declares_the_paths_the_stages_write():
    cfg = config.load(REPO)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def render(path, item=None):
        path = path.replace("${out_dir}", cfg.out_dir).replace("${data.name}", cfg.data.name)
        path = path.replace("${periods.census}", str(cfg.periods.census)).replace("${periods.target}", str(cfg.periods.target))
        return path.replace("${item}", str(item)) if item is not None else path

    outs = {
        s: {render(p if isinstance(p, str) else next(iter(p))) for p in v.get("outs", []) + v.get("metrics", [])}
        for s, v in stages.items()
    }
    assert outs["grid"] == {str(paths.grid(cfg))}
    assert outs["labels"] == {str(paths.labels(cfg)), str(paths.label_summary(cfg))}
    assert str(paths.grid(cfg)) in {render(d) for d in stages["labels"]["deps"]}
    year = cfg.periods.target
    predict = stages["predict"]["do"]
    assert {render(next(iter(p)) if isinstance(p, dict) else p, year) for p in predict["outs"] + predict["metrics"]} == {
        str(f(cfg, year)) for f in (paths.predictions, paths.p_urban_cog, paths.predictions_map, paths.predictions_summary)
    }
    assert outs["series"] == {str(paths.series_dir(cfg)), str(paths.series_summary(cfg))}
    assert str(paths.predictions_dir(cfg)) in {render(d) for d in stages["series"]["deps"]}
    assert outs["change"] == {str(f(cfg)) for f in (paths.change_cells, paths.change_cog, paths.change_map,
                                                      paths.change_municipalities, paths.change_region)}
    assert outs["validate_sample"] == {str(f(cfg)) for f in (paths.validation_sample, paths.validation_sample_gpkg,
                                                               paths.validation_strata, paths.validation_chips)}
    assert outs["validate_interpret"] == {str(paths.validation_interpreted(cfg))}
    assert outs["validate_estimate"] == {str(paths.validation_estimate(cfg))}
    assert outs["validate_periods"] == {str(paths.validation_periods_dir(cfg)), str(paths.validation_periods_summary(cfg))}
    assert outs["sdg"] == {str(f(cfg)) for f in (paths.sdg_table, paths.sdg_chart, paths.sdg_summary, paths.sdg_area_series)}
