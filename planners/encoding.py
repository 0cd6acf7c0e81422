"""SearchSpace <-> unit-cube tensors, the coordinates every model and optimizer works in.

Model space has one column per float or int parameter (scaled to [0, 1] over its range; log10 first
for `log` floats; ints over their step grid) and one one-hot column per value of each choice.
Fixed parameters are not searched: they have no column and are re-attached on decoding.
Linear constraints are re-expressed over those columns in BoTorch's convention,
`sum(coefficients * X[indices]) >= rhs` (inequalities) or `== rhs` (equalities).

Decoding gives *relaxed* values (an int may be 3.4, a one-hot group may be [0.2, 0.7, 0.1]);
`planners.repair` turns them into legal conditions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from closedloop.planners.space import (
    ChoiceParameter,
    Conditions,
    FixedParameter,
    FloatParameter,
    IntParameter,
    LinearConstraint,
    SearchSpace,
    Value,
)

DTYPE = torch.float64
BotorchConstraint = tuple[Tensor, Tensor, float]


@dataclass(frozen=True)
class NumericColumn:
    """A float or int parameter on one model-space column: raw = low + x * span (in log10 if `log`)."""

    parameter: FloatParameter | IntParameter
    column: int
    low: float  # in log10 units when `log`
    span: float  # 0 when the parameter can take a single value

    @property
    def log(self) -> bool:
        return isinstance(self.parameter, FloatParameter) and self.parameter.log

    @property
    def is_int(self) -> bool:
        return isinstance(self.parameter, IntParameter)

    def to_unit(self, value: float) -> float:
        t = math.log10(value) if self.log else value
        return 0.0 if self.span == 0 else (t - self.low) / self.span

    def from_unit(self, x: float) -> float:
        t = self.low + x * self.span
        return 10.0**t if self.log else t


@dataclass(frozen=True)
class ChoiceColumns:
    parameter: ChoiceParameter
    first_column: int

    @property
    def columns(self) -> range:
        return range(self.first_column, self.first_column + len(self.parameter.values))


@dataclass(frozen=True)
class RelaxedPoint:
    """A decoded model-space point: numeric values may be off-grid and out of bounds, choices are picked."""

    numeric: dict[str, float]
    choices: dict[str, str]


def int_grid_top(p: IntParameter) -> int:
    """The largest legal value: `high` itself only when it sits on the step grid."""
    return p.low + p.step * ((p.high - p.low) // p.step)


def check_space(space: SearchSpace) -> None:
    """Raise ValueError naming the first parameter or constraint a planner cannot search."""
    names = space.names
    if len(set(names)) != len(names):
        raise ValueError(f"search space has duplicated parameter names: {names}; rename them")
    for p in space.parameters:
        if isinstance(p, FloatParameter | IntParameter) and p.low > p.high:
            raise ValueError(f"parameter {p.name!r}: low {p.low} is above high {p.high}; swap them")
        if isinstance(p, FloatParameter) and p.log and p.low <= 0:
            raise ValueError(
                f"parameter {p.name!r}: log scale needs low > 0 (got {p.low}); drop `log` or raise low"
            )
        if isinstance(p, IntParameter) and p.step < 1:
            raise ValueError(f"parameter {p.name!r}: step must be a positive integer (got {p.step})")
        if isinstance(p, ChoiceParameter) and not p.values:
            raise ValueError(f"parameter {p.name!r}: a choice needs at least one value")
    by_name = {p.name: p for p in space.parameters}
    for c in space.constraints:
        label = c.text or repr(c.coefficients)
        for n in c.coefficients:
            named = by_name.get(n)
            if named is None:
                raise ValueError(f"constraint {label!r} names {n!r}, which is not a parameter of the space")
            if isinstance(named, ChoiceParameter) or (
                isinstance(named, FixedParameter) and isinstance(named.value, str)
            ):
                raise ValueError(
                    f"constraint {label!r} uses non-numeric parameter {n!r}; constraints are over numbers"
                )
            # Like Ax: a linear constraint on a log-scaled parameter is not linear where the model searches.
            if isinstance(named, FloatParameter) and named.log:
                raise ValueError(
                    f"constraint {label!r} uses log-scaled parameter {n!r}; drop `log` on it or the constraint"
                )


class SpaceEncoding:
    """The model-space view of one SearchSpace; build once per propose call."""

    def __init__(self, space: SearchSpace) -> None:
        check_space(space)
        self.space = space
        self.numeric: list[NumericColumn] = []
        self.choices: list[ChoiceColumns] = []
        self.fixed: dict[str, Value] = {}
        col = 0
        for p in space.parameters:
            if isinstance(p, FixedParameter):
                self.fixed[p.name] = p.value
            elif isinstance(p, ChoiceParameter):
                self.choices.append(ChoiceColumns(p, col))
                col += len(p.values)
            else:
                if isinstance(p, IntParameter):
                    low, high = float(p.low), float(int_grid_top(p))
                elif p.log:
                    low, high = math.log10(p.low), math.log10(p.high)
                else:
                    low, high = float(p.low), float(p.high)
                self.numeric.append(NumericColumn(p, col, low, high - low))
                col += 1
        self.dim = col
        self.numeric_by_name = {c.parameter.name: c for c in self.numeric}
        self.inequality_constraints, self.equality_constraints = self._constraints()

    def column_groups(self) -> list[list[int]]:
        """Model-space columns per searched parameter: one per number, a choice's one-hot columns together."""
        groups = [[c.column] for c in self.numeric] + [list(ch.columns) for ch in self.choices]
        return sorted(groups)

    @property
    def bounds(self) -> Tensor:
        return torch.stack([torch.zeros(self.dim, dtype=DTYPE), torch.ones(self.dim, dtype=DTYPE)])

    @property
    def is_finite(self) -> bool:
        """True when every searched parameter is an int or a choice, so the space can be enumerated."""
        return all(c.is_int for c in self.numeric)

    def finite_size(self) -> int:
        size = 1
        for c in self.numeric:
            p = c.parameter
            assert isinstance(p, IntParameter)
            size *= (int_grid_top(p) - p.low) // p.step + 1
        for ch in self.choices:
            size *= len(ch.parameter.values)
        return size

    def encode(self, points: Sequence[Conditions]) -> Tensor:
        """Conditions -> `len(points) x dim` tensor. Raises ValueError naming a value that cannot be encoded."""
        rows = []  # built as Python lists: per-element tensor writes cost ~10x more on pools of 10^4 rows
        for point in points:
            row = [0.0] * self.dim
            for c in self.numeric:
                row[c.column] = c.to_unit(self._number(point, c))
            for ch in self.choices:
                value = self._value(point, ch.parameter.name)
                if value not in ch.parameter.values:
                    raise ValueError(
                        f"{ch.parameter.name}={value!r} is not one of {list(ch.parameter.values)}; "
                        "fix the observation or add the value to the space"
                    )
                row[ch.first_column + ch.parameter.values.index(value)] = 1.0
            rows.append(row)
        return torch.tensor(rows, dtype=DTYPE).reshape(len(points), self.dim)

    def decode(self, X: Tensor) -> list[RelaxedPoint]:
        """`n x dim` model-space tensor -> relaxed points (choices by largest one-hot entry)."""
        rows = X.detach().to(DTYPE).tolist()
        out = []
        for row in rows:
            numeric = {c.parameter.name: c.from_unit(row[c.column]) for c in self.numeric}
            choices = {}
            for ch in self.choices:
                group = [row[j] for j in ch.columns]
                choices[ch.parameter.name] = ch.parameter.values[group.index(max(group))]
            out.append(RelaxedPoint(numeric, choices))
        return out

    def choice_combinations(self, limit: int) -> list[dict[int, float]] | None:
        """One-hot fixed-feature maps over every combination of choices, or None if more than `limit`."""
        total = math.prod(len(ch.parameter.values) for ch in self.choices)
        if not self.choices or total > limit:
            return None
        combos: list[dict[int, float]] = [{}]
        for ch in self.choices:
            combos = [
                {**combo, **{j: float(j == ch.first_column + k) for j in ch.columns}}
                for combo in combos
                for k in range(len(ch.parameter.values))
            ]
        return combos

    def _number(self, point: Conditions, c: NumericColumn) -> float:
        value = self._value(point, c.parameter.name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{c.parameter.name}={value!r} is not a number; fix the observation")
        if c.log and value <= 0:
            raise ValueError(f"{c.parameter.name}={value!r} cannot be on a log scale; values must be > 0")
        return float(value)

    @staticmethod
    def _value(point: Conditions, name: str) -> Value:
        try:
            return point[name]
        except KeyError:
            raise ValueError(f"a point has no value for parameter {name!r}: {point}") from None

    def _constraints(self) -> tuple[list[BotorchConstraint], list[BotorchConstraint]]:
        inequalities: list[BotorchConstraint] = []
        equalities: list[BotorchConstraint] = []
        for constraint in self.space.constraints:
            indices, coefficients, rhs = self._to_columns(constraint)
            label = constraint.text or repr(constraint.coefficients)
            if not indices:
                # Only constants are left: `0 <= rhs` or `0 == rhs` either always or never holds.
                tol = 1e-9 * max(1.0, abs(constraint.rhs))
                if (abs(rhs) > tol) if constraint.kind == "==" else (rhs < -tol):
                    raise ValueError(f"constraint {label!r} involves no searched parameter and never holds")
                continue
            idx = torch.tensor(indices, dtype=torch.long)
            coef = torch.tensor(coefficients, dtype=DTYPE)
            if constraint.kind == "==":
                equalities.append((idx, coef, rhs))
            else:  # BoTorch wants >=: negate both sides of `a.x <= b`.
                inequalities.append((idx, -coef, -rhs))
        return inequalities, equalities

    def _to_columns(self, constraint: LinearConstraint) -> tuple[list[int], list[float], float]:
        indices: list[int] = []
        coefficients: list[float] = []
        rhs = constraint.rhs
        for name, coef in constraint.coefficients.items():
            if name in self.fixed:
                rhs -= coef * float(self.fixed[name])  # check_space made sure it is numeric
                continue
            c = self.numeric_by_name[name]
            rhs -= coef * c.low
            if c.span != 0 and coef != 0:
                indices.append(c.column)
                coefficients.append(coef * c.span)
        return indices, coefficients, float(rhs)


def point_key(space: SearchSpace, conditions: Conditions) -> tuple:
    """A hashable identity of a point; floats to 12 significant digits so JSON round trips still match."""
    key = []
    for name in space.names:
        v = conditions.get(name)
        key.append(float(f"{v:.12g}") if isinstance(v, float) else v)
    return tuple(key)
