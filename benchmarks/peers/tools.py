"""The tools under comparison, each behind the same three verbs.

`start(problem, seed)` sets a fresh run up; `tell(points, values)` reports measurements (None: the sample
failed); `ask(q)` returns the next q points. For pool problems a point must be an unrevealed row of the
pool, given as its input columns; `unrevealed` is the pool's rows not yet measured, in table order.
Each adapter uses its tool the way its documentation's quick start does (defaults everywhere), and says
where the tool had to be helped (a failed sample, a pool it cannot search).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from benchmarks.peers.problems import BenchProblem, Point, plain_point


class Tool(Protocol):
    name: str

    def start(self, problem: BenchProblem, seed: int) -> None: ...

    def tell(self, points: Sequence[Point], values: Sequence[float | None]) -> None: ...

    def ask(self, q: int, unrevealed: pd.DataFrame | None) -> list[Point]: ...


class ClosedloopTool:
    """closedloop's botorch planner with its defaults (the initial design is the shared one)."""

    name = "closedloop"

    def __init__(self, options: dict[str, object] | None = None, label: str = "closedloop") -> None:
        self.options = options or {}
        self.name = label

    def start(self, problem: BenchProblem, seed: int) -> None:
        from closedloop.planners.registry import make_planner

        self.bench = problem
        self.seed = seed
        self.problem = closedloop_problem(problem)
        self.planner = make_planner("botorch", n_initial=problem.n_initial, **self.options)
        self.observations: list[object] = []

    def tell(self, points: Sequence[Point], values: Sequence[float | None]) -> None:
        from closedloop.planners.space import Observation

        for x, y in zip(points, values, strict=True):
            self.observations.append(
                Observation(dict(x), {}, True) if y is None else Observation(dict(x), {"y": y})
            )

    def ask(self, q: int, unrevealed: pd.DataFrame | None) -> list[Point]:
        step = len(self.observations)
        proposals = self.planner.propose(
            self.problem, self.observations, [], q, seed=1_000_003 * self.seed + step,  # type: ignore[arg-type]
            candidates=unrevealed,
        )
        return [dict(p.conditions) for p in proposals]


def closedloop_problem(problem: BenchProblem) -> object:
    from closedloop.planners.space import (
        ChoiceParameter,
        FloatParameter,
        IntParameter,
        LinearConstraint,
        Objective,
        Parameter,
        Problem,
        SearchSpace,
    )

    params: list[Parameter] = []
    for p in problem.params:
        if p.kind == "choice":
            params.append(ChoiceParameter(p.name, p.values))
        elif p.kind == "int":
            params.append(IntParameter(p.name, int(p.low), int(p.high), p.step))
        else:
            params.append(FloatParameter(p.name, p.low, p.high, p.log))
    constraints = tuple(
        LinearConstraint(dict(c.coefficients), c.bound, "<=", " + ".join(c.coefficients) + f" <= {c.bound}")
        for c in problem.constraints
    )
    objective = Objective("y", maximize=problem.maximize, log=problem.log_objective)
    return Problem(SearchSpace(tuple(params), constraints), (objective,))


class RandomTool:
    """Uniform random points (rejecting those that break a constraint) or random unrevealed rows."""

    name = "random"

    def start(self, problem: BenchProblem, seed: int) -> None:
        self.problem = problem
        self.rng = np.random.default_rng([seed, 99])

    def tell(self, points: Sequence[Point], values: Sequence[float | None]) -> None:
        pass  # random sampling learns nothing

    def ask(self, q: int, unrevealed: pd.DataFrame | None) -> list[Point]:
        if unrevealed is not None:
            rows = self.rng.choice(len(unrevealed), size=min(q, len(unrevealed)), replace=False)
            return [plain_point(r) for r in unrevealed.iloc[rows].to_dict("records")]
        points: list[Point] = []
        while len(points) < q:
            point = self.problem.from_unit(self.rng.random(self.problem.dims))
            if all(c.holds(point) for c in self.problem.constraints):
                points.append(point)
        return points


def nearest_rows(targets: np.ndarray, rows: np.ndarray, q: int) -> list[int]:
    """Distinct row indices nearest (Euclidean, columns scaled to [0, 1] over `rows`) to each target, in
    order: how a tool that searches a box is made to pick from a pool."""
    low, span = rows.min(axis=0), np.ptp(rows, axis=0)
    span[span == 0] = 1.0
    scaled = (rows - low) / span
    picked: list[int] = []
    for t in targets[:q]:
        distance = np.sum(((t - low) / span - scaled) ** 2, axis=1)
        distance[picked] = np.inf
        picked.append(int(np.argmin(distance)))
    return picked


def registry() -> dict[str, Callable[[], Tool]]:
    from benchmarks.peers.ax_tool import AxTool
    from benchmarks.peers.baybe_tool import BaybeTool
    from benchmarks.peers.botorch_tool import BotorchTool

    return {
        "closedloop": ClosedloopTool,
        "ax": AxTool,
        "baybe": BaybeTool,
        "botorch": BotorchTool,
        "random": RandomTool,
    }
