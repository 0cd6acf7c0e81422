"""A result as the campaign stores it: each objective in the unit the protocol declares for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from closedloop.drivers.base import Measurement
from closedloop.units import UnitError, convert


def in_units(measurement: Measurement, units: Mapping[str, str]) -> Measurement:
    """`measurement` with each value named in `units` expressed in that unit (a value reported without a
    unit is taken to be in it already). UnitError names the value when a unit cannot be converted."""
    converted: dict[str, float] = {}
    for name, value in measurement.values.items():
        wanted, given = units.get(name), measurement.units.get(name, "")
        if wanted is None or not given or given == wanted:
            continue
        try:
            converted[name] = convert(value, given, wanted)
        except UnitError as exc:
            raise UnitError(f"{name} was reported in {given!r}, the protocol's unit is {wanted!r}: {exc}") from None
    if not converted:
        return measurement
    return dataclasses.replace(measurement, values={**measurement.values, **converted},
                               units={**measurement.units, **{name: units[name] for name in converted}})
