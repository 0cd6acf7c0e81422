"""Reading a results file for `tell --csv`: one row per trial, every problem named by file:line.

    trial,phi_sum_mu_max,tau_half,status
    3,2.1e-3,180 ns,
    4,,,failed

A `trial` column, one column per measured quantity (cells may carry units), and an optional `status`
column (`failed` for a sample that gave no usable value). The whole file is checked before a campaign
sees any of it; values are checked by the campaign (`Campaign.tell_csv`).
Files from spreadsheet programs are welcome: a UTF-8 byte-order mark is skipped and blank rows ignored.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from closedloop.units import parse_quantity_to

STATUSES = {"": False, "ok": False, "measured": False, "failed": True}


class ResultsFileError(ValueError):
    """The file cannot be read as results: the message starts with `file:line` and says what to change."""


@dataclass(frozen=True)
class ResultRow:
    line: int  # the file's line the row ends on, for messages
    trial: int
    values: dict[str, str]  # column -> cell, empty cells left out
    failed: bool


def read_results(
    path: str | Path, *, measured: Collection[str], objectives: Collection[str], constrained: Collection[str] = ()
) -> list[ResultRow]:
    """The rows of a results file whose columns are `trial`, any of `measured` and optionally `status`.
    A column of `objectives` or `constrained` (the values outcome constraints name) may be left out only if
    every row is a failed sample."""
    path = Path(path)
    rows = csv_rows(path)
    if not rows:
        raise ResultsFileError(f"{path}: the file is empty; expected a header `trial,{','.join(measured)}` "
                               "and one row per trial")
    (header_line, header), body = rows[0], rows[1:]
    columns = _columns(path, header_line, header, measured)
    if not body:
        raise ResultsFileError(f"{path}: no results under the header (line {header_line}); add one row per trial")
    results: list[ResultRow] = []
    first_line: dict[int, int] = {}
    for line, cells in body:
        if len(cells) != len(columns):
            raise ResultsFileError(f"{path}:{line}: {len(cells)} cells in a row of {len(columns)} columns "
                                   f"({','.join(columns)}); check for a missing or extra comma")
        row = dict(zip(columns, (c.strip() for c in cells), strict=True))
        trial = _trial(path, line, row.pop("trial"))
        if trial in first_line:
            raise ResultsFileError(f"{path}:{line}: trial {trial} again (first on line {first_line[trial]}); "
                                   "give each trial one row")
        first_line[trial] = line
        status = row.pop("status", "").lower()
        if status not in STATUSES:
            raise ResultsFileError(f"{path}:{line}: status {status!r}: leave it empty for a measured sample, "
                                   "or write `failed` for a sample that gave no usable value")
        results.append(ResultRow(line, trial, {k: v for k, v in row.items() if v}, STATUSES[status]))
    why = {name: "an objective of this campaign" for name in objectives}
    for name in constrained:
        why.setdefault(name, "an outcome constraint of this campaign needs it")
    absent = [f"{name} ({reason})" for name, reason in why.items() if name not in columns]
    if absent and not all(r.failed for r in results):
        raise ResultsFileError(f"{path}:{header_line}: no column {', '.join(absent)}; add it, with `failed` in a "
                               "status column for a sample that gave no value")
    return results


def result_value(name: str, raw: str | float, unit: str, *, log: bool = False) -> float:
    """One measured value in `unit`, from a number or a quantity with its own unit ("120 ns"), refused unless
    it can be a measurement: finite, and > 0 for a quantity modelled on a log scale. The ValueError reads
    `name='raw': why`; `tell` and `import` put the trial or file:line:column in front."""
    try:
        value = parse_quantity_to(raw, unit)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from None
    if not math.isfinite(value):
        # A NaN typed by hand is more often a spreadsheet gap than a verdict on the sample: a failed
        # sample teaches the planner to avoid a region, so it must be said explicitly.
        raise ValueError(
            f"{name}={raw!r}: not a finite number. If the sample gave no usable value, record it as failed "
            "explicitly: --failed (a CSV row: status `failed`; Python: failed=True)"
        )
    if log and value <= 0:
        raise ValueError(
            f"{name}={raw!r}: {name} is modelled on a log scale (log: true in the protocol), which needs a "
            "value > 0; check the number and its unit, or record a failed sample with --failed"
        )
    return value


def read_text(path: Path) -> str:
    """The file's text: UTF-8, with or without a byte-order mark; anything else refused naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")  # -sig: the byte-order mark Excel writes in front of "CSV UTF-8"
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ResultsFileError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} (offset {exc.start}) is not UTF-8; save the file as "
            "UTF-8 (in Excel: Save As > CSV UTF-8) and try again"
        ) from None


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, cells) of every row of the CSV file that is not blank (the header first), read as `read_text`
    says; `line` is the line a row ends on. Also what `closedloop import` reads (`controller.warm_start`)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        return [(reader.line_num, cells) for cells in reader if any(c.strip() for c in cells)]
    except csv.Error as exc:
        raise ResultsFileError(f"{path}:{reader.line_num}: not readable as CSV ({exc})") from None


def _columns(path: Path, line: int, header: list[str], measured: Collection[str]) -> list[str]:
    columns = [name.strip() for name in header]
    allowed = ["trial", *measured, "status"]
    for i, name in enumerate(columns):
        if not name:
            raise ResultsFileError(f"{path}:{line}: column {i + 1} has no name; the columns are {', '.join(allowed)}")
        if name not in allowed:
            raise ResultsFileError(f"{path}:{line}: column {name!r} is not a measured quantity of this campaign; "
                                   f"the columns are {', '.join(allowed)}")
        if columns.index(name) != i:
            raise ResultsFileError(f"{path}:{line}: column {name!r} appears twice")
    if "trial" not in columns:
        raise ResultsFileError(f"{path}:{line}: no `trial` column; the header names the trial column and one "
                               f"column per value: {', '.join(allowed)}")
    return columns


def _trial(path: Path, line: int, cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise ResultsFileError(f"{path}:{line}: trial {cell!r}: not a trial number") from None
