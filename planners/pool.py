"""Pool mode: the legal, not yet measured or pending rows of a finite candidate table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from closedloop.planners.encoding import point_key
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


@dataclass(frozen=True)
class CandidatePool:
    points: list[Conditions]  # in table order, distinct, legal, none observed or pending
    skipped_rows: int  # rows outside the space (bounds, grid, choices, constraints)


def candidate_pool(space: SearchSpace, table: pd.DataFrame, exclude: Sequence[Conditions]) -> CandidatePool:
    """Parse a candidate table: parameter columns are read, other columns ignored.

    Values are taken from the table as they are (ints as Python ints, floats as floats), so a proposal
    is exactly a row. Fixed parameters may be absent from the table; if present, rows must match them.
    """
    searched = [p for p in space.parameters if not isinstance(p, FixedParameter)]
    missing = [p.name for p in searched if p.name not in table.columns]
    if missing:
        raise ValueError(
            f"candidate table lacks columns {missing} (it has {list(table.columns)}); "
            "add one column per searched parameter"
        )
    seen = {point_key(space, c) for c in exclude}
    points: list[Conditions] = []
    skipped = 0
    columns = {p.name: table[p.name].tolist() if p.name in table.columns else None for p in space.parameters}
    for row in range(len(table)):
        conditions: Conditions = {}
        for p in space.parameters:
            column = columns[p.name]
            value = _cell(p, column[row] if column is not None else None)
            if value is None:
                break
            conditions[p.name] = value
        if len(conditions) != len(space.parameters) or not space.contains(conditions):
            skipped += 1
            continue
        key = point_key(space, conditions)
        if key not in seen:
            seen.add(key)
            points.append(conditions)
    if len(table) and skipped == len(table):
        raise ValueError(
            f"none of the {len(table)} candidate rows is a legal point of the search space "
            f"(first row: {table.iloc[0][[p.name for p in searched]].to_dict()}); check the table's units and bounds"
        )
    return CandidatePool(points, skipped)


def _cell(p: Parameter, raw: object) -> Value | None:
    """The table value as the parameter's Python type, or None when it cannot be one."""
    if isinstance(p, FixedParameter):
        return p.value if raw is None or raw == p.value else None
    if isinstance(p, ChoiceParameter):
        if raw in p.values:
            return raw
        return str(raw) if str(raw) in p.values else None
    if isinstance(raw, bool | np.bool_) or not isinstance(raw, int | float | np.integer | np.floating):
        return None
    if isinstance(p, IntParameter):
        if isinstance(raw, int | np.integer):
            return int(raw)
        as_float = float(raw)  # pandas stores an int column with gaps as floats
        return int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    assert isinstance(p, FloatParameter)
    return float(raw) if math.isfinite(float(raw)) else None
