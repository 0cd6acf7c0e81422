"""The problems every tool is run on, described once in plain terms each tool's adapter translates.

A problem is a box of float/int/choice parameters (optionally linear constraints over floats) or a pool
of table rows, a noise-free truth, and how a measurement scatters around it. Everything a run draws is a
function of (problem, seed, evaluation index), so every tool sees the same initial design and the same
noise draw for its i-th evaluation: the comparison is paired seed by seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import qmc

Point = dict[str, float | int | str]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 1.0
    values: tuple[str, ...] = ()
    log: bool = False
    step: int = 1  # ints: allowed values low, low + step, ... <= high

    def grid(self) -> list[int]:
        return list(range(int(self.low), int(self.high) + 1, self.step))


@dataclass(frozen=True)
class LinearConstraint:
    """sum(coefficients[name] * x[name]) <= bound."""

    coefficients: Mapping[str, float]
    bound: float

    def holds(self, x: Mapping[str, float | int | str]) -> bool:
        return sum(c * float(x[n]) for n, c in self.coefficients.items()) <= self.bound + 1e-9


@dataclass(frozen=True)
class Pool:
    """A table of candidates: `inputs` columns are the point, `objective` the measured value."""

    table: pd.DataFrame
    inputs: tuple[str, ...]
    objective: str

    def key(self, x: Mapping[str, float | int | str]) -> tuple[object, ...]:
        return tuple(_key_value(x[c]) for c in self.inputs)

    def rows_by_key(self) -> dict[tuple[object, ...], int]:
        records = self.table[list(self.inputs)].to_dict("records")
        return {self.key(r): i for i, r in enumerate(records)}


def _key_value(v: object) -> object:
    return round(float(v), 9) if isinstance(v, int | float | np.integer | np.floating) else str(v)


# How one noise draw z ~ N(0, 1) turns the truth into a measurement.
Noise = Callable[[float, float], float]


def additive(sd: float) -> Noise:
    return lambda truth, z: truth + sd * z


def lognormal(relative_sd: float) -> Noise:
    """Multiplicative film-to-film scatter with mean 1 (the TRMC station's)."""
    sigma = math.sqrt(math.log(1.0 + relative_sd**2))
    return lambda truth, z: truth * math.exp(sigma * z - sigma**2 / 2)


@dataclass
class BenchProblem:
    """One benchmark problem. `truth` returns the noise-free value, or None where a sample fails."""

    name: str
    description: str
    params: tuple[Param, ...]
    maximize: bool
    truth: Callable[[Mapping[str, float | int | str]], float | None]
    optimum: float  # the best value the truth attains (over the pool, for pools)
    evaluations: int
    n_initial: int = 8
    q: int = 1
    noise: Noise = field(default_factory=lambda: additive(0.0))
    noise_label: str = "none"
    constraints: tuple[LinearConstraint, ...] = ()
    pool: Pool | None = None
    failure_probability: Callable[[Mapping[str, float | int | str]], float] | None = None
    # "regret": the truth at the best observed point vs the optimum; "trials_to_best": the trial at which
    # the pool's best row is revealed; "trials_to_90": the first trial whose truth reaches 90 % of the optimum.
    metric: Literal["regret", "trials_to_best", "trials_to_90"] = "regret"
    # The protocol models log10 of the objective (it spans decades). Only closedloop reads this, because
    # only its users write it down (`log: true` in the protocol); peers get the values as measured.
    log_objective: bool = False

    @property
    def dims(self) -> int:
        return len(self.params)

    def initial_design(self, seed: int) -> list[Point]:
        """The `n_initial` points every tool starts from: random pool rows, or a scrambled Sobol design
        over the box (points breaking a constraint skipped)."""
        if self.pool is not None:
            rng = np.random.default_rng([seed, 7])
            rows = rng.choice(len(self.pool.table), size=self.n_initial, replace=False)
            records = self.pool.table[list(self.pool.inputs)].iloc[rows].to_dict("records")
            return [plain_point(r) for r in records]
        sobol = qmc.Sobol(self.dims, scramble=True, seed=np.random.default_rng([seed, 8]))
        points: list[Point] = []
        while len(points) < self.n_initial:
            for u in sobol.random(64):
                point = self.from_unit(u)
                if all(c.holds(point) for c in self.constraints):
                    points.append(point)
                if len(points) == self.n_initial:
                    break
        return points

    def from_unit(self, u: Sequence[float]) -> Point:
        point: Point = {}
        for p, v in zip(self.params, u, strict=True):
            if p.kind == "choice":
                point[p.name] = p.values[min(int(v * len(p.values)), len(p.values) - 1)]
            elif p.log:
                point[p.name] = math.exp(math.log(p.low) + v * (math.log(p.high) - math.log(p.low)))
            else:
                point[p.name] = p.low + v * (p.high - p.low)
            if p.kind == "int":
                grid = p.grid()
                point[p.name] = grid[min(int(v * len(grid)), len(grid) - 1)]
        return point

    def measure(self, x: Mapping[str, float | int | str], seed: int, index: int) -> float | None:
        """The i-th measurement of a seed: None when the sample fails, else the truth with its noise draw."""
        rng = np.random.default_rng([seed, index, 11])
        z, u = float(rng.standard_normal()), float(rng.random())
        if self.failure_probability is not None and u < self.failure_probability(x):
            return None
        truth = self.truth(x)
        return None if truth is None else self.noise(truth, z)

    def regret(self, x: Mapping[str, float | int | str]) -> float:
        truth = self.truth(x)
        if truth is None:
            return math.inf
        return self.optimum - truth if self.maximize else truth - self.optimum


def plain_point(row: Mapping[object, object]) -> Point:
    """A table row (numpy scalars) as a point of Python values, as every tool is told and asked."""
    return {str(k): _plain(v) for k, v in row.items()}


def _plain(v: object) -> float | int | str:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v if isinstance(v, int | float | str) else str(v)
