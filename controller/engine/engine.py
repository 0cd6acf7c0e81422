"""The campaign engine: propose, gate, approve, dispatch, ingest, reconcile, decide to stop.

Every entry point drives these operations: `run` is a loop over them, `ask`/`tell` call `propose` and
`ingest` one at a time, `resume` starts with `reconcile`. Each step is an event written to the campaign
file (`controller.engine.events`) before the next one begins, so a process killed at any moment leaves
a file that `reconcile` can put right.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from closedloop.controller.engine import history
from closedloop.controller.engine.dispatch import Completion, Dispatcher, Job, Station
from closedloop.controller.engine.events import (
    HANDED_OUT_TO,
    Abandonment,
    CampaignHalted,
    CampaignRunning,
    DriverFailed,
    ErrorInfo,
    EventLog,
    InitialPointOffered,
    OperatorDecided,
    PlannerFailed,
    ProposalRefused,
    SafeStateEntered,
    StepEvent,
    TrialAbandoned,
    TrialApproved,
    TrialHandedOut,
    TrialMeasured,
    TrialStarted,
    error_of,
)
from closedloop.controller.engine.gate import OutsideSpace, SafetyGate
from closedloop.controller.engine.halts import Halt, HaltKind, paused, stopped
from closedloop.controller.engine.line import LineQueues, predicted_wait
from closedloop.controller.engine.operator import Approver, OperatorAbsent
from closedloop.controller.engine.planahead import PlanAhead, PlanRequest
from closedloop.controller.engine.reoffer import abandoned_initial_points
from closedloop.controller.engine.results import in_units
from closedloop.controller.protocol.workflow import Step
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.reads import TrialRecord
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, Journaled, Measurement, Recoverable
from closedloop.planners.base import Planner
from closedloop.planners.provenance import Proposal, Provenance
from closedloop.planners.space import Conditions, Problem
from closedloop.units import UnitError

if TYPE_CHECKING:
    import pandas as pd  # for annotations only: importing it costs a third of a second

FAULT_STATUS = "instrument_fault"
SEED_STRIDE = 1_000_003  # a planner call's seed: campaign seed * SEED_STRIDE + trials stored so far
REFUSALS_BEFORE_STOP = 3  # proposals in a row the gate or operator turned down before the campaign gives up
APPROVAL_ATTEMPTS = 10  # edits the operator may try on one proposal
# After Ctrl-C/SIGTERM, how long trials may take to stop before they are given up and every instrument is
# made safe anyway: a service manager sends SIGKILL some seconds after SIGTERM (systemd: 90 s), and a
# driver stuck in a call that ignores the abort must not keep the instrument hot until then.
ABORT_GRACE_S = 10.0
PLAN_POLL_S = 0.05  # live line: how often the engine looks whether the planner has finished, between completions
HANDED_OUT_BEFORE = "handed out before, no result told yet"  # why `ask` offers a pending trial again

log = logging.getLogger(__name__)


def planner_seed(campaign_seed: int, trials_so_far: int) -> int:
    """The seed of the planner call made when the campaign holds `trials_so_far` trials. An audit
    (`controller.offline.audit`) recomputes it to call the planner again."""
    return campaign_seed * SEED_STRIDE + trials_so_far


@dataclass(frozen=True)
class Offered:
    """A trial `ask` hands to a person (`CampaignEngine.hand_out_next`); `again` says why it is not a new
    proposal: it was handed out before and waits for its result, it waited to be run, or it is an
    abandoned initial-design point offered again. None for a new proposal."""

    trial_id: int
    again: str | None = None


@dataclass(frozen=True)
class EngineSettings:
    """The parts of a protocol the engine acts on (`controller.engine.build.settings_from` makes them)."""

    problem: Problem
    seed: int
    max_trials: int
    batch_size: int = 1
    n_initial: int = 0  # the planner's initial design: points while fewer results than this exist
    max_wall_time_s: float | None = None
    no_improvement: int | None = None
    stop_on_target: bool = True
    approval: Literal["none", "every", "outside_region"] = "none"
    approval_raised: bool = False  # `approval` is "every" because this run asked for it, not the protocol
    trusted_region: dict[str, tuple[float, float]] = field(default_factory=dict)
    fault_retries: int = 0
    on_fault: Literal["pause", "continue", "stop"] = "pause"
    candidates: pd.DataFrame | None = None
    line: tuple[Step, ...] = ()  # a workflow's steps; empty for a protocol of one instrument
    max_in_line: int | None = None  # samples in the line at once (None: as many as the schedule allows)
    # Each objective's unit as the protocol declares it: results are stored in it (a driver reporting in
    # another unit is converted at ingest), so targets, outcome constraints, the report and `tell` agree.
    result_units: dict[str, str] = field(default_factory=dict)


class CampaignEngine:
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
                    _reraise_interrupt(exc)
                    self.log.emit(DriverFailed(station.name, f"recover trial {t.id}", ErrorInfo.of(exc, with_traceback=True)))
            if recovered is not None:
                self.log.emit(TrialMeasured(t.id, recovered, recovered=True))
                continue
            with self.store.batch():  # abandoned and re-queued together: a kill between them would lose the trial
                self.log.emit(TrialAbandoned(t.id, Abandonment.INTERRUPTED,
                                             "the controller stopped before a result was stored"))
                requeued.append(self._retry(t.id, "re-queued after interruption"))
        return requeued

    def _back_in_line(self, trial_id: int) -> bool:
        """After a crash, a sample of a line goes on from the step it was in, with what its finished steps
        measured: waiting for the next step, or running an interrupted step again where the protocol says
        it can be repeated (journaled). False when it cannot go on (a step that cannot be repeated: the
        sample is lost, journaled; or no step had started): the caller abandons it."""
        events = [e for e in self.store.events(trial_id=trial_id, kinds=["step"]) if isinstance(e["data"], dict)]
        if not events:
            return False
        for e in events:
            if e["data"].get("phase") == "done":
                self.line.step_done(trial_id, Measurement(values=dict(e["data"].get("values") or {}),
                                                          units=dict(e["data"].get("units") or {}),
                                                          duration_s=float(e["data"].get("duration_s") or 0.0)))
        last = events[-1]
        index, phase = int(last["data"].get("index", 0)), last["data"].get("phase")
        now = self.clock.now()
        since = now if self.clock.virtual else min(now, float(last["t"]))
        if phase == "done" and not self.line.is_last(index):
            self.line.arrive(trial_id, index + 1, since)
            return True
        step = self.settings.line[index]
        if phase == "started" and self._recovered_step(trial_id, str(last["data"].get("station")), now):
            return True
        if phase in ("started", "repeat") and step.repeatable:
            self.log.emit(StepEvent(trial_id, step.name, index, None, "repeat",
                                    "the controller stopped during this step; it runs again"))
            self.line.arrive(trial_id, index, now, first=True)
            return True
        if phase in ("started", "repeat"):
            self.log.emit(StepEvent(trial_id, step.name, index, None, "lost",
                                    f"the controller stopped during {step.name}, which cannot be repeated (on_crash: lost)"))
        self.line.drop(trial_id)
        return False

    def _recovered_step(self, trial_id: int, station_name: str, now: float) -> bool:
        """The interrupted step's result read back from its instrument, where its driver can: then the
        sample goes on as if the step had just ended."""
        station = next((s for s in self.stations if s.name == station_name), None)
        if station is None or not isinstance(station.driver, Recoverable):
            return False
        try:
            recovered = station.driver.recover(trial_id, InstrumentContext(clock=self.clock, trial_id=trial_id))
        except BaseException as exc:  # noqa: BLE001 - a driver bug: the step is repeated or the sample lost
            _reraise_interrupt(exc)
            self.log.emit(DriverFailed(station.name, f"recover trial {trial_id}", ErrorInfo.of(exc, with_traceback=True)))
            return False
        if recovered is None:
            return False
        self._step_finished(trial_id, station, recovered, now)
        return True

    def run(self, *, resumed: bool = False) -> Halt:
        """Run until a stop rule fires or the campaign pauses; returns why."""
        raised = self.settings.approval if self.settings.approval_raised else None
        self.log.emit(CampaignRunning(resumed=resumed, approval_raised_to=raised))
        self._requeue_undispatched()
        self._queue_handed_out()
        try:
            try:
                while True:
                    halt = self.halt or self._stop_rule()
                    # Once the campaign is ending, no new sample starts, but those in the line finish.
                    self._fill_stations(new_samples=halt is None)
                    if halt is None and self._planning is not None and self._planning.busy:
                        # Wait for an instrument or the planner, whichever is first (in slices: Ctrl-C).
                        if self.dispatcher.in_flight == 0:
                            self._take_plan(timeout=PLAN_POLL_S)
                        else:
                            with contextlib.suppress(queue.Empty):
                                self._complete(self.dispatcher.next_completion(timeout=PLAN_POLL_S))
                        continue
                    if self.dispatcher.in_flight == 0:
                        halt = halt or self.halt or self._stop_rule() or self._why_idle()
                        if halt is not None:
                            return self._finish(halt)
                        continue
                    self._complete(self.dispatcher.next_completion())
            except KeyboardInterrupt:
                return self._pause(paused(HaltKind.OPERATOR, "operator interrupt (Ctrl-C)"), abort=True)
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

    @functools.cached_property
    def planner(self) -> Planner:
        return self._make_planner()

    @functools.cached_property
    def fallback_planner(self) -> Planner:
        return self._make_fallback()

    def _propose(self, n: int, *, within_budget: bool = True, origin: str | None = None) -> tuple[int, list[int]]:
        """(how many trials were proposed, the ids of those that passed the gate). Abandoned initial-design
        points come back before the planner is asked for more."""
        request, made, passed = self._plan_request(n, within_budget=within_budget, origin=origin)
        if request is None:
            return made, passed
        proposals = self._ask_planner(request.observations, request.pending, request.n, request.seed)
        return made + len(proposals), passed + self._store_proposals(proposals, origin)

    def _plan_request(
        self, n: int, *, within_budget: bool = True, origin: str | None = None
    ) -> tuple[PlanRequest | None, int, list[int]]:
        """What the planner is to be asked for, after abandoned initial-design points come back (stored
        here, with the ids of those that passed the gate): (None when nothing is left to ask, how many
        trials were made, the ids that passed)."""
        trials = self.store.trials()
        pending = history.pending(trials)
        if within_budget:
            n = min(n, self.settings.max_trials - history.n_results(trials) - len(pending))
        if n <= 0:
            return None, 0, []
        observations = history.observations(self.settings.problem, trials)
        again = self._offer_again(trials, observations, n, origin)
        passed = [trial_id for trial_id in again if self._passes_gate(trial_id, self.store.trial(trial_id).conditions)]
        if len(again) == n:
            return None, n, passed
        if again:  # the planner sees the points offered again as pending
            trials = self.store.trials()
            pending = history.pending(trials)
        seed = planner_seed(self.settings.seed, len(trials))
        return PlanRequest(observations, pending, n - len(again), seed, origin), len(again), passed

    def _store_proposals(self, proposals: Sequence[Proposal], origin: str | None) -> list[int]:
        """Each proposal stored as a trial and passed through the gate; the ids that passed."""
        passed = []
        for proposal in proposals:
            provenance = proposal.provenance
            trial_id = self.log.add_trial(
                proposal.conditions,
                proposer=provenance.planner or self.planner.name,
                origin=origin or ("initial" if provenance.initial else "planner"),
                provenance=provenance,
            )
            if self._passes_gate(trial_id, proposal.conditions):
                passed.append(trial_id)
        return passed

    def _offer_again(self, trials: list[TrialRecord], observations: list, n: int, origin: str | None) -> list[int]:
        """Up to `n` abandoned initial-design points stored as new trials (journaled), while the planner is
        still in its initial design (as it decides: fewer results than `n_initial`)."""
        if len(observations) >= self.settings.n_initial:
            return []
        refused = {e["trial_id"] for e in self.store.events(kinds=["safety_refusal"])}
        points = abandoned_initial_points(trials, is_initial=self._initial_design_trial, refused=refused)
        out = []
        for point in points[:n]:
            last, first = point.last, point.first
            why = f"initial-design point of trial {first.id}, abandoned ({last.detail or 'no result'})"
            provenance = Provenance(planner=first.proposer, design="initial", notes=(f"offered again: {why}",),
                                    extra={"offered_again_of": last.id})
            with self.store.batch():  # the trial and why it exists, together
                trial_id = self.log.add_trial(last.conditions, proposer=first.proposer,
                                              origin=origin or "initial", provenance=provenance)
                self.log.emit(InitialPointOffered(trial_id, last.id, f"offered again: {why}"))
            self._reoffered[trial_id] = why
            out.append(trial_id)
        return out

    def _initial_design_trial(self, trial: TrialRecord) -> bool:
        if trial.origin == "initial":
            return True
        record = self.store.proposal(trial.id)  # `ask` stores its trials as "manual": the proposal says
        return record is not None and record.provenance.initial

    def waiting(self) -> list[TrialRecord]:
        """Trials `ask` offers before new ones, oldest first: those handed out before with no result told,
        then those stored but never run (a retry queued after a fault or an operator abort)."""
        return self.handed_out() + self.store.trials(states=["proposed", "approved"])

    def handed_out(self) -> list[TrialRecord]:
        """Trials handed to a person with `ask` whose result has not been told, oldest first."""
        return [t for t in self.store.trials(states=["dispatched"]) if t.instrument == HANDED_OUT_TO]

    def _waiting(self, n: int) -> list[Offered]:
        out: list[Offered] = []
        for t in self.waiting():
            if len(out) >= n:
                break
            if t.state == "dispatched":
                out.append(Offered(t.id, HANDED_OUT_BEFORE))
            elif t.state == "approved" or self._passes_gate(t.id, t.conditions):
                self.hand_out(t.id)
                retry = f" of trial {t.retry_of}" if t.retry_of else ""
                out.append(Offered(t.id, f"stored earlier ({t.origin}{retry}) and never run"))
        return out

    def _ask_planner(self, observations: list, pending: list[Conditions], n: int, seed: int) -> list[Proposal]:
        request = PlanRequest(observations, pending, n, seed)
        try:
            return list(self._planner_call(request))
        except Exception as exc:  # noqa: BLE001 - a planner bug must not end an overnight campaign; it is journaled
            return self._fall_back(request, exc)

    def _planner_call(self, request: PlanRequest) -> Sequence[Proposal]:
        """The planner's proposals for `request`: a pure computation (safe on the planning thread)."""
        problem, candidates = self.settings.problem, self.settings.candidates
        return self.planner.propose(problem, request.observations, request.pending, request.n, request.seed, candidates)

    def _fall_back(self, request: PlanRequest, exc: Exception) -> list[Proposal]:
        problem, candidates = self.settings.problem, self.settings.candidates
        why = f"planner raised {type(exc).__name__}: {exc}; used {self.fallback_planner.name}"
        self.log.emit(PlannerFailed(ErrorInfo.of(exc, with_traceback=True), self.fallback_planner.name))
        proposals = self.fallback_planner.propose(problem, request.observations, request.pending, request.n,
                                                  request.seed, candidates)
        return [Proposal(p.conditions, p.provenance.with_fallback(why)) for p in proposals]

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
            decision = self.approver.decide(trial_id, conditions, error)
            if decision.action == "skip":
                self.log.emit(OperatorDecided(trial_id, "skip", conditions, note=decision.note))
                return None
            if decision.action == "accept":
                self.log.emit(OperatorDecided(trial_id, "accept", conditions, note=decision.note))
                return conditions
            edited = {**conditions, **(decision.conditions or {})}
            try:
                self.gate.check(edited)
            except (OutsideSpace, EnvelopeViolation) as exc:
                error = str(exc)
                self.log.emit(OperatorDecided(trial_id, "edit", conditions, edited, decision.note, refusal=error))
                continue
            self.log.emit(OperatorDecided(trial_id, "edit", conditions, edited, decision.note))
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
            if not self.ready:
                return
            self._dispatch(self.ready.popleft(), station)

    def _room_for_a_new_sample(self) -> bool:
        """A line starts a new sample only when it would not wait longer than the next step's max_wait for
        a free station (by the steps' durations so far; a station taken for a time not yet known is
        taken); without a max_wait, unless samples already queue for the next step. Coating films that
        expire waiting for a hot plate would waste them; the bottleneck is kept busy all the same, since
        a sample is started early enough to be ready when a station frees."""
        if self.settings.max_in_line is not None and len(self.busy) + self.line.waiting() >= self.settings.max_in_line:
            return False
        if len(self.settings.line) < 2:
            return True
        limit = self.settings.line[1].max_wait_s
        if limit is None:  # no deadline: start unless samples already queue for the next step's stations
            return len(self.line.waiting_for(1)) < sum(s.step == 1 for s in self.stations)
        now, first, nxt = self.clock.now(), self.line.mean_duration(0) or 0.0, self.line.mean_duration(1)
        free_at = [now if s.name not in self.busy else self._busy_since[s.name] + nxt if nxt is not None else math.inf
                   for s in self.stations if s.step == 1]
        ahead = [now for _ in self.line.waiting_for(1)]
        ahead += [self._busy_since[s.name] + first for s in self.stations if s.step == 0 and s.name in self.busy]
        return predicted_wait(now + first, free_at or [now], ahead, nxt) <= limit

    def _start_sample_live(self, station: Station) -> None:
        """A live line's first step: take a proposal the planning thread has ready, and ask for the next one
        at once, so that it is ready when this station frees."""
        assert self._planning is not None
        self._take_plan()
        if self.ready:
            self._dispatch(self.ready.popleft(), station)
        if not self.ready:
            self._plan_next()

    def _plan_next(self) -> None:
        assert self._planning is not None
        if self._planning.busy or self._refusals >= REFUSALS_BEFORE_STOP:
            return
        request, _, passed = self._plan_request(self.settings.batch_size)
        for trial_id in passed:
            self.approve(trial_id)
        if request is not None:
            self._planning.start(request, self._planner_call)

    def _take_plan(self, timeout: float | None = 0.0) -> None:
        assert self._planning is not None
        outcome = self._planning.take(timeout)
        if outcome is None:
            return
        proposals = (list(outcome.proposals) if outcome.error is None
                     else self._fall_back(outcome.request, outcome.error))
        for trial_id in self._store_proposals(proposals, outcome.request.origin):
            self.approve(trial_id)

    def _next_step(self, station: Station) -> None:
        """A free station of a later step takes the sample that has waited longest, unless it waited past
        the step's max_wait: such a sample is recorded as failed, and the next one is taken."""
        step = self.settings.line[station.step]
        while (waiting := self.line.next_for(station.step)) is not None:
            waited = self.clock.now() - waiting.since
            if step.max_wait_s is not None and waited > step.max_wait_s:
                self._expired(waiting.trial_id, step, waited)
                continue
            self._dispatch(waiting.trial_id, station)
            return

    def _expired(self, trial_id: int, step: Step, waited: float) -> None:
        reason = (f"waited {waited / 60:.1f} min for {step.name}, longer than its max_wait of "
                  f"{(step.max_wait_s or 0) / 60:g} min")
        with self.store.batch():
            self.log.emit(StepEvent(trial_id, step.name, step.index, None, "expired", reason,
                                    {"waited_s": waited, "max_wait_s": step.max_wait_s}))
            self.ingest(trial_id, self.line.result(trial_id, Measurement(
                status="failed_sample", detail=reason, analysis="line", instrument=step.name), step))

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

    def _step_finished(self, trial_id: int, station: Station, m: Measurement, at: float) -> None:
        """A sample's step ended with a result: on to the next step, or the trial's result after the last
        (a failed sample ends its way at the step it failed in)."""
        step = self.settings.line[station.step]
        self.line.took(station.step, m.duration_s)
        failed = m.status != "ok"
        data = {"reason": m.detail} if failed else {"values": dict(m.values), "units": dict(m.units),
                                                     "duration_s": m.duration_s}
        if failed or self.line.is_last(station.step):
            with self.store.batch():
                self.log.emit(StepEvent(trial_id, step.name, step.index, station.name,
                                        "failed" if failed else "done", m.detail if failed else "", data))
                self.ingest(trial_id, self.line.result(trial_id, m, step), station=station)
            return
        self.log.emit(StepEvent(trial_id, step.name, step.index, station.name, "done", "", data))
        self.line.step_done(trial_id, m)
        self.line.arrive(trial_id, station.step + 1, at)

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
        )

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
            _reraise_interrupt(exc)
            self.log.emit(DriverFailed(station.name, "set_journal", ErrorInfo.of(exc, with_traceback=True)))
        try:
            station.driver.safe_state()
        except BaseException as exc:  # noqa: BLE001 - the other instruments must still be made safe
            _reraise_interrupt(exc)
            error = ErrorInfo.of(exc, with_traceback=True)
        if journal or error is not None:
            self.log.emit(SafeStateEntered(station.name, why, error))


def _reraise_interrupt(exc: BaseException) -> None:
    """Around a driver call on the engine's thread: a real Ctrl-C goes on to pause the campaign; anything
    else the driver raised (asyncio's CancelledError and SystemExit are BaseExceptions too) is its fault."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc
