"""The campaign file's layout (DDL) and its version.

The schema version lives in `PRAGMA user_version`; `PRAGMA application_id` marks the file as a closedloop
campaign so a stray SQLite file is refused by name. A future schema adds a function to `MIGRATIONS`
(version it produces -> upgrade step) and bumps `SCHEMA_VERSION`.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path

from closedloop.controller.store.errors import CampaignFileError
from closedloop.controller.store.sqlite import Database

SCHEMA_VERSION = 1
APPLICATION_ID = int.from_bytes(b"CLop", "big")  # "closedloop"; distinguishes our files from any SQLite file

# Largest finite double, spelled out: SQLite has no isfinite(), and a NaN bound as a parameter arrives as NULL.
_FINITE = "value IS NOT NULL AND value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"

DDL = f"""
CREATE TABLE campaign (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    protocol_text TEXT NOT NULL,
    protocol_sha256 TEXT NOT NULL,
    protocol_path TEXT NOT NULL,
    created_at REAL NOT NULL,
    versions TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'paused', 'stopped')),
    stop_reason TEXT,
    stopped_at REAL,
    parent TEXT,
    metadata TEXT NOT NULL
);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    conditions TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('proposed', 'approved', 'dispatched', 'running', 'measured', 'failed', 'abandoned', 'rejected')),
    proposer TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('initial', 'planner', 'manual', 'retry', 'warm_start')),
    retry_of INTEGER REFERENCES trials(id),
    attempt INTEGER NOT NULL DEFAULT 1,
    instrument TEXT,
    detail TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX trials_by_state ON trials(state);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    virtual_t REAL,
    trial_id INTEGER REFERENCES trials(id),
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    detail TEXT NOT NULL DEFAULT '',
    data TEXT
);
CREATE INDEX events_by_trial ON events(trial_id);
-- The journal is append-only: the file itself refuses edits, not just our code.
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    virtual_t REAL,
    trial_id INTEGER REFERENCES trials(id),
    instrument TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('tx', 'rx')),
    text TEXT NOT NULL
);
CREATE INDEX commands_by_trial ON commands(trial_id);
CREATE TABLE proposals (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id),
    planner TEXT NOT NULL,
    planner_version TEXT,
    seed INTEGER,
    data_hash TEXT,
    acquisition TEXT,
    acquisition_value REAL,
    provenance TEXT NOT NULL
);
CREATE TABLE measurement_info (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed_sample', 'instrument_fault')),
    detail TEXT NOT NULL DEFAULT '',
    analysis TEXT NOT NULL DEFAULT '',
    analysis_version TEXT NOT NULL DEFAULT '',
    instrument TEXT NOT NULL DEFAULT '',
    duration_s REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1))
);
CREATE UNIQUE INDEX measurement_info_current ON measurement_info(trial_id) WHERE superseded = 0;
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    name TEXT NOT NULL,
    value REAL NOT NULL CHECK ({_FINITE}),
    unit TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    analysis TEXT NOT NULL DEFAULT '',
    analysis_version TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1))
);
CREATE UNIQUE INDEX measurements_current ON measurements(trial_id, name) WHERE superseded = 0;
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ndarray', 'json', 'file')),
    dtype TEXT,
    shape TEXT,
    data BLOB,
    path TEXT,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    analysis_version TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1)),
    CHECK ((data IS NULL) <> (path IS NULL))
);
CREATE UNIQUE INDEX artifacts_current ON artifacts(trial_id, name) WHERE superseded = 0;
"""

# version produced -> step that upgrades a file from the version before it (run inside one transaction).
MIGRATIONS: dict[int, Callable[[Database], None]] = {}


def create_schema(db: Database) -> None:
    """Lay out a new, empty campaign file. Runs on a private temporary file, never on a user's file."""
    db.executescript(DDL)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@functools.cache
def _expected_layout() -> dict[tuple[str, str], frozenset[str]]:
    """(type, name) -> columns of every table, index and trigger the DDL lays out (no columns for the
    latter two), read from a scratch in-memory database so it cannot drift from the DDL."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(DDL)
        return _layout(scratch)
    finally:
        scratch.close()


def _layout(conn: sqlite3.Connection) -> dict[tuple[str, str], frozenset[str]]:
    objects = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index', 'trigger') AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {
        (kind, name): frozenset(row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", [name]))
        if kind == "table" else frozenset()
        for kind, name in objects
    }


def layout_problems(db: Database, *, writer: bool) -> list[str]:
    """What the current schema needs and this file lacks: a dropped table or column, and for a writer
    also a dropped index or trigger (they keep the journal append-only and each value current once).
    Read-only. Checked on open because sqlite-utils creates a missing table on the first insert: a
    campaign whose `events` table was dropped would otherwise get a new, empty journal."""
    found = _layout(db.conn)
    tables: list[str] = []
    others: list[str] = []
    for (kind, name), columns in _expected_layout().items():
        if (kind, name) not in found:
            (tables if kind == "table" else others).append(f"{kind} {name} is missing")
        elif missing := sorted(columns - found[(kind, name)]):
            tables.append(f"table {name} has no column {', '.join(missing)}")
    # A dropped table takes its indexes and triggers with it: name the table only.
    return tables or (others if writer else [])


def migrate(db: Database, path: Path, version: int) -> int:
    for target in range(version + 1, SCHEMA_VERSION + 1):
        step = MIGRATIONS.get(target)
        if step is None:
            raise CampaignFileError(path, f"schema {version} is too old for this closedloop and cannot be upgraded")
        with db.atomic():
            step(db)
            db.execute(f"PRAGMA user_version = {target}")
        version = target
    return version
