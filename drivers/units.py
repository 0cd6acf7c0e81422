"""Unit conversion: the project's one pint registry, with the units labs write.

It lives in the drivers layer because drivers need it and may not import the controller; the controller's
protocol parsing (controller/units.py) builds on this registry, so quantities from both mix freely.
A driver converts a setpoint from the unit it is handed in (its envelope's) to the unit the instrument
wants on the wire (e.g. a dwell in min sent as seconds), and durations written as "2 s" or "2 h".
"""

from __future__ import annotations

import math

import pint

ureg = pint.UnitRegistry()
# pint's slm is a PV flow (atm * L / min); a standard cubic centimetre per minute is a thousandth of it,
# so sccm and slm convert into each other and into throughput units such as Torr*L/s.
ureg.define("standard_cubic_centimeter_per_minute = standard_liter_per_minute / 1000 = sccm")
ureg.define("@alias torr = Torr")
# Photon counts are pure numbers: "photons/cm^2" must be interchangeable with "1/cm^2" (TRMC fluence).
ureg.define("photon = count = photons")


class DriverUnitError(ValueError):
    """A unit pint does not know, or two units of different dimensions."""


def parse_unit(text: str) -> pint.Unit:
    """The pint unit written as `text`; "" is dimensionless."""
    if not text.strip():
        return ureg.dimensionless
    try:
        return ureg.parse_units(text)
    except (pint.UndefinedUnitError, pint.DefinitionSyntaxError, ValueError, AttributeError, TypeError) as e:
        raise DriverUnitError(f"unknown unit {text!r} (write units like 'degC', 's', 'min', 'sccm', 'ohm')") from e


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit` expressed in `to_unit`; offset units (degC, K) are converted absolutely."""
    if from_unit.strip() == to_unit.strip():
        return float(value)
    try:
        return float(ureg.Quantity(float(value), parse_unit(from_unit)).to(parse_unit(to_unit)).magnitude)
    except pint.DimensionalityError as e:
        raise DriverUnitError(f"cannot convert {from_unit!r} to {to_unit!r}: different dimensions") from e


def is_time_unit(text: str) -> bool:
    return bool(text.strip()) and parse_unit(text).is_compatible_with(ureg.second)


def duration_seconds(value: float | int | str) -> float:
    """Seconds from "2 s", "10 min", "2 h" or a bare number (taken as seconds)."""
    if isinstance(value, bool):
        raise DriverUnitError(f"expected a duration such as '2 s' or '10 min', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        try:
            quantity = ureg.Quantity(value.strip())
        except (pint.UndefinedUnitError, pint.DefinitionSyntaxError, ValueError, AttributeError, TypeError) as e:
            raise DriverUnitError(
                f"expected a duration such as '2 s', '10 min' or '2 h' (a bare number means seconds), got {value!r}"
            ) from e
        if isinstance(quantity, int | float):
            seconds = float(quantity)
        elif quantity.dimensionless:
            seconds = float(quantity.magnitude)
        elif quantity.is_compatible_with(ureg.second):
            seconds = float(quantity.to(ureg.second).magnitude)
        else:
            raise DriverUnitError(f"{value!r} is not a duration: its unit is not a time (use s, min or h)")
    if not math.isfinite(seconds) or seconds < 0:
        raise DriverUnitError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds
