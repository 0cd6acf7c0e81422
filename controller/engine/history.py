"""What the campaign so far means for the planner and the stop rules: pure functions over trial records."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from closedloop.controller.engine.halts import Halt, HaltKind, stopped
from closedloop.controller.store.reads import TrialRecord
from closedloop.planners.space import Conditions, Observation, OutcomeConstraint, Problem

RESULT_STATES = ("measured", "failed")  # trials that produced data and count against the budget
IN_FLIGHT_STATES = ("proposed", "approved", "dispatched", "running")


def observations(problem: Problem, trials: Sequence[TrialRecord]) -> list[Observation]:
    """Measured trials with their values, and failed samples as failures, in trial order.

    Only finite values are passed on: the store already turns NaN/inf into failed samples.
    """
    wanted = {o.name for o in problem.objectives} | {c.name for c in problem.outcome_constraints}
    out = []
    for t in sorted(trials, key=lambda t: t.id):
        if t.state == "failed":
            out.append(Observation(conditions=dict(t.conditions), failed=True))
        elif t.state == "measured":
            values = {k: float(v) for k, v in t.values.items() if k in wanted and math.isfinite(v)}
            if all(o.name in values for o in problem.objectives):
                out.append(Observation(conditions=dict(t.conditions), values=values))
            else:
                out.append(Observation(conditions=dict(t.conditions), failed=True))
    return out


def pending(trials: Sequence[TrialRecord]) -> list[Conditions]:
    return [dict(t.conditions) for t in trials if t.state in IN_FLIGHT_STATES]


def n_results(trials: Sequence[TrialRecord]) -> int:
    return sum(t.state in RESULT_STATES for t in trials)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def _signed(problem: Problem, obs: Observation) -> list[float]:
    """Objective values oriented so that larger is better."""
    return [obs.values[o.name] if o.maximize else -obs.values[o.name] for o in problem.objectives]


def constraint_holds(constraint: OutcomeConstraint, values: Mapping[str, float]) -> bool:
    """`values` meet the outcome constraint; a missing value meets none (it cannot be shown to hold)."""
    v = values.get(constraint.name)
    return v is not None and (v >= constraint.bound if constraint.op == ">=" else v <= constraint.bound)


def feasible(problem: Problem, values: Mapping[str, float]) -> bool:
    """`values` (a measured trial's) meet every outcome constraint of `problem`."""
    return all(constraint_holds(c, values) for c in problem.outcome_constraints)


def _feasible(problem: Problem, obs: Observation) -> bool:
    return feasible(problem, obs.values)


def improvement_flags(problem: Problem, obs: Sequence[Observation]) -> list[bool]:
    """For each observation: did it improve the campaign? (single objective: a new best; several
    objectives: a point no earlier point dominates). Failures and infeasible points never improve."""
    flags: list[bool] = []
    seen: list[list[float]] = []
    for o in obs:
        if o.failed or not _feasible(problem, o):
            flags.append(False)
            continue
        y = _signed(problem, o)
        if len(y) == 1:
            better = not seen or y[0] > max(s[0] for s in seen)
        else:
            better = not any(_dominates(s, y) or s == y for s in seen)
        flags.append(better)
        seen.append(y)
    return flags


def best(problem: Problem, obs: Sequence[Observation]) -> Observation | None:
    """The best feasible observation by the first objective (the headline number users look at)."""
    good = [o for o in obs if not o.failed and _feasible(problem, o)]
    if not good:
        return None
    first = problem.objectives[0]
    return (max if first.maximize else min)(good, key=lambda o: o.values[first.name])


def target_reached(problem: Problem, obs: Sequence[Observation]) -> str | None:
    """The name of an objective whose target a feasible observation reached, if any."""
    for o in obs:
        if o.failed or not _feasible(problem, o):
            continue
        for obj in problem.objectives:
            if obj.target is None:
                continue
            v = o.values[obj.name]
            if (v >= obj.target) if obj.maximize else (v <= obj.target):
                return obj.name
    return None


def stop_rule(
    problem: Problem,
    obs: Sequence[Observation],
    *,
    results: int,
    max_trials: int,
    elapsed_s: float,
    max_wall_time_s: float | None,
    no_improvement: int | None,
    stop_on_target: bool,
) -> Halt | None:
    """The protocol's stop rule that fires now, or None."""
    if results >= max_trials:
        return stopped(HaltKind.BUDGET, f"budget: {results} of {max_trials} trials done")
    if max_wall_time_s is not None and elapsed_s >= max_wall_time_s:
        return stopped(HaltKind.WALL_TIME, f"wall time: {elapsed_s / 3600:.2f} h of {max_wall_time_s / 3600:.2f} h used")
    if stop_on_target:
        name = target_reached(problem, obs)
        if name is not None:
            return stopped(HaltKind.TARGET, f"target reached: {name}")
    if no_improvement:
        flags = improvement_flags(problem, obs)
        if any(flags) and len(flags) >= no_improvement and not any(flags[-no_improvement:]):
            return stopped(HaltKind.NO_IMPROVEMENT, f"no improvement in the last {no_improvement} trials")
    return None
