"""Pool mode: the legal, not yet measured or pending rows of a finite candidate table.

The table is parsed column by column with numpy (legality, bounds, int grids, constraints), not row by
row: a pool of 18,000 rows or of 400 columns is read in milliseconds. Rows become `Conditions` dicts
only when a planner asks for them (`CandidatePool[i]`), and `CandidatePool.encoded` builds the
model-space tensor straight from the parsed columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from closedloop.planners.encoding import DTYPE, SpaceEncoding, point_key
from closedloop.planners.space import (
    ChoiceParameter,
    Conditions,
    FixedParameter,
    FloatParameter,
    IntParameter,
    Parameter,
    SearchSpace,
    Value,
)


@dataclass(frozen=True, eq=False)
class CandidatePool(Sequence[Conditions]):
    """The usable rows, in table order, distinct, legal, none observed or pending; a sequence of Conditions.

    `rows` are their positions in the table; `columns[name][k]` is parameter `name` of the k-th usable row
    (float64 for floats, int64 for ints, Python objects otherwise). `pool[k]` gives the row in each
    parameter's Python type (ints as int, floats as float): a proposal is exactly a row.
    """

    rows: np.ndarray
    columns: dict[str, np.ndarray]
    skipped_rows: int  # rows outside the space (bounds, grid, choices, constraints)

    def __len__(self) -> int:
        return int(self.rows.size)

    @overload
    def __getitem__(self, index: int) -> Conditions: ...
    @overload
    def __getitem__(self, index: slice) -> list[Conditions]: ...
    def __getitem__(self, index: int | slice) -> Conditions | list[Conditions]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return {name: _python(column[index]) for name, column in self.columns.items()}

    def __iter__(self) -> Iterator[Conditions]:
        names = list(self.columns)
        for row in zip(*(column.tolist() for column in self.columns.values()), strict=True):
            yield dict(zip(names, row, strict=True))

    def encoded(self, encoding: SpaceEncoding) -> Tensor:
        """`len(self) x encoding.dim` model-space tensor, as `encoding.encode(list(self))` gives, without a row loop."""
        X = np.zeros((len(self), encoding.dim))
        for c in encoding.numeric:
            raw = self.columns[c.parameter.name].astype(float)
            t = np.log10(raw) if c.log else raw
            X[:, c.column] = 0.0 if c.span == 0 else (t - c.low) / c.span
        for ch in encoding.choices:
            index = {v: k for k, v in enumerate(ch.parameter.values)}
            column = self.columns[ch.parameter.name]
            hot = np.fromiter((index[v] for v in column.tolist()), dtype=np.int64, count=len(self))
            X[np.arange(len(self)), ch.first_column + hot] = 1.0
        return torch.from_numpy(X).to(DTYPE)


def candidate_pool(space: SearchSpace, table: pd.DataFrame, exclude: Sequence[Conditions]) -> CandidatePool:
    """Parse a candidate table: parameter columns are read, other columns ignored.

    Values are taken from the table as they are (ints as Python ints, floats as floats), so a proposal
    is exactly a row. Fixed parameters may be absent from the table; if present, rows must match them.
    A row is usable when every parameter's cell is legal (`SearchSpace.contains`, constraints included)
    and no earlier row nor any `exclude` point has the same `point_key`.
    """
    _check_columns(space, table)
    legal = np.ones(len(table), dtype=bool)
    columns: dict[str, np.ndarray] = {}
    numbers: dict[str, np.ndarray] = {}  # numeric parameters as floats (NaN where illegal), for the constraints
    for p in space.parameters:
        values, ok, as_float = _column(p, table[p.name] if p.name in table.columns else None, len(table))
        columns[p.name] = values
        legal &= ok
        if as_float is not None:
            numbers[p.name] = as_float
    for constraint in space.constraints:
        legal &= _holds(constraint.coefficients, constraint.rhs, constraint.kind, numbers, len(table))
    if len(table) and not legal.any():
        _no_legal_row(space, table)
    candidates = np.flatnonzero(legal)
    kept = {name: column[candidates] for name, column in columns.items()}
    keys = zip(*(_key_column(column) for column in kept.values()), strict=True)
    seen = {point_key(space, c) for c in exclude}
    keep: list[int] = []
    for k, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(k)
    index = np.asarray(keep, dtype=np.int64)
    return CandidatePool(candidates[index], {n: c[index] for n, c in kept.items()}, int(len(table) - candidates.size))


def usable_rows(
    space: SearchSpace, table: pd.DataFrame, exclude: Sequence[Conditions], order: np.ndarray, n: int
) -> list[tuple[int, Conditions]]:
    """The first `n` usable rows of `table` in the row order `order` (positions), with their Conditions.

    Reads only as many rows as it takes, one at a time, so its cost does not grow with the number of rows
    or of unused columns: what a random pick needs. A row repeating an earlier-read one or an `exclude`
    point is skipped, as `candidate_pool` skips it.
    """
    _check_columns(space, table)
    known = _KnownPoints(space, exclude)
    names = [p.name for p in space.parameters if p.name in table.columns]
    positions = table.columns.get_indexer(pd.Index(names)).tolist()
    out: list[tuple[int, Conditions]] = []
    any_legal = False
    for row in order.tolist():
        if len(out) == n:
            break
        raw = {name: table.iat[row, j] for name, j in zip(names, positions, strict=True)}  # this row's cells only
        conditions = _row(space, raw)
        if conditions is None:
            continue
        any_legal = True
        if known.add(conditions):
            out.append((row, conditions))
    if len(table) and not any_legal and len(order) == len(table):
        _no_legal_row(space, table)
    return out


class _KnownPoints:
    """A set of points by `point_key`, indexed by the key of a few parameters: checking a point against
    hundreds of known points of hundreds of parameters then costs a few full keys, not hundreds."""

    PROBE = 4  # parameters in the index key

    def __init__(self, space: SearchSpace, points: Sequence[Conditions]) -> None:
        self.space = space
        self.probe = SearchSpace(space.parameters[: self.PROBE])
        self.buckets: dict[tuple, list[Conditions]] = {}
        for point in points:
            self.buckets.setdefault(point_key(self.probe, point), []).append(point)

    def add(self, point: Conditions) -> bool:
        """Add `point`; False (and nothing added) when a point with the same key is known already."""
        bucket = self.buckets.setdefault(point_key(self.probe, point), [])
        key = point_key(self.space, point)
        if any(point_key(self.space, other) == key for other in bucket):
            return False
        bucket.append(point)
        return True


def _row(space: SearchSpace, raw: Mapping[str, object]) -> Conditions | None:
    """One table row as a legal point, or None (the one-row rule `candidate_pool` applies to whole columns)."""
    conditions: Conditions = {}
    for p in space.parameters:
        value = _cell(p, raw.get(p.name))
        if value is None:
            return None
        conditions[p.name] = value
    return conditions if space.contains(conditions) else None


def _no_legal_row(space: SearchSpace, table: pd.DataFrame) -> None:
    searched = [p.name for p in space.parameters if not isinstance(p, FixedParameter)]
    raise ValueError(
        f"none of the {len(table)} candidate rows is a legal point of the search space "
        f"(first row: {table.iloc[0][searched].to_dict()}); check the table's units and bounds"
    )


def _check_columns(space: SearchSpace, table: pd.DataFrame) -> None:
    missing = [p.name for p in space.parameters if not isinstance(p, FixedParameter) and p.name not in table.columns]
    if missing:
        raise ValueError(
            f"candidate table lacks columns {missing} (it has {list(table.columns)}); "
            "add one column per searched parameter"
        )


def _column(p: Parameter, series: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One parameter's cells (float64 / int64 / objects in the parameter's Python type), which of them are
    legal values, and for a numeric parameter the cells as floats (NaN where not legal)."""
    if isinstance(p, FixedParameter):
        ok = np.ones(n, dtype=bool)
        if series is not None:
            ok = np.array([raw is None or raw == p.value for raw in series.tolist()], dtype=bool)
        values = np.empty(n, dtype=object)
        values[:] = [p.value] * n
        numeric = isinstance(p.value, int | float) and not isinstance(p.value, bool)
        return values, ok, np.where(ok, float(p.value), np.nan) if numeric else None
    assert series is not None
    if isinstance(p, ChoiceParameter):
        # The values are strings: a cell equal to one is that string, anything else is read by its str().
        text = series.astype(str)
        return text.to_numpy(dtype=object), text.isin(p.values).to_numpy(), None
    kind = series.dtype.kind
    if kind in "iuf":
        values = series.to_numpy(dtype=float)
        ok = np.isfinite(values)
    else:  # objects, bools, dates: cell by cell, by the one-cell rule
        cells = [_cell(p, raw) for raw in series.tolist()]
        ok = np.array([c is not None for c in cells], dtype=bool)
        values = np.array([np.nan if c is None else float(c) for c in cells])
    filled = np.where(ok, values, 0.0)
    if isinstance(p, IntParameter):
        ok &= np.floor(filled) == filled  # pandas stores an int column with gaps as floats
        ok &= (filled >= p.low) & (filled <= p.high) & (np.mod(filled - p.low, p.step) == 0)
        typed = series.to_numpy() if kind in "iu" else filled.astype(np.int64)
        return typed.astype(np.int64), ok, np.where(ok, values, np.nan)
    assert isinstance(p, FloatParameter)
    slack = 1e-6 * max(1.0, abs(p.high - p.low))  # as SearchSpace.contains allows
    ok &= (filled >= p.low - slack) & (filled <= p.high + slack)
    return filled, ok, np.where(ok, values, np.nan)


def _holds(coefficients: dict[str, float], rhs: float, kind: str, numbers: dict[str, np.ndarray], n: int) -> np.ndarray:
    """`LinearConstraint.holds` for every row at once (rows with an illegal operand count as not holding)."""
    tol = 1e-6
    slack = np.full(n, -rhs)
    for name, c in coefficients.items():
        slack = slack + c * numbers[name]
    scale = tol * max(1.0, abs(rhs), *(abs(c) for c in coefficients.values()))
    with np.errstate(invalid="ignore"):
        out = np.abs(slack) <= scale if kind == "==" else slack <= scale
    return np.asarray(out & np.isfinite(slack), dtype=bool)


def _key_column(values: np.ndarray) -> list[Value]:
    """`point_key`'s view of one column: floats to 12 significant digits, everything else as is."""
    if values.dtype.kind == "f":
        return [float(f"{v:.12g}") for v in values.tolist()]
    return [float(f"{v:.12g}") if isinstance(v, float) else v for v in values.tolist()]


def _python(value: object) -> Value:
    """A numpy scalar as its Python value (int64 -> int, float64 -> float); Python objects as they are."""
    item = getattr(value, "item", None)
    return item() if callable(item) and isinstance(value, np.generic) else value  # type: ignore[return-value]


def _cell(p: Parameter, raw: object) -> Value | None:
    """The table value as the parameter's Python type, or None when it cannot be one."""
    if isinstance(p, FixedParameter):
        return p.value if raw is None or raw == p.value else None
    if isinstance(p, ChoiceParameter):
        return str(raw) if str(raw) in p.values else None  # the values are strings
    if isinstance(raw, bool | np.bool_) or not isinstance(raw, int | float | np.integer | np.floating):
        return None
    if isinstance(p, IntParameter):
        if isinstance(raw, int | np.integer):
            return int(raw)
        as_float = float(raw)  # pandas stores an int column with gaps as floats
        return int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    return float(raw) if math.isfinite(float(raw)) else None
