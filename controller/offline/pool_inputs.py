"""Which columns of a pool table are the inputs: the named ones, or by default every usable column.

A descriptor table can have hundreds of columns; `closedloop bench` without `--inputs` takes all of them
but the objective, leaving out (and saying so) those that cannot inform a model: a text column with a
different value in every row (a compound's name or formula, an ID), a column that is constant, and a
column with missing values. A column the user names is used as named, or refused with the reason.
Constant and duplicated numeric columns among the inputs are also left out by the planner itself
(`planners.columns`), which notes them in every proposal's provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class UnusableInput(ValueError):
    """A named input column cannot be a model input; the message names it and says why."""


@dataclass(frozen=True)
class InputChoice:
    inputs: list[str]
    dropped: list[str]  # "column: why", for the report


def choose_inputs(path: Path, table: pd.DataFrame, inputs: Sequence[str] | None, objective: str) -> InputChoice:
    """The input columns: `inputs` when given (each checked), else every usable column but the objective."""
    if inputs:
        for column in inputs:
            if column in table.columns and column != objective and _identifier(table[column]):
                raise UnusableInput(
                    f"{path}: input {column!r} is text with a different value in every row (an ID or a formula): "
                    "it cannot inform a model; leave it out of --inputs (or give descriptors computed from it)"
                )
        return InputChoice(list(inputs), [])
    chosen: list[str] = []
    dropped: list[str] = []
    for column in table.columns:
        if column == objective:
            continue
        why = _unusable(table[column])
        if why:
            dropped.append(f"{column} ({why})")
        else:
            chosen.append(str(column))
    return InputChoice(chosen, dropped)


def _unusable(series: pd.Series) -> str:
    """Why a column is no default input (empty: it is one)."""
    if series.isna().any():
        return f"missing in {int(series.isna().sum())} row(s)"
    if series.nunique(dropna=False) <= 1:
        return "constant"
    if _identifier(series):
        return "text, a different value in every row"
    return ""


def _identifier(series: pd.Series) -> bool:
    """Text (not numbers) with every value distinct: a name, formula or ID, not a category."""
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    return not numeric and len(series) > 1 and series.nunique(dropna=False) == len(series)
