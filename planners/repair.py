"""Turn relaxed points into legal conditions: ints on their grid, choices from their list, constraints met.

Optimizers and samplers work on a continuous relaxation; this module is the single place that makes
their output something an instrument may receive. Ints in a linear constraint are tried at the nearby
grid values (closest first) and, for each, the constrained floats are moved the least (L1 distance in
unit-cube coordinates) to satisfy every constraint: a small linear program.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linprog

from closedloop.planners.encoding import NumericColumn, RelaxedPoint, SpaceEncoding, int_grid_top
from closedloop.planners.space import Conditions, IntParameter

# With more ints in one constraint system, only the most ambiguous ones get both roundings tried.
MAX_ROUNDED_INTS = 6
# Enumerating a fully discrete space is cheap up to here; beyond, it is sampled like a continuous one.
FINITE_ENUMERATION_LIMIT = 4096


def nearest_on_grid(c: NumericColumn, value: float) -> int:
    p = c.parameter
    assert isinstance(p, IntParameter)
    steps = (int_grid_top(p) - p.low) // p.step
    k = min(max(round((value - p.low) / p.step), 0), steps)
    return p.low + k * p.step


def grid_neighbours(c: NumericColumn, value: float) -> list[int]:
    """The grid values either side of `value`, nearest first."""
    p = c.parameter
    assert isinstance(p, IntParameter)
    steps = (int_grid_top(p) - p.low) // p.step
    k = (value - p.low) / p.step
    below = p.low + min(max(math.floor(k), 0), steps) * p.step
    above = p.low + min(max(math.ceil(k), 0), steps) * p.step
    return sorted({below, above}, key=lambda v: (abs(v - value), v))


def clip_float(c: NumericColumn, value: float) -> float:
    p = c.parameter
    return float(min(max(value, p.low), p.high))


def assemble(encoding: SpaceEncoding, numeric: dict[str, float | int], choices: dict[str, str]) -> Conditions:
    """Conditions in the space's parameter order, with fixed values re-attached."""
    out: Conditions = {}
    for p in encoding.space.parameters:
        if p.name in encoding.fixed:
            out[p.name] = encoding.fixed[p.name]
        elif p.name in choices:
            out[p.name] = choices[p.name]
        else:
            out[p.name] = numeric[p.name]
    return out


def make_legal(encoding: SpaceEncoding, point: RelaxedPoint) -> Conditions | None:
    """The legal point nearest to `point`, or None when no nearby integer rounding can meet the constraints."""
    numeric: dict[str, float | int] = {}
    for c in encoding.numeric:
        raw = point.numeric[c.parameter.name]
        numeric[c.parameter.name] = nearest_on_grid(c, raw) if c.is_int else clip_float(c, raw)
    conditions = assemble(encoding, numeric, point.choices)
    if encoding.space.contains(conditions):
        return conditions
    return _repair_constraints(encoding, point, numeric)


def _constrained_columns(encoding: SpaceEncoding) -> list[NumericColumn]:
    used = {
        int(i) for idx, _, _ in encoding.inequality_constraints + encoding.equality_constraints for i in idx
    }
    return [c for c in encoding.numeric if c.column in used]


def _rounding_options(ints: list[NumericColumn], relaxed: dict[str, float]) -> list[tuple[int, ...]]:
    """Integer assignments to try, cheapest (least total unit-cube movement) first."""
    options = [grid_neighbours(c, relaxed[c.parameter.name]) for c in ints]

    def ambiguity(i: int) -> float:
        v, c = relaxed[ints[i].parameter.name], ints[i]
        return -abs(abs(options[i][0] - v) - abs(options[i][-1] - v)) / max(c.span, 1.0)

    varied = set(sorted(range(len(ints)), key=ambiguity)[:MAX_ROUNDED_INTS])
    choices = [opts if i in varied else opts[:1] for i, opts in enumerate(options)]

    def cost(combo: tuple[int, ...]) -> float:
        return sum(
            abs(v - relaxed[c.parameter.name]) / max(c.span, 1.0) for v, c in zip(combo, ints, strict=True)
        )

    return sorted(itertools.product(*choices), key=cost)


def _repair_constraints(
    encoding: SpaceEncoding, point: RelaxedPoint, numeric: dict[str, float | int]
) -> Conditions | None:
    constrained = _constrained_columns(encoding)
    ints = [c for c in constrained if c.is_int]
    floats = [c for c in constrained if not c.is_int]
    relaxed = {c.parameter.name: float(point.numeric[c.parameter.name]) for c in constrained}
    for combo in _rounding_options(ints, relaxed):
        fixed_units = {c.column: c.to_unit(v) for c, v in zip(ints, combo, strict=True)}
        units = _project_floats(encoding, floats, fixed_units, relaxed)
        if units is None:
            continue
        candidate = dict(numeric)
        candidate.update({c.parameter.name: v for c, v in zip(ints, combo, strict=True)})
        candidate.update(
            {c.parameter.name: clip_float(c, c.from_unit(u)) for c, u in zip(floats, units, strict=True)}
        )
        conditions = assemble(encoding, candidate, point.choices)
        if encoding.space.contains(conditions):
            return conditions
    return None


def _project_floats(
    encoding: SpaceEncoding,
    floats: list[NumericColumn],
    fixed_units: dict[int, float],
    relaxed: dict[str, float],
) -> list[float] | None:
    """Unit-cube values for `floats` closest (L1) to their relaxed values that satisfy every constraint."""
    k = len(floats)
    if k == 0:  # nothing to move; the caller's `contains` check decides
        return []
    position = {c.column: i for i, c in enumerate(floats)}
    target = np.array([min(max(c.to_unit(relaxed[c.parameter.name]), 0.0), 1.0) for c in floats])
    rows_ub, rhs_ub, rows_eq, rhs_eq = [], [], [], []
    for is_equality, constraints in (
        (False, encoding.inequality_constraints),
        (True, encoding.equality_constraints),
    ):
        for idx, coef, rhs in constraints:
            row = np.zeros(3 * k)
            b = rhs
            for j, a in zip(idx.tolist(), coef.tolist(), strict=True):
                if j in position:
                    row[position[j]] += a
                else:
                    b -= a * fixed_units[j]
            # Row scaling keeps the solver's absolute tolerances meaningful whatever the units.
            scale = max(float(np.abs(row).max()), abs(b), 1e-12)
            if is_equality:
                rows_eq.append(row / scale)
                rhs_eq.append(b / scale)
            else:  # BoTorch's `a.x >= b` is linprog's `-a.x <= -b`.
                rows_ub.append(-row / scale)
                rhs_ub.append(-b / scale)
    # Variables [u, plus, minus] with u - plus + minus = target, minimising plus + minus.
    identity = np.eye(k)
    deviation_rows = np.hstack([identity, -identity, identity])
    A_eq = np.vstack([deviation_rows, *rows_eq]) if rows_eq else deviation_rows
    b_eq = np.concatenate([target, rhs_eq]) if rhs_eq else target
    result = linprog(
        c=np.concatenate([np.zeros(k), np.ones(2 * k)]),
        A_ub=np.vstack(rows_ub) if rows_ub else None,
        b_ub=np.array(rhs_ub) if rhs_ub else None,
        A_eq=A_eq,
        b_eq=b_eq,
        bounds=[(0.0, 1.0)] * k + [(0.0, None)] * (2 * k),
        method="highs",
    )
    if result.status != 0:
        return None
    assert result.x is not None  # status 0: HiGHS found the optimum, so x is set
    return [float(min(max(u, 0.0), 1.0)) for u in result.x[:k]]


def enumerate_legal(encoding: SpaceEncoding) -> list[Conditions] | None:
    """Every legal point of a fully discrete space, or None if the space is continuous or too large."""
    if not encoding.is_finite or encoding.finite_size() > FINITE_ENUMERATION_LIMIT:
        return None
    axes: list[list] = []
    for c in encoding.numeric:
        p = c.parameter
        assert isinstance(p, IntParameter)
        axes.append(list(range(p.low, int_grid_top(p) + 1, p.step)))
    for ch in encoding.choices:
        axes.append(list(ch.parameter.values))
    names = [c.parameter.name for c in encoding.numeric] + [ch.parameter.name for ch in encoding.choices]
    n_numeric = len(encoding.numeric)
    points = []
    for values in itertools.product(*axes):
        numeric = dict(zip(names[:n_numeric], values[:n_numeric], strict=True))
        choices = dict(zip(names[n_numeric:], values[n_numeric:], strict=True))
        conditions = assemble(encoding, numeric, choices)
        if encoding.space.contains(conditions):
            points.append(conditions)
    return points
