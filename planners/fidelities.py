"""Several sources of one objective (`Problem.fidelities`): their checks, and each source's training data.

The multi-fidelity planner models every source's measured quantity as one task of a multi-task GP. Each
task's values are put in model units the way a single objective's are (`planners.outcomes`: log10 where
declared, negated for the target when it is minimized, failed samples padded at the worst value when
asked) and then standardized per task, so a TRMC signal of 1e-3 cm^2/(V s) and a PCE of 4 % share one
model whose task covariance says how alike the two vary over the space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from closedloop.planners.encoding import DTYPE, SpaceEncoding
from closedloop.planners.outcomes import NoUsableData, build_training_data
from closedloop.planners.space import Fidelity, Objective, Observation, Problem


@dataclass(frozen=True)
class Sources:
    """A problem's fidelities, checked: the target and the others (its proxies), in declared order."""

    target: Fidelity
    proxies: tuple[Fidelity, ...]

    @property
    def all(self) -> tuple[Fidelity, ...]:
        """Target first: task 0 of the multi-task model, the task whose correlations are measured."""
        return (self.target, *self.proxies)

    @property
    def cheapest(self) -> Fidelity:
        return min(self.proxies, key=lambda f: f.cost)

    def of(self, observation: Observation) -> Fidelity:
        """The source of an observation; no fidelity named means the target."""
        return self.named(observation.fidelity, f"an observation (at {observation.conditions})")

    def named(self, name: str | None, what: str = "a pending point") -> Fidelity:
        """The source called `name`; None means the target."""
        if name is None:
            return self.target
        for fidelity in self.all:
            if fidelity.name == name:
                return fidelity
        raise ValueError(
            f"{what} has fidelity {name!r}, which the problem does not declare; declared: {[f.name for f in self.all]}"
        )


def check_fidelities(problem: Problem) -> Sources:
    """Raise ValueError naming the first fidelity declaration the multi-fidelity planner cannot work with."""
    if not problem.fidelities:
        raise ValueError(
            "the multifidelity planner needs the problem's fidelities (a cheap proxy source and the target "
            "source of the objective, with their costs); this problem declares none: use the botorch planner"
        )
    if len(problem.objectives) != 1:
        raise ValueError(
            f"the multifidelity planner optimizes one objective; this problem has {len(problem.objectives)}"
        )
    if problem.outcome_constraints:
        raise ValueError("the multifidelity planner does not take outcome constraints yet; drop them or use botorch")
    names = [f.name for f in problem.fidelities]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"fidelity names must be distinct, non-empty strings, got {names}")
    for f in problem.fidelities:
        if isinstance(f.cost, bool) or not isinstance(f.cost, int | float) or not math.isfinite(f.cost) or f.cost <= 0:
            raise ValueError(f"fidelity {f.name!r}: cost must be a positive number of hours, got {f.cost!r}")
        if not isinstance(f.measures, str) or not f.measures:
            raise ValueError(f"fidelity {f.name!r}: `measures` must name the quantity it measures, got {f.measures!r}")
    targets = [f for f in problem.fidelities if f.target]
    if len(targets) != 1:
        raise ValueError(
            f"exactly one fidelity must be the target (the one that measures the objective), got "
            f"{len(targets)}: {[f.name for f in targets]}"
        )
    target, objective = targets[0], problem.objectives[0]
    if target.measures != objective.name:
        raise ValueError(
            f"target fidelity {target.name!r} measures {target.measures!r}, but the objective is {objective.name!r}"
        )
    if target.log != objective.log:
        raise ValueError(
            f"target fidelity {target.name!r} says log={target.log} but objective {objective.name!r} says "
            f"log={objective.log}; the two are one quantity, declare them alike"
        )
    proxies = tuple(f for f in problem.fidelities if not f.target)
    if not proxies:
        raise ValueError(
            f"only the target fidelity {target.name!r} is declared; add a cheaper source or use the botorch planner"
        )
    return Sources(target, proxies)


@dataclass(frozen=True)
class TaskData:
    """One source's training rows: unit-cube inputs, standardized model-unit values (`mean`, `std` undo it)."""

    fidelity: Fidelity
    X: Tensor  # n x d
    Y: Tensor  # n x 1, standardized within the task
    mean: float
    std: float


def task_training_data(
    problem: Problem,
    sources: Sources,
    encoding: SpaceEncoding,
    observations: Sequence[Observation],
    warp: bool,
    pad_failures: bool,
) -> tuple[list[TaskData], list[str]]:
    """Per-source training data, target first; a proxy without a usable value yet is left out (and noted).

    Raises NoUsableData when the target has no usable value: the task correlation cannot be learned then."""
    tasks: list[TaskData] = []
    notes: list[str] = []
    for fidelity in sources.all:
        own = [o for o in observations if sources.of(o) is fidelity]
        # A proxy is modelled larger-is-better as measured: a positive task correlation means it tracks the target.
        objective = problem.objectives[0] if fidelity.target else Objective(fidelity.measures, True, fidelity.log)
        try:
            data = build_training_data(Problem(problem.space, (objective,)), encoding, own, warp, pad_failures)
        except NoUsableData as error:
            if fidelity.target:
                raise NoUsableData(f"{fidelity.name}: {error}") from None
            notes.append(f"{fidelity.name}: no usable value of {fidelity.measures!r} yet; left out of the model")
            continue
        notes += [f"{fidelity.name}: {note}" for note in data.notes]
        Y = data.Y[0]
        mean = float(Y.mean())
        std = float(Y.std()) if Y.shape[0] > 1 else 1.0
        std = std if std > 1e-9 else 1.0
        tasks.append(TaskData(fidelity, data.X[0], (Y - mean) / std, mean, std))
    return tasks, notes


def failure_labels(encoding: SpaceEncoding, observations: Sequence[Observation]) -> tuple[Tensor, Tensor] | None:
    """Every source's samples as (X, 1 = worked / 0 = failed) for the feasibility classifier; None if none failed.

    A film that fails makes no device either, and a device can fail where its film worked: both say the
    process may fail at those conditions, so all sources' outcomes train one classifier."""
    if not any(o.failed for o in observations):
        return None
    X = encoding.encode([o.conditions for o in observations])
    finite = torch.isfinite(X).all(dim=-1)
    labels = torch.tensor([[0.0 if o.failed else 1.0] for o in observations], dtype=DTYPE)
    return X[finite], labels[finite]


def hours_since_target(sources: Sources, observations: Sequence[Observation],
                       pending: Sequence[Fidelity] = ()) -> float:
    """Instrument-hours spent on proxies since the last target result: those measured since (observations
    in time order) and those in flight (`pending`, the source of each point being measured)."""
    hours = sum(f.cost for f in pending if not f.target)
    for observation in reversed(observations):
        fidelity = sources.of(observation)
        if fidelity.target:
            break
        hours += fidelity.cost
    return hours
