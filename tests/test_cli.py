"""The CLI: stages listed, overrides, and bad input -> one clear line, exit 2, no output."""

import subprocess
import sys

import geopandas as gpd
import pytest
import shapely

from helpers.cli import expect_error, heavy_imports_after
from helpers.project import REPO
from urbanmap.cli import main

SMALL = "data.window=[2795000,824000,2805000,834000]"  # 10 km x 10 km in Mexico City


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "urbanmap", *args], cwd=REPO, capture_output=True, text=True
    )


def test_help_lists_the_stages():
    result = run_cli("--help")
    assert result.returncode == 0
    for stage in ("grid", "labels", "params"):
        assert stage in result.stdout


@pytest.mark.slow
def test_grid_stage_does_not_import_torch(tmp_path, shared_data):
    assert heavy_imports_after(["grid", f"out_dir={tmp_path}", SMALL]) == (0, [])
    assert (tmp_path / "valle_de_mexico" / "grid.parquet").is_file()


@pytest.fixture
def out(tmp_path):
    return f"out_dir={tmp_path / 'out'}"


def test_missing_boundary(in_repo, capsys, tmp_path, out):
    missing = tmp_path / "nope.gpkg"
    expect_error(capsys, tmp_path, ["grid", out, f"data.boundary={missing}"], str(missing), "not found")


def test_unreadable_boundary(in_repo, capsys, tmp_path, out):
    bad = tmp_path / "corrupt.gpkg"
    bad.write_bytes(b"this is not a geopackage")
    expect_error(capsys, tmp_path, ["grid", out, f"data.boundary={bad}"], str(bad), "cannot read boundary")


def test_boundary_without_crs(in_repo, capsys, tmp_path, out):
    path = tmp_path / "nocrs.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(path)
    expect_error(capsys, tmp_path, ["grid", out, f"data.boundary={path}"], str(path), "has no CRS")


def test_window_outside_the_boundary(in_repo, capsys, tmp_path, out, shared_data):
    expect_error(
        capsys, tmp_path, ["grid", out, "data.window=[0,0,10000,10000]"], "does not overlap the boundary"
    )


def test_geographic_grid_crs(in_repo, capsys, tmp_path, out):
    expect_error(capsys, tmp_path, ["grid", out, "data.crs=EPSG:4326"], "data.crs", "not projected")


def test_labels_without_grid(in_repo, capsys, tmp_path, out):
    expect_error(capsys, tmp_path, ["labels", out], "grid.parquet", "grid not found")


def test_census_problems(in_repo, capsys, tmp_path, out, shared_data):
    assert main(["grid", out, SMALL]) == 0
    capsys.readouterr()
    expect_error(
        capsys, tmp_path, ["labels", out, "data.census.class_column=tipo"],
        "inegi_localities.parquet", "lacks column(s) tipo",
    )
    far = tmp_path / "far.gpkg"  # a census in the right CRS, but in Baja California
    gpd.GeoDataFrame({"ambito": ["URBANO"], "pob": [10]}, geometry=[shapely.box(-116, 32, -115.9, 32.1)], crs=6365).to_file(far)
    expect_error(capsys, tmp_path, ["labels", out, f"data.census.path={far}"], str(far), "no census polygon overlaps")


def test_bad_override_exits_2(in_repo, capsys, tmp_path, out):
    expect_error(capsys, tmp_path, ["grid", out, "data=atlantis"], "no config 'atlantis'")


@pytest.mark.slow
def test_subprocess_exit_status_and_message(tmp_path):
    result = run_cli("grid", f"out_dir={tmp_path}", "data.crs=EPSG:4326")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "urbanmap grid: error: data.crs: the grid CRS EPSG:4326 is not projected; cells need metres"
    )
