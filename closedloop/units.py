"""Physical units: the project's one pint registry and the parsing every layer shares.

Protocol files write plain numbers (in the unit the field declares) or quantities such as "2 h",
"100 ns" or "25 degC"; drivers convert a setpoint from their envelope's unit to the one the instrument
wants on the wire (a dwell in min sent as seconds). Conversion always goes through pint Quantities, so
offset units (degC vs K) convert absolutely; unknown or incompatible units raise `UnitError` naming the
unit and, where one is close, the unit the author probably meant.
"""

from __future__ import annotations

import math
import re
from difflib import get_close_matches
from pathlib import Path

import pint

# The lab units pint lacks (sccm, Torr, ohm/sq, at%, wt%, ...), in pint's own definition syntax.
DEFINITIONS = Path(__file__).with_name("units.txt")
# pint unit names cannot contain "%": composition units are rewritten before pint parses them.
_COMPOSITION = [(re.compile(r"\bat\s*%"), "at_percent"), (re.compile(r"\bwt\s*%"), "wt_percent")]


def _composition_names(text: str) -> str:
    for pattern, name in _COMPOSITION:
        text = pattern.sub(name, text)
    return text


def _registry() -> pint.UnitRegistry:
    """pint's registry with the project's definitions, from its on-disk cache of parsed definitions where
    one can be kept (a tenth of the time every command would otherwise spend parsing pint's unit files);
    built afresh otherwise."""
    registry: pint.UnitRegistry
    try:
        registry = pint.UnitRegistry(cache_folder=":auto:")
    except Exception:  # noqa: BLE001 - a read-only or odd home folder: no cache, same units
        registry = pint.UnitRegistry()
    registry.load_definitions(str(DEFINITIONS))
    registry.preprocessors.insert(0, _composition_names)  # before pint's own "%" -> "percent"
    return registry


ureg = _registry()
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
    return bool(parse_unit(unit_a).is_compatible_with(parse_unit(unit_b)))


def is_time_unit(text: str) -> bool:
    return bool(text.strip()) and bool(parse_unit(text).is_compatible_with(ureg.second))


def describe_unit(unit: str) -> str:
    return f"{unit!r}" if unit.strip() else "a plain number (no unit)"


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit`, expressed in `to_unit`; offset units (degC, K) converted absolutely."""
    if from_unit.strip() == to_unit.strip():
        return float(value)
    source, target = parse_unit(from_unit), parse_unit(to_unit)
    try:
        return float(ureg.Quantity(float(value), source).to(target).magnitude)
    except pint.DimensionalityError as e:
        raise UnitError(
            f"cannot convert {describe_unit(from_unit)} to {describe_unit(to_unit)}: different dimensions"
        ) from e


def parse_quantity_to(value: float | int | str, unit: str) -> float:
    """A number in `unit` from a plain number (already in `unit`) or a string with its own unit.

    "500 nm" with unit "um" gives 0.5; "25 degC" with unit "K" gives 298.15; "3" gives 3.0. "nan" and
    "inf" pass through (an operator may report a failed reading); callers that need finite values check.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a number, got {value!r}")
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an int beyond any float: no unit makes sense of it
            digits = int(value.bit_length() * 0.30103)
            raise UnitError(f"expected a finite number, got an integer of about {digits} digits") from None
    match = _QUANTITY.match(str(value))
    if match is None:
        example = f"'10 {unit}'" if unit.strip() else "'10'"
        raise UnitError(f"expected a number or a quantity such as {example}, got {value!r}")
    number, written_unit = float(match.group(1)), match.group(2)
    return convert(number, written_unit, unit) if written_unit else number


def parse_duration_s(value: float | int | str) -> float:
    """Seconds from a time quantity such as "12 h" or "30 s"; a bare number is refused as ambiguous
    (protocol fields, where "2" could mean hours or seconds)."""
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    if match is None or not match.group(2):
        raise UnitError(f"expected a duration with a unit, such as '30 s', '10 min' or '12 h'; got {value!r}")
    seconds = parse_quantity_to(value, "s")
    if not seconds >= 0:
        raise UnitError(f"a duration must be a non-negative number, got {value!r}")
    return seconds


def duration_seconds(value: float | int | str) -> float:
    """Seconds from "2 s", "10 min", "2 h" or a bare number taken as seconds (instrument settings, where
    seconds are the convention)."""
    if isinstance(value, bool):
        raise UnitError(f"expected a duration such as '2 s' or '10 min', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _QUANTITY.match(value)
        if match is None:
            raise UnitError(
                f"expected a duration such as '2 s', '10 min' or '2 h' (a bare number means seconds), got {value!r}"
            )
        if match.group(2) and not is_time_unit(match.group(2)):
            raise UnitError(f"{value!r} is not a duration: its unit is not a time (use s, min or h)")
        seconds = parse_quantity_to(value, "s") if match.group(2) else float(match.group(1))
    if not math.isfinite(seconds) or seconds < 0:
        raise UnitError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds
