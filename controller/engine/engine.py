"""The campaign engine: propose, gate, approve, dispatch, ingest, reconcile, decide to stop.

Every entry point drives these operations: `run` is a loop over them, `ask`/`tell` call `propose` and
`ingest` one at a time, `resume` starts with `reconcile`. Each step is an event written to the campaign
file (`controller.engine.events`) before the next one begins, so a process killed at any moment leaves
a file that `reconcile` can put right.
"""

from __future__ import annotations

import contextlib
import queue
from collections import deque
from collections.abc import Callable, Sequence

from closedloop.controller.engine.dispatch import Completion, Dispatcher, Job, Station
from closedloop.controller.engine.events import (
    Abandonment,
    ApprovalAwaited,
    CampaignRunning,
    DriverFailed,
    ErrorInfo,
    EventLog,
    OperatorDecided,
    ProposalRefused,
    StepEvent,
    TrialAbandoned,
    TrialApproved,
    TrialHandedOut,
    TrialMeasured,
    TrialStarted,
    error_of,
)
from closedloop.controller.engine.gate import OutsideSpace, SafetyGate
from closedloop.controller.engine.halting import Halting
from closedloop.controller.engine.halts import Halt, HaltKind, paused, stopped
from closedloop.controller.engine.line import LineQueues
from closedloop.controller.engine.line_flow import LineFlow
from closedloop.controller.engine.operator import AbortRequested, Approver, OperatorAbsent, OperatorControl
from closedloop.controller.engine.planahead import PlanAhead
from closedloop.controller.engine.proposing import ProposalSource
from closedloop.controller.engine.results import in_units
from closedloop.controller.engine.state import (
    APPROVAL_ATTEMPTS,
    FAULT_STATUS,
    HANDED_OUT_BEFORE,
    PLAN_POLL_S,
    REFUSALS_BEFORE_STOP,
    SEED_STRIDE,
    EngineSettings,
    Offered,
    planner_seed,
    reraise_interrupt,
)
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, Measurement, Recoverable
from closedloop.planners.base import Planner
from closedloop.planners.space import Conditions
from closedloop.units import UnitError


class CampaignEngine(ProposalSource, LineFlow, Halting):
    """One campaign's closed loop over its stores, planner, gate, stations and clock (all given)."""

    def __init__(
        self,
        store: CampaignStore,
        settings: EngineSettings,
        *,
        planner: Callable[[], Planner],
        fallback_planner: Callable[[], Planner],
        stations: Sequence[Station],
        gate: SafetyGate,
        dispatcher: Dispatcher,
        log: EventLog,
        approver: Approver | None = None,
        control: OperatorControl | None = None,
        elapsed_origin: float = 0.0,
    ) -> None:
        self.store = store
        self.settings = settings
        # Made when the engine first proposes: recording a result by hand never loads a model.
        self._make_planner = planner
        self._make_fallback = fallback_planner
        self.stations = list(stations)
        self.gate = gate
        self.dispatcher = dispatcher
        self.clock = dispatcher.clock
        self.log = log
        self.approver = approver
        self.control = control
        self._held_by: str | None = None
        self.elapsed_origin = elapsed_origin
        self.ready: deque[int] = deque()  # approved trials waiting for a free station
        self.busy: dict[str, int] = {}  # station name -> trial id
        self._busy_since: dict[str, float] = {}  # station name -> when its trial started (engine clock)
        self.halt: Halt | None = None  # set when a fault policy pauses or stops the campaign
        self._refusals = 0  # proposals in a row turned down by the gate or the operator
        # Trials abandoned by an envelope refusal after passing the gate (at dispatch or in the driver), with
        # no result in between: a recipe the instrument will never accept, so a person must look at it.
        self._refused_in_a_row = 0
        # Trials in a row that used up their fault retries (on_fault: continue): a dead instrument.
        self._exhausted_in_a_row = 0
        self._aborting = False  # the operator stopped the trials in flight (Ctrl-C, SIGTERM)
        self._reoffered: dict[int, str] = {}  # trials offering an abandoned initial-design point again -> why
        self.line = LineQueues(settings.line)  # samples between the steps of a line (idle without one)
        # A live line plans on a worker thread (see planahead.py); virtual time and one instrument plan in line.
        self._planning: PlanAhead | None = PlanAhead() if settings.line and not self.clock.virtual else None

    # ---- the public operations ----------------------------------------------------------------------

    def propose(self, n: int, *, within_budget: bool = True, origin: str | None = None) -> list[int]:
        """Ask the planner for up to `n` trials (with `within_budget`, no more than the budget has room
        for), store each as proposed, and pass each through the safety gate. Returns the ids that passed;
        refusals are journaled and rejected. `origin` overrides how the trials are recorded ("manual" for
        `ask`); by default "initial" or "planner"."""
        return self._propose(n, within_budget=within_budget, origin=origin)[1]

    def approve(self, trial_id: int) -> bool:
        """The operator's approval where the protocol asks for it, then queue the trial for a station.
        False when the operator skipped it."""
        conditions = self.store.trial(trial_id).conditions
        if self._needs_approval(conditions) and self._ask_operator(trial_id, conditions) is None:
            return False
        self.log.emit(TrialApproved(trial_id))
        self.ready.append(trial_id)
        self._refusals = 0
        return True

    def hand_out(self, trial_id: int) -> None:
        """`ask`: the trial is run by a person, who reports it with `tell` (`ingest`)."""
        self.log.emit(TrialHandedOut(trial_id))

    def hand_out_next(self, n: int, *, new: bool = False) -> list[Offered]:
        """`ask`: `n` trials for a person to run, each handed out (journaled). Unless `new`, the trials
        already waiting come first, oldest first: those handed out before with no result told (offered
        again as they are), then those stored but never run (a re-queued retry). The rest are new
        proposals, where abandoned initial-design points come back first (`_propose`), exactly as in
        `run`. Proposals the safety gate refuses are proposed again (three in a row end it)."""
        out = [] if new else self._waiting(n)
        for _ in range(REFUSALS_BEFORE_STOP):
            if len(out) >= n:
                break
            for trial_id in self.propose(n - len(out), within_budget=False, origin="manual"):
                self.hand_out(trial_id)
                out.append(Offered(trial_id, self._reoffered.get(trial_id)))
        return out

    def stop_rule(self) -> Halt | None:
        """The protocol's stop rule that fires now (budget, wall time, target, no improvement), or None."""
        return self._stop_rule()

    def ingest(self, trial_id: int, measurement: Measurement, *, station: Station | None = None) -> None:
        """A trial's result: stored with its data in one transaction; an instrument fault goes through
        the protocol's fault policy instead."""
        if measurement.status == FAULT_STATUS:
            self._fault(trial_id, station, measurement.detail or "the instrument reported a fault", None)
            return
        try:
            measurement = in_units(measurement, self.settings.result_units)
        except UnitError as exc:  # a driver reporting in a unit its description did not declare
            self._fault(trial_id, station, f"the instrument's result cannot be stored: {exc}", None)
            return
        self._refused_in_a_row = self._exhausted_in_a_row = 0
        self.log.emit(TrialMeasured(trial_id, measurement))

    def reconcile(self) -> list[int]:
        """After a crash: every trial left dispatched or running is recovered from its instrument if the
        driver can, else abandoned and queued again (journaled). Returns the trials queued again."""
        stations = {s.name: s for s in self.stations}
        requeued = []
        held = {t.id for t in self.handed_out()}
        for t in self.store.trials(states=["dispatched", "running"]):
            if t.id in held:
                continue  # a person holds it, not the controller that stopped: its result comes with `tell`
            if self.line.active and self._back_in_line(t.id):
                continue
            station = stations.get(t.instrument or "")
            recovered: Measurement | None = None
            if station is not None and isinstance(station.driver, Recoverable):
                try:
                    recovered = station.driver.recover(t.id, InstrumentContext(clock=self.clock, trial_id=t.id))
                except BaseException as exc:  # noqa: BLE001 - a driver bug: the trial is abandoned and re-run
                    reraise_interrupt(exc)
                    self.log.emit(DriverFailed(station.name, f"recover trial {t.id}", ErrorInfo.of(exc, with_traceback=True)))
            if recovered is not None:
                self.log.emit(TrialMeasured(t.id, recovered, recovered=True))
                continue
            if station is not None:
                # The instrument was left mid-trial (hot, gas on, shutters open) by a controller that died:
                # nothing else is sent to it before its safe state, journaled like any other.
                self._make_safe(station, f"the controller stopped during trial {t.id}; its state is unknown",
                                journal=True)
            with self.store.batch():  # abandoned and re-queued together: a kill between them would lose the trial
                self.log.emit(TrialAbandoned(t.id, Abandonment.INTERRUPTED,
                                             "the controller stopped before a result was stored"))
                requeued.append(self._retry(t.id, "re-queued after interruption"))
        return requeued

    def run(self, *, resumed: bool = False) -> Halt:
        """Run until a stop rule fires or the campaign pauses; returns why."""
        raised = self.settings.approval if self.settings.approval_raised else None
        self.log.emit(CampaignRunning(resumed=resumed, approval_raised_to=raised))
        try:
            try:
                # Inside the handlers: re-queued trials may be put to the operator, who may abort or walk away.
                self._requeue_undispatched()
                self._queue_handed_out()
                while True:
                    self._heed_operator()
                    halt = self.halt or self._stop_rule()
                    # Once the campaign is ending (or an operator paused it), no new sample starts, but
                    # those in the line finish.
                    self._fill_stations(new_samples=halt is None and self._held_by is None)
                    if halt is None and self._planning is not None and self._planning.busy:
                        # Wait for an instrument or the planner, whichever is first (in slices: Ctrl-C).
                        if self.dispatcher.in_flight == 0:
                            self._take_plan(timeout=PLAN_POLL_S)
                        else:
                            with contextlib.suppress(queue.Empty):
                                self._complete(self.dispatcher.next_completion(timeout=PLAN_POLL_S))
                        continue
                    if self.dispatcher.in_flight == 0:
                        halt = halt or self.halt or self._stop_rule()
                        if halt is None and self._held_by is not None:
                            self._wait_for_operator()
                            continue
                        halt = halt or self._why_idle()
                        if halt is not None:
                            return self._finish(halt)
                        continue
                    self._complete_next()
            except KeyboardInterrupt:
                return self._pause(paused(HaltKind.OPERATOR, "operator interrupt (Ctrl-C)"), abort=True)
            except AbortRequested as exc:
                return self._pause(paused(HaltKind.OPERATOR, f"aborted by {exc.by}"), abort=True)
            except OperatorAbsent as exc:
                return self._pause(paused(HaltKind.OPERATOR_ABSENT, f"operator absent: {exc}"), abort=False)
        except BaseException:
            # The campaign cannot go on (the campaign file cannot be written: a full disk; a bug): no
            # instrument is left at its setpoints because of it. Nothing is journaled, the store may be the
            # very thing that failed; the caller reports the failure.
            self._leave_everything_safe()
            raise

    def elapsed(self) -> float:
        # Virtual clocks count from the campaign's start (origin 0); the wall clock from its creation time.
        # A scaled wall clock charges only the instrument's waits at its scale (see clock.py).
        return self.clock.elapsed_since(self.elapsed_origin)

    # ---- proposing ----------------------------------------------------------------------------------

    def _passes_gate(self, trial_id: int, conditions: Conditions) -> bool:
        try:
            self.gate.check(conditions)
        except (OutsideSpace, EnvelopeViolation) as exc:
            self._refusals += 1
            self.log.emit(ProposalRefused(trial_id, conditions, ErrorInfo.of(exc)))
            return False
        return True

    def _needs_approval(self, conditions: Conditions) -> bool:
        mode = self.settings.approval
        if mode == "every":
            return True
        if mode == "outside_region":
            for name, (lo, hi) in self.settings.trusted_region.items():
                v = conditions.get(name)
                if isinstance(v, int | float) and not lo <= v <= hi:
                    return True
        return False

    def _ask_operator(self, trial_id: int, conditions: Conditions) -> Conditions | None:
        if self.approver is None:
            raise OperatorAbsent("the protocol asks for approval but no operator is attached (use --approve)")
        error: str | None = None
        for _ in range(APPROVAL_ATTEMPTS):
            self.log.emit(ApprovalAwaited(trial_id, conditions, self.approver.where, error))
            decision = self.approver.decide(trial_id, conditions, error)
            by = decision.by
            if decision.action == "skip":
                self.log.emit(OperatorDecided(trial_id, "skip", conditions, note=decision.note, by=by))
                return None
            if decision.action == "accept":
                self.log.emit(OperatorDecided(trial_id, "accept", conditions, note=decision.note, by=by))
                return conditions
            edited = {**conditions, **(decision.conditions or {})}
            try:
                self.gate.check(edited)
            except (OutsideSpace, EnvelopeViolation) as exc:
                error = str(exc)
                self.log.emit(OperatorDecided(trial_id, "edit", conditions, edited, decision.note, refusal=error, by=by))
                continue
            self.log.emit(OperatorDecided(trial_id, "edit", conditions, edited, decision.note, by=by))
            return edited
        self.log.emit(OperatorDecided(trial_id, "give_up", conditions))
        return None

    # ---- running trials -----------------------------------------------------------------------------

    def _fill_stations(self, *, new_samples: bool = True) -> None:
        # Later steps first: a sample waiting between steps goes on before the planner is asked for a new one.
        for station in sorted(self.stations, key=lambda s: -s.step):
            if station.name in self.busy:
                continue
            if station.step > 0 or self.line.next_is_waiting(0):
                self._next_step(station)
                continue
            if not new_samples or not self._room_for_a_new_sample():
                continue
            self._heed_operator()  # a pause clicked while the last proposal was decided stops this one
            if self._held_by is not None:
                continue
            if self._planning is not None:
                self._start_sample_live(station)
                continue
            # Proposals the gate or the operator turn down do not end the campaign: ask again.
            while not self.ready and self._refusals < REFUSALS_BEFORE_STOP:
                made, passed = self._propose(self.settings.batch_size)
                if made == 0:
                    return  # nothing left to propose (or no room in the budget)
                for trial_id in passed:
                    self.approve(trial_id)
            self._heed_operator()
            if not self.ready or self._held_by is not None:
                return  # approved trials wait in `ready` while the campaign is paused
            self._dispatch(self.ready.popleft(), station)

    def _dispatch(self, trial_id: int, station: Station) -> None:
        trial = self.store.trial(trial_id)
        conditions = trial.conditions
        step = self.settings.line[station.step] if self.line.active else None
        try:
            sent = self.gate.check(conditions, station.last_setpoints or None)
        except (OutsideSpace, EnvelopeViolation) as exc:
            self.line.drop(trial_id)
            self.log.emit(TrialAbandoned(trial_id, Abandonment.GATE_AT_DISPATCH, str(exc), ErrorInfo.of(exc)))
            self._refused_after_gate(trial_id, f"safety gate at dispatch: {exc}")
            return
        if step is not None:  # each step's instrument is sent its own parameters only
            sent = {name: value for name, value in sent.items() if name in step.parameters}
        with self.store.batch():
            if trial.state != "running":  # a sample's first step (not one run again after a crash)
                self.log.emit(TrialStarted(trial_id, station.name, conditions))
            if step is not None:
                self.log.emit(StepEvent(trial_id, step.name, step.index, station.name, "started"))
        self.busy[station.name] = trial_id
        self._busy_since[station.name] = self.clock.now()
        station.last_setpoints = dict(sent)
        self.dispatcher.submit(Job(trial_id, station, sent))

    def _complete(self, done: Completion) -> None:
        trial_id, station = done.job.trial_id, done.job.station
        self.busy.pop(station.name, None)
        if isinstance(done.error, OperatorAbsent):
            # Nobody confirmed a manual step: the trial did not run. Put it safe, queue it again, pause.
            self._operator_abort(trial_id, f"operator absent: {done.error}")
            raise done.error
        m = done.measurement
        if done.error is not None or m is None or m.status == FAULT_STATUS:
            if done.error is not None:
                info = error_of(done.error)  # a bug in the driver is named by its type: "'x'" says nothing
                detail = info.message if info.traceback is None else f"{info.type}: {info.message}"
                detail = detail or info.type
            else:
                detail = m.detail if m is not None else "the driver returned no measurement"
            if self.line.active:
                step = self.settings.line[station.step]
                self.line.drop(trial_id)
                self.log.emit(StepEvent(trial_id, step.name, step.index, station.name, "fault", detail, {"reason": detail}))
            if self._aborting:
                self._operator_abort(trial_id, detail)
            else:
                self._fault(trial_id, station, detail, done.error)
            return
        m.duration_s = m.duration_s or (done.finished_at - done.started_at)
        if self.line.active:
            self._step_finished(trial_id, station, m, done.finished_at)
            return
        self.ingest(trial_id, m, station=station)

    def _fault(self, trial_id: int, station: Station | None, detail: str, error: BaseException | None) -> None:
        refused = isinstance(error, EnvelopeViolation)
        cause = Abandonment.DRIVER_REFUSED if refused else Abandonment.FAULT
        info = None if error is None else error_of(error)
        # Whatever the fault left half-done (a heater ramping, a shutter open) is made safe before
        # the retry or the pause.
        if station is not None and not refused:
            self._make_safe(station, f"fault on trial {trial_id}", journal=False)
            station.last_setpoints = {}
        attempt = self.store.trial(trial_id).attempt
        retry = not refused and attempt <= self.settings.fault_retries
        with self.store.batch():  # abandoned and re-queued together: a kill between them would lose the trial
            self.log.emit(TrialAbandoned(trial_id, cause, detail, info, None if station is None else station.name))
            if retry:
                self._retry(trial_id, f"instrument fault, attempt {attempt + 1}")
        if refused:
            self._refused_after_gate(trial_id, f"refused by the driver: {detail}")
            return
        if retry:
            return
        policy = self.settings.on_fault
        reason = f"instrument fault on trial {trial_id}: {detail}"
        if policy == "pause":
            self.halt = paused(HaltKind.INSTRUMENT_FAULT, reason)
        elif policy == "stop":
            self.halt = stopped(HaltKind.INSTRUMENT_FAULT, reason)
        else:
            self._exhausted_in_a_row += 1
            if self._exhausted_in_a_row >= REFUSALS_BEFORE_STOP:
                self.halt = paused(HaltKind.NO_RESULTS, (
                    f"{self._exhausted_in_a_row} trials in a row used up their fault retries without a result "
                    f"(last: trial {trial_id}, {detail}); check the instrument"))

    def _refused_after_gate(self, trial_id: int, detail: str) -> None:
        self._refused_in_a_row += 1
        if self._refused_in_a_row >= REFUSALS_BEFORE_STOP:
            self.halt = paused(HaltKind.ENVELOPE_REFUSALS, (
                f"{self._refused_in_a_row} trials in a row refused by the instrument's envelope "
                f"(last: trial {trial_id}, {detail}); fix the protocol's ranges or instrument options"))

    def _operator_abort(self, trial_id: int, detail: str) -> None:
        """A trial the operator stopped: abandoned (never a result), and queued again with the same
        conditions. The abort says nothing about the conditions or the instrument, so it does not use up
        `instrument_fault_retries`; the new trial waits as proposed, to pass the safety gate and, where the
        protocol asks for it, the operator again when the campaign resumes."""
        self.line.drop(trial_id)
        with self.store.batch():
            self.log.emit(TrialAbandoned(trial_id, Abandonment.OPERATOR_ABORT, detail))
            self._retry(trial_id, f"re-queued after the operator aborted trial {trial_id}", approve=False)

    def _retry(self, trial_id: int, why: str, *, approve: bool = True) -> int:
        old = self.store.trial(trial_id)
        new_id = self.log.add_trial(old.conditions, proposer=old.proposer, origin="retry", retry_of=trial_id)
        if approve:
            self.log.emit(TrialApproved(new_id, why))
            self.ready.appendleft(new_id)
        return new_id

    def _requeue_undispatched(self) -> None:
        """Trials stored as proposed/approved but never sent (a crash or pause before dispatch)."""
        queued = set(self.ready)
        for t in self.store.trials(states=["proposed", "approved"]):
            if t.id in queued:
                continue
            if t.state == "approved":
                self.ready.append(t.id)
            elif self._passes_gate(t.id, t.conditions):
                self.approve(t.id)

    def _queue_handed_out(self) -> None:
        """Where a person is the instrument (`driver: manual`), the trials handed out with `ask` and never
        told are asked at the prompt first, oldest first: the person at the terminal may have measured
        them already. (With a machine, they wait for `tell`.)"""
        if not any(station.driver.describe().by_hand for station in self.stations):
            return
        queued = set(self.ready)
        for t in reversed(self.handed_out()):
            if t.id not in queued:
                self.ready.appendleft(t.id)

    # ---- stopping -----------------------------------------------------------------------------------


__all__ = ["FAULT_STATUS", "HANDED_OUT_BEFORE", "SEED_STRIDE", "CampaignEngine", "EngineSettings", "Offered", "planner_seed"]
