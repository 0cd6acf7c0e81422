"""The campaign engine: ask the planner, gate, store, approve, dispatch, ingest, decide to stop.

The engine is the only writer of trial states. Every step is committed to the store before the next
one begins, so a process killed at any moment leaves a file that `resume` can reconcile.
"""

from __future__ import annotations

import functools
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pandas as pd

from closedloop.controller.engine import history
from closedloop.controller.engine.dispatch import Completion, Dispatcher, Job, Station, describe_error
from closedloop.controller.engine.gate import OutsideSpace, SafetyGate
from closedloop.drivers.base import EnvelopeViolation
from closedloop.planners.base import Planner
from closedloop.planners.space import Conditions, Problem

FAULT_STATUS = "instrument_fault"


@dataclass
class EngineSettings:
    """The parts of a protocol the engine acts on (built by `controller.campaign`)."""

    problem: Problem
    seed: int
    max_trials: int
    batch_size: int = 1
    max_wall_time_s: float | None = None
    no_improvement: int | None = None
    stop_on_target: bool = True
    approval: Literal["none", "every", "outside_region"] = "none"
    trusted_region: dict[str, tuple[float, float]] = field(default_factory=dict)
    fault_retries: int = 0
    on_fault: Literal["pause", "continue", "stop"] = "pause"
    candidates: pd.DataFrame | None = None


@dataclass
class Decision:
    action: Literal["accept", "edit", "skip"]
    conditions: Conditions | None = None
    note: str = ""


class Approver(Protocol):
    """The operator: sees each proposal that needs approval and accepts, edits or skips it.
    `problem` is passed so an edit can be re-checked; `error` says why a previous edit was refused."""

    def decide(self, trial_id: int, conditions: Conditions, error: str | None = None) -> Decision: ...


ProgressHook = Callable[[str, dict[str, Any]], None]


class Paused(Exception):
    """The campaign paused (operator Ctrl-C or a fault policy); `resume` continues it."""


class OperatorAbsent(Exception):
    """The operator's input closed while a decision was needed: pause rather than guess."""


class CampaignEngine:
    def __init__(
        self,
        store: Any,
        settings: EngineSettings,
        planner: Planner,
        fallback_planner: Planner,
        stations: list[Station],
        gate: SafetyGate,
        dispatcher: Dispatcher,
        approver: Approver | None = None,
        progress: ProgressHook | None = None,
        elapsed_origin: float = 0.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.planner = planner
        self.fallback_planner = fallback_planner
        self.stations = stations
        self.gate = gate
        self.dispatcher = dispatcher
        self.approver = approver
        self.progress = progress or (lambda kind, info: None)
        self.clock = dispatcher.clock
        self.elapsed_origin = elapsed_origin
        self.ready: deque[int] = deque()  # approved trials waiting for a free station
        self.busy: dict[str, int] = {}  # station name -> trial id
        self.halt: str | None = None  # set when a fault policy pauses or stops the campaign
        self._refusals = 0
        # Trials abandoned by an envelope refusal after passing the gate (at dispatch or in the driver), with
        # no result in between: a recipe the instrument will never accept, so a person must look at it.
        self._refused_in_a_row = 0
        self._aborting = False  # the operator stopped the trials in flight (Ctrl-C, SIGTERM)

    # ---- the loop -------------------------------------------------------------------------------

    def run(self) -> str:
        """Run until a stop rule fires (returns its reason) or the campaign pauses (raises Paused)."""
        self.store.set_status("running", virtual_t=self._t())
        self._requeue_undispatched()
        try:
            while True:
                reason = self.halt or self._stop_reason()
                if reason is None:
                    self._fill_stations()
                if self.dispatcher.in_flight == 0:
                    reason = reason or self.halt or self._stop_reason() or self._why_idle()
                    if reason is not None:
                        return self._finish(reason)
                    continue
                self._ingest(self.dispatcher.next_completion())
        except KeyboardInterrupt:
            self._pause("operator interrupt (Ctrl-C)", abort=True)
            raise Paused("paused by the operator") from None
        except OperatorAbsent as exc:
            self._pause(f"operator absent: {exc}", abort=False)
            raise Paused(f"paused: operator absent: {exc}") from None

    def _why_idle(self) -> str | None:
        if self.ready:
            return None
        if self._refusals >= 3:
            return "stopped: 3 proposals in a row refused by the safety gate"
        return "stopped: the planner has nothing left to propose (candidate pool exhausted?)"

    def _fill_stations(self) -> None:
        for station in self.stations:
            if station.name in self.busy:
                continue
            # Proposals the gate or the operator turn down do not end the campaign: ask again.
            while not self.ready and self._refusals < 3:
                if self._propose_batch() == 0:
                    return
            if not self.ready:
                return
            self._dispatch(self.ready.popleft(), station)

    # ---- proposing ------------------------------------------------------------------------------

    def _propose_batch(self) -> int:
        """Ask the planner for the next batch; returns how many proposals it made (0: nothing left)."""
        trials = self.store.trials()
        in_flight = len(history.pending(trials))
        room = self.settings.max_trials - history.n_results(trials) - in_flight
        n = min(self.settings.batch_size, room)
        if n <= 0:
            return 0
        obs = history.observations(self.settings.problem, trials)
        seed = self.settings.seed * 1_000_003 + len(trials)
        try:
            proposals = self.planner.propose(
                self.settings.problem, obs, history.pending(trials), n, seed, self.settings.candidates
            )
        except Exception as exc:  # a planner bug must not end an overnight campaign; it is journaled
            self.store.record_event(
                "planner_error", detail=f"{type(exc).__name__}: {exc}", data={"traceback": traceback.format_exc()}
            )
            proposals = self.fallback_planner.propose(
                self.settings.problem, obs, history.pending(trials), n, seed, self.settings.candidates
            )
            for p in proposals:
                p.provenance["fallback"] = f"planner raised {type(exc).__name__}: {exc}; used {self.fallback_planner.name}"
        for proposal in proposals:
            provenance = dict(proposal.provenance)
            origin = "initial" if provenance.get("design") == "initial" else "planner"
            trial_id = self.store.add_trial(
                proposal.conditions,
                proposer=str(provenance.get("planner", self.planner.name)),
                origin=origin,
                provenance=provenance,
                virtual_t=self._t(),
            )
            self.progress("proposed", {"trial": trial_id, "conditions": proposal.conditions})
            self._gate_and_approve(trial_id, proposal.conditions)
        return len(proposals)

    def _gate_and_approve(self, trial_id: int, conditions: Conditions) -> bool:
        """Safety gate, then the operator if the protocol asks; queue the trial when both pass."""
        try:
            self.gate.check(conditions)
        except (OutsideSpace, EnvelopeViolation) as exc:
            self._refuse(trial_id, conditions, exc)
            return False
        if self._needs_approval(conditions):
            conditions = self._ask_operator(trial_id, conditions)
            if conditions is None:
                return False
        self.store.transition(trial_id, "approved", virtual_t=self._t())
        self.ready.append(trial_id)
        self._refusals = 0
        return True

    def _refuse(self, trial_id: int, conditions: Conditions, exc: Exception) -> None:
        self._refusals += 1
        data = {"conditions": conditions, **describe_error(exc)}
        self.store.record_event("safety_refusal", trial_id=trial_id, detail=str(exc), data=data, virtual_t=self._t())
        self.store.transition(trial_id, "rejected", detail=f"safety gate: {exc}", virtual_t=self._t())
        self.progress("refused", {"trial": trial_id, "reason": str(exc)})

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
            raise RuntimeError("the protocol asks for approval but no operator is attached (use --approve)")
        error: str | None = None
        for _ in range(10):
            decision = self.approver.decide(trial_id, conditions, error)
            data = {"action": decision.action, "proposed": conditions, "note": decision.note}
            if decision.action == "skip":
                self.store.record_event("approval", trial_id=trial_id, detail="skipped by operator", data=data)
                self.store.transition(trial_id, "rejected", detail="skipped by operator", virtual_t=self._t())
                return None
            if decision.action == "accept":
                self.store.record_event("approval", trial_id=trial_id, detail="accepted by operator", data=data)
                return conditions
            edited = {**conditions, **(decision.conditions or {})}
            try:
                self.gate.check(edited)
            except (OutsideSpace, EnvelopeViolation) as exc:
                error = str(exc)
                self.store.record_event(
                    "approval", trial_id=trial_id, detail=f"edit refused: {exc}", data={**data, "edited": edited}
                )
                continue
            self.store.update_conditions(trial_id, edited, detail="edited by operator", virtual_t=self._t())
            self.store.record_event(
                "approval", trial_id=trial_id, detail="edited by operator", data={**data, "edited": edited}
            )
            return edited
        self.store.transition(trial_id, "rejected", detail="no acceptable edit after 10 tries", virtual_t=self._t())
        return None

    # ---- dispatching and ingesting ---------------------------------------------------------------

    def _dispatch(self, trial_id: int, station: Station) -> None:
        conditions = self.store.trial(trial_id).conditions
        try:
            sent = self.gate.check(conditions, station.last_setpoints or None)
        except (OutsideSpace, EnvelopeViolation) as exc:
            self.store.record_event("safety_refusal", trial_id=trial_id, detail=str(exc), virtual_t=self._t())
            self.store.transition(trial_id, "abandoned", detail=f"safety gate at dispatch: {exc}", virtual_t=self._t())
            self._refused_after_gate(trial_id, f"safety gate at dispatch: {exc}")
            return
        self.store.transition(trial_id, "dispatched", instrument=station.name, virtual_t=self._t())
        self.store.transition(trial_id, "running", instrument=station.name, virtual_t=self._t())
        self.busy[station.name] = trial_id
        self.progress("running", {"trial": trial_id, "station": station.name, "conditions": conditions})
        station.last_setpoints = dict(sent)
        self.dispatcher.submit(Job(trial_id, station, sent))

    def _ingest(self, done: Completion) -> None:
        trial_id = done.job.trial_id
        self.busy.pop(done.job.station.name, None)
        m = done.measurement
        if done.error is not None or m is None or m.status == FAULT_STATUS:
            detail = str(done.error) if done.error is not None else (m.detail if m else "no measurement")
            if self._aborting:
                self._operator_abort(trial_id, detail)
            else:
                self._fault(trial_id, done, detail)
            return
        self._refused_in_a_row = 0
        m.duration_s = m.duration_s or (done.finished_at - done.started_at)
        self.store.record_measurement(trial_id, m, virtual_t=self._t())
        self.progress("measured", {"trial": trial_id, "values": m.values, "status": m.status})

    def _fault(self, trial_id: int, done: Completion, detail: str) -> None:
        is_refusal = isinstance(done.error, EnvelopeViolation)
        kind = "safety_refusal" if is_refusal else "fault"
        self.store.record_event(kind, trial_id=trial_id, detail=detail, virtual_t=self._t())
        self.store.transition(trial_id, "abandoned", detail=f"{kind}: {detail}", virtual_t=self._t())
        self.progress("fault", {"trial": trial_id, "detail": detail})
        if is_refusal:
            self._refused_after_gate(trial_id, f"refused by the driver: {detail}")
            return
        # Whatever the fault left half-done (a heater ramping, a shutter open) is made safe before
        # the retry or the pause.
        done.job.station.driver.safe_state()
        done.job.station.last_setpoints = {}
        trial = self.store.trial(trial_id)
        if trial.attempt <= self.settings.fault_retries:
            self._retry(trial_id, f"instrument fault, attempt {trial.attempt + 1}")
            return
        policy = self.settings.on_fault
        if policy != "continue":
            self.halt = f"{'paused' if policy == 'pause' else 'stopped'}: instrument fault on trial {trial_id}: {detail}"

    def _refused_after_gate(self, trial_id: int, detail: str) -> None:
        self._refused_in_a_row += 1
        if self._refused_in_a_row >= 3:
            self.halt = (f"paused: {self._refused_in_a_row} trials in a row refused by the instrument's envelope "
                         f"(last: trial {trial_id}, {detail}); fix the protocol's ranges or instrument options")

    def _operator_abort(self, trial_id: int, detail: str) -> None:
        """A trial the operator stopped: abandoned (never a result), and queued again with the same
        conditions. The abort says nothing about the conditions or the instrument, so it does not use up
        `instrument_fault_retries`; the new trial waits as proposed, to pass the safety gate and, where the
        protocol asks for it, the operator again when the campaign resumes."""
        self.store.record_event("operator_abort", trial_id=trial_id, detail=detail, virtual_t=self._t())
        self.store.transition(trial_id, "abandoned", detail=f"operator abort: {detail}", virtual_t=self._t())
        new_id = self._retry(trial_id, f"re-queued after the operator aborted trial {trial_id}", approve=False)
        self.progress("fault", {"trial": trial_id, "detail": f"operator abort; re-queued as trial {new_id}"})

    def _retry(self, trial_id: int, why: str, *, approve: bool = True) -> int:
        old = self.store.trial(trial_id)
        new_id = self.store.add_trial(
            old.conditions,
            proposer=old.proposer,
            origin="retry",
            retry_of=trial_id,
            provenance={"retry_of": trial_id, "reason": why},
            virtual_t=self._t(),
        )
        if approve:
            self.store.transition(new_id, "approved", detail=why, virtual_t=self._t())
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
            else:
                self._gate_and_approve(t.id, t.conditions)

    # ---- stopping --------------------------------------------------------------------------------

    def _t(self) -> float | None:
        return self.clock.now() if getattr(self.clock, "virtual", False) else None

    def elapsed(self) -> float:
        # Virtual clocks count from the campaign's start (origin 0); the wall clock from its creation time.
        return self.clock.now() - self.elapsed_origin

    def _stop_reason(self) -> str | None:
        s = self.settings
        trials = self.store.trials()
        return history.stop_reason(
            s.problem,
            history.observations(s.problem, trials),
            results=history.n_results(trials),
            max_trials=s.max_trials,
            elapsed_s=self.elapsed(),
            max_wall_time_s=s.max_wall_time_s,
            no_improvement=s.no_improvement,
            stop_on_target=s.stop_on_target,
        )

    def _finish(self, reason: str) -> str:
        self._safe_state(reason)
        if reason.startswith("paused"):
            self.store.set_status("paused", stop_reason=reason, virtual_t=self._t())
            raise Paused(reason)
        self.store.set_status("stopped", stop_reason=reason, virtual_t=self._t())
        self.progress("stopped", {"reason": reason})
        return reason

    def _pause(self, why: str, *, abort: bool) -> None:
        """Pause, then put every instrument safe. With `abort` (Ctrl-C, SIGTERM) the trials running on live
        instruments are stopped first (virtual ones have already finished) and each is recorded as an
        operator abort and queued again; without it (nobody at the terminal) they run to their end.
        Another Ctrl-C while waiting gives up on them at once."""
        if abort:
            self._aborting = True
            self.dispatcher.abort_running()
        try:
            while self.dispatcher.in_flight:
                self._ingest(self.dispatcher.next_completion())
        except KeyboardInterrupt:
            self._aborting = True
            for job in self.dispatcher.abandon_all():
                self._operator_abort(job.trial_id, "given up by the operator (second Ctrl-C) before the trial stopped")
        self._safe_state(why)
        self.store.set_status("paused", stop_reason=why, virtual_t=self._t())
        self.progress("paused", {"reason": why})

    def _safe_state(self, why: str) -> None:
        """Every instrument safe at the campaign's end or pause. Its commands belong to the campaign, not
        to the last trial that happened to use the link, so they are journaled without a trial."""
        for station in self.stations:
            set_journal = getattr(getattr(station.driver, "transport", None), "set_journal", None)
            if callable(set_journal):
                set_journal(functools.partial(self._campaign_command, station.name))
            station.driver.safe_state()
            self.store.record_event("safe_state", detail=f"{station.name}: {why}", virtual_t=self._t())

    def _campaign_command(self, station: str, direction: str, text: str) -> None:
        self.store.record_command(None, station, direction, text, virtual_t=self._t())
