"""The campaign store: one crash-safe SQLite file per campaign, the whole truth of a campaign.

Every public write is one transaction (all or nothing), committed with `synchronous=FULL` in WAL mode, so
a write that returned survives SIGKILL and power loss. One process writes (a flock on `<campaign>.lock`);
any number read, even while the writer runs. Trial state changes and their journal events commit together.

    with CampaignStore.create("run.sqlite", name="demo", protocol_text=text, protocol_path="p.yaml",
                              seed=1, versions=software_versions()) as store:
        tid = store.add_trial({"anneal_temp": 120.0}, proposer="sobol", origin="initial")
        store.transition(tid, "approved")
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from closedloop.controller.store import measurements
from closedloop.controller.store.artifacts import INLINE_LIMIT_BYTES
from closedloop.controller.store.errors import (
    AlreadyMeasured,
    CampaignExists,
    CampaignFileError,
    CampaignLocked,
    InvalidTransition,
    ReadOnlyCampaign,
    StorageFailed,
    StoreError,
    UnknownTrial,
)
from closedloop.controller.store.file import (
    build_new_file,
    check_campaign,
    check_header,
    connect,
    software_versions,
)
from closedloop.controller.store.lifecycle import (
    MEASUREMENT_STATES,
    check_new_trial,
    check_transition,
    conditions_json,
    to_json,
)
from closedloop.controller.store.locking import WriterLock
from closedloop.controller.store.reads import CampaignReads, TrialRecord
from closedloop.drivers.base import Measurement
from closedloop.planners.provenance import Provenance

__all__ = [
    "AlreadyMeasured",
    "CampaignExists",
    "CampaignFileError",
    "CampaignLocked",
    "CampaignStore",
    "InvalidTransition",
    "ReadOnlyCampaign",
    "StorageFailed",
    "StoreError",
    "TrialRecord",
    "UnknownTrial",
    "software_versions",
]

STATUS_EVENTS = {"running": "resume", "paused": "pause", "stopped": "stop"}

P = ParamSpec("P")
R = TypeVar("R")


def _writes(method: Callable[Concatenate[CampaignStore, P], R]) -> Callable[Concatenate[CampaignStore, P], R]:
    """One public write = one transaction, serialized across threads, refused on a read-only store."""

    @functools.wraps(method)
    def wrapper(self: CampaignStore, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._lock is None:
            raise ReadOnlyCampaign(f"{self.path}: opened read-only; open it with writer=True to record")
        with self._mutex, self._translated_errors(writing=True), self._db.atomic():
            return method(self, *args, **kwargs)

    return wrapper


class CampaignStore(CampaignReads):
    """A campaign file. Make one with `create` (new campaign, a writer) or `open` (existing)."""

    # Artifacts larger than this go to `<campaign>.artifacts/`; class-level so tests can lower it.
    inline_limit: int = INLINE_LIMIT_BYTES

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str,
        protocol_text: str,
        protocol_path: str,
        seed: int,
        versions: dict,
        parent: str | None = None,
        metadata: dict | None = None,
        durable: bool = True,
    ) -> CampaignStore:
        """A new campaign file, returned as the writer. Never overwrites an existing file.

        `durable=False` trades power-loss safety for speed (see `store_file.connect`); for simulations only.
        """
        path = Path(path)
        if path.exists():
            raise CampaignExists(
                f"{path}: a file already exists there and is never overwritten; "
                "choose another file name, or `resume` that campaign"
            )
        if not name or not isinstance(name, str):
            raise ValueError("campaign name must be a non-empty string")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if not path.parent.is_dir():
            raise CampaignFileError(path, f"the folder {path.parent} does not exist; create it first")
        row = {
            "id": 1,
            "name": name,
            "protocol_text": protocol_text,
            "protocol_sha256": hashlib.sha256(protocol_text.encode("utf-8")).hexdigest(),
            "protocol_path": str(protocol_path),
            "created_at": time.time(),
            "versions": to_json({**software_versions(), **versions}, "versions"),
            "seed": seed,
            "status": "running",
            "parent": None if parent is None else str(parent),
            "metadata": to_json(metadata or {}, "metadata"),
        }
        lock = WriterLock(path)
        lock.acquire()
        try:
            build_new_file(path, row)
            return cls._open_with(path, lock, durable)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writer: bool = False, durable: bool = True) -> CampaignStore:
        """An existing campaign. `writer=True` takes the lock or raises CampaignLocked; readers never wait."""
        path = Path(path)
        check_header(path)
        lock = None
        if writer:
            lock = WriterLock(path)
            lock.acquire()
        try:
            return cls._open_with(path, lock, durable)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _open_with(cls, path: Path, lock: WriterLock | None, durable: bool) -> CampaignStore:
        writer = lock is not None
        db = connect(path, writer=writer, durable=durable)
        try:
            version = check_campaign(db, path, writer=writer)
            if writer:
                db.enable_wal()  # a no-op unless someone switched the file out of WAL mode
        except BaseException:
            db.close()
            raise
        return cls(path, db, lock, version)

    # ----------------------------------------------------------------- writes

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Several writes as one transaction: the writes inside join it, and all are kept or none (`tell`
        of a results file). Other threads' writes wait until it ends."""
        if self._lock is None:
            raise ReadOnlyCampaign(f"{self.path}: opened read-only; open it with writer=True to record")
        with self._mutex, self._translated_errors(), self._db.atomic():
            yield

    @_writes
    def add_trial(
        self,
        conditions: dict,
        *,
        proposer: str,
        origin: str,
        provenance: Provenance | None = None,
        state: str = "proposed",
        retry_of: int | None = None,
        virtual_t: float | None = None,
    ) -> int:
        """Record a new trial (and its proposal provenance, and its first event); returns its id."""
        check_new_trial(state, origin, proposer, retry_of)
        attempt = 1 if retry_of is None else self._trial_row(retry_of)["attempt"] + 1
        now = time.time()
        trial_id = self._db.table("trials").insert(
            {
                "conditions": conditions_json(conditions),
                "state": state,
                "proposer": proposer,
                "origin": origin,
                "retry_of": retry_of,
                "attempt": attempt,
                "created_at": now,
                "updated_at": now,
            }
        ).last_pk
        if provenance is not None:
            value = provenance.acquisition_value
            self._db.table("proposals").insert(
                {
                    "trial_id": trial_id,
                    "planner": proposer,
                    "planner_version": _text_or_none(provenance.planner_version),
                    "seed": None if provenance.seed is None else int(provenance.seed),
                    "data_hash": _text_or_none(provenance.data_hash),
                    "acquisition": _text_or_none(provenance.acquisition),
                    "acquisition_value": None if value is None else float(value),
                    "provenance": to_json(provenance.to_dict(), f"provenance of trial {trial_id}"),
                }
            )
        detail = f"{origin} trial from {proposer}" + (f", retry {attempt} of trial {retry_of}" if retry_of else "")
        self._append_event("state", trial_id, None, state, detail, None, virtual_t)
        assert trial_id is not None  # sqlite always assigns an id to a new row
        return int(trial_id)

    @_writes
    def transition(
        self,
        trial_id: int,
        to_state: str,
        *,
        detail: str = "",
        data: dict | None = None,
        instrument: str | None = None,
        virtual_t: float | None = None,
    ) -> None:
        """Move a trial along its lifecycle; raises InvalidTransition for a move the lifecycle forbids."""
        if to_state in MEASUREMENT_STATES:
            raise InvalidTransition(
                f"trial {trial_id}: {to_state!r} is reached only through record_measurement, "
                "which stores the data in the same transaction"
            )
        self._transition(trial_id, to_state, detail, data, instrument, virtual_t)

    @_writes
    def update_conditions(self, trial_id: int, conditions: dict, *, detail: str, virtual_t: float | None = None) -> None:
        """Operator edit before approval; the journal keeps the old and new conditions."""
        row = self._trial_row(trial_id)
        if row["state"] != "proposed":
            raise InvalidTransition(
                f"trial {trial_id} is {row['state']}: conditions can be edited only while it is proposed"
            )
        new_text = conditions_json(conditions)
        self._db.execute(
            "UPDATE trials SET conditions = ?, updated_at = ? WHERE id = ?", [new_text, time.time(), trial_id]
        )
        data = {"old": json.loads(row["conditions"]), "new": json.loads(new_text)}
        self._append_event("edit", trial_id, "proposed", "proposed", detail, data, virtual_t)

    @_writes
    def record_command(
        self, trial_id: int | None, instrument: str, direction: str, text: str, *, virtual_t: float | None = None
    ) -> None:
        """Journal one line sent to ("tx") or received from ("rx") an instrument."""
        if direction not in ("tx", "rx"):
            raise ValueError(f"direction must be 'tx' (sent) or 'rx' (received), got {direction!r}")
        if trial_id is not None:
            self._trial_row(trial_id)
        self._db.table("commands").insert(
            {
                "t": time.time(),
                "virtual_t": virtual_t,
                "trial_id": trial_id,
                "instrument": instrument,
                "direction": direction,
                "text": text,
            }
        )

    @_writes
    def record_measurement(self, trial_id: int, measurement: Measurement, *, virtual_t: float | None = None) -> None:
        """Scalars, artifacts, status and the resulting state change, in one transaction.

        ok -> measured, failed_sample -> failed, instrument_fault -> abandoned. Non-finite scalars make it a
        failed sample whose detail names them. A trial already measured or failed raises AlreadyMeasured.
        """
        state = self._trial_row(trial_id)["state"]
        if state in MEASUREMENT_STATES:
            raise AlreadyMeasured(
                f"trial {trial_id} is already {state}; nothing was changed. "
                "To revise derived values use add_reanalysis"
            )
        if state not in ("dispatched", "running"):
            raise InvalidTransition(
                f"trial {trial_id} is {state}: a measurement is recorded only for a dispatched or running trial"
            )
        vetted = measurements.vet(trial_id, measurement)
        encoded = measurements.encode_all(trial_id, measurement.artifacts)
        measurements.insert_measurement(
            self._db, self.path, trial_id, measurement, vetted, encoded, self.inline_limit
        )
        data = {"measurement_status": vetted.status, "analysis": measurement.analysis,
                "analysis_version": measurement.analysis_version, "non_finite": vetted.non_finite or None}
        self._transition(trial_id, vetted.state, vetted.detail, data, None, virtual_t)

    @_writes
    def add_reanalysis(self, trial_id: int, measurement: Measurement, *, virtual_t: float | None = None) -> None:
        """A new analysis of a measured or failed trial: old values are marked superseded, never deleted.

        A reanalysis may turn a failed sample into a measured one or back (a better fit, a fixed bug); that
        change is journaled as a "reanalysis" event rather than a lifecycle transition.
        """
        row = self._trial_row(trial_id)
        if row["state"] not in MEASUREMENT_STATES:
            raise InvalidTransition(f"trial {trial_id} is {row['state']}: only measured or failed trials can be reanalysed")
        if measurement.status == "instrument_fault":
            raise ValueError(f"trial {trial_id}: a reanalysis cannot be an instrument fault; it reads recorded data")
        vetted = measurements.vet(trial_id, measurement)
        encoded = measurements.encode_all(trial_id, measurement.artifacts)
        previous = self._db.execute(
            "SELECT analysis_version FROM measurement_info WHERE trial_id = ? AND superseded = 0", [trial_id]
        ).fetchone()
        measurements.supersede(self._db, trial_id, list(encoded))
        measurements.insert_measurement(
            self._db, self.path, trial_id, measurement, vetted, encoded, self.inline_limit
        )
        now = time.time()
        self._db.execute(
            "UPDATE trials SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
            [vetted.state, vetted.detail, now, trial_id],
        )
        data = {"analysis": measurement.analysis, "analysis_version": measurement.analysis_version,
                "previous_analysis_version": None if previous is None else previous[0],
                "measurement_status": vetted.status, "non_finite": vetted.non_finite or None}
        self._append_event("reanalysis", trial_id, row["state"], vetted.state, vetted.detail, data, virtual_t)

    @_writes
    def record_event(
        self,
        kind: str,
        *,
        trial_id: int | None = None,
        detail: str = "",
        data: dict | None = None,
        virtual_t: float | None = None,
    ) -> None:
        """Journal something that is not a state change: a safety refusal, an approval, a note, a fault."""
        if not kind or not isinstance(kind, str):
            raise ValueError("event kind must be a non-empty string such as 'note' or 'fault'")
        if kind == "state":
            raise ValueError("'state' events are written by transition(); use it to change a trial's state")
        if trial_id is not None:
            self._trial_row(trial_id)
        self._append_event(kind, trial_id, None, None, detail, data, virtual_t)

    @_writes
    def set_status(self, status: str, *, stop_reason: str | None = None, virtual_t: float | None = None) -> None:
        """Campaign status (running / paused / stopped) and the matching start/resume/pause/stop event."""
        if status not in STATUS_EVENTS:
            raise ValueError(f"campaign status must be one of {list(STATUS_EVENTS)}, got {status!r}")
        previous = self._db.execute("SELECT status FROM campaign").fetchone()[0]
        stopped = status == "stopped"
        self._db.execute(
            "UPDATE campaign SET status = ?, stop_reason = ?, stopped_at = ?",
            [status, stop_reason if stopped else None, time.time() if stopped else None],
        )
        kind = "start" if previous == status == "running" else STATUS_EVENTS[status]
        self._append_event(kind, None, previous, status, stop_reason or "", None, virtual_t)

    # ----------------------------------------------------------------- internals

    def _transition(
        self,
        trial_id: int,
        to_state: str,
        detail: str,
        data: dict | None,
        instrument: str | None,
        virtual_t: float | None,
    ) -> None:
        from_state = self._trial_row(trial_id)["state"]
        check_transition(trial_id, from_state, to_state)
        self._db.execute(
            "UPDATE trials SET state = ?, detail = ?, instrument = coalesce(?, instrument), updated_at = ? WHERE id = ?",
            [to_state, detail, instrument, time.time(), trial_id],
        )
        self._append_event("state", trial_id, from_state, to_state, detail, data, virtual_t)

    def _append_event(
        self,
        kind: str,
        trial_id: int | None,
        from_state: str | None,
        to_state: str | None,
        detail: str,
        data: dict | None,
        virtual_t: float | None,
    ) -> None:
        self._db.table("events").insert(
            {
                "t": time.time(),
                "virtual_t": virtual_t,
                "trial_id": trial_id,
                "kind": kind,
                "from_state": from_state,
                "to_state": to_state,
                "detail": detail,
                "data": None if data is None else to_json(data, f"event data ({kind})"),
            }
        )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
