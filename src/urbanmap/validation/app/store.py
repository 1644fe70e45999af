"""The answers' store: one SQLite file per sample (`validation/interpretations.sqlite`).

Nothing submitted is lost: the file is in WAL mode with `synchronous=FULL`, and every
answer is committed before the page that sent it advances (the server answers a form
with the next page only after the commit), so killing the server (even SIGKILL) loses
no submitted answer, and a restart resumes each interpreter at their first unanswered
cell. Answers are appended, never updated: an interpreter's latest answer to a cell is
the one that counts, earlier ones stay for the record. Each write is one `BEGIN
IMMEDIATE` transaction, so two interpreters working at once are serialised by SQLite and
neither overwrites the other; every form carries a one-time key (`posts`), so a form sent
twice (a double Enter, the back button, a replay) is refused rather than saved twice.

Tables: `meta` (key, value: the sample file and its SHA-256 when the database was made,
the gold file and its SHA-256, the double-coded share, the seed, the secret that signs
the forms' keys), `items` (one row per cell to interpret: the sample's cells in sample
order, then the gold cells; `copies` interpreters wanted; a gold cell's known answer and
its chip), `assignments` (interpreter, cell, order, skipped), `answers`, `adjudications`
and `posts` (the forms' keys already used).

Handing out cells (`assign_more`): when an interpreter has no unanswered cell left, they
get up to `batch` sample cells that still want an interpreter and were never theirs
(cells that already have one interpreter and want a second come first, so pairs form
early), with gold cells mixed in at random places in proportion (gold cells / sample
cells), each gold cell once per interpreter.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import re
import secrets
import sqlite3
import stat
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from urbanmap.core import io
from urbanmap.core.errors import InputError
from urbanmap.validation.app.quality import ANSWERS

#: The version of the tables below; a database of another version is refused.
SCHEMA_VERSION = "1"
#: Tag that separates the gold cells' places from the other random streams of the seed.
_GOLD_PLACES = 808

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    cell_id TEXT PRIMARY KEY, sample_id TEXT, position INTEGER NOT NULL UNIQUE, copies INTEGER NOT NULL,
    gold_answer TEXT, chip TEXT, chip_png BLOB, col INTEGER NOT NULL, row INTEGER NOT NULL,
    lon REAL, lat REAL, stratum TEXT, map_class TEXT);
CREATE TABLE assignments (
    interpreter TEXT NOT NULL, cell_id TEXT NOT NULL REFERENCES items(cell_id), position INTEGER NOT NULL,
    skipped INTEGER NOT NULL DEFAULT 0, assigned_at TEXT NOT NULL, PRIMARY KEY (interpreter, cell_id));
CREATE INDEX assignments_cell ON assignments (cell_id);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, interpreter TEXT NOT NULL, cell_id TEXT NOT NULL REFERENCES items(cell_id),
    answer TEXT NOT NULL CHECK (answer IN ('urban', 'non_urban', 'cannot_tell')),
    confidence INTEGER NOT NULL CHECK (confidence BETWEEN 1 AND 3), comment TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX answers_by ON answers (interpreter, cell_id, id);
CREATE TABLE adjudications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cell_id TEXT NOT NULL REFERENCES items(cell_id),
    answer TEXT NOT NULL CHECK (answer IN ('urban', 'non_urban', 'cannot_tell')), adjudicator TEXT NOT NULL,
    comment TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE posts (nonce TEXT PRIMARY KEY, kind TEXT NOT NULL, who TEXT NOT NULL, cell_id TEXT NOT NULL,
    created_at TEXT NOT NULL);
"""

#: An interpreter's or adjudicator's name: a letter or digit, then up to 39 letters,
#: digits, spaces and . ' - _
NAME = re.compile(r"^[^\W_][\w .'-]{0,39}$")


class RequestError(InputError):
    """A request the app refuses: `status` (HTTP, 4xx) and a sentence saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_name(name: str | None, what: str = "interpreter") -> str:
    """`name` stripped, if it is a valid name (NAME); RequestError 400 otherwise."""
    text = (name or "").strip()
    if not NAME.match(text):
        raise RequestError(400, f"{what} name {text[:60]!r} is not valid: use 1 to 40 letters, digits, "
                                "spaces or . ' - _, starting with a letter or digit")
    return text


def file_hash(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def now() -> str:
    """The time now, UTC, to the second (ISO 8601)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_only(path: Path) -> bool:
    """Whether `path` (or its folder, where SQLite keeps the WAL) cannot be written: no
    write permission bit (which even root respects here), or no write access."""
    mode = path.stat().st_mode
    return not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK) \
        or not os.access(path.parent, os.W_OK)


class Store:
    """The answers' store at `path` (module docstring); every method opens its own
    connection, so one Store serves every thread of the server."""

    def __init__(self, path: Path, meta: Mapping[str, str], read_only_file: bool = False) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.secret = bytes.fromhex(self.meta["secret"])
        # Reads open the file read-write when they may: SQLite then removes its -wal and
        # -shm files when the last connection closes (read-only ones leave them behind).
        self.mode = "ro" if read_only_file else "rw"

    # --- making and opening ---------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, items: pd.DataFrame, meta: Mapping[str, str]) -> Store:
        """Write a new database at `path` (atomically: a temporary renamed into place).

        Args:
            items: one row per cell to interpret, in order: cell_id, sample_id (None for
                gold), copies, gold_answer (None for sample cells), chip (sample cells'
                chip path), chip_png (gold cells' chip, PNG bytes), col, row, lon, lat,
                stratum, map_class.
            meta: what the database records of its making (module docstring).
        """
        record = {**meta, "schema": SCHEMA_VERSION, "created_at": now(), "secret": secrets.token_hex(32)}
        with io.atomic_output(path) as tmp:
            con = sqlite3.connect(tmp)
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(SCHEMA)
                con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(record.items()))
                rows = [(r["cell_id"], r["sample_id"], k, int(r["copies"]), r["gold_answer"], r["chip"], r["chip_png"],
                         int(r["col"]), int(r["row"]), _float(r["lon"]), _float(r["lat"]), r["stratum"], r["map_class"])
                        for k, r in enumerate(items.to_dict("records"))]
                con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                con.commit()
            finally:
                con.close()
            for leftover in (tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)
        return cls(path, record)

    @classmethod
    def open(cls, path: Path, write: bool = True) -> Store:
        """The database at `path`; InputError naming it when it is missing, not a file,
        read-only (with `write`), not an answers' database, or of another schema."""
        path = io.require_file(path, "answers' database")
        locked = read_only(path)
        if write and locked:
            raise InputError(f"{path}: the answers' database is read-only; make it (and its folder) writable "
                             "to record answers")
        try:
            con = sqlite3.connect(f"file:{path}?mode={'ro' if locked else 'rw'}", uri=True, timeout=15)
            try:
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path}: not an answers' database of `urbanmap interpret serve` ({exc})") from None
        if meta.get("schema") != SCHEMA_VERSION or "secret" not in meta:
            raise InputError(f"{path}: answers' database of schema {meta.get('schema')!r}, not {SCHEMA_VERSION!r}")
        return cls(path, meta, locked)

    # --- connections --------------------------------------------------------------------

    def check_file(self) -> None:
        """RequestError 409 when the database file went missing or read-only since start."""
        if not self.path.is_file():
            raise RequestError(409, f"The answers' database {self.path} is missing: nothing can be saved or shown. "
                                    "Put it back (or restart the server to begin a new one).")
        if read_only(self.path):
            raise RequestError(409, f"The answers' database {self.path} is read-only: nothing was saved. "
                                    "Make it writable and send the form again.")

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection (a `BEGIN IMMEDIATE` transaction, committed at the end, with
        `write`); SQLite's faults as RequestError 409."""
        try:
            con = sqlite3.connect(f"file:{self.path}?mode={'rw' if write else self.mode}", uri=True, timeout=15,
                                  isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise RequestError(409, f"The answers' database {self.path} cannot be opened ({exc}): nothing was saved.") from None
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA synchronous=FULL")
            if write:
                con.execute("BEGIN IMMEDIATE")
            yield con
            if write:
                con.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            what = "is read-only" if "readonly" in str(exc) else f"failed ({exc})"
            raise RequestError(409, f"The answers' database {self.path} {what}: nothing was saved.") from None
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def journal_mode(self) -> str:
        """SQLite's journal mode of the file (wal)."""
        with self._connect() as con:
            return str(con.execute("PRAGMA journal_mode").fetchone()[0])

    # --- reading --------------------------------------------------------------------------

    def items(self) -> pd.DataFrame:
        """Every cell to interpret (without gold chips), in order; `gold` is the known answer
        or None."""
        with self._connect() as con:
            rows = con.execute("SELECT cell_id, sample_id, position, copies, gold_answer, chip, col, row, lon, lat, "
                               "stratum, map_class FROM items ORDER BY position").fetchall()
        frame = pd.DataFrame([dict(r) for r in rows], columns=["cell_id", "sample_id", "position", "copies", "gold_answer",
                                                               "chip", "col", "row", "lon", "lat", "stratum", "map_class"])
        return frame.astype(object).where(frame.notna(), None)  # NULL stays None (pandas makes it NaN)

    def gold_chip(self, cell_id: str) -> bytes | None:
        """The stored chip of a gold cell, or None."""
        with self._connect() as con:
            row = con.execute("SELECT chip_png FROM items WHERE cell_id = ?", (cell_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def is_assigned(self, name: str, cell_id: str) -> bool:
        """Whether `cell_id` was given to interpreter `name`."""
        with self._connect() as con:
            return con.execute("SELECT 1 FROM assignments WHERE interpreter = ? AND cell_id = ?",
                               (name, cell_id)).fetchone() is not None

    def next_cell(self, name: str) -> str | None:
        """Interpreter `name`'s next cell: the first unanswered one not skipped, else the
        first skipped one (skip and come back); None when every cell given is answered."""
        with self._connect() as con:
            row = con.execute(
                "SELECT a.cell_id FROM assignments a WHERE a.interpreter = ? AND NOT EXISTS "
                "(SELECT 1 FROM answers w WHERE w.interpreter = a.interpreter AND w.cell_id = a.cell_id) "
                "ORDER BY a.skipped, a.position LIMIT 1", (name,)).fetchone()
        return None if row is None else str(row[0])

    def progress(self, name: str) -> dict[str, int]:
        """Interpreter `name`'s cells: assigned, answered, skipped (and not answered since)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT COUNT(*), SUM(answered), SUM(skipped AND NOT answered) FROM (SELECT a.skipped, EXISTS "
                "(SELECT 1 FROM answers w WHERE w.interpreter = a.interpreter AND w.cell_id = a.cell_id) AS answered "
                "FROM assignments a WHERE a.interpreter = ?)", (name,)).fetchone()
        return {"assigned": int(row[0] or 0), "answered": int(row[1] or 0), "skipped": int(row[2] or 0)}

    def skipped(self, name: str) -> list[str]:
        """The cells interpreter `name` skipped and has not answered since, in order."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT a.cell_id FROM assignments a WHERE a.interpreter = ? AND a.skipped AND NOT EXISTS "
                "(SELECT 1 FROM answers w WHERE w.interpreter = a.interpreter AND w.cell_id = a.cell_id) "
                "ORDER BY a.position", (name,)).fetchall()
        return [str(r[0]) for r in rows]

    def recent(self, name: str, limit: int = 5) -> list[dict[str, Any]]:
        """Interpreter `name`'s latest answers, newest first: cell_id, answer, confidence."""
        with self._connect() as con:
            rows = con.execute("SELECT cell_id, answer, confidence FROM answers WHERE interpreter = ? AND id IN "
                               "(SELECT MAX(id) FROM answers WHERE interpreter = ? GROUP BY cell_id) "
                               "ORDER BY id DESC LIMIT ?", (name, name, limit)).fetchall()
        return [dict(r) for r in rows]

    def answer_of(self, name: str, cell_id: str) -> dict[str, Any] | None:
        """Interpreter `name`'s latest answer to `cell_id` (answer, confidence, comment), or None."""
        with self._connect() as con:
            row = con.execute("SELECT answer, confidence, comment FROM answers WHERE interpreter = ? AND cell_id = ? "
                              "ORDER BY id DESC LIMIT 1", (name, cell_id)).fetchone()
        return None if row is None else dict(row)

    def current_answers(self) -> pd.DataFrame:
        """Every interpreter's latest answer to each cell: interpreter, cell_id, answer,
        confidence, comment, created_at, gold (bool), in the order they were given."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT w.interpreter, w.cell_id, w.answer, w.confidence, w.comment, w.created_at, "
                "i.gold_answer IS NOT NULL AS gold FROM answers w JOIN items i ON i.cell_id = w.cell_id "
                "WHERE w.id IN (SELECT MAX(id) FROM answers GROUP BY interpreter, cell_id) ORDER BY w.id").fetchall()
        frame = pd.DataFrame([dict(r) for r in rows], columns=["interpreter", "cell_id", "answer", "confidence", "comment",
                                                               "created_at", "gold"])
        frame["gold"] = frame["gold"].astype(bool)
        return frame

    def history(self, cell_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every answer and adjudication of `cell_id`, oldest first."""
        with self._connect() as con:
            answers = con.execute("SELECT interpreter, answer, confidence, comment, created_at FROM answers "
                                  "WHERE cell_id = ? ORDER BY id", (cell_id,)).fetchall()
            adjudications = con.execute("SELECT adjudicator, answer, comment, created_at FROM adjudications "
                                        "WHERE cell_id = ? ORDER BY id", (cell_id,)).fetchall()
        return [dict(r) for r in answers], [dict(r) for r in adjudications]

    def adjudicated(self) -> pd.Series:
        """The adjudicator's latest answer of each adjudicated cell, indexed by cell_id."""
        with self._connect() as con:
            rows = con.execute("SELECT cell_id, answer FROM adjudications WHERE id IN "
                               "(SELECT MAX(id) FROM adjudications GROUP BY cell_id)").fetchall()
        return pd.Series({str(r[0]): str(r[1]) for r in rows}, dtype=object)

    def interpreters(self) -> pd.DataFrame:
        """Every interpreter: name, assigned, answered (cells, gold included), in name order."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT a.interpreter AS name, COUNT(*) AS assigned, SUM(EXISTS (SELECT 1 FROM answers w WHERE "
                "w.interpreter = a.interpreter AND w.cell_id = a.cell_id)) AS answered FROM assignments a "
                "GROUP BY a.interpreter ORDER BY a.interpreter").fetchall()
        return pd.DataFrame([dict(r) for r in rows], columns=["name", "assigned", "answered"])

    # --- writing --------------------------------------------------------------------------

    def assign_more(self, name: str, batch: int) -> int:
        """Give interpreter `name` more cells if none of theirs is left unanswered (module
        docstring); return how many were given."""
        seed = int(self.meta.get("seed", "0"))
        with self._connect(write=True) as con:
            open_cells = con.execute(
                "SELECT COUNT(*) FROM assignments a WHERE a.interpreter = ? AND NOT EXISTS "
                "(SELECT 1 FROM answers w WHERE w.interpreter = a.interpreter AND w.cell_id = a.cell_id)",
                (name,)).fetchone()[0]
            if open_cells:
                return 0
            picked = [str(r[0]) for r in con.execute(
                "SELECT i.cell_id, COUNT(a.cell_id) AS taken FROM items i LEFT JOIN assignments a ON a.cell_id = i.cell_id "
                "WHERE i.gold_answer IS NULL AND i.cell_id NOT IN (SELECT cell_id FROM assignments WHERE interpreter = ?) "
                "GROUP BY i.cell_id HAVING taken < i.copies ORDER BY taken > 0 DESC, i.position LIMIT ?",
                (name, int(batch))).fetchall()]
            n_sample, n_gold = (con.execute("SELECT SUM(gold_answer IS NULL), SUM(gold_answer IS NOT NULL) FROM items")
                                .fetchone())
            gold = [str(r[0]) for r in con.execute(
                "SELECT cell_id FROM items WHERE gold_answer IS NOT NULL AND cell_id NOT IN "
                "(SELECT cell_id FROM assignments WHERE interpreter = ?) ORDER BY position", (name,)).fetchall()]
            base = con.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM assignments WHERE interpreter = ?",
                               (name,)).fetchone()[0]
            if picked and gold:
                take = min(len(gold), max(1, math.ceil(len(picked) * (n_gold or 0) / max(n_sample or 1, 1))))
                rng = np.random.default_rng([seed, _GOLD_PLACES, zlib.crc32(name.encode()), int(base)])
                for cell in gold[:take]:
                    picked.insert(int(rng.integers(0, len(picked) + 1)), cell)
            stamp = now()
            con.executemany("INSERT INTO assignments VALUES (?, ?, ?, 0, ?)",
                            [(name, cell, int(base) + k, stamp) for k, cell in enumerate(picked)])
        return len(picked)

    def _claim(self, con: sqlite3.Connection, nonce: str, kind: str, who: str, cell_id: str) -> None:
        """Record a form's one-time key; RequestError 409 when it was used before."""
        try:
            con.execute("INSERT INTO posts VALUES (?, ?, ?, ?, ?)", (nonce, kind, who, cell_id, now()))
        except sqlite3.IntegrityError:
            raise RequestError(409, f"This form for cell {cell_id} was already sent once, and that answer is kept; "
                                    "nothing was saved again. Open the cell anew to change the answer.") from None

    def _require_assigned(self, con: sqlite3.Connection, name: str, cell_id: str) -> None:
        if con.execute("SELECT 1 FROM assignments WHERE interpreter = ? AND cell_id = ?",
                       (name, cell_id)).fetchone() is None:
            raise RequestError(403, f"Cell {cell_id} is not assigned to interpreter {name!r}: nothing was saved.")

    def save_answer(self, name: str, cell_id: str, answer: str, confidence: int, comment: str, nonce: str) -> None:
        """Append interpreter `name`'s answer to `cell_id` and commit; RequestError 403 when
        the cell is not theirs, 409 when the form's key was used before."""
        if answer not in ANSWERS:
            raise RequestError(400, f"answer {answer!r} is not one of {', '.join(ANSWERS)}: nothing was saved.")
        with self._connect(write=True) as con:
            self._require_assigned(con, name, cell_id)
            self._claim(con, nonce, "answer", name, cell_id)
            con.execute("INSERT INTO answers (interpreter, cell_id, answer, confidence, comment, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (name, cell_id, answer, int(confidence), comment, now()))

    def skip(self, name: str, cell_id: str, nonce: str) -> None:
        """Mark `cell_id` skipped by interpreter `name` (it comes back after the others)."""
        with self._connect(write=True) as con:
            self._require_assigned(con, name, cell_id)
            self._claim(con, nonce, "skip", name, cell_id)
            con.execute("UPDATE assignments SET skipped = 1 WHERE interpreter = ? AND cell_id = ?", (name, cell_id))

    def adjudicate(self, cell_id: str, answer: str, adjudicator: str, comment: str, nonce: str) -> None:
        """Append an adjudicator's answer to a sample cell (the one that wins) and commit."""
        if answer not in ANSWERS:
            raise RequestError(400, f"answer {answer!r} is not one of {', '.join(ANSWERS)}: nothing was saved.")
        with self._connect(write=True) as con:
            row = con.execute("SELECT gold_answer FROM items WHERE cell_id = ?", (cell_id,)).fetchone()
            if row is None:
                raise RequestError(404, f"There is no cell {cell_id!r} in this sample: nothing was saved.")
            if row[0] is not None:
                raise RequestError(400, f"Cell {cell_id} is not a sample cell: it needs no adjudication.")
            self._claim(con, nonce, "adjudicate", adjudicator, cell_id)
            con.execute("INSERT INTO adjudications (cell_id, answer, adjudicator, comment, created_at) "
                        "VALUES (?, ?, ?, ?, ?)", (cell_id, answer, adjudicator, comment, now()))


def _float(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
