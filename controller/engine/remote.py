"""The operator at the dashboard, as the running engine sees them: decisions on proposals awaiting approval,
and pause / resume / abort, read from the campaign's control channel (`controller.store.control`).

The dashboard only writes requests; this is the one place they become decisions. An edit comes back to the
engine as a `Decision` and passes the same safety gate as an edit typed at the terminal; a refused edit is
asked about again, with the error, exactly as at the terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from closedloop.controller.engine.operator import AbortRequested, Decision, OperatorRequest
from closedloop.controller.store.control import DECISIONS, ControlChannel, ControlFileError, ControlRequest
from closedloop.records import Conditions

POLL_S = 0.25  # how often the campaign looks for requests: a click shows its effect well within a second

log = logging.getLogger(__name__)


class RemoteOperator:
    """Decides proposals from the dashboard (an `Approver`) and carries the dashboard's pause, resume and
    abort requests to the engine (an `OperatorControl`). A damaged or unreadable control file is logged and
    treated as no request: the campaign goes on, the dashboard cannot steer it until the file is fixed."""

    where = "dashboard"

    def __init__(self, channel: ControlChannel, *, poll_s: float = POLL_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.channel = channel
        self.poll_s = poll_s
        self._sleep = sleep
        self._warned = False
        self._taken: set[int] = set()  # handled here but not marked in the file (marking failed)...
        self._file: tuple[int, int] | None = None  # ...in this file

    def start(self) -> None:
        """The campaign starts: requests made while it was not running are expired, not carried out."""
        try:
            self.channel.expire("made while the campaign was not running")
        except ControlFileError as exc:
            self._warn(exc)

    # ---- OperatorControl --------------------------------------------------------------------------

    def requests(self) -> list[OperatorRequest]:
        # Read on every call (a file that does not exist costs a stat; one that does, a small query): a
        # pause clicked before the decision on the last proposal must stop the next one being proposed.
        out = []
        for request in self._unhandled():
            if request.action in DECISIONS:
                continue  # decided while the proposal waits (decide), or marked stale there
            self._mark(request, f"{request.action}: taken")
            out.append(OperatorRequest(request.action, request.by))  # type: ignore[arg-type]
        return out

    def wait(self) -> None:
        self._sleep(self.poll_s)

    # ---- Approver ---------------------------------------------------------------------------------

    def decide(self, trial_id: int, conditions: Conditions, error: str | None = None) -> Decision:
        """Wait for the dashboard's decision on `trial_id`. Decisions about any other trial are stale (it
        no longer waits) and are marked so; an abort ends the wait (`AbortRequested`). Pause and resume are
        left for the engine's loop."""
        while True:
            for request in self._unhandled():
                if request.action == "abort":
                    self._mark(request, "abort: taken")
                    raise AbortRequested(request.by)
                if request.action not in DECISIONS:
                    continue
                if request.trial_id != trial_id:
                    self._mark(request, f"ignored: trial {request.trial_id} is not waiting for a decision")
                    continue
                self._mark(request, f"{request.action} of trial {trial_id}: taken")
                if request.action == "edit":
                    return Decision("edit", conditions=dict(request.edited or {}), by=request.by,
                                    note=" ".join(f"{k}={v}" for k, v in (request.edited or {}).items()))
                return Decision(request.action, by=request.by)  # type: ignore[arg-type]
            self._sleep(self.poll_s)

    # ---- the file ---------------------------------------------------------------------------------

    def _unhandled(self) -> list[ControlRequest]:
        identity = self.channel.identity()
        if identity != self._file:  # deleted and made again: its ids start from 1 again
            self._file, self._taken = identity, set()
        try:
            return [r for r in self.channel.unhandled() if r.id not in self._taken]
        except ControlFileError as exc:
            self._warn(exc)
            return []

    def _mark(self, request: ControlRequest, outcome: str) -> None:
        try:
            self.channel.mark(request.id, outcome)
        except ControlFileError as exc:
            self._taken.add(request.id)  # not marked in the file: remembered here, so it is done once
            self._warn(exc)

    def _warn(self, exc: ControlFileError) -> None:
        if not self._warned:  # once: a damaged file must not flood the terminal every quarter second
            log.warning("%s; the dashboard cannot control this campaign", exc)
            self._warned = True
