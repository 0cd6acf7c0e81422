"""The verdict of a dry run: the safety and consistency problems (exit 1) and the warnings, judged from
what the dry run's campaign file holds (`controller.dryrun.run` reads it and builds the report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from closedloop.controller.dryrun.checks import RAMP_DOMINATES, measured_best, reachable_best
from closedloop.controller.dryrun.report import DryRunReport, Finding
from closedloop.controller.engine.events import Abandonment, EngineEvent, ProposalRefused, TrialAbandoned
from closedloop.controller.engine.halts import Halt, HaltKind
from closedloop.controller.protocol.model import Protocol
from closedloop.controller.report.schedule.text import expired_warning
from closedloop.planners.encoding import SpaceEncoding
from closedloop.simulators.registry import SimulatedMbeOptions
from closedloop.simulators.testfunctions import FunctionOptions


def find_problems(
    report: DryRunReport, protocol: Protocol, seen: Sequence[EngineEvent], commands: list[dict], halt: Halt
) -> None:
    """Refusals by the gate or the driver, instrument faults (warnings only where the protocol injects
    them), and a campaign that paused (the engine pauses on its own when trial after trial ends without a
    result). `seen`: the engine's events, as the dry run received them."""
    injected = _injects_faults(protocol)
    # A driver journals what it refused as "REFUSED <request>: <why>". For other faults the command is not
    # named here: the driver's safe state follows it in the journal, and the fault's detail says what failed.
    refused = {c["trial_id"]: c["text"].removeprefix("REFUSED ").partition(": ")[0]
               for c in commands if c["direction"] == "tx" and c["text"].startswith("REFUSED ")}
    for event in seen:
        match event:
            case ProposalRefused(trial, _, error):
                report.problems.append(Finding("safety gate refusal", trial, None, f"not sent: {error.message}"))
            case TrialAbandoned(trial, Abandonment.GATE_AT_DISPATCH, detail):
                report.problems.append(Finding("safety gate refusal", trial, None, f"not sent: {detail}"))
            case TrialAbandoned(trial, Abandonment.DRIVER_REFUSED, detail):
                report.problems.append(Finding("instrument refusal", trial, refused.get(trial), detail))
            case TrialAbandoned(trial, Abandonment.FAULT, detail) if injected:
                report.warnings.append(f"trial {trial}: injected fault after {refused.get(trial)!r}: {detail}")
            case TrialAbandoned(trial, Abandonment.FAULT, detail):
                report.problems.append(Finding("instrument fault", trial, refused.get(trial), detail))
    if halt.kind is HaltKind.NO_RESULTS or (halt.paused and not report.problems):
        report.problems.append(Finding("campaign", None, None, halt.text))


def _injects_faults(protocol: Protocol) -> bool:
    if protocol.is_line:
        return any(_injects_faults(protocol.step_view(step)) for step in protocol.steps() if step.instrument)
    options = protocol.instrument_options()
    # Simulated instruments may fail on purpose too (their own fault_rate option).
    simulated_faults = isinstance(options, FunctionOptions | SimulatedMbeOptions) and options.fault_rate > 0
    return bool(protocol.station_options().faults) or simulated_faults


def add_warnings(
    report: DryRunReport, protocol: Protocol, seed: int, trials: list[Any], events: list[dict],
    ramps: dict[int, float], spans: dict[int, list[float]], halt: Halt,
) -> None:
    """Things worth knowing that do not make the campaign unsafe: an unreachable target, dominating ramps,
    a poor initial design, planner failures, a live wall time beyond the budget."""
    problem = protocol.to_problem()
    add = report.warnings.append
    for objective in problem.objectives:
        if objective.target is not None:
            _target_warning(report, protocol, objective, trials, seed)
    if report.instrument_time_s > 0 and report.ramp_time_s / report.instrument_time_s > RAMP_DOMINATES:
        worst = max(ramps, key=lambda t: ramps[t] / max(1e-9, spans[t][1] - spans[t][0]) if t in spans else 0.0)
        add(f"ramps take {report.ramp_time_s / report.instrument_time_s:.0%} of the instrument time "
            f"(trial {worst}: {ramps[worst] / 60:.0f} min of ramping): the ramps dominate the time budget; "
            "narrow the temperature ranges or raise the ramp rates (within max_rate)")
    cov = report.coverage
    if cov is not None:
        if cov.poor:
            add(f"the initial design covers the space poorly: some legal conditions are {cov.gap:.2f} (unit cube) "
                f"from every initial point, where a random design of {cov.points} points typically leaves "
                f"{cov.typical_gap:.2f}; use planner.initial.method: sobol or more initial points")
        for name, values in cov.missing_choices.items():
            add(f"the initial design never tries {name} = {', '.join(values)}")
    planned, searched = protocol.planner.initial.n, len(SpaceEncoding(problem.space).numeric)
    if planned < searched + 1:
        add(f"only {planned} initial points for {searched} searched numeric parameters: the first model is "
            "fitted on fewer points than parameters + 1; raise planner.initial.n")
    planner_errors = [e for e in events if e["kind"] == "planner_error"]
    if planner_errors:
        add(f"the planner failed {len(planner_errors)} time(s) and the fallback proposed instead "
            f"(first: {planner_errors[0]['detail']})")
    if report.schedule is not None and (expired := expired_warning(report.schedule)):
        add(expired)
    if halt.kind is HaltKind.NOTHING_TO_PROPOSE and not report.problems:
        add(halt.reason)
    budget = report.budget_wall_time_s
    if budget is not None and report.wall_time_estimate_s > budget >= report.campaign_time_s:
        add(f"with operator time and planning the live run would take about {report.wall_time_estimate_s / 3600:.1f} h, "
            f"more than budget.wall_time ({budget / 3600:.1f} h): it would stop on wall time earlier than here")


def _target_warning(report: DryRunReport, protocol: Protocol, objective: Any, trials: list[Any], seed: int) -> None:
    target = objective.target
    beyond = (lambda v: v < target) if objective.maximize else (lambda v: v > target)
    measured = measured_best(objective, trials)
    if measured is not None and not beyond(measured[0]):
        return
    reachable = reachable_best(protocol, objective, seed)
    shown = "nothing measured" if measured is None else f"best measured {measured[0]:.4g} (trial {measured[1]})"
    if reachable is not None and beyond(reachable[0]):
        report.warnings.append(
            f"{objective.name}: the target {target:g} is beyond anything the simulator reaches ({shown}; "
            f"{reachable[0]:.4g} by {reachable[1]}): the campaign would run until another stop rule fires"
        )
    else:
        report.warnings.append(f"{objective.name}: the dry run did not reach the target {target:g} ({shown})")
