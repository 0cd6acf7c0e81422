"""The verdict of a dry run: the safety and consistency problems (exit 1) and the warnings, judged from
what the dry run's campaign file holds (`controller.dryrun.run` reads it and builds the report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from closedloop.controller.dryrun.checks import RAMP_DOMINATES, measured_best, reachable_best
from closedloop.controller.protocol.model import Protocol
from closedloop.planners.encoding import SpaceEncoding

if TYPE_CHECKING:
    from closedloop.controller.dryrun.run import DryRunReport


@dataclass
class Finding:
    """A safety or consistency problem: what happened, on which trial, at which command."""

    kind: str  # "instrument refusal", "safety gate refusal", "instrument fault", "campaign"
    trial: int | None
    command: str | None
    message: str


def find_problems(
    report: DryRunReport, protocol: Protocol, trials: list[Any], events: list[dict], commands: list[dict], halted: bool
) -> None:
    """Refusals by the gate or the driver, instrument faults (warnings only where the protocol injects
    them), and a campaign that paused or had to be halted."""
    injected = _injects_faults(protocol)
    # A driver journals what it refused as "REFUSED <request>: <why>". For other faults the command is not
    # named here: the driver's safe state follows it in the journal, and the fault's detail says what failed.
    refused = {c["trial_id"]: c["text"].removeprefix("REFUSED ").partition(": ")[0]
               for c in commands if c["direction"] == "tx" and c["text"].startswith("REFUSED ")}
    # The engine's own words on how each trial ended tell a refusal by the driver from one by the gate.
    by_driver = {t.id for t in trials if t.detail.startswith("safety_refusal:")}
    for e in events:
        trial = e["trial_id"]
        command = refused.get(trial)
        if e["kind"] == "safety_refusal" and trial in by_driver:
            report.problems.append(Finding("instrument refusal", trial, command, e["detail"]))
        elif e["kind"] == "safety_refusal":
            report.problems.append(Finding("safety gate refusal", trial, None, f"not sent: {e['detail']}"))
        elif e["kind"] == "fault" and injected:
            report.warnings.append(f"trial {trial}: injected fault after {command!r}: {e['detail']}")
        elif e["kind"] == "fault":
            report.problems.append(Finding("instrument fault", trial, command, e["detail"]))
    reason = report.stop_reason
    if halted or (reason.startswith("paused") and not report.problems):
        report.problems.append(Finding("campaign", None, None, reason))


def _injects_faults(protocol: Protocol) -> bool:
    options = protocol.instrument.options
    return bool(options.get("faults")) or float(options.get("fault_rate", 0.0) or 0.0) > 0


def add_warnings(
    report: DryRunReport, protocol: Protocol, seed: int, trials: list[Any], events: list[dict],
    ramps: dict[int, float], spans: dict[int, list[float]],
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
    if report.stop_reason.startswith("stopped: the planner has nothing left") and not report.problems:
        add(report.stop_reason.removeprefix("stopped: "))
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
