import os

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from urbanmap.census.grid import cell_polygons
from urbanmap.core import io


def test_cell_table_is_geoparquet_that_geopandas_reads(tmp_path):
    cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "col": [-2, 0, 2786], "row": [5, 0, 812], "v": [0.5, 1.0, 2.0]})
    path = tmp_path / "cells.parquet"
    io.write_cells(path, cells, 1000.0, "EPSG:6372")
    frame = gpd.read_parquet(path)
    assert frame.crs.to_epsg() == 6372
    assert shapely.equals(frame.geometry.values, cell_polygons(cells["col"], cells["row"], 1000.0)).all()
    assert frame.geometry.is_valid.all()
    assert frame["v"].tolist() == [0.5, 1.0, 2.0]
    table, cell_size, crs = io.read_cells(path, "cells", columns=["v"])
    assert list(table.columns) == ["col", "row", "v"] and cell_size == 1000.0 and crs.to_epsg() == 6372
    # the GeoParquet 1.1 bbox covering lets readers filter without decoding geometry
    assert len(gpd.read_parquet(path, bbox=(-3000, 4000, 0, 7000))) == 1


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with io.atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_read_cells_refuses_foreign_parquet(tmp_path):
    path = tmp_path / "plain.parquet"
    pd.DataFrame({"x": np.arange(3)}).to_parquet(path)
    with pytest.raises(io.InputError, match="plain.parquet: grid is not an urbanmap cell table"):
        io.read_cells(path, "grid")


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path):
    """SIGKILL leaves `.name.tmp-<pid>` beside an output (no `finally` runs): the next
    write of that output removes those of dead processes and keeps a live writer's."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".scenes.tmp-{pid}").mkdir()
    (tmp_path / f".scenes.tmp-{pid}" / "B1.TIF").write_bytes(b"half")
    (tmp_path / f".out.json.tmp-{pid}").write_text("{")
    (tmp_path / ".out.json.tmp-1").write_text("{")  # pid 1 is alive: another writer's
    with io.atomic_directory(tmp_path / "scenes") as tmp:
        (tmp / "B1.TIF").write_bytes(b"whole")
    io.write_json(tmp_path / "out.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.json.tmp-1", "out.json", "scenes"]


def test_a_killed_mosaics_blocks_and_parts_are_removed_and_a_live_ones_kept(tmp_path):
    """A SIGKILLed mosaic leaves `.mosaic_<year>.blocks-<pid>.tif` (with its overview and
    VRT) and `.mosaic_<year>.tif.parts-<pid>/`: the next run removes those of a dead pid."""
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    live = os.getpid()
    out = tmp_path / "mosaic_2010.tif"
    left = [f".mosaic_2010.blocks-{dead}.tif", f".mosaic_2010.blocks-{dead}.ovr2.tif", f".mosaic_2010.blocks-{dead}.vrt",
            f".mosaic_2010.tif.tmp-{dead}-140001", f".mosaic_2010.tif.tmp-{dead}"]
    for name in left:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / f".mosaic_2010.tif.parts-{dead}").mkdir()
    (tmp_path / f".mosaic_2010.tif.parts-{dead}" / "0.tif").write_bytes(b"half")
    kept = [f".mosaic_2010.blocks-{live}.tif", f".mosaic_2010.tif.parts-{live}", f".mosaic_2019.blocks-{dead}.tif",
            "mosaic_2010.json", f".other.tif.tmp-{dead}"]
    for name in kept:
        (tmp_path / name).write_bytes(b"keep")
    removed = io.remove_stale_temporaries(out)
    assert sorted(p.name for p in removed) == sorted([*left, f".mosaic_2010.tif.parts-{dead}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
