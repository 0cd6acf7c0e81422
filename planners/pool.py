"""Pool mode: the legal, not yet measured or pending rows of a finite candidate table.

The table is parsed column by column with numpy (legality, bounds, int grids, constraints), not row by
row: a pool of 18,000 rows or of 400 columns is read in milliseconds. Rows become `Conditions` dicts
only when a planner asks for them (`CandidatePool[i]`), and `CandidatePool.encoded` builds the
model-space tensor straight from the parsed columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

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
    columns, numbers = _float_block(space, table, legal)
    for p in space.parameters:
        if p.name in columns:
            continue
        values, ok, as_float = _column(p, table[p.name] if p.name in table.columns else None, len(table))
        columns[p.name] = values
        legal &= ok
        if as_float is not None:
            numbers[p.name] = as_float
    columns = {p.name: columns[p.name] for p in space.parameters}  # a point's keys in the space's order
    for constraint in space.constraints:
        legal &= _holds(constraint.coefficients, constraint.rhs, constraint.kind, numbers, len(table))
    if len(table) and not legal.any():
        _no_legal_row(space, table)
    candidates = np.flatnonzero(legal)
    kept = {name: column[candidates] for name, column in columns.items()}
    keep = _first_unseen(space, kept, exclude)
    index = np.asarray(keep, dtype=np.int64)
    return CandidatePool(candidates[index], {n: c[index] for n, c in kept.items()}, int(len(table) - candidates.size))


# Parameters in the probe key (a prefix of `point_key`) by which rows are first told apart: the full key
# of a row is formatted only when its probe matches another row's or a known point's.
PROBE = 4


def _first_unseen(space: SearchSpace, columns: dict[str, np.ndarray], exclude: Sequence[Conditions]) -> list[int]:
    """Positions of the rows whose `point_key` is neither an `exclude` point's nor an earlier row's.

    The keys of hundreds of columns cost microseconds per cell; most rows differ in their first few
    parameters already, so full keys are made only where those agree.
    """
    probe_space = SearchSpace(space.parameters[:PROBE])
    names = list(columns)

    def key(entry: list[Any]) -> tuple:
        """The full key of a bucket entry [a known point or a row position, its key or None], made once."""
        if entry[1] is None:
            source = entry[0]
            point = {name: _python(columns[name][source]) for name in names} if isinstance(source, int) else source
            entry[1] = point_key(space, point)
        return entry[1]

    buckets: dict[tuple, list[list[Any]]] = {}
    for point in exclude:
        buckets.setdefault(point_key(probe_space, point), []).append([point, None])
    keep: list[int] = []
    probes = zip(*(_key_column(columns[p.name]) for p in probe_space.parameters), strict=True)
    for k, probe in enumerate(probes):
        bucket = buckets.setdefault(probe, [])
        entry: list[Any] = [k, None]
        if bucket and any(key(other) == key(entry) for other in bucket):
            continue
        bucket.append(entry)
        keep.append(k)
    return keep


def _float_block(
    space: SearchSpace, table: pd.DataFrame, legal: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The float parameters stored in numeric columns, checked all at once (a descriptor table has hundreds:
    one 2-D array instead of one pandas column access each); `legal` is narrowed in place.

    Returns the columns (float64) and the same as floats with NaN where illegal (for the constraints).
    """
    kinds = table.dtypes.to_dict()
    block = [
        p for p in space.parameters
        if isinstance(p, FloatParameter) and p.name in kinds and getattr(kinds[p.name], "kind", "O") in "iuf"
    ]  # fmt: skip
    if not block:
        return {}, {}
    values = table[[p.name for p in block]].to_numpy(dtype=float)
    low = np.array([p.low for p in block])
    high = np.array([p.high for p in block])
    slack = 1e-6 * np.maximum(1.0, np.abs(high - low))  # as SearchSpace.contains allows
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values >= low - slack) & (values <= high + slack)
    legal &= ok.all(axis=1)
    filled = np.where(ok, values, 0.0)
    masked = np.where(ok, values, np.nan)
    return (
        {p.name: filled[:, j] for j, p in enumerate(block)},
        {p.name: masked[:, j] for j, p in enumerate(block)},
    )


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


def _cell(p: IntParameter | FloatParameter, raw: object) -> Value | None:
    """A cell of an object column as the numeric parameter's Python type, or None when it cannot be one."""
    if isinstance(raw, bool | np.bool_) or not isinstance(raw, int | float | np.integer | np.floating):
        return None
    if isinstance(p, IntParameter):
        if isinstance(raw, int | np.integer):
            return int(raw)
        as_float = float(raw)  # pandas stores an int column with gaps as floats
        return int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    return float(raw) if math.isfinite(float(raw)) else None
