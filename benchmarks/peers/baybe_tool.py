"""BayBE with its default recommender (random until data exists, then BoTorch with its defaults), as
its quick start sets a campaign up; pools are discrete search spaces built from the table.

BayBE takes no failed measurements: a failed sample is told as the worst value measured so far (the
usual workaround, and what closedloop's `pad_failures` does inside its model).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import pandas as pd

from benchmarks.peers.problems import BenchProblem, Point


class BaybeTool:
    name = "baybe"

    def start(self, problem: BenchProblem, seed: int) -> None:
        from baybe import Campaign
        from baybe.constraints import ContinuousLinearConstraint
        from baybe.parameters import (
            CategoricalParameter,
            NumericalContinuousParameter,
            NumericalDiscreteParameter,
        )
        from baybe.searchspace import SearchSpace
        from baybe.targets import NumericalTarget
        from baybe.utils.random import set_random_seed

        logging.getLogger("baybe").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore")
        set_random_seed(seed)
        self.problem = problem
        parameters: list[object] = []
        for p in problem.params:
            if problem.pool is not None:
                values = sorted(set(problem.pool.table[p.name].astype(float)))
                parameters.append(NumericalDiscreteParameter(name=p.name, values=values))
            elif p.kind == "choice":
                parameters.append(CategoricalParameter(name=p.name, values=list(p.values)))
            elif p.kind == "int":
                parameters.append(NumericalDiscreteParameter(name=p.name, values=[float(v) for v in p.grid()]))
            else:
                parameters.append(NumericalContinuousParameter(name=p.name, bounds=(p.low, p.high)))
        if problem.pool is not None:
            space = SearchSpace.from_dataframe(problem.pool.table[list(problem.pool.inputs)].astype(float),
                                               parameters=parameters)  # type: ignore[arg-type]
        else:
            constraints = [
                ContinuousLinearConstraint(parameters=list(c.coefficients), operator="<=",
                                           coefficients=list(c.coefficients.values()), rhs=c.bound)
                for c in problem.constraints
            ]
            space = SearchSpace.from_product(parameters=parameters, constraints=constraints or None)  # type: ignore[arg-type]
        target = NumericalTarget(name="y", minimize=not problem.maximize)
        # A pool row is measured once; a continuous space cannot be told so (BayBE refuses the flag there).
        flags = {"allow_recommending_already_measured": False} if problem.pool is not None else {}
        self.campaign = Campaign(searchspace=space, objective=target.to_objective(), **flags)
        self.measured: list[float] = []

    def tell(self, points: Sequence[Point], values: Sequence[float | None]) -> None:
        rows = []
        for x, y in zip(points, values, strict=True):
            if y is None:
                if not self.measured:
                    continue  # nothing to pad with yet; BayBE learns nothing from it
                y = min(self.measured) if self.problem.maximize else max(self.measured)
            else:
                self.measured.append(y)
            rows.append({**x, "y": y})
        if rows:
            self.campaign.add_measurements(pd.DataFrame(rows), numerical_measurements_must_be_within_tolerance=False)

    def ask(self, q: int, unrevealed: pd.DataFrame | None) -> list[Point]:
        frame = self.campaign.recommend(batch_size=q)
        points: list[Point] = []
        for record in frame.to_dict("records"):
            x: Point = {}
            for p in self.problem.params:
                v = record[p.name]
                x[p.name] = str(v) if p.kind == "choice" else (int(round(float(v))) if p.kind == "int" else float(v))
            points.append(x)
        return points
