"""The read side of a campaign store: trial records, the journal, commands, proposals, artifacts.

Every read runs in one SQLite read transaction, so it sees a single snapshot even while the writer
commits next to it. `CampaignStore` (controller.store.campaign_store) adds creation, the writer lock and the writes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from closedloop.controller.store import cells
from closedloop.controller.store.activity import ENGINE_STARTS, Activity, activity_of
from closedloop.controller.store.cells import DamagedCell
from closedloop.controller.store.errors import (
    CampaignFileError,
    StorageFailed,
    StoreError,
    UnknownTrial,
    damaged_file_error,
)
from closedloop.controller.store.lifecycle import STATES
from closedloop.controller.store.locking import WriterInfo, WriterLock, probe_writer
from closedloop.controller.store.measurements import read_artifacts
from closedloop.controller.store.sqlite import Database
from closedloop.planners.provenance import Provenance

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the engine, planner adapter and reports see it.

    `values`/`units` hold the current (non-superseded) measured scalars; `measurement_status` is None until
    a measurement is recorded. `detail` is the reason given at the trial's latest state change.
    """

    id: int
    conditions: dict
    state: str
    proposer: str
    origin: str
    retry_of: int | None
    attempt: int
    instrument: str | None
    created_at: float
    updated_at: float
    values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    measurement_status: str | None = None
    detail: str = ""
    duration_s: float | None = None
    analysis: str = ""  # what made the result: an analysis name, or "line:expired" (a sample left waiting)
    fidelity: str | None = None  # the source chosen for it (its proposal's, or its first attempt's); None: the target


@dataclass(frozen=True)
class ProposalRecord:
    """The planner's record of how a trial was proposed (columns for queries, and the whole provenance)."""

    trial_id: int
    planner: str
    planner_version: str | None
    seed: int | None
    data_hash: str | None
    acquisition: str | None
    acquisition_value: float | None
    provenance: Provenance


def _reads(method: Callable[Concatenate[CampaignReads, P], R]) -> Callable[Concatenate[CampaignReads, P], R]:
    """Reads run in one transaction too: a consistent snapshot while a writer commits next to us."""

    @functools.wraps(method)
    def wrapper(self: CampaignReads, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._mutex, self._translated_errors(), self._db.atomic():
            return method(self, *args, **kwargs)

    return wrapper


class CampaignReads:
    """Reads of an open campaign file; a base of `CampaignStore`, not made directly."""

    def __init__(self, path: Path, db: Database, lock: WriterLock | None, schema_version: int) -> None:
        self.path = path
        self.schema_version = schema_version
        self._db = db
        self._lock = lock
        self._mutex = threading.RLock()

    def close(self) -> None:
        """Close the file and release the writer lock. Safe to call twice."""
        with self._mutex:
            with contextlib.suppress(sqlite3.ProgrammingError):
                self._db.close()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self._lock is not None and self._lock.held

    @contextlib.contextmanager
    def _translated_errors(self, *, writing: bool = False) -> Iterator[None]:
        try:
            yield
        except DamagedCell as exc:
            raise damaged_file_error(self.path, str(exc)) from exc
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "disk is full" in text or "disk I/O" in text:
                raise StorageFailed(self.path, text) from exc
            if "readonly" in text:
                raise CampaignFileError(self.path, f"{text}; nothing from this write was kept") from exc
            if "Could not decode" in text:  # text that is not UTF-8: written by something else, or damaged
                raise damaged_file_error(self.path, text) from exc
            raise
        except OSError as exc:
            if writing:  # an artifact file next to the campaign (a full disk, a failing one)
                raise StorageFailed(self.path, f"{exc.strerror or exc} writing {exc.filename or 'a file'}") from exc
            raise
        except sqlite3.ProgrammingError as exc:
            if "closed" in str(exc):
                raise StoreError(f"{self.path}: this campaign store was closed; open it again") from exc
            raise
        except sqlite3.DatabaseError as exc:
            if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database": the file, not our SQL
                raise damaged_file_error(self.path, str(exc)) from exc
            raise

    @_reads
    def campaign(self) -> dict:
        """The campaign row: name, protocol (text, sha256, path), versions, seed, status, stop reason, ..."""
        row = next(self._db.query("SELECT * FROM campaign"))
        row.pop("id")
        row["versions"] = cells.json_object(row, "campaign", "versions")
        row["metadata"] = cells.json_object(row, "campaign", "metadata")
        row["schema_version"] = self.schema_version
        return row

    @_reads
    def trials(self, states: Iterable[str] | None = None) -> list[TrialRecord]:
        """Trials in id order, with their current measured values; optionally only those in `states`."""
        wanted = None if states is None else list(states)
        unknown = sorted(set(wanted or ()) - set(STATES))
        if unknown:
            raise ValueError(f"unknown trial state(s) {unknown}; states are {list(STATES)}")
        return _read_trials(self._db, wanted)

    @_reads
    def trial(self, trial_id: int) -> TrialRecord:
        self._trial_row(trial_id)
        return _read_trials(self._db, None, trial_id=trial_id)[0]

    @_reads
    def events(
        self, trial_id: int | None = None, kinds: Iterable[str] | None = None, limit: int | None = None
    ) -> list[dict]:
        """Journal entries, oldest first; `limit` keeps the most recent ones."""
        return _read_events(self._db, trial_id, None if kinds is None else list(kinds), limit)

    @_reads
    def activity(self) -> Activity:
        """What the campaign is doing now: its stored status, checked against its writer lock."""
        stored = self._db.execute("SELECT status FROM campaign").fetchone()[0]
        writer = WriterInfo(True, os.getpid(), socket.gethostname()) if self.writable else probe_writer(self.path)
        kinds = ", ".join(f"'{k}'" for k in ENGINE_STARTS)
        started = self._db.execute(f"SELECT 1 FROM events WHERE kind IN ({kinds}) LIMIT 1").fetchone() is not None
        last = self._db.execute(
            "SELECT max(t) FROM (SELECT max(t) AS t FROM events UNION ALL SELECT max(t) FROM commands)"
        ).fetchone()[0]
        return activity_of(stored, writer, engine_started=started, last_heard=last)

    @_reads
    def change_marker(self) -> tuple[int, int, int]:
        """(last event id, last command id, number of trials): changes whenever the campaign writes
        anything, at the cost of three index lookups (a live page polls it)."""
        row = self._db.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM events), (SELECT coalesce(max(id), 0) FROM commands), "
            "(SELECT count(*) FROM trials)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    @_reads
    def commands(self, trial_id: int | None = None) -> list[dict]:
        if trial_id is None:
            return list(self._db.query("SELECT * FROM commands ORDER BY id"))
        return list(self._db.query("SELECT * FROM commands WHERE trial_id = ? ORDER BY id", [trial_id]))

    @_reads
    def proposal(self, trial_id: int) -> ProposalRecord | None:
        """The planner's record for a trial (None for manual trials without provenance)."""
        self._trial_row(trial_id)
        row = next(self._db.query("SELECT * FROM proposals WHERE trial_id = ?", [trial_id]), None)
        if row is None:
            return None
        return ProposalRecord(
            trial_id=trial_id,
            planner=row["planner"],
            planner_version=row["planner_version"],
            seed=row["seed"],
            data_hash=row["data_hash"],
            acquisition=row["acquisition"],
            acquisition_value=row["acquisition_value"],
            provenance=_provenance(row),
        )

    @_reads
    def artifacts(self, trial_id: int) -> dict[str, Any]:
        """name -> np.ndarray / decoded JSON / bytes, for the current analysis, each verified by sha256."""
        self._trial_row(trial_id)
        return read_artifacts(self._db, self.path, trial_id)

    def check_integrity(self) -> list[str]:
        """Problems found by SQLite's integrity_check and in external artifact files; empty when healthy."""
        with self._mutex, self._translated_errors():
            problems = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
            rows = self._db.execute("SELECT DISTINCT trial_id FROM artifacts WHERE path IS NOT NULL").fetchall()
        for (trial_id,) in rows:
            try:
                self.artifacts(trial_id)
            except CampaignFileError as exc:
                problems.append(str(exc))
        return problems

    # ----------------------------------------------------------------- internals

    def _trial_row(self, trial_id: int) -> dict:
        row = next(self._db.query("SELECT * FROM trials WHERE id = ?", [trial_id]), None)
        if row is None:
            raise UnknownTrial(f"no trial {trial_id} in campaign {self.path}")
        return row


# Each trial with the trial its retries go back to: a retry runs the same proposal, from the same source.
_FIRST_ATTEMPT = (
    "WITH RECURSIVE first_attempt(id, first) AS (SELECT id, id FROM trials WHERE retry_of IS NULL "
    "UNION ALL SELECT r.id, f.first FROM trials r JOIN first_attempt f ON r.retry_of = f.id)"
)


def _read_trials(db: Database, states: list[str] | None, trial_id: int | None = None) -> list[TrialRecord]:
    where: list[str] = ["1"]
    params: list[str | int] = []
    if states is not None:
        where.append(f"t.state IN ({', '.join('?' * len(states))})")
        params.extend(states)
    if trial_id is not None:
        where.append("t.id = ?")
        params.append(trial_id)
    clause = " AND ".join(where)
    values: dict[int, dict[str, float]] = {}
    units: dict[int, dict[str, str]] = {}
    for row in db.query(
        f"SELECT m.trial_id, m.name, m.value, m.unit FROM measurements m JOIN trials t ON t.id = m.trial_id "
        f"WHERE m.superseded = 0 AND {clause} ORDER BY m.id",
        params,
    ):
        values.setdefault(row["trial_id"], {})[row["name"]] = cells.number(row, "measurements", "value")
        units.setdefault(row["trial_id"], {})[row["name"]] = row["unit"]
    records = []
    for row in db.query(
        f"{_FIRST_ATTEMPT} SELECT t.*, i.status AS measurement_status, i.analysis AS measurement_analysis, i.duration_s, "
        f""
        f"CASE WHEN json_valid(p.provenance) THEN json_extract(p.provenance, '$.fidelity') END AS fidelity FROM trials t "
        f"LEFT JOIN measurement_info i ON i.trial_id = t.id AND i.superseded = 0 "
        f"LEFT JOIN first_attempt f ON f.id = t.id LEFT JOIN proposals p ON p.trial_id = f.first "
        f"WHERE {clause} ORDER BY t.id",
        params,
    ):
        records.append(
            TrialRecord(
                id=row["id"],
                conditions=cells.json_object(row, "trials", "conditions"),
                state=_state(row),
                proposer=cells.text(row, "trials", "proposer"),
                origin=cells.text(row, "trials", "origin"),
                retry_of=cells.optional(cells.whole, row, "trials", "retry_of"),
                attempt=cells.whole(row, "trials", "attempt"),
                instrument=cells.optional(cells.text, row, "trials", "instrument"),
                created_at=cells.number(row, "trials", "created_at"),
                updated_at=cells.number(row, "trials", "updated_at"),
                values=values.get(row["id"], {}),
                units=units.get(row["id"], {}),
                measurement_status=cells.optional(cells.text, row, "measurement_info", "measurement_status"),
                detail=row["detail"] or "",
                duration_s=cells.optional(cells.number, row, "measurement_info", "duration_s"),
                analysis=cells.optional(cells.text, row, "measurement_info", "measurement_analysis") or "",
                fidelity=row["fidelity"] if isinstance(row["fidelity"], str) else None,
            )
        )
    return records


def _state(row: dict) -> str:
    state = cells.text(row, "trials", "state")
    if state not in STATES:
        raise cells.DamagedCell("trials", row["id"], "state", f"{state!r} is not a trial state ({', '.join(STATES)})")
    return state


def _provenance(row: dict) -> Provenance:
    try:
        return Provenance.from_dict(cells.json_object(row, "proposals", "provenance"))
    except (TypeError, KeyError, ValueError) as exc:
        raise cells.DamagedCell("proposals", row["trial_id"], "provenance", f"not a planner's record ({exc})") from exc


def _read_events(
    db: Database, trial_id: int | None, kinds: list[str] | None, limit: int | None
) -> list[dict]:
    where: list[str] = ["1"]
    params: list[str | int] = []
    if trial_id is not None:
        where.append("trial_id = ?")
        params.append(trial_id)
    if kinds is not None:
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        params.extend(kinds)
    sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id DESC"
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql += " LIMIT ?"
        params.append(limit)
    rows = list(db.query(sql, params))
    rows.reverse()
    for row in rows:
        row["data"] = None if row["data"] is None else json.loads(row["data"])
    return rows
