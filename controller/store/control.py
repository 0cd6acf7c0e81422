"""The operator's requests to a running campaign from outside its process (the dashboard): a small SQLite
file beside the campaign file, `<campaign>.control`.

Why a file of its own: the campaign file has exactly one writer, the running campaign (the flock in
locking.py), and its journal stays the campaign's own record of what happened. A row here is only a
request: the running campaign reads it, decides what it means (an edit passes its safety gate again),
journals what it did in the campaign file with who asked, and marks the request handled with an outcome
the dashboard shows. Requests left from a time no campaign ran are expired when one starts (`expire`): a
pause clicked yesterday never stops today's run.

Both sides open the file for each call and hold no lock between calls; SQLite serialises the writes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from closedloop.records import Value

Action = Literal["accept", "edit", "skip", "pause", "resume", "abort"]
ACTIONS: tuple[str, ...] = get_args(Action)
DECISIONS = ("accept", "edit", "skip")  # about one proposal awaiting approval (they name its trial)
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    trial_id INTEGER,
    edited TEXT,
    by TEXT NOT NULL,
    handled_at REAL,
    outcome TEXT
)"""


class ControlFileError(RuntimeError):
    """The control file cannot be read or written (damaged, permissions, a full disk)."""


def control_path(campaign_path: Path) -> Path:
    """Where the requests to `campaign_path` are kept: `<campaign>.control`, beside it."""
    return campaign_path.with_name(campaign_path.name + ".control")


@dataclass(frozen=True)
class ControlRequest:
    """One request. `edited`: an edit's new values (only those changed), in the protocol's units.
    `outcome` is None until the campaign has handled it."""

    id: int
    action: Action
    by: str
    at: float
    trial_id: int | None = None
    edited: dict[str, Value] | None = None
    handled_at: float | None = None
    outcome: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "action": self.action, "by": self.by, "at": self.at, "trial": self.trial_id,
                "edited": self.edited, "handled_at": self.handled_at, "outcome": self.outcome}


class ControlChannel:
    """The requests to one campaign. The dashboard `submit`s; the running campaign reads `unhandled`
    requests, `mark`s each with what it did, and `expire`s old ones when it starts."""

    def __init__(self, campaign_path: Path) -> None:
        # Resolved: the dashboard and the campaign reach the same file through any symlink.
        self.path = control_path(Path(campaign_path).resolve())

    def submit(self, action: Action, by: str, *, trial_id: int | None = None,
               edited: dict[str, Value] | None = None) -> int:
        """Store a request (creating the file on first use); its id."""
        if action not in ACTIONS:
            raise ValueError(f"unknown control action {action!r}; one of {', '.join(ACTIONS)}")
        if (action in DECISIONS) != (trial_id is not None):
            raise ValueError(f"{action!r} {'needs' if action in DECISIONS else 'takes no'} trial id")
        with self._connection(create=True) as db:
            cursor = db.execute(
                "INSERT INTO requests (at, action, trial_id, edited, by) VALUES (?, ?, ?, ?, ?)",
                [time.time(), action, trial_id, None if edited is None else json.dumps(edited), by])
            return int(cursor.lastrowid or 0)

    def unhandled(self) -> list[ControlRequest]:
        """The requests not handled yet, oldest first; none while the file does not exist."""
        return self._select("WHERE handled_at IS NULL ORDER BY id")

    def recent(self, limit: int = 20) -> list[ControlRequest]:
        """The last `limit` requests, newest first, with their outcomes."""
        return self._select("ORDER BY id DESC LIMIT ?", [limit])

    def mark(self, request_id: int, outcome: str) -> None:
        """Record what the campaign did with a request; a request is handled once (a second mark is ignored)."""
        with self._connection() as db:
            db.execute("UPDATE requests SET handled_at = ?, outcome = ? WHERE id = ? AND handled_at IS NULL",
                       [time.time(), outcome, request_id])

    def expire(self, why: str) -> int:
        """Mark every unhandled request as expired (`why` says so); how many there were."""
        if not self.path.exists():
            return 0
        with self._connection() as db:
            cursor = db.execute("UPDATE requests SET handled_at = ?, outcome = ? WHERE handled_at IS NULL",
                                [time.time(), f"expired: {why}"])
            return cursor.rowcount

    def identity(self) -> tuple[int, int] | None:
        """Which file this is (device, inode), None while there is none: a file deleted and made again
        numbers its requests from 1 again."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _select(self, tail: str, params: list[object] | None = None) -> list[ControlRequest]:
        if not self.path.exists():
            return []
        with self._connection() as db:
            rows = db.execute(f"SELECT id, action, by, at, trial_id, edited, handled_at, outcome FROM requests {tail}",
                              params or []).fetchall()
            requests = []
            for row in rows:
                request = _request(row)
                if request is None:  # written by something else than closedloop: answered, never carried out
                    db.execute("UPDATE requests SET handled_at = ?, outcome = ? WHERE id = ? AND handled_at IS NULL",
                               [time.time(), "ignored: not a request closedloop can read", row[0]])
                else:
                    requests.append(request)
            return requests

    @contextlib.contextmanager
    def _connection(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.exists():
            raise ControlFileError(f"{self.path}: no control file (nothing was requested yet)")
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise ControlFileError(f"{self.path}: cannot open the control file: {exc}") from None
        try:
            if create:
                db.execute(_SCHEMA)
            with db:  # one transaction per call
                yield db
        except (sqlite3.Error, ValueError) as exc:  # ValueError: an `edited` column that is not JSON
            raise ControlFileError(f"{self.path}: the control file cannot be used ({exc}); delete it, and "
                                   "any request in it is lost (nothing in the campaign file is)") from None
        finally:
            db.close()


def _request(row: tuple[object, ...]) -> ControlRequest | None:
    """A row as a request, or None when any field is not what `submit` writes."""
    request_id, action, by, at, trial_id, edited, handled_at, outcome = row
    try:
        values = None if edited is None else json.loads(str(edited))
    except ValueError:
        return None
    if (not isinstance(request_id, int) or action not in ACTIONS or not isinstance(at, int | float)
            or not (trial_id is None or (isinstance(trial_id, int) and not isinstance(trial_id, bool)))
            or not (values is None or (isinstance(values, dict)
                                       and all(isinstance(v, int | float | str) for v in values.values())))
            or (action in DECISIONS) != (trial_id is not None)):
        return None
    return ControlRequest(request_id, action, str(by), float(at), trial_id, values,  # type: ignore[arg-type]
                          handled_at if isinstance(handled_at, int | float) else None,
                          outcome if isinstance(outcome, str) else None)
