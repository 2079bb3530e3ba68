"""The trace store: SQLite under `.invar/` holding runs, observations, graphs, facts and
invariant sets.

WAL mode and a busy timeout make several writer processes (distributed ranks, parallel
infer runs) safe; observations are written in batches, one transaction per flush.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from invariants.errors import InvarError
from invariants.observation import Observation

SCHEMA_VERSION = 1
RUN_RECORD_VERSION = 1  # the layout of Store.export_run's records
DEFAULT_DIR = ".invar"
DB_NAME = "traces.sqlite"
SETUP_WAIT_S = 30.0  # how long an opening waits for other processes setting the store up
_JITTER = random.Random()  # its own generator: the traced script's `random` stream is never drawn from

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, label TEXT, script TEXT, argv TEXT, started REAL, ended REAL,
    status TEXT, steps INTEGER, seed_offset INTEGER, rank INTEGER, world_size INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS observations (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, phase TEXT NOT NULL,
    variable TEXT NOT NULL, value REAL, text TEXT
);
CREATE INDEX IF NOT EXISTS obs_run ON observations (run_id, variable);
CREATE TABLE IF NOT EXISTS graphs (run_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS facts (run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
    PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS invariant_sets (id TEXT PRIMARY KEY, created REAL, label TEXT,
    body TEXT NOT NULL);
"""

AMBIGUOUS_SHOWN = 5
FULL_BELOW = 64 * 1024  # free bytes below which a store's disk is called full  # ids named in an "is ambiguous" message


class StoreError(InvarError):
    """The store cannot be used; the subclass says how."""


class StoreUnwritable(StoreError):
    """The store directory cannot be created or written."""


class StoreCorrupt(StoreError):
    """The store file is not a usable database (or one newer than this invar reads)."""


class StoreMissing(StoreError):
    """No store where a reading command looked, or no (unique) run or set with that id."""


# How a run ended (the `status` of `invar runs`). A run is `running` until its end is
# recorded: by the traced process itself, or by the supervisor when that process died.
RUNNING = "running"
CLEAN_ENDINGS = ("complete", "budget", "stopped")  # the script ended, its step budget, or a stop request
INTERRUPTED = "interrupted"  # SIGINT, SIGTERM or KeyboardInterrupt ended it
KILLED = "killed"            # a signal or a timeout ended the process before it could say how


def exited(code: int) -> str:
    """The status of a run whose script ended the process with a non-zero status."""
    return f"exited({code})"


def is_failure(status: str) -> bool:
    """Whether a run's status says the pipeline failed: it raised, exited non-zero, or was killed."""
    return status in ("crashed", KILLED) or status.startswith("exited(")


# SQLite's answers that mean the file itself is damaged; any other error is about the
# place it lives in (read-only, full, gone, locked) and leaves the data intact.
_CORRUPT_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
# Python < 3.11 names no error; a damaged text cell fails in Python's decoding, not SQLite.
_CORRUPT_TEXT = re.compile(r"malformed|not a database|could not decode", re.I)


def _is_corruption(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", None) or ""
    return name.startswith(_CORRUPT_CODES) or bool(_CORRUPT_TEXT.search(str(e)))


def store_error(e: sqlite3.Error, path: Path, doing: str) -> StoreError:
    """The StoreError an SQLite error means while `doing` something with the store at
    `path`: StoreCorrupt only for a damaged file, StoreUnwritable for everything else."""
    said = (str(e).splitlines() or [""])[0][:160]  # a damaged cell's error quotes the cell
    if _is_corruption(e):
        return StoreCorrupt(f"store {path} is not a usable SQLite database ({said}); "
                            f"move it away or pass --store to use another directory")
    place = _place_problem(path.parent)
    return StoreUnwritable(f"cannot {doing} the store {path}: {said}{f' ({place})' if place else ''}; the data "
                           f"in it is intact: free some space or make it writable, or pass --store DIR")


def _place_problem(directory: Path) -> str:
    """What is wrong with the store's folder, in words ('' when nothing visible)."""
    try:
        if not os.access(directory, os.W_OK):
            return "its folder is read-only"
        if shutil.disk_usage(directory).free < FULL_BELOW:
            return "the disk is full"
    except OSError:
        pass
    return ""


@dataclass(frozen=True)
class SetInfo:
    """One stored invariant set, as listed by `invar sets`; `body` is its JSON text."""

    id: str
    created: float
    label: Optional[str]
    body: str


@dataclass(frozen=True)
class RunInfo:
    """One stored run, as listed by `invar runs`."""

    id: str
    label: Optional[str]
    script: str
    argv: List[str]
    started: float
    ended: Optional[float]
    status: str
    steps: int
    seed_offset: int
    rank: int
    world_size: int
    error: Optional[str]


class Store:
    """A connection to one store directory. Cheap to open; close it (or use `with`)."""

    def __init__(self, directory: str | os.PathLike = DEFAULT_DIR, create: bool = True):
        """Opens (and with `create`, creates) the store. Readers pass `create=False`: a
        missing store is then StoreMissing, nothing is written, and a store in a place
        that cannot be written (a read-only mount, a full disk) is opened read-only."""
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        if not create and not self.path.is_file():
            raise StoreMissing(f"no store at {self.directory} (nothing was traced there; pass --store DIR "
                               f"or set INVAR_STORE)")
        try:
            if create:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            else:
                self._db = self._open_existing()
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._set_up(create)
        except sqlite3.Error as e:
            raise store_error(e, self.path, "open") from e
        except OSError as e:
            raise StoreUnwritable(f"cannot create or write the store at {self.directory}: "
                                  f"{e.strerror or e}; pass --store DIR with a writable directory") from e

    def _open_existing(self) -> sqlite3.Connection:
        """A connection to the existing file: read-write (mode=rw: a store removed since the
        check is not silently recreated), else read-only where the WAL's shared-memory file
        cannot be created (read-only mount, full disk): `mode=ro` while the WAL files exist,
        else `immutable` (nothing can change a file nobody can write)."""
        uri = self.path.resolve().as_uri()
        last: Optional[sqlite3.Error] = None
        for mode in ("mode=rw", "mode=ro", "mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30.0, isolation_level=None)
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return db
            except sqlite3.Error as e:
                if _is_corruption(e):
                    raise
                last = e
        assert last is not None
        raise last

    def _set_up(self, create: bool) -> None:
        """WAL mode, the schema and its version. Several processes opening a new store at
        once (the ranks of a torchrun launch) race for the switch to WAL, for which SQLite
        answers `database is locked` at once instead of waiting: that is retried."""
        deadline = time.monotonic() + SETUP_WAIT_S
        while True:
            try:
                if create:
                    self._db.execute("PRAGMA journal_mode = WAL")
                    self._db.execute("PRAGMA synchronous = NORMAL")
                    self._db.executescript(_SCHEMA)
                self._check_schema(create)
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02 + 0.08 * _JITTER.random())

    def _check_schema(self, create: bool = True) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None and create:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StoreCorrupt(f"store {self.path} has schema {row[0]}, newer than this invar "
                               f"reads ({SCHEMA_VERSION}); upgrade invar")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def _write(self, sql: str, rows: Sequence[Sequence[Any]] | None = None, many: bool = False) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if many:
                self._db.executemany(sql, rows or ())
            else:
                self._db.execute(sql, rows or ())
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise store_error(e, self.path, "write to") from e

    def new_run(self, script: str, argv: Sequence[str], label: Optional[str] = None,
                seed_offset: int = 0, rank: int = 0, world_size: int = 1) -> str:
        """Registers a run in state `running` and returns its id."""
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._write("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, _text(label), _text(script), json.dumps(list(argv)), time.time(), None,
                     RUNNING, 0, seed_offset, rank, world_size, None))
        return run_id

    def finish_run(self, run_id: str, status: str, steps: int, error: Optional[str] = None,
                   only_running: bool = False) -> None:
        """Records how the run ended; with `only_running`, only if nothing recorded it yet
        (the supervisor's word on a process that died comes after the process's own)."""
        self._write("UPDATE runs SET ended = ?, status = ?, steps = ?, error = ? WHERE id = ?"
                    + (f" AND status = '{RUNNING}'" if only_running else ""),
                    (time.time(), status, steps, _text(error), run_id))

    def add_observations(self, run_id: str, rows: Iterable[Observation]) -> None:
        """Writes a batch of observations in one transaction."""
        batch = [(run_id, s, p, v, val, txt) for (s, p, v, val, txt) in rows]
        if batch:
            self._write("INSERT INTO observations VALUES (?,?,?,?,?,?)", batch, many=True)

    def set_graph(self, run_id: str, record: Dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO graphs VALUES (?, ?)", (run_id, json.dumps(record)))

    def set_fact(self, run_id: str, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO facts VALUES (?, ?, ?)",
                    (run_id, key, json.dumps(value, default=str)))

    def save_invariant_set(self, set_id: str, label: str, body: str) -> None:
        self._write("INSERT OR REPLACE INTO invariant_sets VALUES (?, ?, ?, ?)",
                    (set_id, time.time(), _text(label), body))

    # -- reading ----------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        """All rows of a query; SQLite's errors become StoreErrors (a damaged page is
        StoreCorrupt, found by the query that reads it)."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise store_error(e, self.path, "read") from e

    def runs(self) -> List[RunInfo]:
        return [_run_info(r) for r in self._query("SELECT * FROM runs ORDER BY started")]

    def run(self, run_id: str) -> RunInfo:
        """The run with this id, or a unique id prefix; StoreMissing if none or ambiguous."""
        rows = self._query("SELECT * FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' "
                           "ORDER BY started", (run_id, _like_prefix(run_id))) if run_id else []
        exact = [r for r in rows if r[0] == run_id]
        if exact:
            return _run_info(exact[0])
        if len(rows) == 1:
            return _run_info(rows[0])
        if not rows:
            raise StoreMissing(f"no run {run_id!r} in {self.path} (see `invar runs`)")
        raise StoreMissing(f"run id {run_id!r} is ambiguous: {_some([r[0] for r in rows])}")

    def observations(self, run_id: str) -> Iterator[Observation]:
        """The run's observations in the order they were recorded (read as they are used)."""
        try:
            cur = self._db.execute("SELECT step, phase, variable, value, text FROM observations "
                                   "WHERE run_id = ? ORDER BY rowid", (run_id,))
            for row in cur:
                yield Observation._make(row)
        except sqlite3.Error as e:
            raise store_error(e, self.path, "read") from e

    def observation_count(self, run_id: str) -> int:
        return self._query("SELECT COUNT(*) FROM observations WHERE run_id = ?", (run_id,))[0][0]

    def last_step(self, run_id: str) -> Optional[int]:
        """The last step with an observation (where a killed run's trace ends), or None."""
        return self._query("SELECT MAX(step) FROM observations WHERE run_id = ?", (run_id,))[0][0]

    def variables(self, run_id: str) -> List[str]:
        return [r[0] for r in self._query(
            "SELECT DISTINCT variable FROM observations WHERE run_id = ? ORDER BY variable", (run_id,))]

    def graph(self, run_id: str) -> Optional[Dict[str, Any]]:
        rows = self._query("SELECT record FROM graphs WHERE run_id = ?", (run_id,))
        return json.loads(rows[0][0]) if rows else None

    def facts(self, run_id: str) -> Dict[str, Any]:
        return {k: json.loads(v) for k, v in self._query(
            "SELECT key, value FROM facts WHERE run_id = ? ORDER BY key", (run_id,))}

    def variable_steps(self, run_id: str) -> Dict[Tuple[str, str], Tuple[int, int]]:
        """(phase, variable) -> (first, last) step it was observed at in the run."""
        return {(p, v): (lo, hi) for p, v, lo, hi in self._query(
            "SELECT phase, variable, MIN(step), MAX(step) FROM observations WHERE run_id = ? "
            "GROUP BY phase, variable", (run_id,))}

    def find_invariant_set(self, set_id: str) -> Optional[SetInfo]:
        """The set with this id or a unique id prefix; None if none (an empty id names
        none), StoreMissing if ambiguous."""
        rows = self._query("SELECT id, created, label, body FROM invariant_sets "
                           "WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY created",
                           (set_id, _like_prefix(set_id))) if set_id else []
        exact = [r for r in rows if r[0] == set_id]
        if exact or len(rows) == 1:
            return SetInfo(*(exact or rows)[0])
        if not rows:
            return None
        raise StoreMissing(f"invariant set id {set_id!r} is ambiguous: {_some([r[0] for r in rows])}")

    def invariant_sets(self) -> List[SetInfo]:
        """Every stored invariant set, oldest first."""
        return [SetInfo(*r) for r in self._query(
            "SELECT id, created, label, body FROM invariant_sets ORDER BY created")]

    # -- moving runs between stores (the gather of a multi-node job, `invar merge`) -------------
    def export_run(self, run_id: str) -> Dict[str, Any]:
        """Everything the store holds about one run, as plain data (JSON-serialisable):
        its `runs` row, facts (as stored, JSON text), graph and observations."""
        row = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not row:
            raise StoreMissing(f"no run {run_id!r} in {self.path}")
        graph = self._query("SELECT record FROM graphs WHERE run_id = ?", (run_id,))
        return {"version": RUN_RECORD_VERSION, "run": list(row[0]),
                "facts": dict(self._query("SELECT key, value FROM facts WHERE run_id = ?", (run_id,))),
                "graph": graph[0][0] if graph else None,
                "observations": [list(r) for r in self._query(
                    "SELECT step, phase, variable, value, text FROM observations WHERE run_id = ? ORDER BY rowid",
                    (run_id,))]}

    def import_run(self, record: Dict[str, Any]) -> str:
        """Writes an exported run into `store` in one transaction; returns what happened:
        'added', 'kept' (the store has that run already, as far or farther) or 'replaced' (the
        store's copy was still `running` and the record's has ended, or it has more rows)."""
        if record.get("version") != RUN_RECORD_VERSION or len(record.get("run") or ()) != 12:
            raise StoreCorrupt(f"a run record of version {record.get('version')!r} cannot be imported "
                               f"(this invar reads version {RUN_RECORD_VERSION})")
        run = list(record["run"])
        run_id = run[0]
        old = self._query("SELECT status FROM runs WHERE id = ?", (run_id,))
        outcome = "added"
        if old:
            rows = self.observation_count(run_id)
            ended, incoming_ended = old[0][0] != RUNNING, run[6] != RUNNING
            if (ended and not incoming_ended) or (ended == incoming_ended and len(record["observations"]) <= rows):
                return "kept"
            outcome = "replaced"
        try:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            for table in ("runs", "facts", "graphs", "observations"):
                db.execute(f"DELETE FROM {table} WHERE {'id' if table == 'runs' else 'run_id'} = ?", (run_id,))
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", run)
            db.executemany("INSERT INTO facts VALUES (?, ?, ?)", [(run_id, k, v) for k, v in record["facts"].items()])
            if record.get("graph") is not None:
                db.execute("INSERT INTO graphs VALUES (?, ?)", (run_id, record["graph"]))
            db.executemany("INSERT INTO observations VALUES (?,?,?,?,?,?)",
                           [(run_id, *o) for o in record["observations"]])
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise store_error(e, self.path, "write to") from e
        return outcome


def _text(value: Optional[str]) -> Optional[str]:
    # A name from a non-UTF-8 command line (`--label $'\xff'`) holds surrogates SQLite
    # cannot encode: store them escaped rather than fail.
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if value else value


def _like_prefix(prefix: str) -> str:
    # A prefix is literal: `_` and `%` in it match themselves, not any character.
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _some(ids: Sequence[str]) -> str:
    """`a, b, c, d, e (+3 more); give more of the id`."""
    more = f" (+{len(ids) - AMBIGUOUS_SHOWN} more)" if len(ids) > AMBIGUOUS_SHOWN else ""
    return f"{len(ids)} match: " + ", ".join(ids[:AMBIGUOUS_SHOWN]) + more + "; give more of the id"


def _run_info(r: Tuple[Any, ...]) -> RunInfo:
    return RunInfo(id=r[0], label=r[1], script=r[2], argv=json.loads(r[3] or "[]"), started=r[4],
                   ended=r[5], status=r[6], steps=r[7] or 0, seed_offset=r[8] or 0,
                   rank=r[9] or 0, world_size=r[10] or 1, error=r[11])

