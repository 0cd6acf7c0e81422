"""Physical units for protocol files, on the project's one pint registry (drivers/units.py).

Values in a protocol are either plain numbers (in the unit the field declares) or strings such as
"2 h", "100 ns" or "25 degC". Conversion always goes through pint Quantities so offset units
(degC vs K) are handled correctly; incompatible or unknown units raise `UnitError` naming the unit.
"""

from __future__ import annotations

import re
from difflib import get_close_matches

import pint

from closedloop.drivers import units as driver_units
from closedloop.drivers.units import ureg

# A number, optionally followed by a unit: "12 h", "-5", "1e15 photons/cm^2", "500nm".
_QUANTITY = re.compile(
    r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:infinity|inf|nan)(?![a-z]))\s*(.*?)\s*$", re.IGNORECASE
)
_COMMON_UNITS = ("degC", "K", "degF", "s", "min", "h", "ms", "us", "ns", "nm", "um", "mm", "cm", "m", "rpm",
                 "sccm", "slm", "Torr", "mbar", "Pa", "ohm", "V", "A", "W", "Hz", "percent", "angstrom")


class UnitError(ValueError):
    """A unit that pint does not know, or two units that cannot be converted into each other."""


def parse_unit(text: str) -> pint.Unit:
    """The pint unit written as `text` ("" is dimensionless); `UnitError` names an unknown unit."""
    if not text.strip():
        return ureg.dimensionless
    try:
        return ureg.parse_units(text)
    except Exception as e:  # pint's parser fails on odd text with assorted errors (even AssertionError)
        same_letters = [u for u in _COMMON_UNITS if u.lower() == text.strip().lower()]
        hint = same_letters or get_close_matches(text.strip(), _COMMON_UNITS, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else " (write units like 'degC', 'min', 'nm', 'cm^2/(V*s)')"
        raise UnitError(f"unknown unit {text!r}{suggestion}") from e


def compatible(unit_a: str, unit_b: str) -> bool:
    """True when a value in `unit_a` can be converted to `unit_b` (same physical dimension)."""
    return parse_unit(unit_a).is_compatible_with(parse_unit(unit_b))


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit`, expressed in `to_unit`; offset units (degC, K) converted absolutely."""
    if from_unit.strip() == to_unit.strip():
        return float(value)
    parse_unit(from_unit), parse_unit(to_unit)  # unknown units get the protocol-author hints first
    try:
        return driver_units.convert(value, from_unit, to_unit)
    except driver_units.DriverUnitError as e:
        raise UnitError(
            f"cannot convert {describe_unit(from_unit)} to {describe_unit(to_unit)}: different dimensions"
        ) from e


def describe_unit(unit: str) -> str:
    return f"{unit!r}" if unit.strip() else "a plain number (no unit)"


def parse_quantity_to(value: float | int | str, unit: str) -> float:
    """A number in `unit` from a plain number (already in `unit`) or a string with its own unit.

    "500 nm" with unit "um" gives 0.5; "25 degC" with unit "K" gives 298.15; "3" gives 3.0. "nan" and
    "inf" pass through (an operator may report a failed reading); callers that need finite values check.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _QUANTITY.match(str(value))
        if match is None:
            example = f"'10 {unit}'" if unit.strip() else "'10'"
            raise UnitError(f"expected a number or a quantity such as {example}, got {value!r}")
        number, written_unit = float(match.group(1)), match.group(2)
        if written_unit:
            number = convert(number, written_unit, unit)
    return number


def parse_duration_s(value: float | int | str) -> float:
    """Seconds from a time quantity such as "12 h" or "30 s"; a bare number is refused as ambiguous."""
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    if match is None or not match.group(2):
        raise UnitError(f"expected a duration with a unit, such as '30 s', '10 min' or '12 h'; got {value!r}")
    seconds = parse_quantity_to(value, "s")
    if not seconds >= 0:
        raise UnitError(f"a duration must be a non-negative number, got {value!r}")
    return seconds
