"""Raw BoTorch as its tutorials use it: SingleTaskGP (BoTorch's default priors and Standardize), fitted
by `fit_gpytorch_mll`, qLogNoisyExpectedImprovement, `optimize_acqf` with 10 restarts and 512 raw samples.

Inputs go to the unit cube (log parameters in log space), choices one-hot (optimized per combination with
`optimize_acqf_mixed`), ints relaxed and rounded to their grid. A failed sample is dropped: BoTorch has no
notion of one. Pools are searched with `optimize_acqf_discrete` over the unrevealed rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from benchmarks.peers.problems import BenchProblem, Param, Point

NUM_RESTARTS = 10
RAW_SAMPLES = 512


class UnitEncoding:
    """Points <-> unit-cube columns: one per float/int parameter, one-hot columns per choice."""

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = list(params)
        self.columns: dict[str, list[int]] = {}
        width = 0
        for p in self.params:
            n = len(p.values) if p.kind == "choice" else 1
            self.columns[p.name] = list(range(width, width + n))
            width += n
        self.width = width

    def encode(self, points: Sequence[Point]) -> torch.Tensor:
        X = torch.zeros(len(points), self.width, dtype=torch.double)
        for i, x in enumerate(points):
            for p in self.params:
                cols = self.columns[p.name]
                if p.kind == "choice":
                    X[i, cols[p.values.index(str(x[p.name]))]] = 1.0
                elif p.log:
                    X[i, cols[0]] = (math.log(float(x[p.name])) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
                else:
                    X[i, cols[0]] = (float(x[p.name]) - p.low) / ((p.high - p.low) or 1.0)
        return X

    def decode(self, X: torch.Tensor) -> list[Point]:
        points: list[Point] = []
        for row in X.tolist():
            x: Point = {}
            for p in self.params:
                cols = self.columns[p.name]
                if p.kind == "choice":
                    x[p.name] = p.values[int(np.argmax([row[c] for c in cols]))]
                    continue
                u = min(max(row[cols[0]], 0.0), 1.0)
                value = math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low))) if p.log else p.low + u * (p.high - p.low)
                if p.kind == "int":
                    grid = p.grid()
                    value = grid[int(np.argmin([abs(g - value) for g in grid]))]
                x[p.name] = value
            points.append(x)
        return points


class BotorchTool:
    name = "botorch"

    def start(self, problem: BenchProblem, seed: int) -> None:
        self.problem = problem
        self.seed = seed
        self.encoding = UnitEncoding(problem.params)
        self.points: list[Point] = []
        self.values: list[float] = []

    def tell(self, points: Sequence[Point], values: Sequence[float | None]) -> None:
        for x, y in zip(points, values, strict=True):
            if y is not None:
                self.points.append(x)
                self.values.append(y if self.problem.maximize else -y)

    def ask(self, q: int, unrevealed: pd.DataFrame | None) -> list[Point]:
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.optim import optimize_acqf, optimize_acqf_discrete, optimize_acqf_mixed
        from gpytorch.mlls import ExactMarginalLogLikelihood

        torch.manual_seed(1_000_003 * self.seed + len(self.values))
        X = self.encoding.encode(self.points)
        Y = torch.tensor(self.values, dtype=torch.double).unsqueeze(-1)
        model = SingleTaskGP(X, Y)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acq = qLogNoisyExpectedImprovement(model, X_baseline=X, prune_baseline=True)
        if unrevealed is not None:
            records = unrevealed.to_dict("records")
            choices = self.encoding.encode(records)  # type: ignore[arg-type]
            chosen, _ = optimize_acqf_discrete(acq, q=min(q, len(records)), choices=choices, unique=True)
            picked: list[int] = []
            for row in chosen:
                matches = torch.nonzero((choices == row).all(dim=-1)).flatten().tolist()
                picked.append(next(i for i in matches if i not in picked))
            return [dict(records[i]) for i in picked]  # type: ignore[misc]
        bounds = torch.stack([torch.zeros(self.encoding.width), torch.ones(self.encoding.width)]).double()
        constraints = self._constraints()
        choice_params = [p for p in self.problem.params if p.kind == "choice"]
        if choice_params:
            fixed = []
            for combination in itertools.product(*(p.values for p in choice_params)):
                features: dict[int, float] = {}
                for p, value in zip(choice_params, combination, strict=True):
                    for column, v in zip(self.encoding.columns[p.name], p.values, strict=True):
                        features[column] = 1.0 if v == value else 0.0
                fixed.append(features)
            candidates, _ = optimize_acqf_mixed(
                acq, bounds=bounds, q=q, num_restarts=NUM_RESTARTS, raw_samples=RAW_SAMPLES,
                fixed_features_list=fixed, inequality_constraints=constraints,
            )
        else:
            candidates, _ = optimize_acqf(
                acq, bounds=bounds, q=q, num_restarts=NUM_RESTARTS, raw_samples=RAW_SAMPLES,
                inequality_constraints=constraints,
            )
        return self.encoding.decode(candidates.detach())

    def _constraints(self) -> list[tuple[torch.Tensor, torch.Tensor, float]] | None:
        """The linear constraints in unit-cube columns, as BoTorch's `sum(c_i x_i) >= rhs`."""
        out = []
        for c in self.problem.constraints:
            indices, coefficients, rhs = [], [], -c.bound
            for name, coefficient in c.coefficients.items():
                p = next(p for p in self.problem.params if p.name == name)
                indices.append(self.encoding.columns[name][0])
                coefficients.append(-coefficient * (p.high - p.low))
                rhs += coefficient * p.low
            out.append((torch.tensor(indices), torch.tensor(coefficients, dtype=torch.double), rhs))
        return out or None
