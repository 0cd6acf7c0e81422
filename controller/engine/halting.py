"""Ending a run: the stop rules, why an idle engine stops, pausing (stopping the trials in flight) and
putting every instrument safe.
"""

from __future__ import annotations

import queue
import time

from closedloop.controller.engine import history
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.events import (
    CampaignHalted,
    DriverFailed,
    ErrorInfo,
    OperatorHeld,
    SafeStateEntered,
)
from closedloop.controller.engine.halts import Halt, HaltKind, paused, stopped
from closedloop.controller.engine.operator import AbortRequested, OperatorAbsent
from closedloop.controller.engine.state import (
    ABORT_GRACE_S,
    CONTROL_POLL_S,
    REFUSALS_BEFORE_STOP,
    EngineState,
    log,
    reraise_interrupt,
)
from closedloop.drivers.base import Journaled


class Halting(EngineState):
    """The engine's part that ends a run, by a stop rule or a pause, and leaves every instrument safe."""

    def _stop_rule(self) -> Halt | None:
        s = self.settings
        trials = self.store.trials()
        return history.stop_rule(
            s.problem,
            history.observations(s.problem, trials),
            results=history.n_results(trials),
            max_trials=s.max_trials,
            elapsed_s=self.elapsed(),
            max_wall_time_s=s.max_wall_time_s,
            no_improvement=s.no_improvement,
            stop_on_target=s.stop_on_target,
            imported=history.imported_flags(s.problem, trials),
            spent_hours=history.cost_hours(s.problem, trials),
            max_hours=s.max_instrument_hours,
        )

    def _heed_operator(self) -> None:
        """Carry out the pause, resume and abort requests that arrived from the dashboard: a pause stops new
        trials from starting (journaled with who asked), a resume lets them start again, an abort ends the
        run as Ctrl-C does (`AbortRequested`)."""
        if self.control is None:
            return
        for request in self.control.requests():
            if request.action == "abort":
                raise AbortRequested(request.by)
            pause = request.action == "pause"
            if pause == (self._held_by is not None):
                continue  # paused already, or not paused: nothing changes, nothing to journal (the request
                # is marked "taken"; the page shows the campaign's state beside it)
            self._held_by = request.by if pause else None
            self.log.emit(OperatorHeld(request.by, resumed=not pause))

    def _wait_for_operator(self) -> None:
        """Paused from the dashboard with nothing running: wait for the next request."""
        assert self.control is not None
        self.control.wait()

    def _complete_next(self) -> None:
        """Wait for the next trial to finish and take its result; with a dashboard attached, in slices, so
        an abort or pause is seen while a long trial runs."""
        if self.control is None:
            self._complete(self.dispatcher.next_completion())
            return
        while True:
            held = self._held_by
            try:
                done = self.dispatcher.next_completion(timeout=CONTROL_POLL_S)
            except queue.Empty:
                self._heed_operator()  # an abort raises; a pause or resume goes back to the loop
                if self._held_by != held:
                    return
                continue
            self._complete(done)
            return

    def _why_idle(self) -> Halt | None:
        if self.ready:
            return None
        if self._refusals >= REFUSALS_BEFORE_STOP:
            return stopped(HaltKind.GATE_REFUSALS,
                           f"{REFUSALS_BEFORE_STOP} proposals in a row refused by the safety gate")
        held = self.handed_out()
        if held:  # the rest of the budget is with a person: nothing to run until their results are told
            ids = ", ".join(str(t.id) for t in held)
            return paused(HaltKind.WAITING_FOR_RESULTS, (
                f"the rest of the budget is taken by {len(held)} trial(s) handed out with ask ({ids}); record "
                "their results with closedloop tell, then resume"))
        return stopped(HaltKind.NOTHING_TO_PROPOSE, "the planner has nothing left to propose (candidate pool exhausted?)")

    def _finish(self, halt: Halt) -> Halt:
        self._safe_state(halt.text)
        self.log.emit(CampaignHalted(halt))
        return halt

    def _pause(self, halt: Halt, *, abort: bool) -> Halt:
        """Pause, then put every instrument safe. With `abort` (Ctrl-C, SIGTERM) the trials running on live
        instruments are stopped first (virtual ones have already finished) and each is recorded as an
        operator abort and queued again; without it (nobody at the terminal) they run to their end.
        Another Ctrl-C while waiting gives up on them at once."""
        deadline = None
        if abort:
            self._aborting = True
            for station, exc in self.dispatcher.abort_running():
                self.log.emit(DriverFailed(station.name, "abort", ErrorInfo.of(exc, with_traceback=True)))
            deadline = time.monotonic() + ABORT_GRACE_S
        try:
            while self.dispatcher.in_flight:
                try:
                    done = self.dispatcher.next_completion(
                        timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
                except queue.Empty:  # the grace period is over: give the trials up, make everything safe
                    for job in self.dispatcher.abandon_all():
                        self.log.emit(DriverFailed(job.station.name, f"stop trial {job.trial_id}", ErrorInfo(
                            "TimeoutError", f"still running {ABORT_GRACE_S:g} s after the abort")))
                        self._operator_abort(job.trial_id, f"did not stop within {ABORT_GRACE_S:g} s of the abort")
                    break
                if isinstance(done.error, OperatorAbsent):
                    self.busy.pop(done.job.station.name, None)
                    self._operator_abort(done.job.trial_id, f"operator absent: {done.error}")
                else:
                    self._complete(done)
        except KeyboardInterrupt:
            self._aborting = True
            for job in self.dispatcher.abandon_all():
                self._operator_abort(job.trial_id, "given up by the operator (second Ctrl-C) before the trial stopped")
        return self._finish(halt)

    def _safe_state(self, why: str) -> None:
        """Every instrument safe at the campaign's end or pause."""
        for station in self.stations:
            self._make_safe(station, why, journal=True)

    def _leave_everything_safe(self) -> None:
        """Stop the running trials and put every instrument safe without touching the campaign file."""
        for station, exc in self.dispatcher.abort_running():
            log.warning("abort on %s failed: %r", station.name, exc)
        for station in self.stations:
            try:
                if isinstance(station.driver, Journaled):
                    station.driver.set_journal(None)  # a journal into a failing store must not stop a command
                station.driver.safe_state()
            except BaseException as exc:  # noqa: BLE001 - every other instrument must still be made safe
                log.warning("safe state of %s failed: %r", station.name, exc)

    def _make_safe(self, station: Station, why: str, *, journal: bool) -> None:
        """`station`'s safe state, journaled as a campaign event. With `journal` its commands are recorded
        without a trial: they belong to the campaign, not to the last trial that used the link. A
        safe_state that raises (it must not) is journaled, and the campaign goes on to pause."""
        error = None
        try:
            if journal and isinstance(station.driver, Journaled):
                station.driver.set_journal(lambda direction, text: self.log.command(
                    None, station.name, direction, text, self.clock.now()))
        except BaseException as exc:  # noqa: BLE001 - unjournaled commands beat an instrument left hot
            reraise_interrupt(exc)
            self.log.emit(DriverFailed(station.name, "set_journal", ErrorInfo.of(exc, with_traceback=True)))
        try:
            station.driver.safe_state()
        except BaseException as exc:  # noqa: BLE001 - the other instruments must still be made safe
            reraise_interrupt(exc)
            error = ErrorInfo.of(exc, with_traceback=True)
        if journal or error is not None:
            self.log.emit(SafeStateEntered(station.name, why, error))
