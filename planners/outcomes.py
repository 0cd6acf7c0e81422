"""From observations to training data: which quantities are modelled, in which units, on which rows.

Every modelled quantity is put on a scale where larger is better for objectives (negated when
minimized) and log10 where the objective spans decades. Failed samples become a 0/1 feasibility
outcome, so the planner learns where the process fails instead of forgetting those points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from closedloop.planners.encoding import DTYPE, SpaceEncoding, check_space
from closedloop.planners.space import Observation, Problem
from closedloop.planners.warping import PowerWarp

FEASIBILITY = "__feasible__"  # the modelled 0/1 outcome: 1 = the sample worked


class NoUsableData(Exception):
    """The observations cannot support a model (e.g. every sample failed); the caller falls back."""


@dataclass(frozen=True)
class Outcome:
    """A modelled quantity: model value = warp(sign * (log10(y) if log else y)), warp increasing or none."""

    name: str
    sign: float = 1.0
    log: bool = False
    warp: PowerWarp | None = None

    def to_model(self, y: float) -> float:
        value = self.sign * (math.log10(y) if self.log else y)
        return value if self.warp is None else self.warp(value)

    def usable(self, y: float) -> bool:
        return math.isfinite(y) and (y > 0 or not self.log)

    def bound_to_model(self, op: str, bound: float) -> tuple[str, float] | None:
        """`y op bound` as `model op' bound'`; None when it always holds (a log quantity >= a non-positive bound)."""
        if self.log and bound <= 0:
            if op == ">=":
                return None
            raise ValueError(
                f"outcome constraint {self.name} <= {bound} can never hold: {self.name} is log-scaled (> 0)"
            )
        b = self.to_model(bound)
        flipped = {"<=": ">=", ">=": "<="}[op]
        return (op, b) if self.sign > 0 else (flipped, b)


def modelled_outcomes(problem: Problem) -> list[Outcome]:
    """Objectives first (in the problem's order), then quantities that only appear in outcome constraints."""
    outcomes = [Outcome(o.name, 1.0 if o.maximize else -1.0, o.log) for o in problem.objectives]
    names = {o.name for o in outcomes}
    for c in problem.outcome_constraints:
        if c.name not in names:
            outcomes.append(Outcome(c.name))
            names.add(c.name)
    return outcomes


def check_problem(problem: Problem) -> None:
    """Raise ValueError naming the first thing in `problem` a model-based planner cannot work with."""
    check_space(problem.space)
    if not problem.objectives:
        raise ValueError("the problem has no objective; declare at least one under `objectives`")
    names = [o.name for o in problem.objectives]
    if len(set(names)) != len(names):
        raise ValueError(f"objectives are declared twice: {names}")
    if FEASIBILITY in names or any(c.name == FEASIBILITY for c in problem.outcome_constraints):
        raise ValueError(
            f"{FEASIBILITY!r} is reserved for the planner's feasibility model; rename that quantity"
        )
    outcomes = {o.name: o for o in modelled_outcomes(problem)}
    for c in problem.outcome_constraints:
        if c.op not in ("<=", ">="):
            raise ValueError(f"outcome constraint on {c.name!r}: operator must be <= or >=, got {c.op!r}")
        if not math.isfinite(c.bound):
            raise ValueError(
                f"outcome constraint on {c.name!r}: bound must be a finite number, got {c.bound}"
            )
        outcomes[c.name].bound_to_model(c.op, c.bound)
    if problem.reference_point is not None:
        missing = set(names) - set(problem.reference_point)
        extra = set(problem.reference_point) - set(names)
        if missing or extra:
            raise ValueError(
                f"reference point must give exactly the objectives {names}: missing {sorted(missing)}, "
                f"unknown {sorted(extra)}"
            )
        for o in problem.objectives:
            value = problem.reference_point[o.name]
            if not math.isfinite(value) or (o.log and value <= 0):
                raise ValueError(
                    f"reference point for {o.name!r} must be finite (and > 0 when log-scaled), got {value}"
                )


@dataclass
class TrainingData:
    outcomes: list[Outcome]  # model outputs, in order; the feasibility outcome last when present
    X: list[Tensor]  # per outcome: n_i x d, in the unit cube
    Y: list[Tensor]  # per outcome: n_i x 1, in model units
    baseline: Tensor  # points that produced at least one objective value (for noisy EI/EHVI)
    objective_Y: Tensor  # model-unit objectives of points that have them all (for the reference point)
    notes: list[str] = field(default_factory=list)  # what was left out and why


def _as_float(value: object) -> float:
    """A measured value as a float; anything that is not a number becomes NaN and is left out."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def build_training_data(
    problem: Problem,
    encoding: SpaceEncoding,
    observations: Sequence[Observation],
    warp_objectives: bool = False,
    pad_failures: bool = False,
) -> TrainingData:
    """Model-unit training data; with `warp_objectives`, each objective is power-warped (see
    `planners.warping`) with an exponent fitted to its observed values."""
    notes: list[str] = []
    X_all = encoding.encode([o.conditions for o in observations])
    finite_x = torch.isfinite(X_all).all(dim=-1).tolist()
    if not all(finite_x):
        notes.append(f"{finite_x.count(False)} observation(s) with non-finite conditions left out")
    rows = [i for i, ok in enumerate(finite_x) if ok]
    n_objectives = len(problem.objectives)
    outcomes, Xs, Ys = [], [], []
    for k, outcome in enumerate(modelled_outcomes(problem)):
        present = [i for i in rows if not observations[i].failed and outcome.name in observations[i].values]
        usable = [i for i in present if outcome.usable(_as_float(observations[i].values[outcome.name]))]
        if len(usable) < len(present):
            why = "non-finite or, being log-scaled, non-positive" if outcome.log else "non-finite"
            notes.append(f"{len(present) - len(usable)} value(s) of {outcome.name!r} {why}, left out")
        if not usable:
            if k < n_objectives:
                raise NoUsableData(
                    f"no successful observation with a usable value of objective {outcome.name!r}"
                )
            notes.append(f"no usable value of {outcome.name!r}; its outcome constraint is ignored")
            continue
        if warp_objectives and k < n_objectives:
            outcome = _warped(outcome, [_as_float(observations[i].values[outcome.name]) for i in usable])
            if outcome.warp is not None:
                notes.append(f"objective {outcome.name!r} power-warped (Yeo-Johnson lambda {outcome.warp.lmbda:.3g})")
        outcomes.append(outcome)
        y = [outcome.to_model(_as_float(observations[i].values[outcome.name])) for i in usable]
        padded = [i for i in rows if observations[i].failed] if pad_failures and k < n_objectives else []
        Xs.append(X_all[usable + padded])
        Ys.append(torch.tensor([[v] for v in y + [min(y)] * len(padded)], dtype=DTYPE))
    failed = [observations[i].failed for i in rows]
    if any(failed):
        outcomes.append(Outcome(FEASIBILITY))
        Xs.append(X_all[rows])
        Ys.append(torch.tensor([[0.0 if f else 1.0] for f in failed], dtype=DTYPE))
    objective_names = [o.name for o in problem.objectives]
    with_any = [
        i
        for i in rows
        if not observations[i].failed and any(n in observations[i].values for n in objective_names)
    ]
    objective_outcomes = outcomes[:n_objectives]
    complete = [
        i
        for i in rows
        if not observations[i].failed
        and all(
            o.name in observations[i].values and o.usable(_as_float(observations[i].values[o.name]))
            for o in objective_outcomes
        )
    ]
    objective_Y = torch.tensor(
        [
            [o.to_model(_as_float(observations[i].values[o.name])) for o in objective_outcomes]
            for i in complete
        ],
        dtype=DTYPE,
    ).reshape(len(complete), n_objectives)
    return TrainingData(outcomes, Xs, Ys, X_all[with_any], objective_Y, notes)


def _warped(outcome: Outcome, values: list[float]) -> Outcome:
    return replace(outcome, warp=PowerWarp.fit([outcome.to_model(y) for y in values]))
