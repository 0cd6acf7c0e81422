"""The engine's steps as typed events, and the one place they are written down.

Every step that changes a campaign is an event record below. `EventLog.emit` writes it to the campaign
file (one transaction each, before the engine takes its next step) and then hands it to the subscribers:
the terminal's progress display, a dry run's bookkeeping, later a dashboard. Subscribers only read; the
file is written whether or not anyone listens.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

from closedloop.controller.engine.halts import Halt
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.base import EnvelopeViolation, InstrumentFault, Measurement
from closedloop.planners.provenance import Provenance
from closedloop.records import Conditions


class TimeSource(Protocol):
    """The engine's clock as the log sees it: virtual campaigns stamp every event with virtual time."""

    virtual: bool

    def now(self) -> float: ...


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as the journal keeps it: its type, its message, and for an unexpected one (a bug in
    a driver or planner) the traceback a developer needs."""

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def of(cls, exc: BaseException, *, with_traceback: bool = False) -> ErrorInfo:
        tb = "".join(traceback.format_exception(exc)) if with_traceback else None
        return cls(type(exc).__name__, str(exc), tb)

    def as_data(self) -> dict[str, str]:
        data = {"type": self.type, "message": self.message}
        return data if self.traceback is None else {**data, "traceback": self.traceback}


# ---- trials ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialProposed:
    trial_id: int
    conditions: Conditions
    proposer: str
    origin: str
    provenance: Provenance | None = None
    retry_of: int | None = None


@dataclass(frozen=True)
class ProposalRefused:
    """The safety gate turned a proposal down before it was stored as dispatchable (never sent)."""

    trial_id: int
    conditions: Conditions
    error: ErrorInfo


@dataclass(frozen=True)
class OperatorDecided:
    """The operator's answer to a proposal that needed approval. `refusal`: why an edit was refused (the
    operator is asked again)."""

    trial_id: int
    action: Literal["accept", "edit", "skip", "give_up"]
    proposed: Conditions
    edited: Conditions | None = None
    note: str = ""
    refusal: str | None = None
    by: str = ""  # who decided, when the approver knows (the terminal's user, the dashboard's operator)


@dataclass(frozen=True)
class ApprovalAwaited:
    """A proposal waits for the operator's decision at `where` ("terminal", "dashboard"); `refusal`: why
    their previous edit of it was refused. The dashboard shows the proposals waiting from these."""

    trial_id: int
    conditions: Conditions
    where: str
    refusal: str | None = None


@dataclass(frozen=True)
class OperatorHeld:
    """An operator paused the running campaign from elsewhere (the dashboard): no new trial starts until
    they resume it; trials already running finish. `resumed`: the reverse."""

    by: str
    resumed: bool = False


@dataclass(frozen=True)
class TrialApproved:
    trial_id: int
    detail: str = ""


# The journal's names for a proposal waiting for the operator, and for a pause and resume from the dashboard.
APPROVAL_WAIT, HOLD, RELEASE = "approval_wait", "hold", "release"

# The instrument a trial handed out with `ask` is stored as dispatched to (a person), and the name of the
# station of a protocol whose instrument is a person (`driver: manual`): either way a person holds it.
HANDED_OUT_TO = "manual"


@dataclass(frozen=True)
class TrialHandedOut:
    """`ask`: the trial goes to a person who runs it by hand and reports with `tell`."""

    trial_id: int


@dataclass(frozen=True)
class InitialPointOffered:
    """An initial-design point abandoned without a result (trial `of_trial`) is offered again, as trial
    `trial_id`, before the design moves on (`controller.engine.reoffer`)."""

    trial_id: int
    of_trial: int
    detail: str


@dataclass(frozen=True)
class TrialStarted:
    trial_id: int
    station: str
    conditions: Conditions  # as the protocol states them (the instrument gets them in its units)


@dataclass(frozen=True)
class TrialMeasured:
    trial_id: int
    measurement: Measurement
    recovered: bool = False  # read back from the instrument after a crash


@dataclass(frozen=True)
class StepEvent:
    """A sample's step in a line: `phase` is started, done (with `values`), failed, fault, expired (waited
    longer than the step's max_wait), repeat (run again after a crash) or lost (a crash interrupted a step
    that cannot be repeated). Journaled as a `step` event: the schedule and `resume` read them back."""

    trial_id: int
    step: str
    index: int
    station: str | None
    phase: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Abandonment(Enum):
    """Why a trial that was approved ended without a result."""

    GATE_AT_DISPATCH = "safety gate at dispatch"  # the gate refused it against the station's last setpoints
    DRIVER_REFUSED = "safety_refusal"  # the driver refused it as outside its envelope
    FAULT = "fault"  # the instrument or its link failed, or the driver raised
    OPERATOR_ABORT = "operator abort"  # Ctrl-C / SIGTERM stopped it
    INTERRUPTED = "interrupted"  # the controller died before its result was stored


@dataclass(frozen=True)
class TrialAbandoned:
    trial_id: int
    cause: Abandonment
    detail: str
    error: ErrorInfo | None = None
    station: str | None = None


# ---- the campaign ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignRunning:
    resumed: bool = False
    # Set when this run asks the operator about more proposals than the protocol says (`--approve` on an
    # `approval: none` protocol): the journal must show who gated what.
    approval_raised_to: str | None = None


@dataclass(frozen=True)
class CampaignHalted:
    halt: Halt


@dataclass(frozen=True)
class PlannerFailed:
    """The planner raised; the fallback planner proposed instead."""

    error: ErrorInfo
    fallback: str


@dataclass(frozen=True)
class SafeStateEntered:
    station: str
    why: str
    error: ErrorInfo | None = None  # the driver's safe_state itself raised (it must not)


@dataclass(frozen=True)
class DriverFailed:
    """A driver call outside a trial's run raised: `abort` on an operator interrupt, `recover` while
    reconciling after a crash, `close`, or a trial that would not stop after an abort (`action` says which).
    The engine goes on as if the call had done nothing (the trial is abandoned, the station made safe)."""

    station: str
    action: str
    error: ErrorInfo


@dataclass(frozen=True)
class OperatorStep:
    """The operator confirmed a manual step of a trial (e.g. put the film into the cavity)."""

    trial_id: int
    message: str


EngineEvent = (
    TrialProposed | ProposalRefused | OperatorDecided | ApprovalAwaited | OperatorHeld | TrialApproved | TrialHandedOut | TrialStarted | TrialMeasured
    | TrialAbandoned | CampaignRunning | CampaignHalted | PlannerFailed | SafeStateEntered | OperatorStep
    | DriverFailed | InitialPointOffered | StepEvent
)
Subscriber = Callable[[EngineEvent], None]


@dataclass
class EventLog:
    """Writes each event to the campaign file, then tells the subscribers. The only writer of trial states."""

    store: CampaignStore
    clock: TimeSource
    subscribers: Sequence[Subscriber] = field(default_factory=tuple)

    @property
    def virtual_t(self) -> float | None:
        return self.clock.now() if self.clock.virtual else None

    def add_trial(
        self,
        conditions: Conditions,
        *,
        proposer: str,
        origin: str,
        provenance: Provenance | None = None,
        retry_of: int | None = None,
    ) -> int:
        """Store a new trial as proposed (committed before anything is sent) and announce it; its id."""
        trial_id = self.store.add_trial(
            dict(conditions), proposer=proposer, origin=origin, provenance=provenance, retry_of=retry_of,
            virtual_t=self.virtual_t,
        )
        self._tell(TrialProposed(trial_id, dict(conditions), proposer, origin, provenance, retry_of))
        return trial_id

    def command(self, trial_id: int | None, station: str, direction: str, text: str, t: float | None) -> None:
        """One line sent to or received from an instrument (the journal; too frequent to announce)."""
        self.store.record_command(trial_id, station, direction, text, virtual_t=t if self.clock.virtual else None)

    def emit(self, event: EngineEvent) -> None:
        self._write(event)
        self._tell(event)

    def _tell(self, event: EngineEvent) -> None:
        for subscriber in self.subscribers:
            subscriber(event)

    def _write(self, event: EngineEvent) -> None:
        store, t = self.store, self.virtual_t
        match event:
            case ProposalRefused(trial_id, conditions, error):
                store.record_event("safety_refusal", trial_id=trial_id, detail=error.message,
                                   data={"conditions": conditions, **error.as_data()}, virtual_t=t)
                store.transition(trial_id, "rejected", detail=f"safety gate: {error.message}", virtual_t=t)
            case OperatorDecided(trial_id, action, proposed, edited, note, refusal, by):
                data: dict[str, object] = {"action": action, "proposed": proposed, "note": note, "by": by}
                if edited is not None:
                    data["edited"] = edited
                who = f" ({by})" if by else ""
                if action == "skip":
                    store.record_event("approval", trial_id=trial_id, detail=f"skipped by operator{who}", data=data)
                    store.transition(trial_id, "rejected", detail=f"skipped by operator{who}", virtual_t=t)
                elif action == "give_up":
                    store.transition(trial_id, "rejected", detail="no acceptable edit after 10 tries", virtual_t=t)
                elif refusal is not None:
                    store.record_event("approval", trial_id=trial_id, detail=f"edit refused: {refusal}", data=data)
                elif action == "edit":
                    assert edited is not None
                    store.update_conditions(trial_id, edited, detail=f"edited by operator{who}", virtual_t=t)
                    store.record_event("approval", trial_id=trial_id, detail=f"edited by operator{who}", data=data)
                else:
                    store.record_event("approval", trial_id=trial_id, detail=f"accepted by operator{who}", data=data)
            case ApprovalAwaited(trial_id, conditions, where, refusal):
                store.record_event(APPROVAL_WAIT, trial_id=trial_id, detail=f"waiting for the operator at the {where}",
                                   data={"conditions": conditions, "where": where, "refusal": refusal}, virtual_t=t)
            case OperatorHeld(by, resumed):
                if resumed:
                    store.record_event(RELEASE, detail=f"resumed by {by}", data={"by": by}, virtual_t=t)
                else:
                    store.record_event(HOLD, detail=f"paused by {by}: no new trial starts until resumed",
                                       data={"by": by}, virtual_t=t)
            case TrialApproved(trial_id, detail):
                store.transition(trial_id, "approved", detail=detail, virtual_t=t)
            case TrialHandedOut(trial_id):
                if store.trial(trial_id).state == "proposed":  # a trial queued earlier is approved already
                    store.transition(trial_id, "approved", detail="ask")
                store.transition(trial_id, "dispatched", instrument=HANDED_OUT_TO, detail="handed to the operator")
            case TrialStarted(trial_id, station, _):
                if store.trial(trial_id).state != "dispatched":  # dispatched already: handed out with `ask`
                    store.transition(trial_id, "dispatched", instrument=station, virtual_t=t)
                store.transition(trial_id, "running", instrument=station, virtual_t=t)
            case StepEvent(trial_id, step, index, station, phase, detail, data):
                where = f" on {station}" if station else ""
                store.record_event("step", trial_id=trial_id, detail=f"{step} {phase}{where}" + (f": {detail}" if detail else ""),
                                   data={"step": step, "index": index, "station": station, "phase": phase, **data},
                                   virtual_t=t)
            case TrialMeasured(trial_id, measurement, recovered):
                if recovered:
                    store.record_event("recovered", trial_id=trial_id, detail="result recovered from the instrument")
                store.record_measurement(trial_id, measurement, virtual_t=t)
            case TrialAbandoned(trial_id, cause, detail, error, _):
                self._write_abandoned(trial_id, cause, detail, error, t)
            case CampaignRunning(resumed, raised):
                if resumed:
                    store.record_event("resume", detail="campaign resumed", virtual_t=t)
                if raised is not None:
                    store.record_event("approval", detail=f"this run asks the operator about {raised} proposal "
                                       "(raised from the protocol's approval: none)", virtual_t=t)
                store.set_status("running", virtual_t=t)
            case CampaignHalted(halt):
                store.set_status("paused" if halt.paused else "stopped", stop_reason=halt.text, virtual_t=t)
            case PlannerFailed(error, _):
                store.record_event("planner_error", detail=f"{error.type}: {error.message}",
                                   data={"traceback": error.traceback})
            case SafeStateEntered(station, why, error):
                detail = f"{station}: {why}" + (f" (safe_state raised {error.type}: {error.message})" if error else "")
                store.record_event("safe_state", detail=detail, data=None if error is None else error.as_data(),
                                   virtual_t=t)
            case DriverFailed(station, action, error):
                store.record_event("driver_error", detail=f"{station}: {action}: {error.type}: {error.message}",
                                   data=error.as_data(), virtual_t=t)
            case OperatorStep(trial_id, message):
                store.record_event("operator_step", trial_id=trial_id, detail=message)
            case InitialPointOffered(trial_id, of_trial, detail):
                store.record_event("reoffer", trial_id=trial_id, detail=detail, data={"of_trial": of_trial},
                                   virtual_t=t)
            case TrialProposed():
                raise TypeError("a new trial is stored with EventLog.add_trial, which gives it its id")

    def _write_abandoned(
        self, trial_id: int, cause: Abandonment, detail: str, error: ErrorInfo | None, t: float | None
    ) -> None:
        store = self.store
        data = None if error is None else error.as_data()
        if cause is Abandonment.GATE_AT_DISPATCH:
            store.record_event("safety_refusal", trial_id=trial_id, detail=detail, virtual_t=t)
            store.transition(trial_id, "abandoned", detail=f"safety gate at dispatch: {detail}", virtual_t=t)
        elif cause is Abandonment.OPERATOR_ABORT:
            store.record_event("operator_abort", trial_id=trial_id, detail=detail, virtual_t=t)
            store.transition(trial_id, "abandoned", detail=f"operator abort: {detail}", virtual_t=t)
        elif cause is Abandonment.INTERRUPTED:
            store.transition(trial_id, "abandoned", detail=f"interrupted: {detail}", virtual_t=t)
        else:  # a fault, or a refusal by the driver: the event kind says which
            store.record_event(cause.value, trial_id=trial_id, detail=detail, data=data, virtual_t=t)
            store.transition(trial_id, "abandoned", detail=f"{cause.value}: {detail}", virtual_t=t)


def error_of(exc: BaseException) -> ErrorInfo:
    """How the journal records what a driver raised: expected failures (the instrument's faults, envelope
    refusals, timeouts, lost ports) by type and message; anything else with its traceback, since that is
    a bug in the driver that someone has to fix."""
    expected = isinstance(exc, InstrumentFault | EnvelopeViolation | TimeoutError | OSError)
    return ErrorInfo.of(exc, with_traceback=not expected)
