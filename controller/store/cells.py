"""Typed reads of one cell of a campaign file, for files someone else may have edited or damaged.

SQLite stores whatever it is given in any column; a campaign file edited by hand, by another tool, or
damaged on disk can hold text where a time belongs or `-1` where a JSON object belongs. Reads go through
these, so such a file is reported as damaged at its table, row and column (`DamagedCell`, which the store
turns into its damaged-file error with the salvage command) instead of failing deep inside a report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class DamagedCell(ValueError):
    """A cell holds something a campaign file never does."""

    def __init__(self, table: str, row_id: object, column: str, problem: str) -> None:
        super().__init__(f"table {table}, row {row_id}, column {column}: {problem}")


def number(row: Mapping[str, Any], table: str, column: str) -> float:
    """A finite number."""
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DamagedCell(table, row.get("id"), column, f"{value!r} is not a finite number")
    return value


def whole(row: Mapping[str, Any], table: str, column: str) -> int:
    """An integer."""
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DamagedCell(table, row.get("id"), column, f"{value!r} is not a whole number")
    return value


def text(row: Mapping[str, Any], table: str, column: str) -> str:
    """A string."""
    value = row[column]
    if not isinstance(value, str):
        raise DamagedCell(table, row.get("id"), column, f"{value!r} is not text")
    return value


def optional(read: Callable[[Mapping[str, Any], str, str], T], row: Mapping[str, Any], table: str, column: str) -> T | None:
    """`read` of a cell that may be NULL."""
    return None if row[column] is None else read(row, table, column)


def json_object(row: Mapping[str, Any], table: str, column: str) -> dict[str, Any]:
    """A JSON object stored as text."""
    raw = row[column]
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise DamagedCell(table, row.get("id", row.get("trial_id")), column, f"{str(raw)[:40]!r} is not a JSON object")
    return value
