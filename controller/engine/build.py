"""One function builds the engine for every entry point (run, resume, ask/tell, dry run, replay,
counterfactuals): from the protocol and the campaign file, with its stations, safety gate, planner and
clock passed in, so nothing has to be changed on an engine after it is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from closedloop.controller.engine.clock import VirtualClock, WallClock
from closedloop.controller.engine.dispatch import (
    Dispatcher,
    OperatorChannel,
    Station,
    ThreadedDispatcher,
    VirtualDispatcher,
)
from closedloop.controller.engine.engine import CampaignEngine, EngineSettings
from closedloop.controller.engine.events import EventLog, OperatorStep, Subscriber
from closedloop.controller.engine.gate import SafetyGate
from closedloop.controller.engine.operator import (
    Approver,
    OperatorAbsent,
    OperatorControl,
    QuestionAnswerer,
    StepConfirmer,
)
from closedloop.controller.protocol.model import Protocol
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.planners.base import Planner
from closedloop.planners.registry import make_planner

MULTIFIDELITY = "multifidelity"  # the planner a protocol with fidelities gets when it asks for botorch


def settings_from(protocol: Protocol, seed: int) -> EngineSettings:
    """What the engine acts on, from the protocol (and the campaign's seed)."""
    return EngineSettings(
        problem=protocol.to_problem(),
        seed=seed,
        max_trials=protocol.budget.trials,
        batch_size=protocol.planner.batch_size,
        n_initial=int(planner_spec(protocol)[1].get("n_initial", 0)),
        max_wall_time_s=protocol.wall_time_s,
        no_improvement=protocol.stop.no_improvement,
        stop_on_target=protocol.stop.target_reached,
        approval=protocol.approval.mode,
        trusted_region=protocol.trusted_region_bounds(),
        fault_retries=protocol.failures.instrument_fault_retries,
        on_fault=protocol.failures.on_fault,
        candidates=protocol.candidates_frame(),
        result_units=protocol.objective_units(),
        line=tuple(protocol.steps()) if protocol.is_line else (),
        max_in_line=protocol.schedule.max_samples_in_line,
        routes=protocol.routes(),
        max_instrument_hours=None if protocol.budget.instrument_time is None else protocol.budget.instrument_time / 3600,
    )


def planner_spec(protocol: Protocol) -> tuple[str, dict[str, Any]]:
    """The planner name and options a protocol asks for. Audits rebuild their planners from this too, so
    a re-derived proposal comes from exactly the planner the campaign used."""
    p = protocol.planner
    if protocol.fidelities and p.planner_name == "botorch":  # the model-based planner, across the sources
        return MULTIFIDELITY, {"n_initial": p.initial.n, "initial_method": p.initial.method, **(p.options or {})}
    return p.planner_name, {"n_initial": p.initial.n, "initial_method": p.initial.method, **(p.options or {})}


def protocol_planner(protocol: Protocol) -> Planner:
    name, options = planner_spec(protocol)
    return make_planner(name, **options)


def protocol_gate(protocol: Protocol) -> SafetyGate:
    """The gate every proposal passes: the protocol's space, then the instrument's declared envelope (in
    the instrument's units)."""
    return SafetyGate(protocol.to_problem().space, protocol.description_of_instrument().envelope,
                      protocol.to_instrument_units)


def build_engine(
    protocol: Protocol,
    store: CampaignStore,
    *,
    seed: int,
    stations: Sequence[Station],
    clock: VirtualClock | WallClock,
    gate: SafetyGate | None = None,
    planner: Planner | None = None,
    approver: Approver | None = None,
    control: OperatorControl | None = None,
    subscribers: Sequence[Subscriber] = (),
    elapsed_origin: float = 0.0,
    approve_every: bool = False,
) -> CampaignEngine:
    """The engine for `protocol` over `store`. `stations` may be empty for a campaign run by hand
    (`ask`/`tell`). `gate` and `planner` default to the protocol's; `clock` decides how trials run: on a
    `VirtualClock` one after another in simulated time, on a `WallClock` each in its own thread.
    `approve_every`: the operator approves every proposal, whatever the protocol's `approval` says (an
    operator who asked to see each proposal must never find one went out unseen). `control`: where the
    engine looks for pause, resume and abort requests from elsewhere (the dashboard)."""
    settings = settings_from(protocol, seed)
    if approve_every and settings.approval != "every":
        settings = dataclasses.replace(settings, approval="every", approval_raised=True)
    log = EventLog(store, clock, tuple(subscribers))
    operator = OperatorChannel(confirm=_confirm_step(approver, log), ask=_answer(approver))
    dispatcher: Dispatcher
    if isinstance(clock, VirtualClock):
        dispatcher = VirtualDispatcher(clock, log.command, operator)
    else:
        dispatcher = ThreadedDispatcher(clock, log.command, operator)
    return CampaignEngine(
        store,
        settings,
        planner=(lambda: planner) if planner is not None else (lambda: protocol_planner(protocol)),
        fallback_planner=lambda: make_planner("sobol"),
        stations=stations,
        gate=gate or protocol_gate(protocol),
        dispatcher=dispatcher,
        log=log,
        approver=approver,
        control=control,
        elapsed_origin=elapsed_origin,
    )


def _confirm_step(approver: Approver | None, log: EventLog) -> Callable[[int, str], None]:
    """A manual step of a trial (load the sample): the operator confirms it, and the journal says so."""

    def confirm(trial_id: int, message: str) -> None:
        if isinstance(approver, StepConfirmer):
            approver.confirm_step(trial_id, message)
        log.emit(OperatorStep(trial_id, message))

    return confirm


def _answer(approver: Approver | None) -> Callable[[int, str], str]:
    """A driver's question to the operator (a value measured by hand). The driver journals the question
    and the answer with its commands. Without an operator who can answer, the trial ends and the campaign
    pauses (`OperatorAbsent`): a result is never made up."""

    def ask(trial_id: int, question: str) -> str:
        if not isinstance(approver, QuestionAnswerer):
            raise OperatorAbsent(f"trial {trial_id} needs an operator to answer {question.splitlines()[-1]!r}, "
                                 "and none is attached (`closedloop run` and `resume` ask at the terminal)")
        return approver.answer_question(trial_id, question)

    return ask
