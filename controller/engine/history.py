"""What the campaign so far means for the planner and the stop rules: pure functions over trial records."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from closedloop.controller.engine.halts import Halt, HaltKind, stopped
from closedloop.controller.store.reads import TrialRecord
from closedloop.planners.space import (
    Conditions,
    Fidelity,
    FixedParameter,
    FloatParameter,
    IntParameter,
    Observation,
    OutcomeConstraint,
    Problem,
)

RESULT_STATES = ("measured", "failed")  # trials that produced data (the campaign's own count against the budget)
WARM_START = "warm_start"  # the origin of earlier results added by `closedloop import`
# How far outside the search space (in units of each parameter's range) an earlier result may lie and
# still be given to the planner; measured, see near_the_space and benchmarks/warm_start_outside.py.
OUTSIDE_MARGIN = 0.25
IN_FLIGHT_STATES = ("proposed", "approved", "dispatched", "running")
# The analysis of a failed sample that waited past a step's max_wait: failed, and counted (it cost a film),
# but no evidence about its conditions, so the planner is not shown it (the feasibility model would learn
# that good conditions fail when the line was merely busy).
EXPIRED = "line:expired"


def observations(problem: Problem, trials: Sequence[TrialRecord]) -> list[Observation]:
    """Measured trials with their values, and failed samples as failures, in trial order.

    Only finite values are passed on: the store already turns NaN/inf into failed samples. Warm-start
    trials (earlier results, `closedloop import`) are observations like any other.
    """
    return [o for _, o in _observed(problem, trials)]


def observed_ids(problem: Problem, trials: Sequence[TrialRecord]) -> list[int]:
    """The trial id of each of `observations(problem, trials)`, in the same order."""
    return [t.id for t, _ in _observed(problem, trials)]


def imported_flags(problem: Problem, trials: Sequence[TrialRecord]) -> list[bool]:
    """For each of `observations(problem, trials)`: is it a warm-start trial (an earlier result)?"""
    return [t.origin == WARM_START for t, _ in _observed(problem, trials)]


def _observed(problem: Problem, trials: Sequence[TrialRecord]) -> list[tuple[TrialRecord, Observation]]:
    """With fidelities, a proxy's trial is observed with the quantity its source measures (and that
    source's name): the planner models the sources jointly; the stop rules look at the target only."""
    wanted = {o.name for o in problem.objectives} | {c.name for c in problem.outcome_constraints}
    proxies = {f.name: f.measures for f in problem.fidelities if not f.target}
    out = []
    for t in sorted(trials, key=lambda t: t.id):
        if t.origin == WARM_START and not near_the_space(problem, t.conditions):
            continue
        if t.state == "failed" and t.analysis == EXPIRED:
            continue
        proxy = t.fidelity if t.fidelity in proxies else None
        if t.state == "failed":
            out.append((t, Observation(conditions=dict(t.conditions), failed=True, fidelity=proxy)))
        elif t.state == "measured" and proxy is not None:
            value = t.values.get(proxies[proxy])
            values = {proxies[proxy]: float(value)} if value is not None and math.isfinite(value) else {}
            out.append((t, Observation(conditions=dict(t.conditions), values=values, failed=not values, fidelity=proxy)))
        elif t.state == "measured":
            values = {k: float(v) for k, v in t.values.items() if k in wanted and math.isfinite(v)}
            if all(o.name in values for o in problem.objectives):
                out.append((t, Observation(conditions=dict(t.conditions), values=values)))
            else:
                out.append((t, Observation(conditions=dict(t.conditions), failed=True)))
    return out


def near_the_space(problem: Problem, conditions: Conditions) -> bool:
    """Whether an earlier result lies close enough to the search space to teach the model about it: every
    number within OUTSIDE_MARGIN of its parameter's range (log10 for a log-scaled one), every fixed
    parameter at its value. A linear constraint does not matter here: it says where the campaign may go,
    not how the measured quantity varies, so a point across it informs the model like any other."""
    for p in problem.space.parameters:
        v = conditions.get(p.name)
        if isinstance(p, FixedParameter):
            if v != p.value:
                return False  # measured at another setting the model cannot tell apart
        elif isinstance(p, FloatParameter | IntParameter):
            if isinstance(v, bool) or not isinstance(v, int | float):
                return False
            low, high, x = float(p.low), float(p.high), float(v)
            if isinstance(p, FloatParameter) and p.log:
                if x <= 0:
                    return False
                low, high, x = math.log10(low), math.log10(high), math.log10(x)
            slack = OUTSIDE_MARGIN * (high - low)
            if not low - slack <= x <= high + slack:
                return False
    return True


# Sums of declared costs (a third of an hour each) are not exact: a budget of 110 h is spent at 109.9999999 h.
HOURS_TOLERANCE = 1e-6


def of_target(obs: Sequence[Observation]) -> list[Observation]:
    """The observations of the target itself (all of them without fidelities): what stop rules, the best
    result and improvements are judged by; a proxy's value is not the objective."""
    return [o for o in obs if o.fidelity is None]


def source_of(problem: Problem, fidelity: str | None) -> Fidelity:
    """The declared source a trial's `fidelity` names: the target when it names none (a planner that does
    not choose, a trial told by hand). Only for a problem with fidelities."""
    return next((f for f in problem.fidelities if f.name == fidelity), None) or next(
        f for f in problem.fidelities if f.target)


def cost_hours(problem: Problem, trials: Sequence[TrialRecord], states: Sequence[str] = RESULT_STATES) -> float:
    """Instrument time of the campaign's own trials in `states`, each at its source's declared cost; 0
    without fidelities."""
    if not problem.fidelities:
        return 0.0
    return sum(source_of(problem, t.fidelity).cost for t in trials if t.state in states and t.origin != WARM_START)


@dataclass(frozen=True)
class SourceSpend:
    """One source's share of a campaign (its own trials, not imported ones), at the declared cost."""

    fidelity: Fidelity
    results: int  # measured or failed
    failed: int
    in_flight: int
    hours: float  # results x cost


def spend_by_source(problem: Problem, trials: Sequence[TrialRecord]) -> list[SourceSpend]:
    """What each source of a problem with fidelities has cost so far; empty without fidelities."""
    out = []
    for f in problem.fidelities:
        mine = [t for t in trials if source_of(problem, t.fidelity).name == f.name and t.origin != WARM_START]
        results = [t for t in mine if t.state in RESULT_STATES]
        out.append(SourceSpend(f, len(results), sum(t.state == "failed" for t in results),
                               sum(t.state in IN_FLIGHT_STATES for t in mine), len(results) * f.cost))
    return out


def pending(trials: Sequence[TrialRecord]) -> list[Conditions]:
    return [dict(t.conditions) for t in trials if t.state in IN_FLIGHT_STATES]


def pending_fidelities(problem: Problem, trials: Sequence[TrialRecord]) -> list[str | None]:
    """The source measuring each of `pending(trials)` (None: the target); empty without fidelities."""
    if not problem.fidelities:
        return []
    proxies = {f.name for f in problem.fidelities if not f.target}
    return [t.fidelity if t.fidelity in proxies else None for t in trials if t.state in IN_FLIGHT_STATES]


def n_results(trials: Sequence[TrialRecord]) -> int:
    """Results that count against the trial budget: the campaign's own, not earlier ones it imported."""
    return sum(t.state in RESULT_STATES and t.origin != WARM_START for t in trials)


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
        if o.failed or o.fidelity is not None or not _feasible(problem, o):
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
    good = [o for o in of_target(obs) if not o.failed and _feasible(problem, o)]
    if not good:
        return None
    first = problem.objectives[0]
    return (max if first.maximize else min)(good, key=lambda o: o.values[first.name])


def target_reached(problem: Problem, obs: Sequence[Observation]) -> str | None:
    """The name of an objective whose target a feasible observation reached, if any."""
    for o in of_target(obs):
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
    imported: Sequence[bool] = (),
    spent_hours: float = 0.0,
    max_hours: float | None = None,
) -> Halt | None:
    """The protocol's stop rule that fires now, or None. `imported` marks the observations that are earlier
    results (`imported_flags`): they set the bar a trial must beat to count as an improvement, but only
    the campaign's own trials can reach the target or fill the no-improvement window (a literature value
    at the target is no sample of ours, and importing 30 rows must not end a campaign that just began)."""
    earlier = list(imported) or [False] * len(obs)
    pairs = [(o, e) for o, e in zip(obs, earlier, strict=True) if o.fidelity is None]  # judged by the target
    obs, earlier = [o for o, _ in pairs], [e for _, e in pairs]
    own = [o for o, e in zip(obs, earlier, strict=True) if not e]
    if results >= max_trials:
        return stopped(HaltKind.BUDGET, f"budget: {results} of {max_trials} trials done")
    if max_hours is not None and spent_hours >= max_hours - HOURS_TOLERANCE:
        return stopped(HaltKind.BUDGET, f"budget: {spent_hours:.1f} h of {max_hours:.1f} h instrument time spent")
    if max_wall_time_s is not None and elapsed_s >= max_wall_time_s:
        return stopped(HaltKind.WALL_TIME, f"wall time: {elapsed_s / 3600:.2f} h of {max_wall_time_s / 3600:.2f} h used")
    if stop_on_target:
        name = target_reached(problem, own)
        if name is not None:
            return stopped(HaltKind.TARGET, f"target reached: {name}")
    if no_improvement:
        every = improvement_flags(problem, obs)
        flags = [f for f, e in zip(every, earlier, strict=True) if not e]
        if any(every) and len(flags) >= no_improvement and not any(flags[-no_improvement:]):
            return stopped(HaltKind.NO_IMPROVEMENT, f"no improvement in the last {no_improvement} trials")
    return None
