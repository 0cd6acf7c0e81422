"""What the engine's parts share: its settings, constants, and the state every part reads and writes.

`CampaignEngine` (engine.py) is composed of parts, each one concern of the closed loop: proposing
(proposing.py), moving samples through a line (line_flow.py), halting (halting.py), and the engine's
own operations. Each part is a class over `EngineState`, which declares the state they share and the
operations one part asks of another, so each module reads (and type-checks) on its own.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from closedloop.controller.engine.clock import VirtualClock, WallClock
from closedloop.controller.engine.dispatch import Completion, Dispatcher, Station
from closedloop.controller.engine.events import (
    EventLog,
)
from closedloop.controller.engine.gate import SafetyGate
from closedloop.controller.engine.halts import Halt
from closedloop.controller.engine.line import LineQueues
from closedloop.controller.engine.operator import Approver, OperatorControl
from closedloop.controller.engine.planahead import PlanAhead, PlanRequest
from closedloop.controller.protocol.workflow import Step
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.reads import TrialRecord
from closedloop.drivers.base import Measurement
from closedloop.planners.base import Planner
from closedloop.planners.provenance import Proposal
from closedloop.planners.space import Conditions, Problem

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
CONTROL_POLL_S = 0.25  # with a dashboard attached: how often a running trial's wait looks for its requests
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
    # With fidelities: each source's steps (indices into `line`), and the instrument-time budget in hours
    # (each trial counted at its source's declared cost).
    routes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_instrument_hours: float | None = None
    # Each objective's unit as the protocol declares it: results are stored in it (a driver reporting in
    # another unit is converted at ingest), so targets, outcome constraints, the report and `tell` agree.
    result_units: dict[str, str] = field(default_factory=dict)


class EngineState(ABC):
    """The state the engine's parts share (set up in `CampaignEngine.__init__`), and the operations one
    part asks of another (each defined by the part that owns it; here only to say what it promises)."""

    store: CampaignStore
    settings: EngineSettings
    _make_planner: Callable[[], Planner]
    _make_fallback: Callable[[], Planner]
    stations: list[Station]
    gate: SafetyGate
    dispatcher: Dispatcher
    clock: VirtualClock | WallClock
    log: EventLog
    approver: Approver | None
    control: OperatorControl | None  # pause / resume / abort from the dashboard
    _held_by: str | None  # who paused the campaign from the dashboard (no new trial starts), or None
    elapsed_origin: float
    ready: deque[int]  # approved trials waiting for a free station
    busy: dict[str, int]  # station name -> trial id
    _busy_since: dict[str, float]  # station name -> when its trial started (engine clock)
    halt: Halt | None
    _refusals: int
    _refused_in_a_row: int
    _exhausted_in_a_row: int
    _aborting: bool
    _reoffered: dict[int, str]
    line: LineQueues
    _planning: PlanAhead | None

    # The operations one part asks of another; each is defined by the part that owns it. Abstract, so a
    # part left undefined stops the engine from being built rather than failing mid-campaign.

    # engine.py
    @abstractmethod
    def approve(self, trial_id: int) -> bool:
        """The operator's approval where needed, then queued for a station; False when skipped."""

    @abstractmethod
    def hand_out(self, trial_id: int) -> None:
        """`ask`: the trial goes to a person."""

    @abstractmethod
    def ingest(self, trial_id: int, measurement: Measurement, *, station: Station | None = None) -> None:
        """A trial's result, stored; an instrument fault goes through the fault policy."""

    @abstractmethod
    def elapsed(self) -> float:
        """The campaign's time so far on its clock."""

    @abstractmethod
    def _dispatch(self, trial_id: int, station: Station) -> None:
        """The trial (or a sample's next step) sent to `station` after the gate's check."""

    @abstractmethod
    def _complete(self, done: Completion) -> None:
        """What a finished job leads to: a result, a step done, or a fault."""

    @abstractmethod
    def _passes_gate(self, trial_id: int, conditions: Conditions) -> bool:
        """Approved by the safety gate (a refusal is journaled)."""

    @abstractmethod
    def _operator_abort(self, trial_id: int, detail: str) -> None:
        """A trial the operator stopped: abandoned and queued again."""

    # proposing.py
    @abstractmethod
    def _plan_request(
        self, n: int, *, within_budget: bool = True, origin: str | None = None
    ) -> tuple[PlanRequest | None, int, list[int]]:
        """What the planner is to be asked for (None: nothing), how many trials were made, the ids that passed."""

    @abstractmethod
    def _store_proposals(self, proposals: Sequence[Proposal], origin: str | None) -> list[int]:
        """Proposals stored as trials and gated; the ids that passed."""

    @abstractmethod
    def _planner_call(self, request: PlanRequest) -> Sequence[Proposal]:
        """The planner's proposals for `request`: a pure computation (safe on the planning thread)."""

    @abstractmethod
    def _fall_back(self, request: PlanRequest, exc: Exception) -> list[Proposal]:
        """The fallback planner's proposals after the planner raised (journaled)."""

    @abstractmethod
    def _make_safe(self, station: Station, why: str, *, journal: bool) -> None:
        """`station`'s safe state, journaled as a campaign event (controller.engine.halting)."""

    @abstractmethod
    def handed_out(self) -> list[TrialRecord]:
        """Trials handed to a person with `ask` and not told yet."""


def reraise_interrupt(exc: BaseException) -> None:
    """Around a driver call on the engine's thread: a real Ctrl-C goes on to pause the campaign; anything
    else the driver raised (asyncio's CancelledError and SystemExit are BaseExceptions too) is its fault."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc
