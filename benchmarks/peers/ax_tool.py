"""Ax through its Client API with its default generation strategy ("fast": center + Sobol, then a
BoTorch model), told the shared initial design as attached trials so it goes straight to its model.

Ax has no pool mode: its point is snapped to the nearest unrevealed row (columns scaled to [0, 1]), the
generated trial is abandoned and the row is attached as a trial of its own. A failed sample is
`mark_trial_failed`, as Ax's docs say.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmarks.peers.problems import BenchProblem, Point, plain_point
from benchmarks.peers.tools import nearest_rows


class AxTool:
    name = "ax"

    def start(self, problem: BenchProblem, seed: int) -> None:
        from ax.api.client import Client
        from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig
        from ax.utils.common.logger import set_ax_logger_levels

        set_ax_logger_levels(logging.WARNING)
        self.problem = problem
        self.client = Client(random_seed=seed)
        parameters: list[RangeParameterConfig | ChoiceParameterConfig] = []
        for p in problem.params:
            if p.kind == "choice":
                parameters.append(ChoiceParameterConfig(name=p.name, values=list(p.values), parameter_type="str",
                                                        is_ordered=False))
            elif p.kind == "int" and p.step != 1:
                parameters.append(ChoiceParameterConfig(name=p.name, values=p.grid(), parameter_type="int",
                                                        is_ordered=True))
            else:
                parameters.append(RangeParameterConfig(
                    name=p.name, bounds=(p.low, p.high), parameter_type="int" if p.kind == "int" else "float",
                    scaling="log" if p.log else "linear"))
        constraints = [
            " + ".join(f"{c:g} * {n}" if c != 1 else n for n, c in k.coefficients.items()) + f" <= {k.bound:g}"
            for k in problem.constraints
        ]
        self.client.configure_experiment(parameters=parameters, parameter_constraints=constraints or None)
        self.client.configure_optimization(objective="y" if problem.maximize else "-y")
        self.client.configure_generation_strategy(initialization_budget=problem.n_initial)

    def tell(self, points: Sequence[Point], values: Sequence[float | None]) -> None:
        for x, y in zip(points, values, strict=True):
            index = self._pending.pop(_key(x), None) if hasattr(self, "_pending") else None
            if index is None:
                index = self.client.attach_trial(parameters=self._typed(x))
            if y is None:
                self.client.mark_trial_failed(trial_index=index)
            else:
                self.client.complete_trial(trial_index=index, raw_data={"y": y})

    def _typed(self, x: Point) -> dict[str, float | int | str]:
        """A point in the types Ax declared (a pool's int cell is a float to a float range)."""
        kinds = {p.name: p.kind for p in self.problem.params}
        return {k: float(v) if kinds.get(k) == "float" else v for k, v in x.items()}

    def ask(self, q: int, unrevealed: pd.DataFrame | None) -> list[Point]:
        trials = self.client.get_next_trials(max_trials=q)
        self._pending = getattr(self, "_pending", {})
        points = [dict(parameters) for parameters in trials.values()]
        if unrevealed is None:
            for index, x in zip(trials, points, strict=True):
                self._pending[_key(x)] = index
            return points  # type: ignore[return-value]
        for index in trials:
            self.client.mark_trial_abandoned(trial_index=index)
        columns = list(unrevealed.columns)
        targets = np.array([[float(x[c]) for c in columns] for x in points])  # type: ignore[arg-type]
        rows = nearest_rows(targets, unrevealed.to_numpy(dtype=float), q)
        records = unrevealed.iloc[rows].to_dict("records")
        return [plain_point(r) for r in records]


def _key(x: Point) -> tuple[object, ...]:
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in x.items()))
