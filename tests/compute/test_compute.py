"""Tiles and the local / Dask executors: the heavy stages give the same bytes on both,
and survive a worker killed mid-stage."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import expect_error
from helpers.project import REPO
from urbanmap.cli import main
from urbanmap.compute.executor import ComputeSettings, Executor
from urbanmap.compute.tiles import effective_tile_size, tile_index
from urbanmap.core.errors import InputError
from urbanmap.core.lattice import PixelLattice, cell_blocks

#: tests/dvcproject.py's 6 km x 6 km window (36 cells, both classes); blocks and tiles of
#: 2 x 2 cells so that the region is 9 tiles.
SMALL = ["data.name=small", "data.window=[2808000,831000,2814000,837000]", "mosaic.block_cells=2",
         "predict.block_cells=2", "compute.tile_size=2", "patches.n_per_class=12"]


@pytest.fixture(scope="module")
def region(tmp_path_factory, shared_data):
    """Grid, labels and synthetic 2010 scenes of the small window, in a temporary out_dir."""
    out = tmp_path_factory.mktemp("compute")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        for stage in ("grid", "labels", "synth"):
            assert main([stage, f"out_dir={out}", *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 process workers (1 thread each) on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit="2GiB") as c, Client(c) as client:
        yield c, client


def _run(monkeypatch, stage, out, *extra) -> int:
    monkeypatch.chdir(REPO)
    return main([stage, f"out_dir={out}", *SMALL, *extra])


def _dask(cluster):
    return ["compute=dask", f"compute.address={cluster[0].scheduler_address}", "compute.tile_size=2"]


# --- tiles ---------------------------------------------------------------------------------


def test_tile_index_covers_every_cell_once_and_only_tiles_with_cells():
    # A 7 x 5 box of cells with its north-east corner missing: 3 x 2 tiles of 3 cells,
    # of which the north-east one holds no cell.
    cols, rows = np.meshgrid(np.arange(100, 107), np.arange(50, 55))
    keep = ~((cols >= 106) & (rows >= 52))
    cols, rows = cols[keep], rows[keep]
    lattice = PixelLattice.from_cells(cols, rows, 1000, 33, "EPSG:6372")
    tiles = tile_index(lattice, cols, rows, 3)
    assert list(tiles.tile_id) == ["r0c0", "r0c1", "r1c0", "r1c1", "r1c2"]  # r0c2: no cell
    assert tiles.n_cells.sum() == len(cols)
    ti, tj = cell_blocks(lattice, cols, rows, 3)
    for t in tiles.itertuples():
        inside = (cols >= t.col_min) & (cols <= t.col_max) & (rows >= t.row_min) & (rows <= t.row_max)
        assert inside.sum() == t.n_cells == ((ti == t.ti) & (tj == t.tj)).sum()
        # Windows on the region's raster, aligned to cells and to the tile size.
        assert (t.row_off, t.col_off) == (t.ti * 3 * 33, t.tj * 3 * 33)
        assert t.width == (t.col_max - t.col_min + 1) * 33 and t.height == (t.row_max - t.row_min + 1) * 33
        assert (t.xmin, t.ymax) == (t.col_min * 1000, (t.row_max + 1) * 1000)
    # The southern tiles are cut at the region's edge (5 rows = 3 + 2).
    assert set(tiles[tiles.ti == 1].height) == {2 * 33}


def test_tile_size_is_whole_cells_rounded_up_to_whole_blocks():
    assert effective_tile_size(32, 8) == 32
    assert effective_tile_size(30, 8) == 32
    assert effective_tile_size(5) == 5
    for bad in (2.5, 0, "x"):
        with pytest.raises(InputError, match="compute.tile_size"):
            effective_tile_size(bad)


def test_bad_compute_config_exits_2(monkeypatch, region, capsys):
    assert _run(monkeypatch, "mosaic", region, "compute.tile_size=2.5") == 2
    assert "compute.tile_size" in capsys.readouterr().err
    start = time.perf_counter()
    assert _run(monkeypatch, "mosaic", region, "compute=dask", "compute.address=tcp://127.0.0.1:9",
                "compute.connect_timeout_s=1") == 2
    assert time.perf_counter() - start < 20
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_a_tasks_input_error_reaches_a_dask_client_as_one(tmp_path):
    """A task's InputError raised from a GDAL read error (a truncated mosaic) crosses
    Dask's serialisation as an InputError with its message, not as a bare Exception
    that the command line would print as a traceback."""
    from distributed.core import clean_exception, error_message
    from rasterio.shutil import copy

    from urbanmap.compute.executor import _measured
    from urbanmap.examples import tiny
    from urbanmap.training.patchset import read_patches

    cells = tiny.labelled_cells(20, 20)
    tiny.write_mosaic(tmp_path / "tiled.tif", cells)
    path = tmp_path / "mosaic.tif"
    copy(tmp_path / "tiled.tif", path, driver="COG", compress="ZSTD")  # its header first, as the mosaic stage writes
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)

    def cut(_: object) -> np.ndarray:
        import rasterio

        with rasterio.open(path) as src:
            return read_patches(src, tiny.lattice_of(cells), cells["col"], cells["row"], [1, 2, 3, 4, 5, 6])

    with pytest.raises(InputError, match="damaged or truncated") as raised:
        _measured(cut, None)
    # What a worker sends for a failed task and what the client makes of it
    kind, exc, _ = clean_exception(error_message(raised.value)["exception"].data)
    assert kind is InputError and str(exc) == str(raised.value) and str(path) in str(exc)


@pytest.mark.slow
def test_a_worker_without_the_package_is_refused_with_exit_2(monkeypatch, region, tmp_path, capsys):
    """A scheduler whose only worker runs in an environment with every dependency installed
    but not urbanmap itself: the stage stops before any task, with one clear line."""
    import site
    import subprocess
    import sys

    from distributed import Client, LocalCluster

    # The worker's environment: this venv's site-packages, less urbanmap (its dist-info and
    # the editable install's .pth), as symlinks; `python -S` so the real site-packages is
    # not added.
    shadow = tmp_path / "site-packages"
    shadow.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if "urbanmap" not in entry.name:
            (shadow / entry.name).symlink_to(entry)
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        worker = subprocess.Popen(
            [sys.executable, "-S", "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(shadow)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=60)
            monkeypatch.chdir(REPO)
            expect_error(capsys, region, ["mosaic", f"out_dir={region}", *SMALL, "compute=dask",
                                          f"compute.address={cluster.scheduler_address}"],
                         "compute: a Dask worker has no urbanmap package; install this project (pip install -e .)")
        finally:
            worker.terminate()
            worker.wait(timeout=30)


@pytest.mark.slow
def test_release_shuts_the_stages_cluster_down_in_the_background():
    """After release() no task can be submitted; the LocalCluster the executor started is
    closed by the time its context is left (its shutdown overlaps the stage's writing)."""
    from distributed.core import Status
    settings = ComputeSettings(mode="dask", n_workers=1, threads_per_worker=1, memory_limit="1GiB",
                               connect_timeout_s=30)
    with Executor(settings) as ex:
        cluster = ex.cluster
        assert sorted(r for _, r in ex.map(abs, [-1, -2], ["a", "b"], desc="t")) == [1, 2]
        ex.release()
        with pytest.raises(RuntimeError, match="after release"):
            list(ex.map(abs, [-3], ["c"], desc="t"))
    assert cluster.status == Status.closed


# --- the same bytes on both executors --------------------------------------------------------


@pytest.fixture(scope="module")
def local_mosaic(region):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        assert main(["mosaic", f"out_dir={region}", *SMALL]) == 0
    path = region / "small" / "mosaic_2010.tif"
    return path.read_bytes()


@pytest.mark.slow
def test_mosaic_is_the_same_bytes_whatever_the_tiles_and_executor(monkeypatch, region, local_mosaic, cluster):
    path = region / "small" / "mosaic_2010.tif"
    assert _run(monkeypatch, "mosaic", region, "compute.tile_size=4") == 0  # 4 tiles of 2 x 2 blocks
    assert path.read_bytes() == local_mosaic
    assert _run(monkeypatch, "mosaic", region, *_dask(cluster)) == 0
    assert path.read_bytes() == local_mosaic
    assert not list(path.parent.glob(".*parts*"))  # parts removed


@pytest.mark.slow
def test_mosaic_completes_identically_when_a_worker_is_killed(monkeypatch, region, local_mosaic, cluster):
    _, client = cluster
    path = region / "small" / "mosaic_2010.tif"
    path.unlink()
    pids = client.run(os.getpid)  # worker address -> process id
    status = []
    stage = threading.Thread(target=lambda: status.append(_run(monkeypatch, "mosaic", region, *_dask(cluster))))
    stage.start()
    victim = None
    deadline = time.monotonic() + 30
    while victim is None and stage.is_alive() and time.monotonic() < deadline:
        busy = [w for w, tasks in client.processing().items() if any(str(t).startswith("mosaic-") for t in tasks)]
        if busy:
            victim = busy[0]
            os.kill(pids[victim], signal.SIGKILL)  # the worker process (its nanny restarts it)
        else:
            time.sleep(0.005)
    stage.join(timeout=60)
    assert victim is not None, "no mosaic task was seen running"
    assert status == [0]
    assert path.read_bytes() == local_mosaic
    with pytest.raises(ProcessLookupError):
        os.kill(pids[victim], 0)  # it really died


@pytest.mark.slow
def test_patches_are_the_same_bytes_whatever_the_tiles_and_executor(monkeypatch, region, local_mosaic, cluster,
                                                                    tmp_path):
    """On a mosaic with nodata in some urban cells (so the sample needs a second round of
    replacements), tiled local and Dask runs write the same bytes, with the cells and
    patches of the untiled core (patches.extract)."""
    import shutil

    import rasterio

    from urbanmap.core import io
    from urbanmap.core.lattice import PixelLattice
    from urbanmap.training import patchset, sampler

    region_dir = tmp_path / "small"
    region_dir.mkdir()
    for name in ("grid.parquet", "labels.parquet"):
        shutil.copy(region / "small" / name, region_dir / name)
    labels, cell_size, crs = io.read_cells(region_dir / "labels.parquet", "labels", ["cell_id", "label"])
    lattice = PixelLattice.from_cells(labels["col"], labels["row"], cell_size, 33, crs)
    urban = labels[labels["label"] == "urban"].iloc[:3]
    row_off, col_off = lattice.cell_offsets(urban["col"], urban["row"])
    with rasterio.open(region / "small" / "mosaic_2010.tif") as src:
        profile, img, names = src.profile, src.read(), src.descriptions
    img[2, row_off + 5, col_off + 9] = np.nan
    profile.update(driver="GTiff")
    with rasterio.open(region_dir / "mosaic_2010.tif", "w", **profile) as dst:
        dst.write(img)
        dst.descriptions = names
    n = int((labels["label"] == "urban").sum()) - 3  # every valid urban cell is drawn
    args = [f"patches.n_per_class={n}"]
    written = []
    for extra in (["compute.tile_size=2"], ["compute.tile_size=5"], _dask(cluster)):
        assert _run(monkeypatch, "patches", tmp_path, *args, *extra) == 0
        written.append((region_dir / "patches.npz").read_bytes())
    assert written[0] == written[1] == written[2]
    got = patchset.load_patches(region_dir / "patches.npz")
    with rasterio.open(region_dir / "mosaic_2010.tif") as src:
        want = sampler.extract(labels, lattice, src, list(got.bands), n, 42, 2010)
    assert got.nodata_dropped == want.nodata_dropped == 3
    assert list(got.cell_id) == list(want.cell_id)
    assert np.array_equal(got.patches, want.patches)


# --- the plan --------------------------------------------------------------------------------


def test_plan_writes_the_tile_index_scenes_per_tile_and_costs(monkeypatch, region, tmp_path, capsys):
    import json

    import geopandas as gpd

    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"machine": "test", "stages": {
        "mosaic": {"local_s_per_cell": 0.01, "worker_s_per_cell": 0.02},
        "patches": {"local_s_per_cell": 0.001}}}))
    assert _run(monkeypatch, "plan", region, f"plan.costs={costs}", "plan.workers=[4]") == 0
    plan = json.loads((region / "small" / "plan.json").read_text())
    tiles = gpd.read_parquet(region / "small" / "tiles.parquet")
    assert plan["cells"] == 36 and plan["tiles"] == len(tiles) == 9  # 3 x 3 tiles of 2 x 2 cells
    assert tiles.crs.to_epsg() == 6372 and tiles.n_cells.sum() == 36
    # Every synthetic scene of 2010 covers the window (16 of them).
    assert (tiles.scenes == 16).all() and plan["scenes_per_tile"]["min"] == 16
    est = plan["estimate_s"]
    assert est["mosaic"]["local_s"] == pytest.approx(4 * 36 * 0.01)  # four periods
    assert est["mosaic"]["workers_4_s"] == pytest.approx(4 * 36 * 0.02 / 4)
    assert est["patches"]["local_s"] == pytest.approx(2 * 12 * 0.001)  # 2 x n_per_class
    assert "predict" not in est
    assert "9 tiles of 2 x 2 cells" in capsys.readouterr().out
