"""Reading inputs and writing outputs atomically.

Every output is written to a temporary file beside its destination and renamed into
place only when complete, so a failed or killed stage never leaves a half-written file
that DVC (or a user) could mistake for a result.

Per-cell tables are GeoParquet files (version 1.1.0, WKB polygons, PROJJSON CRS, a
`bbox` covering column) whose rows are cells of a square lattice: `col` and `row` are the
integer lattice indices of the cell's lower-left corner, ``x_min = col * cell_size``,
``y_min = row * cell_size`` in the grid's projected CRS (rows count northwards).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyproj import CRS

from urbanmap.core.errors import InputError

#: Key of the file-level Parquet metadata where per-cell tables record their lattice.
LATTICE_KEY = b"urbanmap:lattice"


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of `path` left by a run that was killed (SIGKILL, power
    loss: no `finally` ran), when the process that made them is gone; return them.

    Every temporary of an output is a hidden name beside it that carries its writer's pid:
    `.<name>.tmp-<pid>` and `.<name>.old.tmp-<pid>` (atomic_output, atomic_directory),
    `.<name>.tmp-<pid>-<thread>` (tiles), `.<name>.parts-<pid>/` (tiles' parts) and
    `.<stem>.blocks-<pid>.tif` with its `.ovr2.tif` and `.vrt` (mosaic, composite).
    Those of a live pid are another run's, and stay.
    """
    path = Path(path)
    names = "|".join(re.escape(n) for n in {path.name, path.stem})
    pattern = re.compile(rf"^\.(?:{names})\.(?:old\.)?(?:tmp|blocks|parts)-(\d+)(?:[-.].*)?$")
    removed = []
    for entry in path.parent.glob(".*") if path.parent.is_dir() else []:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _name_the_output(exc: OSError, path: Path) -> None:
    """Give a write error that names no file (PIL's, a library's own writes) the output
    being written, so describe_os_error's line says which output a full disk stopped."""
    if exc.filename is None:
        exc.filename = str(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    On any exception the temporary file is removed and `path` is left untouched; the
    leftovers of a killed earlier run are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _name_the_output(exc, path)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; if the block succeeds, it
    replaces `path` (a directory output, e.g. a folder of scenes) in two renames.

    On any exception the temporary directory is removed and `path` is left untouched; the
    leftovers of a killed earlier run are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old.tmp-{os.getpid()}")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as exc:
        _name_the_output(exc, path)
        raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


#: errno -> what a user reads when writing an output fails (the OS's own words are terse).
_WRITE_FAULTS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
    errno.EEXIST: "a file stands where a folder is needed",
}


def describe_os_error(exc: OSError) -> str | None:
    """One line for a fault of the machine met while reading or writing files (disk
    full, read-only, permissions, a file in place of a folder), naming the file; None
    for other OSErrors (which are not the user's to fix).

    GDAL reports a short write (a full disk) as "N requested and M written", in an
    OSError without errno (rasterio's RasterioIOError), so that text counts as ENOSPC.
    """
    code = exc.errno
    text = str(exc)
    if code is None and " requested and " in text and " written" in text:
        code = errno.ENOSPC
    if code not in _WRITE_FAULTS:
        return None
    where = exc.filename or text.split(":")[0]
    return f"{where}: cannot write: {_WRITE_FAULTS[code]}"


def require_writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Create `folder` (and its parents) if needed and check a file can be written in it;
    InputError naming it otherwise (a read-only disk, a file where it should be)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check.tmp-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = _WRITE_FAULTS.get(exc.errno or 0, exc.strerror or str(exc))
        blocker = next((p for p in [folder, *folder.parents] if p.exists()), folder)
        if blocker.is_file():
            reason = f"{blocker} is a file, not a folder"
        raise InputError(f"{folder}: cannot write outputs here: {reason}") from None
    return folder


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def log_timing(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append `record` and the time now (UTC) as one JSON line to the log at `path`.

    Timings live here, never in a DVC output or metric: those must be the same bytes on
    every run of the same inputs (a `dvc metrics diff` of two equal runs shows nothing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**record, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """Return `path` as a Path, or raise InputError if it is not a readable file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {what} is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: {what} is not readable")
    return path


def read_vector(path: str | os.PathLike[str], what: str, columns: Sequence[str] | None = None) -> gpd.GeoDataFrame:
    """Read a vector file (GeoParquet, or anything GDAL/pyogrio reads) as a GeoDataFrame.

    Raises InputError naming the file if it is missing, unreadable, lacks a CRS or lacks
    one of `columns`.
    """
    path = require_file(path, what)
    try:
        if path.suffix.lower() in {".parquet", ".geoparquet"}:
            frame = gpd.read_parquet(path)
        else:
            frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # the readers raise many types; the user needs the file name
        raise InputError(f"{path}: cannot read {what}: {exc}".splitlines()[0]) from exc
    if frame.crs is None:
        raise InputError(f"{path}: {what} has no CRS")
    missing = [c for c in (columns or []) if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    return frame


def _polygon_wkb(cols: np.ndarray, rows: np.ndarray, cell_size: float) -> pa.Array:
    """WKB of the square cells: little-endian Polygon, one ring of 5 points, 93 bytes.

    Written with NumPy because creating one GEOS object per cell (shapely.box or
    from_ragged_array, then to_wkb) costs ~2 µs a cell: more than the whole grid stage
    for a country of two million cells.
    """
    n = len(cols)
    header = np.frombuffer(struct.pack("<BIII", 1, 3, 1, 5), np.uint8)  # order, Polygon, rings, points
    x0 = np.asarray(cols, np.float64) * cell_size
    y0 = np.asarray(rows, np.float64) * cell_size
    x1, y1 = x0 + cell_size, y0 + cell_size
    ring = np.stack([x0, y0, x1, y0, x1, y1, x0, y1, x0, y0], axis=1)  # (n, 10) float64
    wkb = np.empty((n, header.size + ring.itemsize * 10), np.uint8)
    wkb[:, : header.size] = header
    wkb[:, header.size :] = ring.view(np.uint8)
    size = wkb.shape[1]
    offset_type, array_type = (np.int32, pa.binary()) if n * size < 2**31 else (np.int64, pa.large_binary())
    offsets = np.arange(0, (n + 1) * size, size, dtype=offset_type)
    return pa.Array.from_buffers(array_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(wkb)])


def write_cells(
    path: str | os.PathLike[str], table: pd.DataFrame, cell_size: float, crs: str | CRS
) -> None:
    """Write a per-cell table as GeoParquet with each cell's square polygon, atomically.

    Args:
        table: one row per cell with int columns `col` and `row` (lattice indices of the
            lower-left corner) and any other columns; written in the given order.
        cell_size: cell side in metres.
        crs: the grid's projected CRS.
    """
    crs = CRS.from_user_input(crs)
    cols = table["col"].to_numpy()
    rows = table["row"].to_numpy()
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    x0, y0 = cols * float(cell_size), rows * float(cell_size)
    bbox = pa.StructArray.from_arrays(
        [pa.array(x0), pa.array(y0), pa.array(x0 + cell_size), pa.array(y0 + cell_size)],
        names=["xmin", "ymin", "xmax", "ymax"],
    )
    arrow = arrow.append_column("geometry", _polygon_wkb(cols, rows, cell_size))
    arrow = arrow.append_column("bbox", bbox)
    extent = [float(x0.min()), float(y0.min()), float(x0.max() + cell_size), float(y0.max() + cell_size)] if len(cols) else []
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                "crs": crs.to_json_dict(),
                "bbox": extent,
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }
        },
    }
    lattice = {"cell_size": float(cell_size), "crs": crs.to_string()}
    metadata = dict(arrow.schema.metadata or {})
    metadata.update({b"geo": json.dumps(geo).encode(), LATTICE_KEY: json.dumps(lattice).encode()})
    arrow = arrow.replace_schema_metadata(metadata)
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp, row_group_size=256_000)


def read_cells(
    path: str | os.PathLike[str], what: str, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, float, CRS]:
    """Read a per-cell table written by `write_cells`, without decoding geometries.

    Returns the table (the requested columns, plus `col` and `row`), the cell size in
    metres and the grid's CRS.
    """
    path = require_file(path, what)
    try:
        schema = pq.read_schema(path)
        lattice = json.loads((schema.metadata or {})[LATTICE_KEY])
    except KeyError:
        raise InputError(f"{path}: {what} is not an urbanmap cell table (no lattice metadata)") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read {what}: {exc}".splitlines()[0]) from exc
    wanted = list(dict.fromkeys(["col", "row", *(columns or schema.names)]))
    wanted = [c for c in wanted if c not in ("geometry", "bbox")]
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    table = pq.read_table(path, columns=wanted).to_pandas()
    return table, lattice["cell_size"], CRS.from_user_input(lattice["crs"])
