"""What a campaign accepts as a warm-start row, and the checks every source goes through.

Values arrive as a number or text with a unit (a CSV cell, a header unit, another campaign's unit) and
leave in the campaign's units. A value that cannot be a point of this campaign at all (an unknown choice,
a non-number, a unit of another dimension) refuses the import; a legal value outside the space's bounds,
grid, fixed value or constraints is kept and flagged (`outside_space`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from closedloop.controller.protocol.model import Protocol
from closedloop.controller.results_csv import result_value
from closedloop.planners.space import (
    ChoiceParameter,
    FixedParameter,
    FloatParameter,
    IntParameter,
    Parameter,
    Problem,
)
from closedloop.records import Conditions, Value
from closedloop.units import convert, parse_quantity_to


class WarmStartError(ValueError):
    """The source cannot be imported: the message names the file (line:column, or trial) and what to change."""


@dataclass(frozen=True)
class Target:
    """What the campaign takes: its problem, the unit of each parameter and of each measured quantity."""

    problem: Problem
    parameter_units: dict[str, str]
    measured_units: dict[str, str]  # objectives and whatever else the instrument measures

    @classmethod
    def of(cls, protocol: Protocol, measured_units: Mapping[str, str]) -> Target:
        units = {name: str(getattr(spec, "unit", "") or "") for name, spec in protocol.space.items()}
        return cls(protocol.to_problem(), units, dict(measured_units))

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        return self.problem.space.parameters

    @property
    def objectives(self) -> list[str]:
        return [o.name for o in self.problem.objectives]


@dataclass(frozen=True)
class ImportRow:
    """One earlier result, in the campaign's units."""

    where: str  # "earlier.csv:7" or "old.sqlite trial 7": for messages and the trial's detail
    conditions: Conditions
    values: dict[str, float]
    failed: bool
    outside_space: tuple[str, ...] = ()  # why the point is not in the space; empty when it is
    line: int | None = None  # the CSV line
    source_trial: int | None = None  # the trial id in the source (a campaign, or a CSV `trial` column)


@dataclass(frozen=True)
class ImportSource:
    """A checked source, ready to record."""

    kind: Literal["csv", "campaign"]
    path: Path
    sha256: str  # of the file as read
    key: str  # what a second import of the same source is recognised by
    rows: list[ImportRow]
    ignored: tuple[str, ...] = ()  # columns (or the source's parameters) this campaign has no use for
    skipped: tuple[str, ...] = ()  # source trials left out, and why


def parameter_value(p: Parameter, raw: Value, written_unit: str, unit: str) -> Value:
    """`raw` (a number in `written_unit`, or text with its own unit, or a label) in the parameter's `unit`.
    Raises ValueError saying why it cannot be a value of `p` at all."""
    if isinstance(p, ChoiceParameter):
        return match_label(str(raw), p.values)
    if isinstance(p, FixedParameter) and isinstance(p.value, str):
        return match_label(str(raw), (p.value,), fixed=True)
    number = _number(raw, written_unit, unit)
    if not math.isfinite(number):
        raise ValueError(f"{raw!r} is not a finite number")
    if isinstance(p, FloatParameter) and p.log and number <= 0:
        raise ValueError(f"{raw!r}: {p.name} is searched on a log scale, which needs a value > 0")
    if isinstance(p, IntParameter) or (isinstance(p, FixedParameter) and isinstance(p.value, int)):
        nearest = round(number)
        if abs(number - nearest) <= 1e-9 * max(1.0, abs(number)):
            return int(nearest)  # 1500.0000000001 rpm after a unit conversion is 1500
    return number


def match_label(raw: str, values: tuple[str, ...], *, fixed: bool = False) -> str:
    """The choice `raw` names: exactly, else ignoring case and surrounding spaces. A fixed label that does
    not match is returned as written (kept, flagged as outside the space); an unknown choice is refused:
    it is far more often a spelling ("CB" for chlorobenzene) than a solvent the campaign never searches,
    and the model could not place it anyway."""
    text = raw.strip()
    if text in values:
        return text
    folded = [v for v in values if v.casefold() == text.casefold()]
    if len(folded) == 1:
        return folded[0]
    if fixed:
        return text
    raise ValueError(f"{raw!r} is not one of {', '.join(values)}; write one of them (a row with another value "
                     "is outside what this campaign can model: leave that row out)")


def _number(raw: Value, written_unit: str, unit: str) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a number")
    if isinstance(raw, int | float):
        return _converted(float(raw), written_unit, unit)
    text = raw.strip()
    try:
        number = float(text)
    except ValueError:
        # A cell with its own unit wins over the header's.
        return float(f"{parse_quantity_to(text, unit):.15g}")
    return _converted(number, written_unit, unit)


def _converted(number: float, written_unit: str, unit: str) -> float:
    if not written_unit or written_unit == unit:
        return number
    # 15 significant digits: 423.15 K is 150 degC, not pint's 150.00000000000003.
    return float(f"{convert(number, written_unit, unit):.15g}")


def measured_value(target: Target, name: str, raw: str | float, written_unit: str = "") -> float:
    """A measured value in the campaign's unit, by the rules of `tell` (finite; > 0 for a log objective)."""
    log = any(o.name == name and o.log for o in target.problem.objectives)
    if written_unit and isinstance(raw, str):
        try:
            float(raw)
        except ValueError:
            pass  # the cell carries its own unit
        else:
            raw = f"{raw} {written_unit}"
    elif written_unit:
        raw = f"{raw!r} {written_unit}"
    return result_value(name, raw, target.measured_units[name], log=log)


def outside_space(target: Target, conditions: Conditions) -> tuple[str, ...]:
    """Why `conditions` is not a point of the space (bounds, int grid, fixed value, constraints); () if it is."""
    space = target.problem.space
    reasons: list[str] = []
    for p in space.parameters:
        v = conditions[p.name]
        unit = target.parameter_units.get(p.name, "")
        shown = f"{p.name}={_show(v)}{' ' + unit if unit else ''}"
        if isinstance(p, FixedParameter):
            if v != p.value:
                reasons.append(f"{shown} differs from its fixed value {_show(p.value)}")
        elif isinstance(p, FloatParameter | IntParameter):
            assert isinstance(v, int | float)  # parameter_value made it a number
            slack = 1e-6 * max(1.0, abs(p.high - p.low))  # the tolerance of SearchSpace.contains
            if not p.low - slack <= v <= p.high + slack:
                reasons.append(f"{shown} is outside [{_show(p.low)}, {_show(p.high)}]")
            elif isinstance(p, IntParameter) and (not isinstance(v, int) or (v - p.low) % p.step):
                reasons.append(f"{shown} is not on its grid ({p.low}, {p.low + p.step}, ...)")
    for c in space.constraints:
        if not c.holds(conditions):
            reasons.append(f"breaks the constraint {c.text or c.coefficients!r}")
    if not reasons and not space.contains(conditions):
        reasons.append("not a point of the search space")
    return tuple(reasons)


def _show(v: Value) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
